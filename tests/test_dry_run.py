"""`glan generate --dry-run` on a directory that holds a run prices what its re-run would send:
nothing for a finished run, exactly what `--update` or a grown -n or a resume sends, lines in
live batches apart; it never disturbs a run in progress. And how many batch turnarounds a
plan waits for, from the stages that go by batch."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from random import Random
from typing import Any

import orjson
import pytest

from glan.api import generate, plan
from glan.config import GenerateConfig
from glan.errors import UserError
from glan.llm import ChatRequest, ChatResponse, LLMClient
from glan.llm.backend import Completion
from glan.llm.dry import DryBackend
from glan.llm.settings import (
    AnthropicBatchSettings,
    LocalSettings,
    OpenAIBatchSettings,
    OpenAISettings,
    VLLMSettings,
    create_backend,
)
from glan.llm.vllm_engine import VLLMBackend
from glan.rerun import price_rerun
from glan.run.stores import spread_state
from glan.stages import answers, questions, stand_in, subjects, syllabus
from glan.stages.errors import Rejected
from glan.taxonomy import load_taxonomy
from glan.testing.batch_clients import (
    assert_valid_records,
    generate_command,
    start_and_kill_once_a_batch_is_live,
)
from glan.testing.cli import assert_one_clear_line, glan
from glan.testing.fake_server import FakeServer
from glan.testing.runs import config_for, staged_rows

STAGES = ("subjects", "syllabus", "questions", "answers")


def online(server: FakeServer) -> list[str]:
    return ["--backend", "openai", "--base-url", server.base_url, "--model", "fake-model"]


def dry_run(run: Path, n: int, *args: str) -> subprocess.CompletedProcess:
    proc = glan("generate", "--out", str(run), "-n", str(n), "--dry-run", *args)
    assert proc.returncode == 0, proc.stderr
    return proc


def table_calls(stdout: str) -> dict[str, int]:
    """The calls column of each stage's row of the dry run's table."""
    rows = re.findall(r"│ (\w+)\s+│[^│]+│\s+([\d,]+) │", stdout)
    calls = {stage: int(n.replace(",", "")) for stage, n in rows if stage in STAGES}
    assert set(calls) == set(STAGES), stdout
    return calls


def sent_by_stage(run: Path) -> dict[str, int]:
    """Requests the run's last invocation sent, per stage (its manifest)."""
    usage = orjson.loads((run / "manifest.json").read_bytes())["usage_this_invocation"]
    return {
        stage: sum(row["requests"] for row in usage.get(stage, {}).values()) for stage in STAGES
    }


