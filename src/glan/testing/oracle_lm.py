"""A stand-in model for lm-eval that answers each request from the document it was made from:
the reference answer, or a wrong one; on a multiple-choice item, the right choice, a wrong one
or the first. A task over local data that scores the first all right and the second all wrong
has its data, prompts, filters and scoring wired together; two of them, each known to score
what it does, check a comparison of two models."""

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


def gold_choice(doc: Doc) -> int:
    """The right choice of a multiple-choice document: ARC's answer key among its labels,
    MMLU's answer index."""
    if "answerKey" in doc:
        return doc["choices"]["label"].index(doc["answerKey"])
    return int(doc["answer"])


CHOICES: dict[str, Callable[[Doc], int]] = {
    "right": gold_choice,
    "wrong": lambda doc: 1 - min(gold_choice(doc), 1),  # the second, or the first when right
    "first": lambda doc: 0,
}


def right(doc: Doc) -> str:
    return RIGHT_ANSWERS[_benchmark(doc)](doc)


def wrong(doc: Doc) -> str:
    return WRONG_ANSWERS[_benchmark(doc)]


class OracleLM(LM):
    """`answer`: right, wrong or first (a multiple-choice item's first choice), or a function
    of the document for generation requests (lm-eval's command line passes `--model_args
    answer=right`). `asked` keeps (task, document) of every request, to check which items a
    model was scored on."""

    def __init__(self, answer: Callable[[Doc], str] | str = "right", **_: Any) -> None:
        super().__init__()
        self.answer: Callable[[Doc], str] | None = answer if callable(answer) else None
        self.choice = None if callable(answer) else CHOICES[answer]
        if isinstance(answer, str):
            self.answer = {"right": right, "wrong": wrong}.get(answer)
        self.asked: list[tuple[str | None, int | None]] = []

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        if self.answer is None:
            raise NotImplementedError("this stand-in only answers multiple-choice tasks")
        self.asked += [(request.task_name, request.doc_id) for request in requests]
        return [self.answer(request.doc) for request in requests]

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        """One request per choice (`idx`): the picked one is certain, the others unlikely."""
        if self.choice is None:
            raise NotImplementedError("this stand-in only answers generation tasks")
        self.asked += [(r.task_name, r.doc_id) for r in requests if r.idx == 0]
        picked = [r.idx == self.choice(r.doc) for r in requests]
        return [(0.0, True) if chosen else (-100.0, False) for chosen in picked]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise NotImplementedError("the oracle only answers generation and choice tasks")
