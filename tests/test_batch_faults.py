"""Provider faults that used to end a batch run for good, or pay for lines twice, each against
the fake batch servers: enqueued-token quotas (held by work outside the run, or a batch too large
by itself), Anthropic's queue full, a batch's status refused, result downloads that fail, come
slowly or are not offered, results gone for good, the file quota, refused expiry fields, Azure's
ISO timestamps and capitalised statuses. Each run completes, and nothing is paid twice but the
lines whose replies were lost, which the run's cost counts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from glan.api import generate
from glan.errors import UserError
from glan.llm import ChatRequest, RequestFailed, user
from glan.llm.batch.ledger import BatchLedger
from glan.llm.batch.openai_batch import OpenAIBatchAPI
from glan.testing.batch_clients import (
    KINDS,
    SCHEMA,
    ask_all,
    assert_valid_records,
    client_for,
    generate_command,
    glan,
    requests,
)
from glan.testing.die_at import run_dying_at
from glan.testing.fake_batch import FakeBatchServer
from glan.testing.runs import batch_config_for

N = 100


def manifest(run: Path) -> dict:
    return orjson.loads((run / "manifest.json").read_bytes())


def run_n(server: FakeBatchServer, run: Path, kind: str = "openai-batch", **batch):
    cfg = batch_config_for(server, kind, batch=batch)
    result = generate(run, N, cfg)
    assert result.instructions == N
    assert_valid_records(run, N)
    return manifest(run)


# ---- the enqueued-token quota: held elsewhere, or a batch too large by itself ----------------
def other_requests(n: int) -> list[ChatRequest]:
    """Requests of another run (or another Ray shard of this one)."""
    return [
        ChatRequest(messages=user(f"other run {i}", system="be brief"), json_schema=SCHEMA)
        for i in range(n)
    ]


def test_a_quota_held_by_another_run_is_waited_for_and_batches_keep_their_size(
    batch_server, tmp_path
):
    """Two transports (two runs, or two Ray shards) on one Azure deployment whose quota fits
    one batch: the second is refused, with nothing of its own out there, until the first's
    batch has finished. It waits, says so, and sends the same batch whole: Azure's "try again
    once the current jobs have finished", not a batch halved at each refusal until it stops."""
    batch_server.faults.enqueued_line_limit = 4
    batch_server.hold = True
    first = client_for(batch_server, "azure", tmp_path / "a.sqlite")
    second = client_for(batch_server, "azure", tmp_path / "b.sqlite")
    waits: list[float] = []

    async def scenario() -> tuple[list, list]:
        asked = asyncio.ensure_future(ask_all(first, requests(4)))
        assert await asyncio.to_thread(batch_server.created.wait, 30)
        waiting = asyncio.ensure_future(ask_all(second, other_requests(4)))
        while batch_server.faults.refused_creates < 3:
            await asyncio.sleep(0.01)
        waits.append(second.backend.summary().get("quota_wait_s", 0.0))
        batch_server.hold = False  # the first run's batch finishes: the quota frees
        return await asked, await waiting

    done, other = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert all(r.parsed for r in done + other)
    assert [len(b.lines) for b in batch_server.batches.values()] == [4, 4]
    assert batch_server.paid_twice == 0
    assert waits[0] > 0  # the progress line says the run waits for the quota


def test_openai_batches_failed_for_a_quota_held_elsewhere_go_again_whole(batch_server, tmp_path):
    """OpenAI fails three batches in a row for its organisation's enqueued tokens, held by
    others (the limit it states is far above the batch): each goes again after a pause, whole."""
    batch_server.enqueue("quota", "quota", "quota")
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite", max_rounds=1)
    replies = asyncio.run(asyncio.wait_for(ask_all(client, requests(4)), 60))
    assert all(r.parsed for r in replies)
    assert [len(b.lines) for b in batch_server.batches.values()] == [4, 4, 4, 4]
    assert batch_server.lines_submitted == 4


