"""The CLI: bad input gets one clear line and exit 2; kill -9 and re-run loses nothing."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glan.testing.cli import assert_one_clear_line, glan
from glan.testing.fake_server import FakeServer
from glan.testing.runs import staged_pairs


def openai_args(server: FakeServer) -> list[str]:
    return ["--backend", "openai", "--base-url", server.base_url, "--model", "fake-model"]


def test_non_positive_n(tmp_path):
    assert_one_clear_line(glan("generate", "--out", str(tmp_path / "o"), "-n", "0"), "-n")


def test_missing_taxonomy_file(tmp_path):
    proc = glan("generate", "--out", str(tmp_path / "o"), "-n", "5", "--taxonomy", "nope.yaml")
    assert_one_clear_line(proc, "nope.yaml")


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("seed: 1\nllm:\n  backend: [openai\n", ("cfg.yaml:", "malformed YAML")),
        ("seed: 1\ntemprature: 0.5\n", ("unknown key 'temprature'",)),
        ("concurrency: lots\n", ("concurrency",)),
    ],
    ids=["malformed YAML", "unknown key", "wrong type"],
)
def test_bad_config_file(tmp_path, content, needles):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(content)
    proc = glan("generate", "--out", str(tmp_path / "o"), "-n", "5", "--config", str(cfg))
    assert_one_clear_line(proc, *needles)


def test_taxonomy_with_no_kept_discipline(tmp_path):
    tax = tmp_path / "t.yaml"
    tax.write_text(
        "fields:\n- name: F\n  status: remove\n  subfields:\n  - name: S\n    disciplines:\n    - name: D\n"
    )
    proc = glan("generate", "--out", str(tmp_path / "o"), "-n", "5", "--taxonomy", str(tax))
    assert_one_clear_line(proc, "no discipline")


def test_output_path_that_is_a_file(tmp_path, fake_server):
    target = tmp_path / "file"
    target.write_text("keep me")
    proc = glan("generate", "--out", str(target), "-n", "5", *openai_args(fake_server))
    assert_one_clear_line(proc, "is a file")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    ("url", "needle"),
    [("localhost:1234", "invalid base URL"), ("http://127.0.0.1:9/v1", "cannot reach")],
    ids=["invalid", "unreachable"],
)
def test_bad_url(tmp_path, url, needle):
    proc = glan(
        "generate",
        "--out",
        str(tmp_path / "o"),
        "-n",
        "5",
        "--backend",
        "openai",
        "--base-url",
        url,
    )
    assert_one_clear_line(proc, needle)


def test_missing_key_variable(tmp_path, fake_server):
    proc = glan(
        "generate",
        "--out",
        str(tmp_path / "o"),
        "-n",
        "5",
        *openai_args(fake_server),
        "--api-key-env",
        "GLAN_NO_SUCH_VAR",
    )
    assert_one_clear_line(proc, "GLAN_NO_SUCH_VAR")


def test_wrong_key_and_unknown_model(tmp_path, fake_server):
    fake_server.api_key = "right"
    proc = glan(
        "generate",
        "--out",
        str(tmp_path / "o"),
        "-n",
        "5",
        *openai_args(fake_server),
        env={"OPENAI_API_KEY": "wrong"},
    )
    assert_one_clear_line(proc, "refused the API key")
    fake_server.api_key = None
    fake_server.models = ["other"]
    proc = glan("generate", "--out", str(tmp_path / "o2"), "-n", "5", *openai_args(fake_server))
    assert_one_clear_line(proc, "not found")


def test_server_answering_garbage(tmp_path, fake_server):
    fake_server.fault_rates = {"garbage": 1.0}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("breaker_failures: 5\nmax_retries: 2\n")
    proc = glan(
        "generate",
        "--out",
        str(tmp_path / "o"),
        "-n",
        "5",
        "--config",
        str(cfg),
        *openai_args(fake_server),
    )
    assert_one_clear_line(proc, "not an OpenAI chat completion")


def test_different_seed_in_an_existing_run_directory(tmp_path, fake_server):
    out = str(tmp_path / "o")
    assert (
        glan("generate", "--out", out, "-n", "5", *openai_args(fake_server), "-q").returncode == 0
    )
    before = (tmp_path / "o" / "instructions.jsonl").read_bytes()
    proc = glan("generate", "--out", out, "-n", "5", "--seed", "3", *openai_args(fake_server))
    assert_one_clear_line(proc, "seed 0", "--seed 0")
    assert (tmp_path / "o" / "instructions.jsonl").read_bytes() == before


def test_dry_run_spends_nothing(tmp_path, fake_server):
    proc = glan(
        "generate",
        "--out",
        str(tmp_path / "o"),
        "-n",
        "1000",
        "--dry-run",
        *openai_args(fake_server),
        "--set",
        "prices.fake-model.input=2.5",
        "--set",
        "prices.fake-model.output=10",
    )
    assert proc.returncode == 0 and "answers" in proc.stdout and "1,000" in proc.stdout
    assert "no price" not in proc.stdout and "$" in proc.stdout  # priced per stage
    assert fake_server.requests == 0 and not (tmp_path / "o").exists()
    unpriced = glan(
        "generate", "--out", str(tmp_path / "o"), "-n", "10", "--dry-run", *openai_args(fake_server)
    )
    assert "no price for fake-model" in unpriced.stdout


def test_second_run_on_a_directory_in_use_is_refused(tmp_path, fake_server):
    fake_server.latency_s = 600.0  # the first run holds the directory until it is killed
    out = tmp_path / "o"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "glan",
            "generate",
            "--out",
            str(out),
            "-n",
            "40",
            *openai_args(fake_server),
            "-q",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_lock(out / ".glan.lock", first)
        proc = glan("generate", "--out", str(out), "-n", "10", *openai_args(fake_server))
        assert_one_clear_line(proc, "another glan run", f"pid {first.pid}")
        assert first.poll() is None  # refused while the first run was still going
    finally:
        first.kill()
        first.wait()
    # The killed run's lock does not block the next one.
    fake_server.latency_s = 0.0
    resumed = glan("generate", "--out", str(out), "-n", "10", *openai_args(fake_server), "-q")
    assert resumed.returncode == 0, resumed.stderr


def wait_for_lock(lock: Path, holder: subprocess.Popen, timeout_s: float = 120) -> None:
    """Poll until `holder` has taken the run directory's lock (it writes its pid there)."""
    deadline = time.monotonic() + timeout_s
    while not (lock.exists() and lock.read_text().strip() == str(holder.pid)):
        assert holder.poll() is None, holder.stderr.read() if holder.stderr else "it ended"
        assert time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.05)  # polling for the condition, not waiting on luck


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, fake_server):
    fake_server.latency_s = 0.2
    args = ["-n", "60", *openai_args(fake_server), "-q", "--concurrency", "2"]
    assert glan("generate", "--out", str(tmp_path / "clean"), *args).returncode == 0
    clean_requests = fake_server.requests
    fake_server.answered.clear()
    out = str(tmp_path / "crashy")
    rng = random.Random(5)
    kills = 0
    for _ in range(40):
        # Each run is killed once the endpoint has answered it a random 1 to 4 requests: at
        # random points of every stage, whatever the machine's speed.
        answered = fake_server.by_status["200"] + rng.randint(1, 4)
        proc = subprocess.Popen(
            [sys.executable, "-m", "glan", "generate", "--out", out, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while fake_server.by_status["200"] < answered and proc.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)  # polling for the condition, not waiting on luck
        if proc.poll() is not None:
            break  # it finished between two kills
        proc.send_signal(signal.SIGKILL)
        kills += 1
        proc.wait()
    final = glan("generate", "--out", out, *args)
    assert final.returncode == 0, final.stderr
    assert kills >= 10
    for name in ("instructions.jsonl", "subjects.jsonl", "syllabi.jsonl"):
        assert (tmp_path / "crashy" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    # At most the requests in flight at each kill were answered twice.
    repeats = sum(n - 1 for n in fake_server.answered.values() if n > 1)
    assert repeats <= kills * 8
    import sqlite3

    conn = sqlite3.connect(tmp_path / "crashy" / "glan.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert fake_server.requests >= clean_requests


def test_per_stage_settings_from_the_cli(tmp_path, fake_server):
    fake_server.record_bodies = True
    proc = glan(
        "generate",
        "--out",
        str(tmp_path / "o"),
        "-n",
        "5",
        *openai_args(fake_server),
        "-q",
        "--set",
        "stages.answers.model=cheap-model",
        "--set",
        "stages.answers.temperature=0.2",
    )
    assert proc.returncode == 0, proc.stderr
    answers = [b for b in fake_server.seen_bodies if not b.get("response_format")]
    assert answers and all(b["model"] == "cheap-model" and b["temperature"] == 0.2 for b in answers)
    questions = [b for b in fake_server.seen_bodies if b.get("response_format")]
    assert all(b["model"] == "fake-model" for b in questions)


def test_bad_set_value_is_one_clear_line(tmp_path):
    proc = glan(
        "generate", "--out", str(tmp_path / "o"), "-n", "5", "--set", "stages.answers.top_p=7"
    )
    assert_one_clear_line(proc, "--set stages.answers.top_p")


def test_bad_input_leaves_an_existing_run_directory_untouched(tmp_path, fake_server):
    import hashlib

    out = tmp_path / "o"
    assert (
        glan("generate", "--out", str(out), "-n", "5", *openai_args(fake_server), "-q").returncode
        == 0
    )

    def snapshot() -> dict[str, str]:
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.iterdir())
            if p.is_file() and p.name != ".glan.lock" and not p.name.startswith("glan.sqlite")
        }

    before = snapshot()
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("seed: [\n")
    cases = [
        ["-n", "0", *openai_args(fake_server)],
        ["-n", "5", "--config", str(bad_cfg), *openai_args(fake_server)],
        ["-n", "5", "--taxonomy", str(tmp_path / "missing.yaml"), *openai_args(fake_server)],
        ["-n", "5", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"],
        ["-n", "5", "--backend", "openai", "--base-url", "not-a-url"],
        ["-n", "5", *openai_args(fake_server), "--api-key-env", "GLAN_NO_SUCH_VAR"],
        ["-n", "5", *openai_args(fake_server), "--seed", "9"],
    ]
    for args in cases:
        proc = glan("generate", "--out", str(out), *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert snapshot() == before, args


@pytest.mark.parametrize(
    ("where", "needle"),
    [("/proc/glan-out", "cannot create --out /proc/glan-out"), ("afile/run", "Not a directory")],
    ids=["under /proc", "under a file"],
)
def test_output_directory_that_cannot_be_made_or_written(tmp_path, fake_server, where, needle):
    if where.startswith("afile"):
        (tmp_path / "afile").write_text("")
        where = str(tmp_path / where)
    proc = glan("generate", "--out", where, "-n", "5", *openai_args(fake_server))
    assert_one_clear_line(proc, needle)


def test_run_that_fails_before_any_work_leaves_no_directory(tmp_path):
    out = tmp_path / "never"
    proc = glan(
        "generate", "--out", str(out), "-n", "5", "--base-url", "http://127.0.0.1:9/v1", "-q"
    )
    assert_one_clear_line(proc, "cannot reach")
    assert not out.exists()


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, 130, "interrupted:"), (signal.SIGTERM, 143, "terminated:")],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_or_sigterm_stops_publishes_and_says_how_to_resume(
    tmp_path, fake_server, sig, code, word
):
    """SIGTERM is what Kubernetes, Slurm, systemd and Ray send before a hard kill: it stops
    the run as Ctrl-C does, within their grace period, with what is done published."""
    fake_server.latency_s = 0.3
    out = tmp_path / "o"
    args = ["-n", "200", *openai_args(fake_server), "--concurrency", "4", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "glan", "generate", "--out", str(out), *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while staged_pairs(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # polling for the condition, not waiting on luck
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)  # a scheduler's grace period is ~30 s
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert word in stderr and "re-run the same command to resume" in stderr
    published = (out / "instructions.jsonl").read_bytes().splitlines()
    assert len(published) >= 2  # what was done is published, not lost with the process
    # The line says what is kept, paid replies included (the cache answers them on a re-run):
    # "0 pairs kept" after a resume that had paid for a third of the run told nothing of it.
    import orjson

    manifest = orjson.loads((out / "manifest.json").read_bytes())
    replies = sum(r["requests"] for rows in manifest["usage"].values() for r in rows.values())
    assert replies > len(published)
    counts = manifest["counts"]
    assert f"{word} {len(published)}/200 pairs so far in {out} " in stderr
    assert f"({counts['subjects']} subjects, {counts['syllabi']} syllabi; " in stderr
    assert f"{replies} replies received, kept: none is paid for twice)" in stderr
    resumed = glan("generate", "--out", str(out), *args)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["generate", "--out", "o", "-n", "5", "--concurency", "3"],
            ("did you mean --concurrency",),
        ),
        (["generate", "--out", "o", "-n", "abc"], ("'-n'", "integer")),
        (["generate", "--out", "o"], ("Missing option '-n'",)),
        (["frobnicate"], ("No such command 'frobnicate'",)),
    ],
    ids=["flag typo", "non-integer", "missing option", "unknown command"],
)
def test_usage_mistakes_get_one_line_and_exit_2(tmp_path, args, needles):
    proc = glan(*args)
    assert_one_clear_line(proc, *needles)


