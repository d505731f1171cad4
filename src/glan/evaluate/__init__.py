"""Evaluate models on the paper's benchmarks with lm-evaluation-harness (optional extra glan[eval]).

registry: which benchmarks exist, their shots and prompt format, and where their data comes from;
tasks: lm-eval task YAMLs written at run time over local data; sandbox: model-written code run
in a separate, limited process; runner: lm-eval per model and benchmark; per_item: every metric and the per-sample records;
paired: the base-vs-tuned statistics; provenance: what a run was made of; rerun: running it
again from that record; results: the tables;
leakage: the paper's test-minus-train loss check.
"""
