"""Tune a model on glan data with the paper's recipe (TRL's SFTTrainer; optional extra glan[train]).

recipe: the hyper-parameters and the step arithmetic; data: pairs from a run or an export;
models: where weights come from; trainer: wiring TRL; artifacts: what is written next to the
checkpoint. Nothing here imports torch at module import time except trainer and models' helpers.
"""