def test_messages_print_brackets_as_written():
    from glan.cli.app import console, error_line

    with console.capture() as captured:
        error_line("needs: pip install 'glan[hf]'")
    assert "pip install 'glan[hf]'" in captured.get()


def test_what_a_user_typed_is_printed_as_typed_never_as_markup_or_emoji(tmp_path):
    """A benchmark file named `[bold]my_eval.jsonl`, given as `PATH:question`: Rich markup
    would swallow `[bold]`, and `:question:` in "...:question: 1 item" became an emoji."""
    bench = tmp_path / "[bold]my_eval.jsonl"
    bench.write_text('{"question": "what is the capital of france and why is it paris"}\n')
    records = tmp_path / "in.jsonl"
    records.write_text(
        '{"id": "a", "messages": [{"role": "user", "content": "hello there"}, '
        '{"role": "assistant", "content": "fine"}]}\n'
    )
    common = ["decontaminate", str(records), "--out", str(tmp_path / "o.jsonl")]
    common += ["--removed", str(tmp_path / "r.jsonl"), "--benchmarks"]
    proc = glan(*common, f"{bench}:question")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"decontaminated against {bench}:question: 1 item"
    unknown = glan(*common, "nope:smile:")
    assert_one_clear_line(unknown, "unknown benchmark 'nope:smile:'")


