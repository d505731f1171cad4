"""A stand-in model for lm-eval that answers each generation request from the document it was
made from: the reference answer, or a wrong one. A task over local data that scores the first
all right and the second all wrong has its data, prompts, filters and scoring wired together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lm_eval.api.model import LM

Doc = dict[str, Any]


def _math_answer(doc: Doc) -> str:
    # The sentence lm-eval's minerva_math scoring looks for (its 4 worked examples end so).
    return f"Final Answer: The final answer is {doc['answer']}. I hope it is correct."


def _benchmark(doc: Doc) -> str:
    """Which benchmark a document is from, by the fields its layout has."""
    if "canonical_solution" in doc:
        return "humaneval"
    return "mbpp" if "test_list" in doc else "math500"


RIGHT_ANSWERS: dict[str, Callable[[Doc], str]] = {
    "humaneval": lambda doc: doc["canonical_solution"],
    "mbpp": lambda doc: doc["code"],
    "math500": _math_answer,
}
WRONG_ANSWERS: dict[str, str] = {
    "humaneval": "    return None\n",
    "mbpp": "def nothing():\n    return None\n",
    "math500": "Final Answer: The final answer is 123456789. I hope it is correct.",
}


def right(doc: Doc) -> str:
    return RIGHT_ANSWERS[_benchmark(doc)](doc)


def wrong(doc: Doc) -> str:
    return WRONG_ANSWERS[_benchmark(doc)]


class OracleLM(LM):
    """`answer`: right, wrong, or a function of the document (lm-eval's command line passes
    `--model_args answer=right`)."""

    def __init__(self, answer: Callable[[Doc], str] | str = "right", **_: Any) -> None:
        super().__init__()
        self.answer = (
            {"right": right, "wrong": wrong}[answer] if isinstance(answer, str) else answer
        )

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        return [self.answer(request.doc) for request in requests]

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError("the oracle only answers generation tasks")

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError("the oracle only answers generation tasks")