def test_azure_refusing_a_create_over_its_stated_limit_gets_batches_cut_to_fit(
    batch_server, tmp_path
):
    """Azure refuses the create of 16 lines for "the configured limit of 600" tokens: the
    lines go at once in batches that fit it, one at a time while the quota is full."""
    batch_server.faults.enqueued_token_limit = 600
    client = client_for(batch_server, "azure", tmp_path / "glan.sqlite", max_rounds=1)
    replies = asyncio.run(asyncio.wait_for(ask_all(client, requests(16)), 60))
    assert all(r.parsed for r in replies)
    assert [len(b.lines) for b in batch_server.batches.values()] == [4, 4, 4, 4]
    assert batch_server.faults.refused_creates >= 1
    assert batch_server.seen_twice == [] and batch_server.paid_twice == 0


def test_a_request_alone_over_the_stated_limit_gives_up_and_the_rest_goes_on(
    batch_server, tmp_path
):
    """A limit of 50 tokens, and lines of 70: no batch can ever take one. Each request gives up
    for its own sake (its unit would be replaced), with the reason; the run is not stopped."""
    batch_server.faults.enqueued_token_limit = 50
    client = client_for(batch_server, "azure", tmp_path / "glan.sqlite")
    failed = asyncio.run(asyncio.wait_for(ask_all(client, requests(3)), 60))
    assert all(isinstance(r, RequestFailed) and r.permanent for r in failed)
    assert "alone" in str(failed[0]) and "limit of 50 enqueued tokens" in str(failed[0])
    assert batch_server.lines_submitted == 0


def test_after_a_quota_refusal_batches_are_created_one_at_a_time(batch_server, tmp_path):
    """Five batches for a quota that holds one: once refused, the run sends the next batch
    only when the last is in, and one beside its own only once one of those finished: each
    refusal costs an upload and a delete, so never all the waiting batches at once."""
    batch_server.faults.enqueued_line_limit = 4
    client = client_for(batch_server, "azure", tmp_path / "glan.sqlite", max_requests_per_batch=4)
    replies = asyncio.run(asyncio.wait_for(ask_all(client, requests(20)), 60))
    assert all(r.parsed for r in replies)
    assert [len(b.lines) for b in batch_server.batches.values()] == [4] * 5
    # The first wave (sent before any refusal) costs 4; then one refused try per later batch,
    # and one more when the first refusal was handled before the first batch was in.
    assert batch_server.faults.refused_creates <= 4 + 3 + 1


def test_anthropic_refusing_creates_with_429_every_try_is_waited_for(batch_server, tmp_path):
    """Anthropic answers 429 while its processing queue is full: more than a control call's
    tries in a row is a quota to wait for, not a reason to stop the run."""
    batch_server.faults.creates_429 = 9
    client = client_for(batch_server, "anthropic-batch", tmp_path / "glan.sqlite")
    replies = asyncio.run(asyncio.wait_for(ask_all(client, requests(3)), 60))
    assert all(r.parsed for r in replies)
    assert batch_server.faults.creates_429 == 0 and batch_server.lines_submitted == 3


def test_n100_against_the_fail_fast_quota_completes(batch_server, tmp_path):
    """The questions batch alone (about 76,000 tokens as the fake counts them) is over the
    40,000 Azure states: cut to fit, the run completes."""
    batch_server.faults.enqueued_token_limit = 40_000
    azure = {"backend": "openai-batch", "base_url": batch_server.azure_url}
    azure |= {"model": "batch-deployment", "api_version": "2024-10-21"}
    generate(tmp_path / "run", N, batch_config_for(batch_server, llm=azure))
    assert_valid_records(tmp_path / "run", N)
    assert batch_server.faults.refused_creates >= 1
    assert batch_server.seen_twice == [] and batch_server.paid_twice == 0


