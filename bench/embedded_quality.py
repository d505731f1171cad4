"""How many of a run's records show small-model junk: leaked prompt instructions, questions
that point at the syllabus, JSON debris in syllabi, answers stuck in a loop.

Usage: python bench/embedded_quality.py RUN_DIR [RUN_DIR...]   (e.g. the quickstart's output
before and after a change; the detectors are glan.stages.hygiene's)
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from glan.prompts import template
from glan.stages import hygiene

INSTRUCTIONS = hygiene.instruction_ngrams(template("question"))


def audit(run: Path) -> dict[str, int]:
    pairs = [orjson.loads(x) for x in (run / "instructions.jsonl").read_bytes().splitlines()]
    syllabi = [orjson.loads(x) for x in (run / "syllabi.jsonl").read_bytes().splitlines()]
    counts = {"pairs": len(pairs), "leaked_instructions": 0, "not_standalone": 0, "loops": 0}
    for p in pairs:
        question, answer = p["messages"][0]["content"], p["messages"][1]["content"]
        counts["leaked_instructions"] += (
            hygiene.echoed_instruction(question, INSTRUCTIONS) is not None
        )
        counts["not_standalone"] += hygiene.not_standalone(question) is not None
        counts["loops"] += hygiene.repetitive(answer) is not None
    sessions = [s for syl in syllabi for s in syl["sessions"]]
    counts["syllabus_sessions"] = len(sessions)
    counts["debris_sessions"] = sum(hygiene.is_debris(s["title"]) for s in sessions)
    counts["repeated_sessions"] = sum(
        len(syl["sessions"])
        - len({" ".join(s["title"].casefold().split()) for s in syl["sessions"]})
        for syl in syllabi
    )
    return counts


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(arg, audit(Path(arg)))
