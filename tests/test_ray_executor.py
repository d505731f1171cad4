"""The Ray executor: one run on many workers, one admission per endpoint, the same records as a
local run (killed workers and transient failures included), and the leased admission's rules."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from conftest import require
from glan.api import generate
from glan.cli import app as cli
from glan.config import GenerateConfig
from glan.errors import UserError
from glan.executors import execute
from glan.executors.layout import shard_layout
from glan.executors.lease import LeasedAdmission, PermitAuthority
from glan.executors.ray.worker import PROBE_FILE, ShardWorker
from glan.llm import AdmissionSettings, EndpointDown
from glan.pipeline import Pipeline
from glan.planner import make_plan
from glan.taxonomy import load_taxonomy
from glan.testing.fake_batch import FakeBatchServer
from glan.testing.fake_server import FakeServer
from glan.testing.runs import batch_config_for, config_for

OUTPUTS = ("instructions.jsonl", "syllabi.jsonl", "subjects.jsonl")


def on_ray(cfg: GenerateConfig, workers: int = 3, **kw) -> GenerateConfig:
    executor = {"kind": "ray", "workers": workers, "worker_cpus": 0.5, **kw}
    return cfg.model_copy(update={"executor": cfg.executor.model_validate(executor)})


def manifest(run: Path) -> dict:
    return orjson.loads((run / "manifest.json").read_bytes())


def assert_same_records(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert manifest(a)["counts"] == manifest(b)["counts"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = require("ray", "glan[ray]; the test extra installs it: scripts/test")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def local_reference(tmp_path_factory, fake: type, make_config, n: int) -> Path:
    """A run made by the local executor against a fault-free fake server: what Ray must make."""
    out = tmp_path_factory.mktemp("local") / "run"
    with fake() as server:
        assert generate(out, n, make_config(server)).instructions == n
    return out


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The reference: N=200 made by the local executor against a fault-free server."""
    return local_reference(tmp_path_factory, FakeServer, config_for, 200)


# ---- on a local Ray cluster --------------------------------------------------------------------
@pytest.mark.slow
def test_three_workers_make_the_local_runs_records_with_c_in_flight_at_most(
    ray_cluster, local_run, tmp_path
):
    with FakeServer(latency_s=0.01) as server:
        result = generate(tmp_path / "run", 200, on_ray(config_for(server, concurrency=8)))
    assert_same_records(tmp_path / "run", local_run)
    # --concurrency is the cluster's: three workers never had more than 8 at the endpoint.
    assert 1 < server.max_in_flight <= 8
    m = result.manifest
    assert m["status"] == "complete" and m["executor"] == "ray" and m["workers"] == 3
    # The manifest's figure is the permits leased to the workers at once, which bound the
    # requests they can have at the endpoint: never fewer than those, never more than C.
    assert server.max_in_flight <= m["leased_permits_high_water"] <= 8
    assert "in_flight_high_water" not in m  # requests are counted at the endpoint, not here
    assert len({s["worker"] for s in m["shards"]}) == 3
    assert sum(s["made"] for s in m["shards"]) == 200


def spent(usage: dict, *fields: str) -> int:
    """A usage table's figures summed over stages and models."""
    return sum(r[f] for models in usage.values() for r in models.values() for f in fields)


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_replaced_its_spend_kept_and_the_records_the_same(
    ray_cluster, local_run, tmp_path
):
    killed: list[int] = []

    def kill_one_that_spent(snapshot: dict) -> None:
        for worker in snapshot["workers"].values():
            paid = sum(spent(shard["usage"], "requests") for shard in worker["shards"].values())
            if not killed and paid >= 20:
                killed.append(worker["pid"])
                os.kill(worker["pid"], signal.SIGKILL)

    with FakeServer(latency_s=0.05) as server:
        cfg = on_ray(config_for(server, concurrency=4))
        result = execute(cfg, load_taxonomy(), tmp_path / "run", 200, on_poll=kill_one_that_spent)
    assert killed, "no worker had spent 20 requests at a poll"
    assert max(s["attempts"] for s in result.manifest["shards"]) >= 2
    assert result.manifest["status"] == "complete"
    assert_same_records(tmp_path / "run", local_run)
    # What the dead worker had asked and not staged is asked again: at most its permits.
    local_usage = manifest(local_run)["usage"]
    assert server.requests <= spent(local_usage, "requests") + 2 * 4
    # What it spent before it died is in the totals: every request the endpoint answered but
    # those in flight at the kill (4 at most) and the last few milliseconds' replies.
    usage = result.manifest["usage"]
    assert server.requests - 2 * 4 <= spent(usage, "requests", "reasks") <= server.requests
    assert usage == result.manifest["usage_this_invocation"]
    tokens = ("prompt_tokens", "completion_tokens")
    assert spent(usage, *tokens) >= spent(local_usage, *tokens)


