"""Faults, endpoints that never recover, crashes and secrets: nothing is lost or leaked."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from glan.api import generate, plan
from glan.config import GenerateConfig
from glan.errors import UserError
from glan.llm import AdmissionSettings, ChatRequest, EndpointDown, user
from glan.testing.cli import glan
from glan.testing.fake_server import FakeServer, default_replier
from glan.testing.runs import physics_taxonomy, staged_pairs

FAULTS = {
    "500": 0.05,
    "503": 0.05,
    "429": 0.02,
    "429_retry_after": 0.02,
    "malformed": 0.025,
    "schema_invalid": 0.025,
    "timeout": 0.02,
    "reset": 0.02,
    "length": 0.02,
    "empty": 0.02,
}


def config_for(server: FakeServer, **kw) -> GenerateConfig:
    base = {
        "llm": {
            "backend": "openai",
            "base_url": server.base_url,
            "model": "fake-model",
            "timeout_s": 0.5,
        },
        "concurrency": 16,
        "max_retries": 10,
    }
    return GenerateConfig.model_validate({**base, **kw})


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def answer_of(question: str) -> str:
    return "answer-to:" + hashlib.sha256(question.encode()).hexdigest()[:12]


def answer_by_question(body):
    if body.get("response_format") or "JSON schema" in body["messages"][-1]["content"]:
        return default_replier(body)
    return answer_of(body["messages"][0]["content"])


def test_faults_at_realistic_rates_still_give_exactly_n_correct_pairs(fake_server, tmp_path):
    fake_server.replier = answer_by_question
    fake_server.fault_rates = FAULTS
    fake_server.timeout_sleep_s = 1.0
    result = generate(tmp_path / "run", 150, config_for(fake_server))
    records = read_jsonl(tmp_path / "run" / "instructions.jsonl")
    assert result.instructions == len(records) == 150
    for r in records:
        question, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        expected = answer_of(question)
        if r["meta"]["answer_finish_reason"] == "length":
            assert answer and expected.startswith(answer)  # cut short, but this question's
        else:
            assert answer == expected
    manifest = result.manifest
    injected = sum(v for k, v in fake_server.by_status.items() if k != "200")
    assert manifest["retries"] > 0 and manifest["rate_limited"] > 0
    assert (
        manifest["retries"] + manifest["rate_limited"] <= injected
    )  # bounded by what was injected
    for stage, count in manifest["failures"].items():  # rare exhausted items are accounted for
        assert count == 0 or manifest["failure_examples"][stage]


@pytest.mark.parametrize("fault", ["500", "429", "refused"])
def test_endpoint_that_never_recovers_stops_and_resumes(tmp_path, fault):
    """The breaker opens (the run stops instead of retrying for ever); everything finished is
    kept, and the same command resumes once the endpoint is back. How long the stop takes
    after the breaker window: bench/failure_costs.py."""
    server = FakeServer(latency_s=0.05).start()
    cfg = config_for(server, breaker_failures=5, breaker_window_s=1.0, max_retries=3)
    broken = threading.Event()
    at_break = 0

    def break_mid_run() -> None:
        """At the first request after 20 pairs are staged: the run is under way, not done."""
        nonlocal at_break
        if broken.is_set() or staged_pairs(tmp_path / "run") < 20:
            return
        broken.set()
        at_break = server.requests
        if fault == "refused":  # connections are refused from now on
            threading.Thread(target=server.stop).start()  # not from the server's own thread
        else:
            server.fault_rates = {fault: 1.0}

    server.on_request = break_mid_run
    with pytest.raises(EndpointDown, match=r"re-run the same command|never answered"):
        generate(tmp_path / "run", 200, cfg)
    assert broken.is_set()
    # Stopped within about breaker_window_s of the break: 16 slots at 50 ms a reply cannot
    # send 1,000 requests in that time, however fast the machine (about 130 measured).
    assert server.requests - at_break < 1000
    manifest = orjson.loads((tmp_path / "run" / "manifest.json").read_bytes())
    assert manifest["status"] == "stopped"
    finished = {r["id"] for r in read_jsonl(tmp_path / "run" / "instructions.jsonl")}
    assert 20 <= len(finished) < 200  # what was done before the endpoint broke is published
    # Resuming while the endpoint is still down must not damage what is published.
    with pytest.raises(UserError):  # EndpointDown, or "cannot reach" when refused at start
        generate(tmp_path / "run", 200, cfg)
    assert {r["id"] for r in read_jsonl(tmp_path / "run" / "instructions.jsonl")} == finished
    if fault == "refused":
        server = FakeServer(latency_s=0.05, port=server.port).start()
    else:
        server.on_request = None
        server.fault_rates = {}
        # Requests in flight when the run stopped are still in the server's handlers; once the
        # endpoint recovers it answers them into the void. Let them drain before counting.
        server.wait_idle()
        server.answered.clear()
    try:
        result = generate(tmp_path / "run", 200, cfg)
        assert result.instructions == 200
        dupes = {k: n for k, n in server.answered.items() if n > 1}
        assert not dupes, (dupes, server.by_status)  # nothing answered was asked again
        assert finished <= {r["id"] for r in read_jsonl(tmp_path / "run" / "instructions.jsonl")}
    finally:
        server.stop()


def test_secrets_never_reach_files_or_messages(tmp_path):
    marker = "sk-glan-SECRET-MARKER-5f1e"
    env = {**os.environ, "MY_KEY": marker}

    def run(server: FakeServer, out: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "glan",
                "generate",
                "--out",
                str(out),
                "-n",
                "10",
                "--backend",
                "openai",
                "--base-url",
                server.base_url,
                "--model",
                "m",
                "--api-key-env",
                "MY_KEY",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    with FakeServer(api_key=marker) as server:
        ok = run(server, tmp_path / "run")
        assert ok.returncode == 0, ok.stderr
        server.api_key = "something-else"  # now the key is refused: the error must not echo it
        bad = run(server, tmp_path / "o2")
        assert bad.returncode == 2
    for proc in (ok, bad):
        assert marker not in proc.stdout and marker not in proc.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path


EXPORTER = """
import sys
from pathlib import Path
import asyncio
from glan.planner import DisciplinePlan, Plan
from glan.run.rundir import RunDir
from glan.taxonomy import DisciplineRef

