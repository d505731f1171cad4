"""`glan evidence`: one page that puts the eval deltas, GLAN-Test and the leakage table side by
side, each number with the file it was read from and that file's sha256, so that a claim that
glan data teaches can be checked by someone else. The page composes results that `glan eval`
and `glan test run` wrote; it recomputes nothing."""
