"""Acting on a run's batches from outside the run (`glan batches DIR --cancel`)."""

from __future__ import annotations

from glan.llm.batch.ledger import BatchLedger


async def cancel_live(ledger: BatchLedger) -> int:
    """Cancel every live batch the ledger holds, those staged without an id included (found
    as a re-run would find them); what finished is kept, and the next run settles them. The
    number of batches asked to cancel."""
    from glan.llm.settings import batch_api

    jobs = ledger.jobs()
    known = {job.batch_id for job in jobs if job.batch_id}
    cancelled = 0
    for job in (job for job in jobs if job.live):
        api = batch_api(job.access)
        try:
            batch_id = job.batch_id or await api.find(job, known)
            if batch_id is None:
                continue  # never created: a re-run records that
            if job.batch_id is None:
                ledger.set_batch(job.local_id, batch_id, "re-attached")
                known.add(batch_id)
            await api.cancel(batch_id)
            ledger.set_status(job.local_id, "cancelling", job.done, job.failed)
            cancelled += 1
        finally:
            await api.aclose()
    return cancelled
