"""Pipeline v2: resume in O(missing), failures replaced in the stream, shards, stale re-runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from glan.api import generate
from glan.config import GenerateConfig
from glan.errors import UserError
from glan.llm import AdmissionSettings
from glan.llm.bodyfaults import BodyFaults
from glan.run.merge import merge_shards
from glan.run.rundir import STATE_FILE
from glan.run.stores import RunReplies, fold_shards, shard_dir
from glan.store import ResponseCache
from glan.testing import runs
from glan.testing.fake_server import FakeServer
from glan.testing.runs import physics_taxonomy, read_jsonl


def config_for(server: FakeServer, **kw) -> GenerateConfig:
    """Quick to give up: these tests take endpoints down on purpose."""
    return runs.config_for(
        server, **{"max_retries": 3, "breaker_failures": 5, "breaker_window_s": 0.5, **kw}
    )


def manifest(run: Path) -> dict:
    return orjson.loads((run / "manifest.json").read_bytes())


def sent_and_replayed(run: Path) -> tuple[int, int]:
    """Requests sent and cache replays of the last invocation, over every stage."""
    rows = [r for m in manifest(run)["usage_this_invocation"].values() for r in m.values()]
    return sum(r["requests"] for r in rows), sum(r["cached"] for r in rows)


def test_finished_run_reruns_without_a_request_or_a_replay(fake_server, tmp_path):
    cfg = config_for(fake_server)
    generate(tmp_path / "run", 60, cfg)
    first = (tmp_path / "run" / "instructions.jsonl").read_bytes()
    before = fake_server.requests
    result = generate(tmp_path / "run", 60, cfg)
    assert fake_server.requests == before
    assert sent_and_replayed(tmp_path / "run") == (0, 0)
    assert result.manifest["resumed_pairs"] == 60
    assert (tmp_path / "run" / "instructions.jsonl").read_bytes() == first


def test_stopped_run_resumes_without_replaying_what_it_finished(tmp_path):
    server = FakeServer(latency_s=0.01).start()
    try:
        cfg = config_for(server)
        server.fault_rates = {}
        # Let about half the work through, then take the endpoint down until the breaker stops.
        stopper = _stop_after(server, requests=120)
        with pytest.raises(UserError):
            generate(tmp_path / "run", 100, cfg)
        stopper()
        kept = len(read_jsonl(tmp_path / "run" / "instructions.jsonl"))
        assert 0 < kept < 100
        server.fault_rates = {}
        result = generate(tmp_path / "run", 100, cfg)
        assert result.instructions == 100
        sent, replayed = sent_and_replayed(tmp_path / "run")
        # Nothing finished is read back through the cache: only the questions of pairs whose
        # answer was in flight when the run stopped (at most the pairs in flight, 2 x 16).
        assert replayed <= 32 < kept + 32
        assert result.manifest["resumed_pairs"] >= kept
        assert sent < 2 * (100 - kept) + 40  # roughly what was missing, not the whole run
    finally:
        server.stop()


@pytest.mark.slow
def test_what_a_killed_run_spent_is_counted_by_the_next(tmp_path):
    run = tmp_path / "run"
    with FakeServer(latency_s=0.05) as server:
        command = [
            sys.executable, "-m", "glan", "generate", "--out", str(run), "-n", "30", "-q",
            "--backend", "openai", "--base-url", server.base_url, "--model", "fake-model",
            "--concurrency", "2",
        ]  # fmt: skip
        killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while server.by_status["200"] < 30 and killed.poll() is None:
            time.sleep(0.01)  # polling for the condition, not waiting on luck
        killed.kill()  # SIGKILL: it never writes a manifest
        killed.wait()
        assert not (run / "manifest.json").exists()
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    # Everything the endpoint answered is in the totals but, at the kill, the replies in flight
    # (2) and those of the last few milliseconds.
    rows = [r for m in manifest(run)["usage"].values() for r in m.values()]
    spent = sum(r["requests"] + r["reasks"] for r in rows)
    assert 0 <= server.by_status["200"] - spent <= 4


def _stop_after(server: FakeServer, requests: int):
    """Make every request after the first `requests` fail with 500; returns an undo."""
    original = server._next_fault

    def next_fault():
        return "500" if server.requests > requests else original()

    server._next_fault = next_fault  # type: ignore[method-assign]

    def undo() -> None:
        server._next_fault = original  # type: ignore[method-assign]

    return undo


def test_poisoned_requests_are_replaced_in_the_stream_and_cost_little(tmp_path):
    """A body that fails with the same hard error K times in a row while others are served
    (glan.llm.bodyfaults) is given up and replaced in the stream."""
    server = FakeServer(latency_s=0.02, poisoned_rate=0.05).start()
    try:
        cfg = config_for(server, concurrency=32, max_retries=6, breaker_window_s=30)
        result = generate(tmp_path / "run", 300, cfg)
        assert result.instructions == 300 and result.manifest["status"] == "complete"
        records = read_jsonl(tmp_path / "run" / "instructions.jsonl")
        assert len({r["id"] for r in records}) == 300
        failed = sum(result.manifest["failures"].values())  # given up, none deferred
        assert server.by_status["poisoned"] > 0 and failed > 0
        # A poisoned body is sent K times (once more when its second try met the error with
        # nothing served in between) and costs one backoff wait (rarely two), not max_retries
        # of them (the time against an undisturbed run: bench/failure_costs.py); its tries
        # wait for a slot like any request.
        k = AdmissionSettings().body_fault_repeats
        assert k * failed <= server.by_status["poisoned"] <= (k + 1) * failed
        assert result.manifest["deferred_units"] == 0
        assert result.manifest["retries"] <= 2 * failed
        assert server.max_in_flight <= 32
    finally:
        server.stop()


def test_shards_merge_into_the_whole_runs_records(fake_server, tmp_path):
    cfg = config_for(fake_server)
    tax = physics_taxonomy("Optics", "Acoustics", "Plasma Physics", "Mechanics", "Thermodynamics")
    whole = generate(tmp_path / "whole", 40, cfg, tax)
    for i in range(3):
        generate(tmp_path / f"shard{i}", 40, cfg, tax, shard=(i, 3))
    counts = merge_shards(tmp_path / "merged", [tmp_path / f"shard{i}" for i in range(3)])
    assert counts["instructions"] == whole.instructions == 40
    for name in ("instructions.jsonl", "syllabi.jsonl", "subjects.jsonl"):
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_merge_refuses_an_incomplete_set_of_shards(fake_server, tmp_path):
    cfg = config_for(fake_server)
    tax = physics_taxonomy("Optics", "Acoustics")
    generate(tmp_path / "shard0", 10, cfg, tax, shard=(0, 2))
    with pytest.raises(UserError, match=r"give each of 0\.\.1 once"):
        merge_shards(tmp_path / "merged", [tmp_path / "shard0"])


def test_rerun_with_another_taxonomy_is_refused_unless_updated(fake_server, tmp_path):
    cfg = config_for(fake_server)
    generate(tmp_path / "run", 10, cfg, physics_taxonomy("Optics", "Acoustics"))
    before = (tmp_path / "run" / "instructions.jsonl").read_bytes()
    with pytest.raises(UserError, match=r"another taxonomy.*--update"):
        generate(tmp_path / "run", 10, cfg, physics_taxonomy("Mechanics"))
    assert (tmp_path / "run" / "instructions.jsonl").read_bytes() == before
    result = generate(tmp_path / "run", 10, cfg, physics_taxonomy("Mechanics"), update=True)
    disciplines = {
        r["meta"]["discipline"] for r in read_jsonl(tmp_path / "run" / "instructions.jsonl")
    }
    assert disciplines == {"Mechanics"} and result.instructions == 10


def test_changing_the_answer_model_re_asks_only_answers(fake_server, tmp_path):
    cfg = config_for(fake_server)
    generate(tmp_path / "run", 20, cfg)
    changed = GenerateConfig.model_validate(
        {**cfg.model_dump(), "stages": {"answers": {"temperature": 0.1}}}
    )
    with pytest.raises(UserError, match="answers settings"):
        generate(tmp_path / "run", 20, changed)
    generate(tmp_path / "run", 20, changed, update=True)
    usage = manifest(tmp_path / "run")["usage_this_invocation"]
    assert sum(r["requests"] for r in usage["answers"].values()) == 20
    assert "subjects" not in usage and "syllabus" not in usage


def test_growing_the_target_extends_the_run(fake_server, tmp_path):
    cfg = config_for(fake_server)
    generate(tmp_path / "run", 20, cfg)
    first = {r["id"] for r in read_jsonl(tmp_path / "run" / "instructions.jsonl")}
    result = generate(tmp_path / "run", 40, cfg)
    ids = {r["id"] for r in read_jsonl(tmp_path / "run" / "instructions.jsonl")}
    assert result.instructions == 40 and len(ids) == 40
    assert len(first & ids) >= 15  # most of the first run is kept, not re-made


def test_cost_in_the_manifest_adds_up_over_invocations(fake_server, tmp_path):
    cfg = config_for(fake_server, prices={"fake-model": {"input": 1.0, "output": 2.0}})
    generate(tmp_path / "run", 20, cfg)
    first = manifest(tmp_path / "run")["cost_usd"]
    generate(tmp_path / "run", 30, cfg)
    second = manifest(tmp_path / "run")
    this = sum(r["cost_usd"] for m in second["usage_this_invocation"].values() for r in m.values())
    assert this > 0 and second["cost_usd"] == pytest.approx(first + this)


def test_a_run_starting_inside_a_rate_limit_burst_completes(tmp_path):
    server = FakeServer(latency_s=0.02).start()
    try:
        server.rate_limit_for(1.0, retry_after=1.0)
        cfg = config_for(server, concurrency=64, breaker_window_s=30)
        result = generate(tmp_path / "run", 100, cfg)
    finally:
        server.stop()
    assert result.instructions == 100
    assert result.manifest["rate_limited"] > 0


def test_a_bodys_count_a_ray_shard_ended_or_raised_stays_so(tmp_path):
    """A Ray shard counts a body's run of failures on from its run's count (RUN/glan.sqlite,
    read under the shard's own). A run the shard ended (the body was served) must not come
    back from the run's older row, for the shard's next client nor once the shards are
    folded back into the run; a count the shard raised is the one the run keeps."""
    run_store = tmp_path / STATE_FILE
    run_cache = ResponseCache(run_store)
    run_cache.put_failing_body("served since", "500|server error", 12, "e")
    run_cache.put_failing_body("failing still", "500|server error", 3, "e")
    run_cache.close()
    shard_store = shard_dir(tmp_path, 0) / STATE_FILE

    def shard_client() -> BodyFaults:
        return BodyFaults(16, ResponseCache(shard_store, fallback=RunReplies(run_store)), "e")

    shard = shard_client()
    shard.ended("served since")
    shard.failed("failing still", "500|server error", successes=1)  # counted: 4
    shard.cache.close()
    next_client = shard_client()
    assert next_client.cache.failing_bodies("e") == {"failing still": ("500|server error", 4)}
    next_client.cache.close()
    fold_shards(tmp_path)
    folded = ResponseCache(run_store)
    assert folded.failing_bodies("e") == {"failing still": ("500|server error", 4)}
    folded.close()