def test_no_message_carries_rich_markup_the_consoles_would_print_as_written():
    """The CLI's consoles print text as written (glan.cli.app.plain_console): a `[yellow]...[/]`
    in a message reaches the user as those brackets. Colour goes by style= or Text."""
    import re

    cli = Path(__file__).resolve().parent.parent / "src" / "glan" / "cli"
    styles = "bold|dim|italic|red|green|yellow|blue|cyan|magenta"
    tags = re.compile(rf"(?<!`)\[(?:/|/?(?:{styles}))\]")  # `[bold]` quoted in prose is fine
    found = [
        f"{path.name}:{n}"
        for path in sorted(cli.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if tags.search(line)
    ]
    assert found == []


def test_train_notes_are_printed_as_notes(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from glan.cli import app
    from glan.train.recipe import StepPlan

    plan = StepPlan(
        devices=1, grad_accum=1, pairs_per_step=4, steps_per_epoch=3, total_steps=3,
        warmup_steps=0, notes=["only 12 pairs: [batch] shrinks to 4"],
    )  # fmt: skip

    def fake_training(data, base_model, out_dir, recipe, resume, on_plan):
        on_plan(plan)
        losses = [{"loss": 2.0}, {"loss": 1.0}]
        return SimpleNamespace(losses=losses, plan=plan, data={"pairs": 12}, resumed_from=None)

    monkeypatch.setattr("glan.train.trainer.train", fake_training)
    result = CliRunner().invoke(
        app, ["train", str(tmp_path), "--base-model", "m", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert "note: only 12 pairs: [batch] shrinks to 4\n" in result.output


def test_taxonomy_show_counts_one_discipline_as_one(tmp_path):
    from typer.testing import CliRunner

    from glan.cli import app

    tax = tmp_path / "t.yaml"
    tax.write_text(
        "fields:\n- name: F\n  subfields:\n  - name: S\n    disciplines:\n    - name: D\n"
    )
    result = CliRunner().invoke(app, ["taxonomy", "show", str(tax)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "taxonomy (1 kept discipline)"


def test_a_complete_shard_says_so(tmp_path, fake_server):
    """A shard makes its share of -n: its closing line counts against that share, not -n."""
    out = tmp_path / "s0"
    proc = glan(
        "generate", "--out", str(out), "-n", "10", "--shard", "0/2", *openai_args(fake_server)
    )
    assert proc.returncode == 0, proc.stderr
    import orjson

    counts = orjson.loads((out / "manifest.json").read_bytes())["counts"]
    made = counts["instructions"]
    assert 0 < made < 10 and counts["subjects"] == counts["syllabi"] == 1
    assert proc.stdout.startswith(
        f"shard 0/2: {made}/{made} pairs (its share of 10: glan merge joins the shards), "
        "1 subject, 1 syllabus, "
    )


def test_the_closing_line_labels_this_runs_spend_and_the_runs_in_all(tmp_path, fake_server):
    """A first run's spend is the run's; a resumed or extended one says its own and the run's
    in all, labelled (it printed this run's tokens beside every run's cost)."""
    out = str(tmp_path / "o")
    priced = ["--set", "prices.fake-model.input=1000", "--set", "prices.fake-model.output=1000"]

    def closing(n: int) -> str:
        proc = glan("generate", "--out", out, "-n", str(n), *openai_args(fake_server), *priced)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().splitlines()[-1]

    first = closing(4)
    assert "this run" not in first and re.search(r"pairs?, .* [\d,]+ tokens, \$\d+\.\d{4}", first)
    resumed = closing(4)
    assert re.search(r"this run 0 tokens, \$0\.0000 \(all runs: [1-9][\d,]* tokens, \$", resumed)
    extended = closing(8)
    this_run, in_all = re.search(
        r"this run ([\d,]+) tokens.*all runs: ([\d,]+) tokens", extended
    ).groups()
    assert 0 < int(this_run.replace(",", "")) < int(in_all.replace(",", ""))