@pytest.mark.slow
def test_transient_failures_then_a_resume_give_the_local_runs_records(
    ray_cluster, local_run, tmp_path
):
    # 503s and timeouts carry no error signature: units give up after their retries, are
    # deferred (the run ends short), and the same command makes them.
    with FakeServer(fault_rates={"503": 0.25, "timeout": 0.05}, timeout_sleep_s=0.05) as server:
        cfg = on_ray(config_for(server, max_retries=1, breaker_failures=50))
        first = generate(tmp_path / "run", 200, cfg)
        assert first.manifest["status"] == "short" and first.manifest["deferred_units"] > 0
        server.fault_rates = {}
        second = generate(tmp_path / "run", 200, cfg)
    assert second.manifest["status"] == "complete"
    assert_same_records(tmp_path / "run", local_run)


# ---- one run directory, either executor ------------------------------------------------------
@pytest.mark.slow
def test_a_ray_runs_manifest_says_what_its_models_refused_once(ray_cluster, tmp_path):
    """Each worker's shards learn what the model refuses; the driver's manifest lists each
    change once per worker that learnt it, as a local run's lists it once."""
    with FakeServer(reasoning_model=True) as server:
        result = generate(tmp_path / "run", 20, on_ray(config_for(server)))
    m = result.manifest
    assert m["status"] == "complete"
    names = [c["name"] for c in m["parameter_changes"]]
    assert set(names) == {"max_tokens", "top_p", "temperature"}
    assert len(names) <= 3 * m["workers"]  # the shards of a worker share its backends


@pytest.mark.slow
def test_switching_executors_asks_nothing_again_either_way(ray_cluster, tmp_path):
    run = tmp_path / "run"
    with FakeServer() as server:
        first = generate(run, 100, config_for(server))
        made = {name: (run / name).read_bytes() for name in OUTPUTS}
        # As if it had been killed with replies back and not yet staged: the replies are in its
        # cache, the pairs not in its state.
        with contextlib.closing(sqlite3.connect(run / "glan.sqlite")) as db:
            db.execute("DELETE FROM st_pairs")
            db.commit()
        asked = server.requests
        sharded = generate(run, 100, on_ray(config_for(server)))
        assert server.requests == asked  # local -> ray: the replies are found where they are
        assert {name: (run / name).read_bytes() for name in OUTPUTS} == made
        assert spent(sharded.manifest["usage_this_invocation"], "cached") > 0
        back = generate(run, 100, config_for(server))
        assert server.requests == asked  # ray -> local
    assert {name: (run / name).read_bytes() for name in OUTPUTS} == made
    assert back.manifest["resumed_pairs"] == 100
    # Nothing spent twice, nothing lost from the totals.
    assert back.manifest["usage"] == sharded.manifest["usage"]
    assert spent(back.manifest["usage"], "requests") == spent(first.manifest["usage"], "requests")


@pytest.fixture(scope="module")
def local_batch_run(tmp_path_factory) -> Path:
    """The reference for batch runs: N=60 made by the local executor through the batch API."""
    return local_reference(tmp_path_factory, FakeBatchServer, batch_config_for, 60)


def live_batches(worker: dict) -> int:
    """Batches a worker's running shards hold live at the provider (its snapshot's)."""
    return sum(
        n
        for shard in worker["shards"].values()
        for n in (shard["batches"] or {"by_status": {}})["by_status"].values()
    )


