"""What runs inside the Ray cluster: the admission authority and the shard workers.

A worker is an async actor: every shard it is given runs the ordinary Pipeline on the actor's
event loop, with its own state under RUN/shards/NNN, and every shard of the worker shares one
leased admission per endpoint (the hot path stays in the process). Ray is imported here only,
so the rest of glan loads without it.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any

from glan.config import GenerateConfig
from glan.executors.lease import LEASE_TTL_S, LeasedAdmission, PermitAuthority
from glan.llm import Admission, AdmissionSettings, Backend, LocalAdmission, create_backend
from glan.taxonomy import Taxonomy
from glan.tree.progress import RunProgress

PROBE_FILE = ".probe"


class Authority:
    """The cluster's admission for one endpoint (a Ray actor: calls run one at a time, and
    each returns at once, so no caller ever holds it)."""

    def __init__(self, settings: dict[str, Any], ttl_s: float = LEASE_TTL_S) -> None:
        self.book = PermitAuthority(AdmissionSettings.model_validate(settings), ttl_s)

    def sync(self, worker: str, report: dict[str, Any]) -> dict[str, Any]:
        return self.book.sync(worker, report)

    def snapshot(self) -> dict[str, Any]:
        return self.book.snapshot()


def progress_snapshot(progress: RunProgress) -> dict[str, Any]:
    """What the driver's display sums over shards (plain data, cheap to send)."""
    return {
        "stages": {n: [s.planned, s.done, s.failed] for n, s in progress.stages.items()},
        "pairs": progress.pairs(),
        "resumed": progress.resumed_pairs,
        "target": progress.target,
        "usage": progress.usage.as_dict() if progress.usage else {},
        "batches": progress.batches() if progress.batches else None,
    }


class ShardWorker:
    def __init__(self, name: str, authorities: dict[tuple[str, ...], Any]) -> None:
        self.name = f"{name}-{uuid.uuid4().hex[:6]}"
        self.authorities = authorities
        self.admissions: dict[tuple[str, ...], Admission] = {}
        self.backends: dict[tuple[str, ...], Backend] = {}
        self.running: dict[int, RunProgress] = {}

    def where(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "worker": self.name}

    def probe(self, shards_dir: str, token: str) -> str | None:
        """Prove this worker sees the driver's run directory: read the driver's token, write
        one back (the driver reads it). None, or why not."""
        path = Path(shards_dir)
        try:
            seen = (path / PROBE_FILE).read_text()
            if seen != token:
                return "it holds another run's token (a different disk under the same path?)"
            mine = path / f"{PROBE_FILE}-{self.name}"
            mine.write_text(f"{token} {self.name}")
            if mine.read_text() != f"{token} {self.name}":
                return "what it wrote did not read back"
        except OSError as exc:
            return f"{exc.strerror or type(exc).__name__}"
        return None

    def _admission(self, identity: tuple[str, ...], settings: AdmissionSettings) -> Admission:
        admission = self.admissions.get(identity)
        if admission is None:
            handle = self.authorities.get(identity)
            if handle is None:  # an in-process model: its limit is this process's own
                admission = LocalAdmission(settings)
            else:

                async def sync(report: dict[str, Any], handle: Any = handle) -> dict[str, Any]:
                    return await handle.sync.remote(self.name, report)

                admission = LeasedAdmission(settings, sync)
            self.admissions[identity] = admission
        return admission

    def _backend(self, settings: Any, concurrency: int) -> Backend | None:
        """One connection pool per HTTP endpoint for every shard of this worker: shards come
        and go, the connections stay (a pool per shard cost a connection per request at first,
        on both sides). Any other kind is the shard's own (None): an in-process model is loaded
        per shard, as locally, and a batch transport keeps its ledger in the shard's store, so
        the worker that takes the shard over after this one dies re-attaches to its batches."""
        if settings.backend != "openai":
            return None
        backend = self.backends.get(settings.identity())
        if backend is None:
            backend = self.backends[settings.identity()] = create_backend(settings, concurrency)

            async def keep_open() -> None:
                """A shard's end does not close the worker's pool."""

            backend.aclose = keep_open  # type: ignore[method-assign]
        return backend

    async def run_shard(
        self,
        number: int,
        out_dir: str,
        config: dict[str, Any],
        taxonomy: Taxonomy,
        target: int,
        disciplines: list[str],
        update: bool,
        invocation: str,
        cache_fallback: str | None,
    ) -> dict[str, Any]:
        from glan.pipeline import Pipeline

        progress = RunProgress()
        self.running[number] = progress
        try:
            pipeline = Pipeline(
                GenerateConfig.model_validate(config),
                taxonomy,
                Path(out_dir),
                target,
                progress,
                update=update,
                admission_factory=self._admission,
                backend_factory=self._backend,
                only=disciplines,
                invocation=invocation,
                cache_fallback=Path(cache_fallback) if cache_fallback else None,
            )
            result = await pipeline.run()
        finally:
            del self.running[number]
        m = result.manifest
        return {
            "shard": number,
            "worker": self.name,
            "host": socket.gethostname(),
            "status": m["status"],
            "made": m["counts"]["instructions"],
            "planned": sum(d.quota for d in pipeline.plan.disciplines),
            "missing": m["missing"],
            "deferred_units": m["deferred_units"],
            "deferred_too_large": m["deferred_too_large"],
            "resumed_pairs": m["resumed_pairs"],
            "usage": m["usage"],
            "usage_this_invocation": m["usage_this_invocation"],
            "failures": m["failures"],
            "retries": m["retries"],
            "rate_limited": m["rate_limited"],
            "elapsed_s": m["elapsed_s"],
            "notes": pipeline.notes(),
            "progress": progress_snapshot(progress),
        }

    def snapshot(self) -> dict[str, Any]:
        stats = [a.stats for a in self.admissions.values()]
        return {
            "pid": os.getpid(),
            "shards": {n: progress_snapshot(p) for n, p in self.running.items()},
            "rate_limited": sum(s.rate_limited for s in stats),
            "retries": sum(s.retries for s in stats),
        }