# ---- a batch's status refused ----------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [404, 400, 408])
def test_a_batch_status_refused_twice_is_asked_again_its_lines_not_sent_again(
    batch_server, tmp_path, kind, status
):
    """A gateway's hiccup on GET /batches/ID (a 404 from a proxy in front of the provider, a
    400, a 408): the batch is still live, so it is asked again at later polls."""
    batch_server.faults.status_errors = [status, status]
    client = client_for(batch_server, kind, tmp_path / "glan.sqlite")
    replies = asyncio.run(asyncio.wait_for(ask_all(client, requests(5)), 60))
    assert all(r.parsed for r in replies)
    assert batch_server.faults.status_errors == []  # both were met
    assert len(batch_server.batches) == 1 and batch_server.paid_twice == 0


def test_a_batch_status_refused_every_try_stops_the_run_and_the_same_command_resumes(
    batch_server, tmp_path
):
    """A 4xx other than "not found" every time says nothing of the batch: it is kept, and the
    run stops with one line; the next run collects it."""
    batch_server.faults.status_errors = [400] * 3
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite", download_tries=3)
    stopped = asyncio.run(asyncio.wait_for(ask_all(client, requests(2)), 60))
    assert all(isinstance(r, UserError) for r in stopped)
    message = str(stopped[0])
    assert "could not read the status" in message and "re-run" in message
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite")
    replies = asyncio.run(asyncio.wait_for(ask_all(client, requests(2)), 60))
    assert all(r.parsed for r in replies)
    assert batch_server.lines_submitted == 2 and batch_server.paid_twice == 0


# ---- results that cannot be downloaded -----------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_n100_result_downloads_answering_404_twice_are_tried_again(batch_server, tmp_path, kind):
    batch_server.faults.results_404 = 2
    made = run_n(batch_server, tmp_path / "run", kind)
    assert batch_server.faults.results_404 == 0  # both were met
    assert batch_server.seen_twice == [] and batch_server.paid_twice == 0
    assert made["batch_faults"] == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_finished_batch_offering_no_result_file_yet_is_read_at_a_later_poll(
    batch_server, tmp_path, kind
):
    """ "completed" with lines done and output_file_id null (seen on OpenAI), or "ended" with no
    results_url: the results are not there yet, not absent; read once they are offered."""
    batch_server.faults.hide_results = 3
    client = client_for(batch_server, kind, tmp_path / "glan.sqlite")
    replies = asyncio.run(asyncio.wait_for(ask_all(client, requests(5)), 60))
    assert all(r.parsed for r in replies)
    assert batch_server.faults.hide_results == 0
    assert batch_server.lines_submitted == 5 and batch_server.paid_twice == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_finished_batch_never_offering_its_results_counts_them_lost(batch_server, tmp_path, kind):
    """Lines done that no result file is ever offered for were paid for: counted lost after
    `download_tries` reads (never sent again uncounted), and sent again."""
    batch_server.faults.lose_results_of = {1}
    batch_server.faults.lost_unoffered = True
    client = client_for(batch_server, kind, tmp_path / "glan.sqlite")
    replies = asyncio.run(asyncio.wait_for(ask_all(client, requests(5)), 60))
    assert all(r.parsed for r in replies)
    assert batch_server.paid_twice == 0 and batch_server.paid_after_loss == 5
    [fault] = client.backend.faults()
    assert fault["event"] == "results_lost" and fault["lines"] == 5
    assert "no output file" in fault["why"] or "no results URL" in fault["why"]
    jobs = BatchLedger(tmp_path / "glan.sqlite").jobs()
    assert [j.lost_lines for j in jobs] == [5, 0]


def test_a_download_longer_than_the_timeout_completes_while_its_bytes_keep_coming(
    batch_server, tmp_path
):
    """A large result file takes longer than one control call may: the timeout bounds each
    read of it, not the whole download."""
    lines = b"".join(b'{"custom_id": "%d"}\n' % i for i in range(100))
    batch_server.files["file-big"] = lines
    batch_server.faults.slow_download_s = 0.3  # 4 pieces: 1.2 s in all
    api = OpenAIBatchAPI("fake-model", batch_server.base_url, timeout_s=0.6)

    async def download() -> list[bytes]:
        try:
            return [line async for line in api.lines_of("/files/file-big/content")]
        finally:
            await api.aclose()

    assert len(asyncio.run(download())) == 100


