"""Whole runs by batch against the fake batch servers: N=200 through failures and expiry, one
batch per tree level, mixed online/batch runs, batch prices, kill -9 and cancel then resume."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest
from rich.console import Console

from glan import aio
from glan.api import generate, plan
from glan.cli.dry_run import print_dry_run
from glan.cli.progress import progress_line
from glan.config import load_config
from glan.errors import UserError
from glan.estimate import estimate
from glan.llm.batch.options import BatchOptions
from glan.llm.usage import Price
from glan.pipeline import Pipeline
from glan.taxonomy import load_taxonomy
from glan.testing.batch_clients import (
    KINDS,
    assert_valid_records,
    generate_command,
    glan,
    start_and_kill_once_a_batch_is_live,
)
from glan.testing.fake_batch import FakeBatchServer
from glan.testing.fake_server import FakeServer
from glan.testing.runs import FAST_BATCH, batch_config_for, config_for
from glan.tree.progress import RunProgress, merge_batch_states


# ---- whole runs ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_n200_with_failed_lines_expiry_and_shuffled_output(tmp_path, kind):
    with FakeBatchServer(line_failure_rate=0.05, expire_rate=0.2, shuffle=True) as server:
        server.enqueue("expire")  # at least one batch expires part done, whatever the dice say
        # A line fails a round with p ~ 0.15 here (a fifth of batches expire half done, 5% of
        # lines fail): 8 rounds make a line left for the next run a one-in-millions event.
        options = {"max_requests_per_batch": 60, "max_rounds": 8}
        cfg = batch_config_for(server, kind, batch=options)
        result = generate(tmp_path / "run", 200, cfg)
    assert result.instructions == 200
    assert_valid_records(tmp_path / "run", 200)
    assert any(b.outcome == "expire" for b in server.batches.values())
    assert server.paid_twice == 0
    assert max(server.answered.values()) == 1  # no reply paid twice


def test_each_level_of_the_tree_goes_out_in_one_batch_and_progress_shows_it(batch_server, tmp_path):
    """The walk keeps every pending request of a level open (the work window is the batch
    transport's, not the HTTP concurrency), so a run without failures is four batches: the
    listings, the syllabi, the questions, the answers."""
    progress = RunProgress()
    generate(tmp_path / "run", 200, batch_config_for(batch_server), progress=progress)
    sizes = [len(b.lines) for b in batch_server.batches.values()]
    assert len(sizes) == 4 and sizes[2:] == [200, 200]
    line = progress_line(progress)
    assert "batches: none live; 480 lines done" in line and "oldest" in line


def test_progress_says_how_long_a_quota_has_held_batches_back():
    """A run waiting for a provider's quota (held by other work) says so on its progress line."""
    progress = RunProgress()
    state = {"by_status": {}, "lines_done": 0, "lines_pending": 400, "oldest_s": 0.0}
    progress.batches = lambda: merge_batch_states([state, {**state, "quota_wait_s": 300.0}])
    assert "held back by the provider's quota for 5 min" in progress_line(progress)
    progress.batches = lambda: state
    assert "quota" not in progress_line(progress)


def test_mixed_online_and_batch_run(fake_server, batch_server, tmp_path):
    cfg = config_for(
        fake_server,
        stages={
            stage: {"backend": "openai-batch", "base_url": batch_server.base_url}
            for stage in ("questions", "answers")
        },
        batch=FAST_BATCH,
    )
    fake_server.record_bodies = True
    generate(tmp_path / "run", 30, cfg)
    assert_valid_records(tmp_path / "run", 30)
    online = {b["max_tokens"] for b in fake_server.seen_bodies}
    batched = {body["max_tokens"] for b in batch_server.batches.values() for _, body in b.lines}
    assert online == {2048, 3072}  # subjects and syllabi only
    assert batched == {768, 1536}  # questions and answers only
    assert batch_server.lines_submitted == 60


def test_dry_run_and_manifest_price_batch_stages_at_the_batch_price(batch_server, tmp_path):
    price = {"input": 2.0, "output": 8.0}
    online = config_for(FakeServer(), prices={"fake-model": price})
    batch = batch_config_for(batch_server, prices={"fake-model": price})
    tax = load_taxonomy()
    full = {e.stage: e.cost_usd for e in estimate(plan(100, online, tax), online)}
    half = {e.stage: e.cost_usd for e in estimate(plan(100, batch, tax), batch)}
    assert half == pytest.approx({stage: cost / 2 for stage, cost in full.items()})
    custom = batch_config_for(batch_server, prices={"fake-model": {**price, "batch_factor": 0.6}})
    custom_cost = {e.stage: e.cost_usd for e in estimate(plan(100, custom, tax), custom)}
    assert custom_cost == pytest.approx({s: c * 0.6 for s, c in full.items()})
    shown = Console(record=True, width=200)
    print_dry_run(plan(100, batch, tax), batch, shown)
    assert shown.export_text().count("fake-model (batch)") == 4
    result = generate(tmp_path / "run", 10, batch)
    usage = result.manifest["usage"]
    tokens = [(r["prompt_tokens"], r["completion_tokens"]) for rows in usage.values()
              for r in rows.values()]  # fmt: skip
    online_cost = sum(Price(**price).cost(p, c) for p, c in tokens)
    assert result.manifest["cost_usd"] == pytest.approx(online_cost / 2, rel=1e-6)
    listing = glan("batches", str(tmp_path / "run"))
    costs = [float(line.rsplit("$", 1)[1]) for line in listing.stdout.splitlines() if "$" in line]
    assert len(costs) == 4  # one batch per level, each priced
    assert sum(costs) == pytest.approx(result.manifest["cost_usd"], abs=5e-4)


def test_batch_options_are_set_with_dotted_keys():
    cfg = load_config(
        None,
        {"llm.backend": "anthropic-batch", "batch.poll_seconds": 5, "batch.max_rounds": 2},
    )
    assert (cfg.batch.poll_seconds, cfg.batch.max_rounds) == (5, 2)
    assert cfg.batch.limits("anthropic") == (100_000, 256_000_000)
    assert cfg.batch.limits("azure") == (100_000, 200_000_000)
    assert BatchOptions(max_requests_per_batch=10).limits("openai") == (10, 200_000_000)
    with pytest.raises(UserError, match=r"batch\.poll_second"):
        load_config(None, {"batch.poll_second": 5})
    azure = {"backend": "openai-batch", "api_version": "2024-10-21", "model": "deployment"}
    mixed = load_config(None, {"llm.backend": "openai", "stages.answers": azure})
    assert mixed.backend_for("answers").api_version == "2024-10-21"
    with pytest.raises(UserError, match="api_version does not apply to the local backend"):
        load_config(None, {"stages.answers.api_version": "1"}).backend_for("answers")


def test_a_ray_shard_uses_the_batch_replies_its_run_got_and_never_used(batch_server, tmp_path):
    """A local batch run killed once a batch came back, before its replies were used (they are
    in the ledger only), then taken on by Ray: the shard reads them in RUN/glan.sqlite, and
    counts them in the run's usage as a local run resumed would (they were paid for, and no
    usage counted them yet), not as free cache hits."""
    run = tmp_path / "run"
    cfg = batch_config_for(batch_server, prices={"fake-model": {"input": 2.0, "output": 8.0}})
    local = generate(run, 10, cfg).manifest
    with contextlib.closing(sqlite3.connect(run / "glan.sqlite")) as db:
        for table in ("responses", "st_listings", "st_slots", "st_syllabi", "st_pairs"):
            db.execute(f"DELETE FROM {table}")
        db.commit()
    sent = batch_server.lines_submitted
    shard = run / "shards" / "000"
    ray = aio.run(
        Pipeline(cfg, load_taxonomy(), shard, 10, cache_fallback=run / "glan.sqlite").run()
    ).manifest
    assert batch_server.lines_submitted == sent
    assert (shard / "instructions.jsonl").read_bytes() == (run / "instructions.jsonl").read_bytes()
    counted = ("requests", "cached", "prompt_tokens", "completion_tokens")
    assert [[{k: r[k] for k in counted} for r in m.values()] for m in ray["usage"].values()] == [
        [{k: r[k] for k in counted} for r in m.values()] for m in local["usage"].values()
    ]
    assert ray["cost_usd"] == pytest.approx(local["cost_usd"]) and local["cost_usd"] > 0


# ---- crashes, cancels and `glan batches` ---------------------------------------------------
@pytest.mark.slow
def test_kill9_once_the_first_batch_is_live_then_the_same_command(batch_server, tmp_path):
    args = generate_command(batch_server, tmp_path, 200)
    start_and_kill_once_a_batch_is_live(batch_server, args)
    batch_server.hold = False
    done = glan(*args)
    assert done.returncode == 0, done.stderr
    assert_valid_records(tmp_path / "run", 200)
    assert batch_server.paid_twice == 0
    assert batch_server.seen_twice == []  # no custom_id submitted twice


@pytest.mark.slow
def test_cancel_then_resume(batch_server, tmp_path):
    args = generate_command(batch_server, tmp_path, 60)
    start_and_kill_once_a_batch_is_live(batch_server, args)
    cancelled = glan("batches", str(tmp_path / "run"), "--cancel")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelling (live)" in cancelled.stdout and "openai-batch" in cancelled.stdout
    first = next(iter(batch_server.batches.values()))
    assert first.cancelled
    batch_server.hold = False
    done = glan(*args)
    assert done.returncode == 0, done.stderr
    assert_valid_records(tmp_path / "run", 60)
    assert first.status == "cancelled" and 0 < first.completed < len(first.lines)
    assert batch_server.paid_twice == 0  # the cancelled batch's replies were kept
    listing = glan("batches", str(tmp_path / "run"))
    assert listing.returncode == 0 and "cancelled" in listing.stdout
    assert "(live)" not in listing.stdout


def test_batches_on_a_directory_without_a_run_is_one_clear_line(tmp_path):
    proc = glan("batches", str(tmp_path))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_progress_line_says_one_request_not_one_requests():
    progress = RunProgress(target=8)
    progress.stages["questions"].done = 1
    assert " 1 request (" in progress_line(progress)
    progress.stages["answers"].done = 1
    assert " 2 requests (" in progress_line(progress)