def files_of(run: Path) -> dict[str, bytes]:
    """The run's files; not SQLite's own beside its store, which a reader may leave (empty)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(run.iterdir())
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def test_a_finished_run_would_send_nothing_and_is_left_as_it_was(fake_server, tmp_path):
    run = tmp_path / "run"
    generate(run, 20, config_for(fake_server))
    before, asked = files_of(run), fake_server.requests
    proc = dry_run(run, 20, *online(fake_server), "--set", "prices.fake-model.input=2.5")
    assert f"re-run of {run}: 0 of 48 planned calls would be sent" in proc.stdout
    assert "re-run for 20 pairs over 4 disciplines" in proc.stdout
    assert table_calls(proc.stdout) == dict.fromkeys(STAGES, 0)
    assert re.search(r"│ total\s+│\s+│\s+0 │\s+0 │\s+0 │ \$0\.00 │", proc.stdout), proc.stdout
    assert "no price" not in proc.stdout  # nothing to send costs nothing, priced or not
    assert fake_server.requests == asked
    assert files_of(run) == before


def test_after_changing_the_answers_model_it_prices_what_update_sends(fake_server, tmp_path):
    run = tmp_path / "run"
    generate(run, 20, config_for(fake_server))
    other = [*online(fake_server), "--set", "stages.answers.model=other-model"]
    refused = glan("generate", "--out", str(run), "-n", "20", "--dry-run", *other)
    real_refusal = glan("generate", "--out", str(run), "-n", "20", *other)
    assert_one_clear_line(refused, "another answers settings", "--update")
    assert refused.stderr == real_refusal.stderr  # the real run's own refusal

    proc = dry_run(run, 20, *other, "--update")
    assert f"re-run of {run}: 20 of 48 planned calls would be sent" in proc.stdout
    assert "│ answers   │ other-model" in proc.stdout
    asked = fake_server.requests
    done = glan("generate", "--out", str(run), "-n", "20", *other, "--update", "-q")
    assert done.returncode == 0, done.stderr
    assert fake_server.requests - asked == 20
    assert (
        sent_by_stage(run)
        == table_calls(proc.stdout)
        == {**dict.fromkeys(STAGES, 0), "answers": 20}
    )


def test_a_grown_target_prices_only_the_new_pairs(fake_server, tmp_path):
    run = tmp_path / "run"
    generate(run, 20, config_for(fake_server))
    proc = dry_run(run, 40, *online(fake_server))
    assert f"re-run of {run}: 48 of 96 planned calls would be sent" in proc.stdout
    assert (
        "below a call still to be sent, replies are taken to be as large as the run's own"
        in proc.stdout
    )
    done = glan("generate", "--out", str(run), "-n", "40", *online(fake_server), "-q")
    assert done.returncode == 0, done.stderr
    # Each new discipline needs one listing, one subject of it and five pairs: the part below
    # the calls still to be sent comes out exact too.
    assert sent_by_stage(run) == table_calls(proc.stdout)


def test_below_a_call_to_send_the_walk_goes_on_over_replies_as_large_as_the_runs_own(
    fake_server, tmp_path
):
    """The fake server lists 3 subjects a call where the plan counts on 15: the new
    disciplines of a grown run get as many syllabi as the run's listings give, not the plan's."""
    run = tmp_path / "run"
    one_pair_each = ["--set", "plan.pairs_per_subject=1"]
    generate(run, 20, config_for(fake_server, plan={"pairs_per_subject": 1}))
    proc = dry_run(run, 40, *online(fake_server), *one_pair_each)
    calls = table_calls(proc.stdout)
    assert calls["syllabus"] == 4 * 3  # 4 new disciplines, 3 subjects listed in each
    done = glan("generate", "--out", str(run), "-n", "40", *online(fake_server), *one_pair_each)
    assert done.returncode == 0, done.stderr
    assert sent_by_stage(run) == calls


def test_the_state_a_ray_run_left_in_its_shards_is_read(fake_server, tmp_path):
    """A Ray run keeps each shard's staged records in RUN/shards/NNN: what it decided there
    is what the next run (which folds the shards back) goes on from."""
    run = tmp_path / "run"
    cfg = config_for(fake_server)
    generate(run, 20, cfg)
    paths = [d.discipline.path for d in plan(20, cfg).disciplines]
    spread_state(run, {0: paths[:2], 1: paths[2:]})
    with contextlib.closing(sqlite3.connect(run / "glan.sqlite")) as db:
        db.execute("DELETE FROM responses")  # only the shards' state says the work is done
        db.commit()
    proc = dry_run(run, 20, *online(fake_server))
    assert f"re-run of {run}: 0 of 48 planned calls would be sent" in proc.stdout
    asked = fake_server.requests
    assert glan("generate", "--out", str(run), "-n", "20", *online(fake_server)).returncode == 0
    assert fake_server.requests == asked


def test_a_shard_is_priced_as_its_own_plan(fake_server, tmp_path):
    cfg = config_for(fake_server)
    whole = plan(20, cfg)
    mine = whole.shard(0, 2)
    calls = sum(mine.calls().values())
    assert 0 < calls < sum(whole.calls().values())
    new = dry_run(tmp_path / "new", 20, *online(fake_server), "--shard", "0/2")
    assert f"plan for {mine.target} pairs over {len(mine.disciplines)} disciplines" in new.stdout
    assert sum(table_calls(new.stdout).values()) == calls
    run = tmp_path / "run"
    generate(run, 20, cfg, shard=(0, 2))
    again = dry_run(run, 20, *online(fake_server), "--shard", "0/2")
    assert f"re-run of {run}: 0 of {calls} planned calls would be sent" in again.stdout
    assert (
        f"re-run for {mine.target} pairs over {len(mine.disciplines)} disciplines" in again.stdout
    )


def test_a_directory_the_run_may_not_write_is_refused_as_the_run_refuses_it(
    fake_server, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    generate(run, 5, config_for(fake_server))
    monkeypatch.setattr("glan.run.rundir.os.access", lambda *_: False)  # tests run as root
    with pytest.raises(UserError, match=f"cannot write to --out {run}: permission denied"):
        price_rerun(config_for(fake_server), load_taxonomy(), run, 5)


def start_run(server: FakeServer, run: Path, n: int) -> subprocess.Popen:
    command = ["generate", "--out", str(run), "-n", str(n), *online(server), "-q"]
    return subprocess.Popen(
        [sys.executable, "-m", "glan", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.05)


def test_a_run_killed_partway_is_priced_as_its_resume_sends(fake_server, tmp_path):
    run = tmp_path / "run"
    fake_server.latency_s = 0.05
    proc = start_run(fake_server, run, 60)
    try:
        wait_until(lambda: staged_rows(run, "st_pairs") >= 20, proc)
    finally:
        proc.kill()  # SIGKILL: replies in flight are lost, the state keeps what was staged
        proc.wait()
    fake_server.wait_idle()
    fake_server.latency_s = 0.0
    dry = dry_run(run, 60, *online(fake_server))
    calls = table_calls(dry.stdout)
    assert 0 < calls["answers"] < 60 and calls["subjects"] < 12
    asked = fake_server.requests
    done = glan("generate", "--out", str(run), "-n", "60", *online(fake_server), "-q")
    assert done.returncode == 0, done.stderr
    assert sent_by_stage(run) == calls
    assert fake_server.requests - asked == sum(calls.values())


def test_a_dry_run_beside_a_run_in_progress_disturbs_nothing(fake_server, tmp_path):
    run = tmp_path / "run"
    # The run's questions are throttled (429, then asked again) until the dry run is done.
    fake_server.throttle_when = lambda body: "homework question" in body["messages"][-1]["content"]
    fake_server.throttle_s = 3600.0
    proc = start_run(fake_server, run, 60)
    try:
        wait_until(lambda: staged_rows(run, "st_syllabi") == 12, proc)
        dry = dry_run(run, 60, *online(fake_server))
        calls = table_calls(dry.stdout)
        assert calls == {"subjects": 0, "syllabus": 0, "questions": 60, "answers": 60}
        assert proc.poll() is None  # the run goes on: it holds its directory's lock
        fake_server.throttle_s = 0.0
        assert proc.wait(120) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
    assert_valid_records(run, 60)


def test_lines_in_live_batches_are_paid_and_not_counted_again(batch_server, tmp_path):
    args = generate_command(batch_server, tmp_path, 20)
    start_and_kill_once_a_batch_is_live(batch_server, args)
    live = sum(len(batch_server.batches[b].lines) for b in batch_server.live_batches())
    dry = glan(*[a for a in args if a != "-q"], "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{live} requests in live batches (subjects) are paid already" in dry.stdout
    assert "the re-run collects them, not counted above" in dry.stdout
    calls = table_calls(dry.stdout)
    assert calls["subjects"] == 0 and calls["answers"] == 20
    # The listings still to come back are waited for; then one level after another.
    assert "expect about four batch turnarounds" in dry.stdout
    batch_server.hold = False
    sent = batch_server.lines_submitted
    done = glan(*args)
    assert done.returncode == 0, done.stderr
    assert batch_server.lines_submitted - sent == sum(calls.values())


@pytest.mark.parametrize(
    ("sets", "expected", "documented"),
    [
        (
            ["stages.questions.backend=openai-batch", "stages.answers.backend=openai-batch"],
            "expect about two batch turnarounds, one per level sent by batch (questions, answers)",
            "a mixed run with the tree online and the pairs (questions and answers) by batch "
            "takes about two turnarounds",
        ),
        (
            ["llm.backend=openai-batch"],
            "expect about four batch turnarounds, one per level sent by batch "
            "(subjects, syllabus, questions, answers)",
            "With every stage by batch, a run therefore takes about **four batch turnarounds**",
        ),
        (
            ["llm.backend=openai-batch", "subjects_mode=two_turn"],
            "expect about five batch turnarounds",
            "(five with `subjects_mode: two_turn`,",
        ),
        (
            ["stages.answers.backend=openai-batch"],
            "expect about one batch turnaround, the level sent by batch (answers)",
            "Each of these levels sent by batch costs one batch turnaround",
        ),
    ],
)
def test_the_turnarounds_hint_counts_the_levels_sent_by_batch_as_the_docs_do(
    tmp_path, sets, expected, documented
):
    args = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
    proc = dry_run(tmp_path / "run", 100, *args, *(x for s in sets for x in ("--set", s)))
    assert expected in proc.stdout
    docs = Path(__file__).resolve().parent.parent / "docs" / "batch.md"
    assert documented in " ".join(docs.read_text().split())


# ---- what the dry run stands on -------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "sizes"),
    [
        ({}, None),  # the paper's sizes
        ({"subjects_mode": "two_turn", "plan": {"subjects_per_call": 4}}, None),
        (
            {
                "syllabus": {
                    "min_sessions": 3,
                    "max_sessions": 4,
                    "min_concepts": 1,
                    "max_concepts": 2,
                }
            },
            None,
        ),
        ({"stages": {"answers": {"max_tokens": 64}}}, None),
        # As large as a run's own replies (the fake server's); within what the config allows.
        ({}, ((3.2, 12, 4), (3, 12, 4))),
        ({}, ((0.4, 40, 9), (1, 30, 6))),
    ],
)
async def test_stand_in_replies_pass_every_stage_check_at_the_first_ask(overrides, sizes):
    """The walk goes on below a stand-in as its shape says: no reply is re-asked (a call
    counted twice), a listing lists as many subjects as the shape, two stand-ins differ."""
    cfg = GenerateConfig.model_validate({"llm": {"backend": "openai"}, **overrides})
    shape = stand_in.Shape.planned(cfg)
    if sizes is not None:
        (seen, expected) = sizes
        shape = shape.like(cfg, *seen)
        assert (shape.subjects, shape.sessions, shape.concepts) == expected
    backend = DryBackend("openai|dry|m", "m", stand_in_answer(shape))
    client = LLMClient(backend)

    async def ask(request: ChatRequest, parse: Callable[[ChatResponse], Any]) -> Any:
        parsed: list[Any] = []

        def check(reply: ChatResponse) -> str | None:
            try:
                parsed.append(parse(reply))
            except Rejected as exc:
                return str(exc)
            return None

        await client.chat(request, check)
        return parsed[-1]

    d = load_taxonomy().disciplines()[0]
    listings = []
    for i in range(2):
        request = subjects.build(d, i, cfg)
        if cfg.subjects_mode == "two_turn":
            free = await ask(request, lambda r: r.text)
            request = subjects.build_format(d, i, cfg, free)
        listings.append(await ask(request, lambda r, i=i: subjects.parse(d, i, r)))
    listed = subjects.unique_subjects(listings)
    assert len(listed) == 2 * shape.subjects
    syllabi = [
        await ask(syllabus.build(s, cfg), lambda r, s=s: syllabus.parse(s, r, cfg))
        for s in listed[:2]
    ]
    assert len(syllabi[0].sessions) == shape.sessions
    plans = questions.plan_questions(syllabi[0], 2 * cfg.plan.pairs_per_subject, 0.5, Random(0))
    assert len(plans) == 2 * cfg.plan.pairs_per_subject  # combinations enough for the subject
    asked = [await ask(questions.build(syllabi[0], p, cfg), questions.parse) for p in plans]
    assert len(set(asked)) == len(asked)
    for question in asked:
        await ask(answers.build(question, cfg), answers.parse)
    assert backend.sends["answers"].calls == len(asked)
    assert backend.sends["questions"].calls == len(asked)
    assert backend.sends["syllabus"].calls == 2
    turns = 2 if cfg.subjects_mode == "two_turn" else 1
    assert backend.sends["subjects"].calls == 2 * turns


def test_replies_as_large_as_the_runs_own_are_priced_at_their_size():
    cfg = GenerateConfig.model_validate({"llm": {"backend": "openai"}})
    planned = stand_in.Shape.planned(cfg)
    assert planned.tokens["subjects"] == 15 * 70  # the estimate's: 70 tokens a subject
    like = planned.like(cfg, 3, 12, None)
    assert like.tokens["subjects"] == 3 * 70
    assert like.tokens["syllabus"] == 150 + 12 * (25 + 4 * 6)  # 4: the middle of 2-6 concepts
    assert like.tokens["answers"] == planned.tokens["answers"]


def stand_in_answer(shape: stand_in.Shape) -> Callable[[ChatRequest], Completion]:
    def answer(request: ChatRequest) -> Completion:
        return Completion(stand_in.reply_text(request, shape), "stop", 1, 1)

    return answer


def test_settings_name_the_endpoint_their_backend_caches_under(tmp_path):
    """The dry run finds a run's replies by its endpoint's id, known without the key."""
    kinds = [
        OpenAISettings(base_url="http://127.0.0.1:9/v1/", model="m"),
        OpenAIBatchSettings(base_url="http://127.0.0.1:9/v1/", model="m"),
        AnthropicBatchSettings(base_url="http://127.0.0.1:9/v1/", model="c"),
        LocalSettings(),
    ]
    for settings in kinds:
        backend = create_backend(settings, ledger=tmp_path / "ledger.sqlite")
        assert settings.endpoint_id() == backend.endpoint_id
    vllm = VLLMSettings(model="org/m", dtype="bfloat16", chat_template="{{ messages }}")
    engine = VLLMBackend(
        "org/m", dtype="bfloat16", chat_template=vllm.template_text(), api=object()
    )
    assert vllm.endpoint_id() == engine.endpoint_id
