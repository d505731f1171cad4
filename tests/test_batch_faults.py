"""Provider faults that used to end a batch run for good, each against the fake batch servers:
Azure's "fail fast" quota at create, result downloads that fail or whose results are gone, the
file quota, refused expiry fields, Azure's ISO timestamps and capitalised statuses. Each run
completes, and nothing is paid twice but the lines whose replies were lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from glan.api import generate
from glan.errors import UserError
from glan.llm.batch.ledger import BatchLedger
from glan.testing.batch_clients import (
    KINDS,
    ask_all,
    assert_valid_records,
    client_for,
    generate_command,
    glan,
    requests,
)
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


# ---- Azure "fail fast": the quota refused at create --------------------------------------
def test_a_create_refused_for_the_quota_waits_for_a_live_batch_then_halves(batch_server, tmp_path):
    """8 lines over a 6-line quota: refused alone, so halved; the second half is refused while
    the first is live, and sent once it has finished."""
    batch_server.faults.enqueued_line_limit = 6
    client = client_for(batch_server, "azure", tmp_path / "glan.sqlite", max_rounds=1)
    replies = asyncio.run(ask_all(client, requests(8)))
    assert all(r.parsed for r in replies)
    assert batch_server.faults.refused_creates >= 2
    assert [len(b.lines) for b in batch_server.batches.values()] == [4, 4]
    assert batch_server.seen_twice == [] and batch_server.paid_twice == 0


def test_n100_against_the_fail_fast_quota_completes(batch_server, tmp_path):
    batch_server.faults.enqueued_line_limit = 60
    run_n(batch_server, tmp_path / "run")
    assert batch_server.faults.refused_creates >= 1
    assert batch_server.seen_twice == [] and batch_server.paid_twice == 0


# ---- results that cannot be downloaded -----------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_n100_result_downloads_answering_404_twice_are_tried_again(batch_server, tmp_path, kind):
    batch_server.faults.results_404 = 2
    made = run_n(batch_server, tmp_path / "run", kind)
    assert batch_server.faults.results_404 == 0  # both were met
    assert batch_server.seen_twice == [] and batch_server.paid_twice == 0
    assert made["batch_faults"] == []


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
