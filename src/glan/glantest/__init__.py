"""GLAN-Test: a held-out exam over the taxonomy, and a judge that grades two models on it.

- `build`: the exam, made with the generation stages from subjects the run never used, then
  checked against the run's questions with the cleaning machinery (`overlap`);
- `answer`: each model's answers (cached, counted);
- `judge`: the judge scores both answers 1-10, with the pair shown in both orders;
- `report`: per-discipline and per-group means with bootstrap intervals, win/tie/loss and how
  often the verdict flips with the order; JSON, Markdown and an HTML page.
"""
