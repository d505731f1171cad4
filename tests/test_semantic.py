"""Semantic dedup in bounded memory: the same removals, naming the same kept questions, as the
one-vector-at-a-time greedy, whatever the budget (kept vectors spilled to disk, searched in
blocks of one row) and however the records fall into batches.

A stand-in encoder maps "v<k>" to row k of a table of vectors: paraphrase families (an earlier
vector plus noise, some of them edits of edits) among unrelated ones, so no torch is needed.
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import orjson
import pytest

from conftest import require
from glan.post.clean import CleanSettings, clean_file
from glan.post.semantic import SemanticDeduplicator, unit_rows
from glan.testing.runs import read_jsonl

THRESHOLD = 0.93


def paraphrase_table(n: int, dim: int = 24, seed: int = 5) -> np.ndarray:
    """n vectors: 40% a noisy copy of one of the previous 200 (cosine about 0.86-0.995 to it),
    the rest random (cosine about 0 +- 0.2 to anything)."""
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    for _ in range(n):
        if rows and rng.random() < 0.4:
            base = rows[int(rng.integers(max(0, len(rows) - 200), len(rows)))]
            v = base + rng.normal(0, rng.uniform(0.02, 0.12), dim)
        else:
            v = rng.normal(size=dim)
        rows.append(v / np.linalg.norm(v))
    return np.array(rows, dtype=np.float32)


def table_encoder(table: np.ndarray):
    def encode(texts: list[str]) -> np.ndarray:
        return table[[int(re.search(r"v(\d+)", t).group(1)) for t in texts]]

    return encode


def greedy_reference(table: np.ndarray, threshold: float) -> list[str | None]:
    """The definition, one vector at a time in float64: dropped when a kept vector reaches the
    threshold, as a duplicate of the most similar (the earliest on ties)."""
    v = unit_rows(table).astype(np.float64)
    gram = v @ v.T
    off_diagonal = ~np.eye(len(v), dtype=bool)
    # no cosine so near the threshold that float64 rounding could decide it
    assert np.abs(gram[off_diagonal] - threshold).min() > 1e-9
    kept: list[int] = []
    out: list[str | None] = []
    for j in range(len(v)):
        sims = gram[j, kept]
        if len(kept) and sims.max() >= threshold:
            out.append(f"v{kept[int(np.argmax(sims))]}")
        else:
            kept.append(j)
            out.append(None)
    return out


def run_batches(dedup: SemanticDeduplicator, n: int, batch: int) -> list[str | None]:
    """Texts v0 .. v<n-1> (named as they are) in batches of `batch`."""
    out: list[str | None] = []
    for start in range(0, n, batch):
        names = [f"v{k}" for k in range(start, min(n, start + batch))]
        out += dedup.check_batch(names, names)
    return out


@pytest.mark.parametrize(
    ("batch", "memory_bytes", "spills"),
    [
        (50, None, False),
        (50, 200_000, False),
        (1, 3_000, True),
        (50, 1_000, True),
        (600, 1_000, True),
    ],
    ids=["in-memory", "roomy-budget", "one-per-batch-spilled", "tiny-budget", "one-batch-tiny"],
)
def test_bounded_semantic_dedup_removes_what_the_greedy_definition_removes(
    tmp_path, batch, memory_bytes, spills
):
    table = paraphrase_table(600)
    expected = greedy_reference(table, THRESHOLD)
    dropped = sum(e is not None for e in expected)
    assert 100 < dropped < 400  # the table exercises both outcomes
    if memory_bytes is None:
        dedup = SemanticDeduplicator(table_encoder(table), THRESHOLD)
    else:
        dedup = SemanticDeduplicator(table_encoder(table), THRESHOLD, memory_bytes, tmp_path)
    got = run_batches(dedup, len(table), batch)
    assert got == expected
    assert dedup.kept is not None
    assert dedup.kept.count == len(table) - dropped
    assert (dedup.kept.on_disk > 0) == spills
    assert (tmp_path / "semantic-kept.f32").is_file() == spills
    dedup.close()


def test_a_paraphrase_of_a_dropped_paraphrase_stays_unless_it_meets_a_kept_one(tmp_path):
    """b is close to a, c close to b but not to a: b goes and c stays (the greedy compares with
    kept questions only, it does not cluster), with every kept vector but one on disk."""
    a = np.array([1.0, 0.0, 0.0, 0.0])
    b = np.array([0.95, 0.31, 0.0, 0.0])
    c = np.array([0.81, 0.58, 0.0, 0.0])
    table = unit_rows(np.array([a, b, c]))
    cos = table.astype(np.float64) @ table.T.astype(np.float64)
    assert cos[0, 1] > 0.9 and cos[1, 2] > 0.9 and cos[0, 2] < 0.9
    for batch in (1, 3):
        (tmp_path / f"b{batch}").mkdir()
        dedup = SemanticDeduplicator(table_encoder(table), 0.9, 10, tmp_path / f"b{batch}")
        assert run_batches(dedup, 3, batch) == [None, "v0", None]
        dedup.close()


def test_the_most_similar_kept_question_is_named_and_the_earliest_on_a_tie(tmp_path):
    """Kept a and b are orthogonal; q reaches both and is closer to b (the later one); r is
    equally close to both."""
    table = np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0.704, 0.71, 0, 0], [0.5, 0.5, 0.5, 0.5]], dtype=np.float32
    )
    for memory_bytes in (10, 1 << 20):
        folder = tmp_path / str(memory_bytes)
        folder.mkdir()
        dedup = SemanticDeduplicator(table_encoder(table), 0.5, memory_bytes, folder)
        assert run_batches(dedup, 2, 1) == [None, None]
        assert dedup.check_batch(["q", "r"], ["v2", "v3"]) == ["v1", "v0"]
        dedup.close()
        one_batch = SemanticDeduplicator(table_encoder(table), 0.5, memory_bytes, folder)
        assert run_batches(one_batch, 4, 4) == [None, None, "v1", "v0"]
        one_batch.close()


def test_a_cosine_at_the_threshold_is_decided_by_its_exact_value():
    """With the threshold set at a pair's exact cosine the pair is one question; one float64
    step above it, two. A float32 product of the pair (whose rounding depends on how blocks
    are cut) is above or below the exact cosine, so deciding by it gets one of the two wrong."""
    rng = np.random.default_rng(1)
    for _ in range(30):
        a = rng.normal(size=384)
        pair = unit_rows(np.array([a, a + rng.normal(0, 0.01, 384)]))
        as_searched = unit_rows(pair)  # the deduplicator normalises what the encoder gives
        exact = float(
            sum(Fraction(x) * Fraction(y) for x, y in zip(*as_searched.tolist(), strict=True))
        )
        for threshold, second in ((exact, "v0"), (float(np.nextafter(exact, 2.0)), None)):
            in_batch = SemanticDeduplicator(table_encoder(pair), threshold)
            assert in_batch.check_batch(["v0", "v1"], ["v0", "v1"]) == [None, second]
            against_kept = SemanticDeduplicator(table_encoder(pair), threshold)
            assert against_kept.check_batch(["v0"], ["v0"]) == [None]
            assert against_kept.check_batch(["v1"], ["v1"]) == [second]


def _records(n: int) -> list[dict]:
    return [
        {
            **({"id": f"r{k}"} if k % 5 else {}),  # records without an id are named by number
            "messages": [
                {"role": "user", "content": f"Question v{k}: explain the idea in your words."},
                {"role": "assistant", "content": f"A careful, complete answer number {k}."},
            ],
        }
        for k in range(n)
    ]


def test_glan_clean_semantic_with_a_tiny_budget_removes_what_it_removes_in_memory(
    tmp_path, monkeypatch
):
    monkeypatch.setattr("glan.post.clean.BATCH", 64)  # later batches search the kept on disk
    table = paraphrase_table(600)
    records = _records(len(table))
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    outputs = {}
    for memory_gb in (2.0, 1e-6):  # 1e-6 GB: 5 kept vectors in memory, the rest on disk
        settings = CleanSettings(
            dedup=False,
            semantic=True,
            semantic_threshold=THRESHOLD,
            benchmarks=[],
            memory_gb=memory_gb,
        )
        out = tmp_path / str(memory_gb)
        out.mkdir()
        summary = clean_file(
            src, out / "clean.jsonl", out / "removed.jsonl", settings, table_encoder(table)
        )
        outputs[memory_gb] = (
            (out / "clean.jsonl").read_bytes(),
            (out / "removed.jsonl").read_bytes(),
            summary,
        )
        assert sorted(p.name for p in out.iterdir()) == ["clean.jsonl", "removed.jsonl"]
    assert outputs[2.0][:2] == outputs[1e-6][:2]
    expected = greedy_reference(table, THRESHOLD)
    name = {f"v{k}": str(r.get("id", k + 1)) for k, r in enumerate(records)}
    removed = read_jsonl(tmp_path / "1e-06" / "removed.jsonl")
    assert [
        (r["record"]["messages"][0]["content"].split()[1][:-1], r["duplicate_of"]) for r in removed
    ] == [(f"v{k}", name[e]) for k, e in enumerate(expected) if e]
    assert outputs[1e-6][2].duplicates == {"semantic": len(removed)}


@pytest.mark.slow
def test_minilm_paraphrases_go_the_same_with_the_kept_embeddings_on_disk(tmp_path):
    require("sentence_transformers", "glan[semantic], after torch's CPU build")
    from glan.post.semantic import minilm_encoder

    questions = [
        "How many moles of oxygen are needed to completely burn two moles of methane?",
        "Summarise the main arguments for and against a four-day working week.",
        "To fully combust 2 mol of CH4, what amount of O2 in moles is required?",
        "What are the pros and cons of a four-day work week? Summarise them.",
        "Explain why the sky looks blue at noon and red at sunset.",
        "Why is the sky blue at midday but red when the sun sets?",
    ]
    texts = {f"v{k}": q for k, q in enumerate(questions)}
    model = minilm_encoder()

    def encode(names: list[str]) -> np.ndarray:
        return model([texts[n] for n in names])

    in_memory = SemanticDeduplicator(encode, 0.75)
    on_disk = SemanticDeduplicator(encode, 0.75, 1_000, tmp_path)  # one kept vector in memory
    expected = run_batches(in_memory, len(questions), 2)
    assert run_batches(on_disk, len(questions), 2) == expected
    assert expected == [None, None, "v0", "v1", None, "v4"]  # each paraphrase found
    assert on_disk.kept is not None and on_disk.kept.on_disk > 0
    on_disk.close()