@pytest.mark.parametrize("kind", KINDS)
def test_n100_downloads_cut_off_mid_stream_are_tried_again(batch_server, tmp_path, kind):
    batch_server.faults.drop_downloads = 2
    run_n(batch_server, tmp_path / "run", kind)
    assert batch_server.faults.drop_downloads == 0
    assert batch_server.seen_twice == [] and batch_server.paid_twice == 0


@pytest.mark.parametrize("kind", KINDS)
def test_n100_results_gone_for_good_are_counted_and_their_lines_sent_again(
    batch_server, tmp_path, kind
):
    """The questions batch's results lapse (OpenAI/Azure: its files; Anthropic: archived):
    its lines go again, and what they cost is counted as lost, in the ledger and the
    manifest."""
    batch_server.faults.lose_results_of = {3}  # subjects, syllabi, then the questions
    made = run_n(batch_server, tmp_path / "run", kind)
    lost = sum(batch_server.lost.values())
    [first] = [b for b in batch_server.batches.values() if b.lost]
    assert lost == first.completed == N
    assert batch_server.paid_twice == 0  # nothing paid twice but what was lost
    assert batch_server.paid_after_loss == lost
    jobs = BatchLedger(tmp_path / "run" / "glan.sqlite").jobs()
    assert [j.lost_lines for j in jobs if j.lost_lines] == [lost]
    [fault] = made["batch_faults"]
    assert fault["event"] == "results_lost" and fault["lines"] == lost
    assert fault["batch"] == first.id
    assert "404" in fault["why"] or "archived" in fault["why"]
    [usage] = made["usage"]["lost_results"].values()
    assert usage["requests"] == lost
    if kind == "openai-batch":  # OpenAI reports the batch's tokens: the loss is exact
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == first.tokens
        assert not fault["estimated"]
    else:  # Anthropic does not: estimated from the lines' size and the replies kept
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        assert fault["estimated"]


def test_downloads_failing_every_time_stop_the_run_and_the_same_command_resumes(
    batch_server, tmp_path
):
    """A connection dropped on every try is not a loss (the results are still there): the run
    stops with one clear line and pays for nothing again; the next run downloads them."""
    batch_server.faults.drop_every_download = True
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite", download_tries=3)
    stopped = asyncio.run(ask_all(client, requests(5)))
    assert all(isinstance(r, UserError) for r in stopped)
    message = str(stopped[0])
    assert "could not download the results" in message and "re-run" in message
    assert "\n" not in message and "batch transport failed" not in message
    batch_server.faults.drop_every_download = False
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite")
    replies = asyncio.run(ask_all(client, requests(5)))
    assert all(r.parsed for r in replies)
    assert batch_server.lines_submitted == 5 and batch_server.paid_twice == 0


# ---- files: deleted once their replies are kept, expiry set --------------------------------
def test_n100_within_a_five_file_quota_completes(batch_server, tmp_path):
    batch_server.faults.file_limit = 5
    run_n(batch_server, tmp_path / "run", max_requests_per_batch=30)
    assert batch_server.seen_twice == [] and batch_server.paid_twice == 0


def test_files_are_deleted_once_the_replies_are_kept_and_carry_an_expiry(batch_server, tmp_path):
    batch_server.enqueue("expire")  # half its lines in an error file
    client = client_for(batch_server, "openai-batch", tmp_path / "glan.sqlite")
    replies = asyncio.run(ask_all(client, requests(20)))
    assert all(r.parsed for r in replies)
    assert batch_server.files == {}  # inputs, outputs and error files: none left
    assert any(b.error_file_id for b in batch_server.batches.values())
    thirty_days = 30 * 86400
    sent = batch_server.faults.expiry_sent
    assert ("expires_after", ("created_at", thirty_days)) in sent
    assert ("output_expires_after", {"anchor": "created_at", "seconds": thirty_days}) in sent


def test_files_are_kept_and_no_expiry_sent_when_so_configured(batch_server, tmp_path):
    ledger = tmp_path / "glan.sqlite"
    client = client_for(
        batch_server, "openai-batch", ledger, delete_files=False, file_expiry_days=None
    )
    assert all(r.parsed for r in asyncio.run(ask_all(client, requests(3))))
    assert len(batch_server.files) == 2 and batch_server.faults.expiry_sent == []


