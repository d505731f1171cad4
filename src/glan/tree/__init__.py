"""The GLAN tree walk: what to ask, in what order, and how failures are replaced."""