@pytest.mark.slow
def test_a_batch_run_on_ray_hands_a_dead_workers_live_batches_to_the_next_worker(
    ray_cluster, local_batch_run, tmp_path
):
    killed: list[int] = []
    with FakeBatchServer() as server:
        server.hold = True  # batches stay in progress until a worker holding some is killed

        def kill_one_holding_batches(snapshot: dict) -> None:
            for worker in snapshot["workers"].values():
                if not killed and live_batches(worker):
                    killed.append(worker["pid"])
                    os.kill(worker["pid"], signal.SIGKILL)
                    server.hold = False

        cfg = on_ray(batch_config_for(server), workers=2)
        result = execute(
            cfg, load_taxonomy(), tmp_path / "run", 60, on_poll=kill_one_holding_batches
        )
        listing = CliRunner().invoke(
            cli, ["batches", str(tmp_path / "run")], env={"COLUMNS": "200"}
        )
    assert killed, "no worker held a live batch at a poll"
    assert max(s["attempts"] for s in result.manifest["shards"]) >= 2
    assert_same_records(tmp_path / "run", local_batch_run)
    # The next worker re-attached to the dead one's batches: no line was sent twice.
    assert server.paid_twice == 0 and server.seen_twice == []
    assert listing.exit_code == 0, listing.output
    listed = [line.split() for line in listing.output.splitlines() if "openai-batch" in line]
    assert sorted(row[2] for row in listed) == sorted(server.batches)
    assert {row[0] for row in listed} == {f"{s['shard']:03d}" for s in result.manifest["shards"]}


class Stopped(Exception):
    """The driver stopped from its poll (as Ctrl-C would stop it)."""


@pytest.mark.slow
def test_a_ray_batch_run_stopped_with_live_batches_is_finished_locally_paying_nothing_twice(
    ray_cluster, local_batch_run, tmp_path
):
    with FakeBatchServer() as server:
        server.hold = True

        def stop_once_batches_are_live(snapshot: dict) -> None:
            if any(live_batches(w) for w in snapshot["workers"].values()):
                raise Stopped

        cfg = batch_config_for(server)
        with pytest.raises(Stopped):
            execute(on_ray(cfg, workers=2), load_taxonomy(), tmp_path / "run", 60,
                    on_poll=stop_once_batches_are_live)  # fmt: skip
        assert server.live_batches()
        server.hold = False
        generate(tmp_path / "run", 60, cfg)  # the same command, --executor local
    assert_same_records(tmp_path / "run", local_batch_run)
    assert server.paid_twice == 0 and server.seen_twice == []


async def test_ray_refuses_to_take_over_batches_a_local_run_left_live(batch_server, tmp_path):
    require("ray", "glan[ray]; the test extra installs it: scripts/test")
    batch_server.hold = True
    cfg = batch_config_for(batch_server)
    local = asyncio.create_task(Pipeline(cfg, load_taxonomy(), tmp_path / "run", 30).run())
    while not batch_server.live_batches():
        await asyncio.sleep(0.01)
    local.cancel()  # stopped while its first batch is out there
    with contextlib.suppress(asyncio.CancelledError):
        await local
    with pytest.raises(
        UserError, match="live batches a local run sent: re-run with --executor local"
    ):
        execute(on_ray(cfg), load_taxonomy(), tmp_path / "run", 30)
    assert not (tmp_path / "run" / "shards").exists()


# ---- without Ray -------------------------------------------------------------------------------
def test_ray_missing_is_one_line(monkeypatch, tmp_path, fake_server):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    with pytest.raises(UserError, match=r"pip install 'glan\[ray\]'"):
        execute(on_ray(config_for(fake_server)), load_taxonomy(), tmp_path / "run", 10)


def test_shards_are_balanced_by_quota_and_kept_across_reruns(tmp_path):
    tax = load_taxonomy()
    plan = make_plan(3000, tax.disciplines(), GenerateConfig())
    shards = shard_layout(tmp_path, plan, workers=3, per_worker=8)
    quota = {d.discipline.path: d.quota for d in plan.disciplines}
    loads = [sum(quota[p] for p in paths) for paths in shards.values()]
    assert len(shards) == 24
    assert max(loads) - min(loads) <= max(quota.values())
    # A re-run with other workers and a larger -n keeps every discipline where its state is.
    bigger = make_plan(4000, tax.disciplines(), GenerateConfig())
    again = shard_layout(tmp_path, bigger, workers=5, per_worker=8)
    where = {p: n for n, paths in shards.items() for p in paths}
    assert all(where[p] == n for n, paths in again.items() for p in paths if p in where)
    assert sorted(p for paths in again.values() for p in paths) == sorted(
        d.discipline.path for d in bigger.disciplines
    )


def test_a_worker_that_cannot_see_the_run_directory_says_why(tmp_path):
    worker = ShardWorker("w0", {})
    assert "No such file" in (worker.probe(str(tmp_path / "elsewhere"), "t0k") or "")
    (tmp_path / PROBE_FILE).write_text("another")
    assert "another run's token" in (worker.probe(str(tmp_path), "t0k") or "")
    (tmp_path / PROBE_FILE).write_text("t0k")
    assert worker.probe(str(tmp_path), "t0k") is None


