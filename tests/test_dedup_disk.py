"""Bounded-memory duplicate removal removes exactly what the in-memory index removes."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from glan.post.clean import CleanSettings, clean_file
from glan.post.dedup import Deduplicator
from glan.post.filters import FilterSettings, record_text, reject_reason

WORDS = str.split(
    "the a of to in and is what how why which find explain compute given show that for with "
    "energy force mass velocity cell protein market price demand supply equation function graph "
    "theorem proof integral derivative matrix vector history war empire treaty poem novel"
)


def corpus(n: int, seed: int = 3) -> list[dict]:
    """Questions with planted exact copies, one-word edits, chains of edits (an edit of an
    edit), filtered records, questions with no words, and records without an id."""
    rng = random.Random(seed)
    questions: list[str] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05 and questions:
            q = rng.choice(questions).upper() + " ?"  # exact after normalisation
        elif r < 0.25 and questions:
            ws = rng.choice(questions[-50:]).split()
            for _ in range(rng.randint(1, 4)):
                ws[rng.randrange(len(ws))] = rng.choice(WORDS)
            q = " ".join(ws)
        elif r < 0.27:
            q = "Why?"  # filtered: too short
        elif r < 0.28:
            q = "?!?! ... ---- ?!?!"  # passes the filters, has no words
        else:
            q = " ".join(rng.choices(WORDS, k=rng.randint(8, 40)))
        questions.append(q)
    records = []
    for i, q in enumerate(questions):
        record = {
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": f"A careful, complete answer number {i}."},
            ]
        }
        if i % 7:
            record["id"] = f"r{i}"
        records.append(record)
    return records


def in_memory(records: list[dict], threshold: float) -> list[tuple[str, str, str]]:
    """(id, kind, duplicate of) for each record the in-memory index removes, in file order."""
    dedup = Deduplicator(threshold=threshold)
    out = []
    for number, record in enumerate(records, 1):
        if reject_reason(record, FilterSettings()) is not None:
            continue
        rid = str(record.get("id", number))
        dup = dedup.check(rid, record_text(record))
        if dup is not None:
            out.append((rid, dup.kind, dup.of))
    return out


@pytest.mark.parametrize(
    ("threshold", "memory_gb", "workers"),
    [(0.7, 2.0, 1), (0.5, 2.0, 2), (0.7, 1e-5, 2), (0.3, 1e-5, 1)],
    ids=["default", "low-threshold", "many-partitions", "many-partitions-dense"],
)
def test_bounded_dedup_removes_exactly_what_the_in_memory_index_removes(
    tmp_path, threshold, memory_gb, workers
):
    records = corpus(3000)
    src = tmp_path / "in.jsonl"
    # blank lines do not count as records (nor shift the default ids)
    src.write_bytes(
        b"".join(orjson.dumps(r) + (b"\n\n" if i == 5 else b"\n") for i, r in enumerate(records))
    )
    settings = CleanSettings(
        benchmarks=[], near_threshold=threshold, memory_gb=memory_gb, workers=workers
    )
    summary = clean_file(src, tmp_path / "clean.jsonl", tmp_path / "removed.jsonl", settings)
    removed = [
        orjson.loads(line) for line in (tmp_path / "removed.jsonl").read_bytes().splitlines()
    ]
    got = [
        (
            str(r["record"].get("id", records.index(r["record"]) + 1)),
            r["reason"].split()[0],
            r["duplicate_of"],
        )
        for r in removed
        if r["stage"] == "dedup"
    ]
    expected = in_memory(records, threshold)
    assert got == expected
    kinds = {kind for _, kind, _ in expected}
    assert kinds == {"exact", "near"}  # the corpus exercises both
    assert summary.duplicates == {k: sum(e[1] == k for e in expected) for k in kinds}
    assert not any(p.name.endswith(".tmp") or "dedup-" in p.name for p in tmp_path.iterdir())


def test_a_chain_of_edits_goes_only_when_it_meets_a_kept_record(tmp_path):
    """b is a near copy of a, c a near copy of b but not of a: b goes, and c stays, since the
    copy it matches is gone (a transitive clustering would remove c too)."""
    a = " ".join(str.split("one two three four five six seven eight nine ten"))
    a += " eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"
    b = a.replace("two", "w").replace("seventeen", "z")
    c = b.replace("ten", "s").replace("twelve", "s")
    only_b = Deduplicator(threshold=0.5)
    only_b.check("b", b)
    assert only_b.check("c", c) is not None  # c and b share a band
    records = [
        {
            "id": i,
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": "An answer long enough."},
            ],
        }
        for i, q in enumerate([a, b, c])
    ]
    assert in_memory(records, 0.5) == [("1", "near", "0")]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    settings = CleanSettings(benchmarks=[], near_threshold=0.5)
    clean_file(src, tmp_path / "c.jsonl", tmp_path / "r.jsonl", settings)
    kept = [orjson.loads(x)["id"] for x in (tmp_path / "c.jsonl").read_bytes().splitlines()]
    assert kept == [0, 2]


def test_a_broken_line_names_its_line_number(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"id": 1}\n\n{not json\n')
    from glan.errors import UserError

    with pytest.raises(UserError, match=r"in.jsonl:3: not a JSON line"):
        clean_file(src, tmp_path / "c.jsonl", tmp_path / "r.jsonl", CleanSettings(benchmarks=[]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_input_path_must_exist(tmp_path):
    from glan.errors import UserError

    with pytest.raises(UserError, match="input not found"):
        clean_file(
            Path(tmp_path / "nope.jsonl"),
            tmp_path / "c.jsonl",
            tmp_path / "r.jsonl",
            CleanSettings(benchmarks=[]),
        )
