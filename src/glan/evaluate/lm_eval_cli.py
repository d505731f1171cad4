"""lm-eval's own command line with HumanEval's and MBPP's code run in glan's sandbox:
`python -m glan.evaluate.lm_eval_cli --include_path EVAL_DIR/tasks --tasks glan_std_humaneval
--confirm_run_unsafe_code ...` re-runs a task `glan eval` wrote, offline. (Plain `lm_eval` scores
these two through Hugging Face's `code_eval`, which it fetches from the hub.) Code runs only
with HF_ALLOW_CODE_EVAL=1, as lm-eval asks."""

from __future__ import annotations

from glan.evaluate.code_eval import sandboxed_code_eval


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    with sandboxed_code_eval():
        cli_evaluate()


if __name__ == "__main__":
    main()