# ---- the leased admission ----------------------------------------------------------------------
def settings(**kw) -> AdmissionSettings:
    return AdmissionSettings(**{"concurrency": 8, "breaker_failures": 4, **kw})


def report(**kw) -> dict:
    return {"granted": 0, "in_flight": 0, "demand": 0, **kw}


def test_grants_follow_demand_and_never_exceed_the_limit_together():
    book = PermitAuthority(settings())
    assert book.sync("a", report(demand=100))["grant"] == 8  # alone: the whole limit
    assert book.sync("b", report(demand=100))["grant"] == 0  # a holds it all for now
    # a reports: it may keep its fair half; b then gets the other half.
    assert book.sync("a", report(granted=8, in_flight=8, demand=100))["grant"] == 4
    assert book.sync("a", report(granted=4, in_flight=4, demand=100))["grant"] == 4
    assert book.sync("b", report(demand=100))["grant"] == 4
    assert book.high_water <= 8


def test_a_rate_limit_seen_by_one_worker_pauses_and_halves_for_all_once_per_cascade():
    book = PermitAuthority(settings())
    book.sync("a", report(demand=4))
    epoch = book.sync("b", report(demand=4))["epoch"]
    cascade = [(epoch, 2.0, "429", "e"), (epoch, 2.0, "429", "e")]
    book.sync("a", report(granted=4, in_flight=4, demand=4, rate_limited=cascade))
    reply = book.sync("b", report(granted=4, in_flight=4, demand=4))
    assert book.limit == 4 and reply["epoch"] == epoch + 1  # one cut for the cascade
    assert reply["pause_s"] > 1.0  # b pauses too, though it saw no 429
    assert reply["grant"] <= 2


def test_the_breaker_is_the_clusters():
    book = PermitAuthority(settings())
    book.sync("a", report(failures=2, last_error="503", endpoint="e"))
    reply = book.sync("b", report(failures=2, last_error="503", endpoint="e"))
    assert reply["down"] and "never answered" in reply["down"]


