"""The records are a function of the inputs and the replies: never of throttling, transient
failures, timing, or how often a run stopped and was resumed."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import orjson
import pytest

from glan.api import generate
from glan.llm import EndpointDown
from glan.pipeline import Pipeline
from glan.testing.fake_server import FakeServer
from glan.testing.runs import config_for, physics_taxonomy


def run_until_complete(out: Path, n: int, cfg, tries: int = 15) -> list[str]:
    """The same command again and again until the run is complete; each invocation's status."""
    statuses = []
    for _ in range(tries):
        try:
            statuses.append(generate(out, n, cfg).manifest["status"])
        except EndpointDown:
            statuses.append("stopped")
        if statuses[-1] == "complete":
            return statuses
    raise AssertionError(f"not complete after {tries} invocations: {statuses}")


@pytest.fixture
def clean_run(tmp_path):
    """An undisturbed run of 60 pairs; every body in `poisoned_rate` always fails (a request
    that breaks the server), so the clean run replaces units too."""

    def make(n: int = 60, poisoned_rate: float = 0.0) -> bytes:
        with FakeServer(poisoned_rate=poisoned_rate) as server:
            run_until_complete(tmp_path / "clean", n, config_for(server, concurrency=8))
        return (tmp_path / "clean" / "instructions.jsonl").read_bytes()

    return make


@pytest.mark.slow
def test_partial_throttling_gives_the_records_of_an_unthrottled_run(tmp_path, clean_run):
    """10% of bodies are refused for three breaker windows after first seen while the rest
    are served (a busy organisation's quota). No unit gives up because of it, so no unit is
    replaced by another combination: the records are the unthrottled run's, resumes allowed
    (the last requests of a run may meet an endpoint answering only rate limits)."""
    expected = clean_run()
    with FakeServer(throttled_rate=0.1, throttle_s=3.0, throttle_retry_after_s=0.2) as server:
        cfg = config_for(server, concurrency=8, breaker_window_s=1.0)
        run_until_complete(tmp_path / "throttled", 60, cfg)
        assert server.by_status["429_throttled"] > 0
    assert (tmp_path / "throttled" / "instructions.jsonl").read_bytes() == expected


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["503", "500"], ids=["gateway errors", "plain 500s"])
def test_transient_failures_and_resumes_give_the_records_of_a_clean_run(tmp_path, clean_run, fault):
    """A third of the requests fail (listings, syllabi, questions and answers alike) with a
    gateway error, or with an HTTP 500 word for word the one the bodies that break the server
    get; with one retry many give up. A unit that gave up for the endpoint's sake is deferred,
    never replaced: it is asked again (by a later pass of the same command, or by the next
    command when the endpoint stops it). A body is given up for its own sake only after K
    tries in a row met the same error while others were served (glan.llm.bodyfaults), which
    random 500s at this rate reach with a chance of 0.35**16 per body, so the records are the
    clean run's, replacements of bodies that break the server included."""
    expected = clean_run(poisoned_rate=0.05)
    server = FakeServer(poisoned_rate=0.05, fault_rates={fault: 0.35}, rng_seed=3)
    with server:
        cfg = config_for(server, concurrency=8, max_retries=1, breaker_failures=40)
        run_until_complete(tmp_path / "faulty", 60, cfg)
        manifest = orjson.loads((tmp_path / "faulty" / "manifest.json").read_bytes())
        assert sum(manifest["failures"].values()) > 0  # units gave up (deferred or replaced)
        assert server.by_status[fault] > 0 and server.by_status["poisoned"] > 0
    assert (tmp_path / "faulty" / "instructions.jsonl").read_bytes() == expected


def test_records_do_not_depend_on_concurrency_when_some_bodies_break_the_grammar(tmp_path):
    """A fifth of the question bodies crash the grammar engine: each goes again alone without
    the constraint, every other body keeps it, at any concurrency and in any order."""

    def crashes(body) -> bool:
        fmt = body.get("response_format") or {}
        if fmt.get("type") != "json_schema" or fmt["json_schema"]["name"] != "question":
            return False
        return hashlib.sha256(body["messages"][0]["content"].encode()).digest()[0] < 52

    outputs = []
    for concurrency in (1, 16):
        with FakeServer(grammar_crash_when=crashes) as server:
            out = tmp_path / f"c{concurrency}"
            generate(out, 40, config_for(server, concurrency=concurrency))
            assert server.by_status["grammar_crash"] > 0
        outputs.append((out / "instructions.jsonl").read_bytes())
    assert outputs[0] == outputs[1]


def test_a_run_short_of_its_target_says_short_with_the_missing_count(tmp_path):
    """Optics's listing fails with a gateway error every time: its pairs are deferred, pass
    after pass, until a pass moves nothing; the run says short, and by how much."""

    def optics_listing(body) -> str | None:
        fmt = body.get("response_format") or {}
        is_listing = fmt.get("json_schema", {}).get("name") == "subjects"
        return "503" if is_listing and "Optics" in body["messages"][-1]["content"] else None

    with FakeServer(fault_when=optics_listing) as server:
        cfg = config_for(server, max_retries=0, breaker_failures=10_000, breaker_window_s=60.0)
        result = generate(tmp_path / "run", 20, cfg, physics_taxonomy("Optics", "Mechanics"))
    manifest = result.manifest
    assert 0 < result.instructions < 20
    assert manifest["status"] == "short"
    assert manifest["missing"] == 20 - result.instructions
    assert manifest["deferred_units"] >= 1


async def test_tasks_alive_stay_within_the_window_however_many_pairs_a_subject_needs(
    tmp_path, fake_server
):
    """400 pairs from 4 subjects (100 each) at concurrency 4: the walk starts a pair's task
    only when a pair slot is free, so tasks alive are bounded by the window, not by N."""
    cfg = config_for(
        fake_server,
        concurrency=4,
        plan={"pairs_per_subject": 100, "min_pairs_per_discipline": 200},
    )
    pipeline = Pipeline(cfg, physics_taxonomy("Mechanics", "Optics"), tmp_path / "run", 400)
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(asyncio.all_tasks()))
            await asyncio.sleep(0)

    sampler = asyncio.ensure_future(sample())
    try:
        result = await pipeline.run()
    finally:
        sampler.cancel()
    assert result.instructions == 400
    window = 2 * cfg.concurrency
    # pairs in flight + open subjects + open disciplines + the run's own few tasks
    assert peak <= 2 * window + window // 2 + 8, peak