out = Path(sys.argv[1])
d = DisciplineRef(field="F", subfield="S", name="D")
plan = Plan(target=200_000, disciplines=[
    DisciplinePlan(index=0, discipline=d, quota=200_000, subjects=1, subject_samples=1)])
run_dir = RunDir(out)
state = run_dir.state()
async def fill():
    for i in range(200_000):
        state.put_pair(d.path, 0, i, {"i": i, "text": "x" * 200})
    state.flush()
if len(sys.argv) > 2:
    asyncio.run(fill())
else:
    print("ready", flush=True)
    while True:
        run_dir.publish(plan, {d.path: state})
"""


def test_kill_9_while_files_are_written_never_leaves_a_truncated_file(tmp_path):
    script = tmp_path / "exporter.py"
    script.write_text(EXPORTER)
    subprocess.run([sys.executable, str(script), str(tmp_path), "fill"], check=True, timeout=120)
    published = tmp_path / "instructions.jsonl"
    caught_writing = 0
    for _ in range(5):
        for stale in tmp_path.glob(".instructions.jsonl.*.tmp"):  # left by the last kill
            stale.unlink()
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        # Kill while a new copy is half written beside a published one: the moment a
        # non-atomic writer would leave a truncated file.
        deadline = time.monotonic() + 120
        while not (published.exists() and writing(tmp_path)):
            assert proc.poll() is None and time.monotonic() < deadline, "never caught writing"
            time.sleep(0.005)  # polling for the condition, not waiting on luck
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        caught_writing += writing(tmp_path)  # its half-written copy is left behind
        lines = published.read_bytes().splitlines()
        assert len(lines) == 200_000
        orjson.loads(lines[-1])
    assert caught_writing  # at least one kill landed in the middle of a write


def writing(run_dir: Path) -> bool:
    """Whether a new instructions.jsonl is being written (its temp file holds some bytes)."""
    for tmp in run_dir.glob(".instructions.jsonl.*.tmp"):
        try:
            if tmp.stat().st_size > 0:
                return True
        except FileNotFoundError:  # renamed into place meanwhile
            pass
    return False


async def test_a_stop_while_the_clients_close_still_publishes(tmp_path, fake_server, monkeypatch):
    """SIGTERM or Ctrl-C cancels the run's task; landing while a finished run closes its
    clients (a session's or an engine's shutdown takes a moment), it must not skip publishing."""
    import asyncio

    from glan.llm.openai_http import OpenAIBackend
    from glan.pipeline import Pipeline
    from glan.testing.runs import config_for as runs_config
    from glan.testing.runs import physics_taxonomy

    closing = asyncio.Event()
    original = OpenAIBackend.aclose

    async def slow_close(self):
        closing.set()
        try:
            await asyncio.sleep(30)
        finally:
            await original(self)

    monkeypatch.setattr(OpenAIBackend, "aclose", slow_close)
    pipeline = Pipeline(runs_config(fake_server), physics_taxonomy("Optics"), tmp_path / "run", 10)
    task = asyncio.ensure_future(pipeline.run())
    await closing.wait()  # every pair is staged; the run is closing its clients
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(read_jsonl(tmp_path / "run" / "instructions.jsonl")) == 10
    # Every pair was made before the stop: the manifest says so.
    assert orjson.loads((tmp_path / "run" / "manifest.json").read_bytes())["status"] == "complete"


def every_schema_after_ten_replies():
    """The structured-output engine breaks mid-run: only the probes (no schema) are served."""
    served = 0

    def breaks(body) -> str | None:
        nonlocal served
        if not body.get("response_format"):
            return None
        served += 1
        return "500" if served > 10 else None

    return breaks


def the_question_schema():
    """One stage's schema breaks the engine (a keyword of it, say) from the start: every
    other stage, and the probes, are served."""

    def breaks(body) -> str | None:
        fmt = body.get("response_format") or {}
        return "500" if fmt.get("json_schema", {}).get("name") == "question" else None

    return breaks


@pytest.mark.parametrize("breaking", [every_schema_after_ten_replies, the_question_schema])
def test_an_endpoint_whose_structured_output_breaks_changes_no_record(tmp_path, breaking):
    """The server's structured-output engine fails every request of a schema with HTTP 500.
    Judged by repetition alone, every request of it would be a body that breaks the server,
    given up and replaced. Instead the run stops with one line naming the error, nothing is
    replaced, and once the endpoint serves again the same command gives the records of an
    undisturbed run."""
    with FakeServer() as server:
        generate(tmp_path / "undisturbed", 20, config_for(server, concurrency=8))
    with FakeServer(fault_when=breaking()) as server:
        cfg = config_for(server, concurrency=8)
        with pytest.raises(EndpointDown, match="whatever their text"):
            generate(tmp_path / "run", 20, cfg)
        server.fault_when = None
        assert generate(tmp_path / "run", 20, cfg).manifest["status"] == "complete"
    published = (tmp_path / "run" / "instructions.jsonl").read_bytes()
    assert published == (tmp_path / "undisturbed" / "instructions.jsonl").read_bytes()


@pytest.mark.parametrize(("n", "listings"), [(40, 2), (80, 4)])
def test_a_run_whose_first_requests_all_break_the_server_completes(tmp_path, n, listings):
    """Optics's planned listings break the server, and they are the run's first requests:
    nothing is served between their tries, so the client probes the endpoint to show that it
    works, and checks that it serves requests of their shape. Each listing is given up for
    its own sake after K tries and an extra listing takes their place: the run completes,
    instead of ending short or stopping as if the endpoint failed every listing."""
    taxonomy = physics_taxonomy("Optics")
    with FakeServer() as server:
        cfg = config_for(server, max_retries=2, plan={"subjects_per_call": 4})
        planned = plan(n, cfg, taxonomy).disciplines[0].subject_samples
        assert planned == listings
        seeds = {
            ChatRequest(messages=user(""), seed=cfg.seed, sample_index=i).effective_seed
            for i in range(planned)
        }

        def planned_listing_breaks(body) -> str | None:
            fmt = body.get("response_format") or {}
            listing = fmt.get("json_schema", {}).get("name") == "subjects"
            return "500" if listing and body["seed"] in seeds else None

        server.fault_when = planned_listing_breaks
        result = generate(tmp_path / "run", n, cfg, taxonomy)
    assert result.manifest["status"] == "complete" and result.instructions == n
    assert result.manifest["failures"]["subjects"] == planned  # given up, never deferred
    k = AdmissionSettings().body_fault_repeats
    assert k * planned <= server.by_status["500"] <= (k + 1) * planned


def prompt_chars(body: dict) -> int:
    return sum(len(message["content"]) for message in body["messages"])


def test_an_endpoint_that_fails_the_longest_prompts_leaves_the_run_short(tmp_path):
    """The endpoint answers 500 to any prompt over a size (a context or memory limit it
    reports as a server error) and serves everything else: here the run's longest question
    prompt. That body is neither given up (its record would change for a limit that may
    pass) nor a reason to stop (every re-run would stop there and never finish): it is
    deferred, everything else is made, and the run ends short saying why. Once the endpoint
    serves it, the same command completes with the records of an undisturbed run."""
    with FakeServer() as server:
        server.record_bodies = True
        generate(
            tmp_path / "undisturbed",
            20,
            GenerateConfig.model_validate(
                {"llm": {"backend": "openai", "base_url": server.base_url, "model": "fake-model"}}
            ),
        )
        limit = max(map(prompt_chars, server.seen_bodies)) - 1
        too_long = sum(prompt_chars(body) > limit for body in server.seen_bodies)
    args = ["generate", "--out", str(tmp_path / "run"), "-n", "20", "--backend", "openai"]
    with FakeServer(
        fault_when=lambda body: "500" if prompt_chars(body) > limit else None
    ) as server:
        args += ["--base-url", server.base_url, "--model", "fake-model"]
        short = glan(*args)
        assert short.returncode == 1, short.stderr
        assert (
            f"{too_long} request deferred: the endpoint fails requests that large" in short.stderr
        )
        assert "with 'HTTP 500: " in short.stderr
        manifest = orjson.loads((tmp_path / "run" / "manifest.json").read_bytes())
        assert manifest["status"] == "short" and manifest["missing"] == too_long
        assert manifest["deferred_units"] == too_long  # deferred, never given up
        assert all("this large" in why for why in manifest["failure_examples"]["questions"])
        server.fault_when = None
        assert glan(*args).returncode == 0
    published = (tmp_path / "run" / "instructions.jsonl").read_bytes()
    assert published == (tmp_path / "undisturbed" / "instructions.jsonl").read_bytes()