def test_a_dead_workers_lease_lapses(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("glan.executors.lease.time.monotonic", lambda: now[0])
    book = PermitAuthority(settings(), ttl_s=10)
    assert book.sync("dead", report(demand=100))["grant"] == 8
    assert book.sync("b", report(demand=100))["grant"] == 0
    now[0] += 11  # "dead" never synced again
    assert book.sync("b", report(demand=100))["grant"] == 8


def leased(book: PermitAuthority, name: str) -> LeasedAdmission:
    async def sync(r: dict) -> dict:
        await asyncio.sleep(0)  # a remote call: the authority answers on a later turn
        return book.sync(name, r)

    return LeasedAdmission(book.settings, sync)


async def test_workers_sharing_an_authority_never_exceed_its_limit_together():
    book = PermitAuthority(settings(concurrency=6))
    workers = [leased(book, "a"), leased(book, "b"), leased(book, "c")]
    in_flight = high = 0

    async def request(admission: LeasedAdmission) -> None:
        nonlocal in_flight, high
        await admission.acquire()
        in_flight += 1
        high = max(high, in_flight)
        await asyncio.sleep(0.002)  # the endpoint's latency
        in_flight -= 1
        admission.release()
        admission.on_success()

    await asyncio.gather(*(request(w) for _ in range(60) for w in workers))
    assert 1 < high <= 6


async def test_failures_at_two_workers_open_the_breaker_at_a_third():
    book = PermitAuthority(settings())
    workers = [leased(book, name) for name in "abc"]
    for w in workers:
        await w.acquire()
        w.release()
    for w in workers[:2]:
        for _ in range(2):  # two each: neither worker's own streak reaches 4
            w.on_failure("HTTP 503", "e")

    async def until_down() -> None:
        while True:
            try:
                workers[2].check("e")
            except EndpointDown:
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(until_down(), 5)


@pytest.mark.slow
def test_killing_the_driver_and_rerunning_the_same_command_resumes(
    ray_cluster, local_run, tmp_path
):
    address = ray_cluster.get_runtime_context().gcs_address
    out = tmp_path / "run"
    with FakeServer(latency_s=0.05) as server:
        command = [
            sys.executable, "-m", "glan", "generate", "--out", str(out), "-n", "200",
            "--backend", "openai", "--base-url", server.base_url, "--model", "fake-model",
            "--concurrency", "4", "--executor", "ray", "--ray-address", address,
            "--workers", "2", "--set", "executor.worker_cpus=0.5",
        ]  # fmt: skip
        driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Kill -9 once a shard has finished (its manifest is written) and others are still going.
        while not list(out.glob("shards/*/manifest.json")) and driver.poll() is None:
            time.sleep(0.05)
        driver.kill()
        driver.wait()
        assert not (out / "manifest.json").exists()  # it died before publishing
        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "200/200 pairs" in again.stdout
    assert manifest(out)["resumed_pairs"] > 0
    assert_same_records(out, local_run)


@pytest.mark.slow
def test_an_endpoint_that_fails_everything_stops_the_cluster_with_one_line(ray_cluster, tmp_path):
    with FakeServer(fault_rates={"500": 1.0}) as server:
        cfg = on_ray(config_for(server, max_retries=1, breaker_failures=5))
        with pytest.raises(EndpointDown) as stopped:
            generate(tmp_path / "run", 200, cfg)
    assert "failed" in str(stopped.value) and "\n" not in str(stopped.value)
    assert manifest(tmp_path / "run")["status"] == "stopped"


def test_the_executor_is_set_in_the_yaml_config_and_a_wrong_one_is_one_line(tmp_path):
    from glan.config import load_config

    path = tmp_path / "glan.yaml"
    path.write_text("executor:\n  kind: ray\n  workers: 3\n")
    assert load_config(path).executor.workers == 3
    path.write_text("executor:\n  kind: spark\n")
    with pytest.raises(UserError, match=r"executor\.kind"):
        load_config(path)


def test_dry_run_is_the_same_on_ray(fake_server, tmp_path):
    def dry(*extra: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "glan", "generate", "--out", str(tmp_path / "o"), "-n", "500",
             "--dry-run", "--backend", "openai", "--base-url", fake_server.base_url,
             "--model", "fake-model", *extra],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert dry("--executor", "ray", "--workers", "4") == dry()
    assert fake_server.requests == 0 and not (tmp_path / "o").exists()


def test_the_drivers_display_sums_the_shards_and_names_the_workers_alive():
    from glan.cli.progress import progress_line
    from glan.executors.ray.display import ClusterProgress
    from glan.tree.progress import RunProgress

    def shard(pairs: int, answers: int, live: int = 0) -> dict:
        stages = {s: [10, 0, 0] for s in ("subjects", "syllabus", "questions")}
        usage = {"answers": {"m": {"prompt_tokens": 5, "completion_tokens": 5, "cost_usd": 0.5}}}
        batches = {"by_status": {"in_progress": live} if live else {}, "lines_done": answers,
                   "lines_pending": 0, "oldest_s": 60.0 * live}  # fmt: skip
        return {
            "stages": {**stages, "answers": [50, answers, 1]},
            "pairs": pairs,
            "resumed": 0,
            "target": 50,
            "usage": usage,
            "batches": batches,
        }

    progress = RunProgress()
    display = ClusterProgress(progress)
    display.start(make_plan(100, load_taxonomy().disciplines(), GenerateConfig()), False)
    display.workers = 3
    display.shard_done({"shard": 0, "progress": shard(20, 20)})
    running = {"pid": 1, "shards": {1: shard(7, 9, live=2)}, "rate_limited": 0, "retries": 0}
    display.update({0: running, 1: {**running, "shards": {}}}, [{"rate_limited": 4, "limit": 8}])
    assert progress.pairs() == 27 and progress.stages["answers"].done == 29
    line = progress_line(progress)
    assert "27/100 pairs" in line and "workers 2/3 alive" in line and "429s 4" in line
    # Shards that send batches: their batches summed, the finished shards' lines included.
    assert "batches: 2 in_progress; 29 lines done" in line and "oldest 2 min" in line


def test_the_shards_requests_too_large_for_their_endpoint_reach_the_runs_manifest():
    from glan.executors.ray.driver import _too_large

    row = {"endpoint": "openai|u|m", "error": "HTTP 500: input too long"}
    shards = [
        {"deferred_too_large": [{**row, "requests": 2}]},
        {"deferred_too_large": []},
        {"deferred_too_large": [{**row, "requests": 1}, {**row, "error": "x", "requests": 4}]},
    ]
    assert _too_large(shards) == [{**row, "requests": 3}, {**row, "error": "x", "requests": 4}]
