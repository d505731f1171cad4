"""Prompt templates, kept as package data so they can be read and reviewed as text.

None of them holds an example answer: a worked example in a prompt leaks into the outputs
verbatim (a trap of the earlier public re-implementation).
"""

from functools import cache
from importlib import resources


@cache
def template(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8")


def render(name: str, **values: object) -> str:
    return template(name).format(**values).strip()
