"""How many question replies a model wastes on questions that are not standalone.

Takes the syllabi of a finished (or stopped) run, draws the same question plans the run drew
(its seed, discipline and subject slot), and asks only the questions stage, re-asking as a run
does, so two versions of the prompt and the
checks (run it with each version's sources first on PYTHONPATH) are compared on the same
syllabi, plans and seeds. Writes every reply with its verdict to --out (JSON) and prints the
summary: replies, kept questions, replies rejected per reason, and the share rejected as not
standalone. Default model: the embedded SmolLM2 (the `local` backend).

Usage: PYTHONPATH=src python bench/question_standalone.py RUN_DIR --per-syllabus 8 --out after.json
Audit a results file with the current checks: python bench/question_standalone.py --audit X.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import orjson

from glan.config import GenerateConfig
from glan.llm import ChatResponse, LLMClient, RequestFailed, create_backend
from glan.records import Syllabus
from glan.stages import hygiene, questions
from glan.stages.errors import Rejected


def run_syllabi(run: Path) -> list[tuple[str, int, Syllabus]]:
    """(discipline path, subject slot, syllabus) of every syllabus the run's state holds."""
    con = sqlite3.connect(f"file:{run / 'glan.sqlite'}?mode=ro", uri=True)
    rows = con.execute("SELECT d, s, body FROM st_syllabi WHERE body IS NOT NULL ORDER BY d, s")
    return [(d, s, Syllabus.model_validate_json(body)) for d, s, body in rows]


async def ask_all(
    syllabi: list[tuple[str, int, Syllabus]], per_syllabus: int, cfg: GenerateConfig
) -> tuple[list[dict], dict]:
    """Every unit's replies with their verdicts, and the client's usage (requests, re-asks)."""
    client = LLMClient(create_backend(cfg.llm, concurrency=1))
    results: list[dict] = []
    try:
        for d, s, syl in syllabi:
            text = questions.syllabus_text(syl)
            rng = random.Random(f"{cfg.seed}|{d}|{s}")  # as glan.tree.walk draws a slot's plans
            ratio = cfg.questions.multi_ratio
            for plan in questions.plan_questions(syl, per_syllabus, ratio, rng):
                replies: list[dict] = []

                def check(reply: ChatResponse, replies: list[dict] = replies) -> str | None:
                    raw = (reply.parsed or {}).get("question", "")
                    try:
                        kept = questions.parse(reply)
                    except Rejected as exc:
                        replies.append({"reply": raw, "verdict": exc.kind})
                        return str(exc)
                    replies.append({"reply": raw, "verdict": "kept", "question": kept})
                    return None

                # a unit that gives up raises; every reply it paid for is in `replies` already
                with contextlib.suppress(RequestFailed):
                    await client.chat(questions.build(syl, plan, cfg, text), check)
                results.append({"subject": syl.subject, "plan": plan.index, "replies": replies})
                print(syl.subject, plan.index, [r["verdict"] for r in replies], flush=True)
    finally:
        await client.aclose()
    return results, client.usage.as_dict()


def summary(results: list[dict]) -> dict[str, object]:
    replies = [r for unit in results for r in unit["replies"]]
    verdicts = Counter(r["verdict"] for r in replies)
    kept = [r for r in replies if r["verdict"] == "kept"]
    return {
        "units": len(results),
        "replies": len(replies),
        "kept": len(kept),
        "repaired": sum(r["question"] != r["reply"].strip() for r in kept),
        "verdicts": dict(verdicts),
        "not_standalone_share": round(verdicts["not_standalone"] / max(len(replies), 1), 3),
        # kept questions that today's check would refuse (an older check missed them)
        "kept_but_not_standalone_now": sum(
            hygiene.not_standalone(r["question"]) is not None for r in kept
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, nargs="?", help="a run directory with syllabi")
    parser.add_argument("--per-syllabus", type=int, default=8)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--audit", type=Path, help="summarise a results file with today's checks")
    args = parser.parse_args()
    if args.audit:
        print(orjson.dumps(summary(orjson.loads(args.audit.read_bytes()))).decode())
        return
    syllabi = run_syllabi(args.run)
    cfg = GenerateConfig().adapted()
    started = time.time()
    results, usage = asyncio.run(ask_all(syllabi, args.per_syllabus, cfg))
    if args.out:
        args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    elapsed = round(time.time() - started)
    print(orjson.dumps({**summary(results), "usage": usage, "elapsed_s": elapsed}).decode())


if __name__ == "__main__":
    main()