def test_a_provider_refusing_the_expiry_fields_is_sent_them_no_more(batch_server, tmp_path):
    batch_server.faults.refuse_expiry = True
    made = run_n(batch_server, tmp_path / "run")
    dropped = {f["field"] for f in made["batch_faults"] if f["event"] == "field_refused"}
    assert dropped == {"expires_after", "output_expires_after"}
    assert batch_server.seen_twice == [] and batch_server.paid_twice == 0


# ---- Azure's variants of the batch object --------------------------------------------------
def test_iso_created_at_and_capitalised_statuses_are_understood(batch_server, tmp_path):
    batch_server.faults.azure_style = True
    client = client_for(batch_server, "azure", tmp_path / "glan.sqlite")
    replies = asyncio.run(asyncio.wait_for(ask_all(client, requests(4)), 60))
    assert all(r.parsed for r in replies)
    jobs = BatchLedger(tmp_path / "glan.sqlite").jobs()
    assert [j.status for j in jobs] == ["completed"]


def test_a_batch_found_again_by_an_iso_created_at_re_attaches(batch_server, tmp_path, monkeypatch):
    class Killed(BaseException):
        pass

    def die(*args):
        raise Killed

    batch_server.faults.azure_style = True
    original = BatchLedger.set_batch
    monkeypatch.setattr(BatchLedger, "set_batch", die)
    batch_server.hold = True
    client = client_for(batch_server, "azure", tmp_path / "glan.sqlite")
    assert all(isinstance(r, UserError) for r in asyncio.run(ask_all(client, requests(3))))
    monkeypatch.setattr(BatchLedger, "set_batch", original)
    batch_server.hold = False
    client = client_for(batch_server, "azure", tmp_path / "glan.sqlite")
    replies = asyncio.run(asyncio.wait_for(ask_all(client, requests(3)), 60))
    assert all(r.parsed for r in replies)
    assert batch_server.lines_submitted == 3 and len(batch_server.batches) == 1


# ---- the terminal ----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_loss_reaches_the_run_s_cost_even_if_the_process_dies_right_after(batch_server, tmp_path):
    """kill -9 the moment a batch whose results were gone is settled: the resumed run's
    manifest counts what the lost lines cost, as the ledger does, once."""
    batch_server.faults.lose_results_of = {1}
    args = generate_command(batch_server, tmp_path, 20)
    died = run_dying_at("glan.llm.batch.transport:BatchBackend._delete_files", "glan", *args)
    assert died == -9
    done = glan(*args)
    assert done.returncode == 0, done.stderr
    [job] = [j for j in BatchLedger(tmp_path / "run" / "glan.sqlite").jobs() if j.lost_lines]
    made = manifest(tmp_path / "run")
    [usage] = made["usage"]["lost_results"].values()
    assert (usage["requests"], usage["prompt_tokens"], usage["completion_tokens"]) == (
        job.lost_lines,
        job.lost_prompt_tokens,
        job.lost_completion_tokens,
    )


@pytest.mark.slow
def test_lost_results_are_said_in_one_line_and_listed_by_glan_batches(batch_server, tmp_path):
    batch_server.faults.lose_results_of = {1}
    done = glan(*generate_command(batch_server, tmp_path, 20))
    assert done.returncode == 0, done.stderr
    said = [line for line in (done.stdout + done.stderr).splitlines() if "gone" in line]
    assert len(said) == 1
    assert "sent again" in said[0] and "manifest.json" in said[0]
    [lost] = [b for b in batch_server.batches.values() if b.lost]
    assert f"results of {lost.completed:,} batch lines" in said[0]
    listing = glan("batches", str(tmp_path / "run"))
    [row] = [line.split() for line in listing.stdout.splitlines() if lost.id in line]
    header = listing.stdout.splitlines()[0].split()
    assert row[header.index("lost")] == f"{lost.completed:,}"
