"""Duplicate removal in bounded memory: the same records go as with the in-memory index
(glan.post.dedup.Deduplicator), at any number of records, in memory set by a budget.

1. Signatures, once, in worker processes: for each record that passes the filters (in file
   order: its dedup index k), the exact key of its normalised question and the hash of each LSH
   band of its MinHash signature (rensa, same shingles and seed as the in-memory index), written
   to files in a work folder (16 + 8 * bands bytes per record).
2. Exact duplicates: (key, k) rows hash-partitioned on disk, each partition sorted; every row
   after the first of its key is an exact duplicate of that first row.
3. Near duplicates: (band hash, k) rows of the records not removed as exact, partitioned and
   sorted the same way. Only buckets (equal band hashes) with two or more members can remove
   anything: their memberships are kept, re-partitioned by k.
4. One pass in file order over those memberships decides, as the in-memory index does: a record
   goes when one of its buckets already holds a kept record, as a duplicate of the earliest
   such; otherwise it stays and becomes the kept record of each of its buckets. A bucket never
   holds two kept records (the second would have collided with the first), which is why one
   number per bucket is all the state this pass needs.

Band collisions decide, with no Jaccard verification, exactly as the in-memory index does.
Buckets are 64-bit hashes of the band values (as in rensa's index): two different bands share a
hash with odds of about 1e-5 per 10M records.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from glan.errors import UserError
from glan.post.dedup import Duplicate, band_layout, exact_key, shingles
from glan.post.filters import FilterSettings, record_text, reject_reason
from glan.post.normalize import words
from glan.post.progress import Steps, begin
from glan.post.spill import Partitions, partitions_for, run_starts

CHUNK_BYTES = 4 << 20
NONE, EXACT, NEAR = 0, 1, 2
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class DedupParams:
    filter: bool
    filters: FilterSettings
    near: bool
    threshold: float
    num_perm: int
    shingle: int

    @property
    def bands(self) -> int:
        return band_layout(self.threshold, self.num_perm)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """(records, bands) uint64: a hash of each band's values, seeded by the band's number so
    that buckets of different bands never meet in one sort."""
    m, num_perm = signatures.shape
    rows = num_perm // bands
    values = signatures.reshape(m, bands, rows).astype(np.uint64)
    h = _mix(np.arange(1, bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    h = np.broadcast_to(h, (m, bands))
    for j in range(rows):
        h = _mix(h ^ values[:, :, j])
    return np.ascontiguousarray(h)


def _signatures(params: DedupParams, chunk: bytes, first_line: int) -> dict[str, Any]:
    """What step 1 keeps of one chunk of lines."""
    from rensa import RMinHash

    ids: list[str | int] = []
    tokens: list[list[str]] = []
    records = 0
    for offset, line in enumerate(chunk.split(b"\n")):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return {"error_line": first_line + offset}
        records += 1
        if params.filter and reject_reason(record, params.filters) is not None:
            continue
        ids.append(str(record["id"]) if "id" in record else records)  # int: number in chunk
        tokens.append(words(record_text(record)))
    has_tokens = np.fromiter(map(bool, tokens), dtype=bool, count=len(tokens))
    digests = b"".join(map(exact_key, tokens))
    keys = np.zeros((len(tokens), params.bands), dtype=np.uint64)
    if params.near and has_tokens.any():
        # One RMinHash per record: rensa's batch calls run on a thread pool that a forked
        # worker inherits dead (they hang after a fork), these do not.
        signatures = np.empty((int(has_tokens.sum()), params.num_perm), np.uint32)
        for row, toks in enumerate(t for t in tokens if t):
            sig = RMinHash(num_perm=params.num_perm, seed=1)
            sig.update(shingles(toks, params.shingle))
            signatures[row] = sig.digest()
        keys[has_tokens] = band_keys(signatures, params.bands)
    return {"records": records, "ids": ids, "digests": digests, "tokens": has_tokens, "keys": keys}


def _chunks(path: Path) -> Iterator[tuple[bytes, int, int]]:
    """(whole lines, number of the first line, bytes read so far)."""
    line = 1
    carry = b""
    done = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            done += len(block)
            block = carry + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                carry = block
                continue
            carry = block[cut:]
            yield block[:cut], line, done
            line += block.count(b"\n", 0, cut)
    if carry:
        yield carry, line, done


_PARAMS: DedupParams | None = None


def _in_worker(chunk: bytes, first_line: int) -> dict[str, Any]:
    assert _PARAMS is not None
    return _signatures(_PARAMS, chunk, first_line)


class _Signer:
    """Chunks signed in forked workers (inline with one worker), results in file order."""

    def __init__(self, params: DedupParams, workers: int) -> None:
        import multiprocessing as mp

        global _PARAMS
        self.params = params
        self.pool = None
        self.workers = max(1, workers)
        if workers > 1 and "fork" in mp.get_all_start_methods():
            _PARAMS = params
            self.pool = mp.get_context("fork").Pool(workers)
            _PARAMS = None

    def map(self, chunks: Iterator[tuple[bytes, int, int]]) -> Iterator[tuple[dict, int]]:
        if self.pool is None:
            for chunk, line, done in chunks:
                yield _signatures(self.params, chunk, line), done
            return
        pending: deque = deque()
        for chunk, line, done in chunks:
            pending.append((self.pool.apply_async(_in_worker, (chunk, line)), done))
            while len(pending) > 2 * self.workers:  # bounded: never the whole file in flight
                handle, at = pending.popleft()
                yield handle.get(), at
        while pending:
            handle, at = pending.popleft()
            yield handle.get(), at

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


class DedupPlan:
    """Each filtered record's fate, by dedup index, read back in file order by `check`."""

    def __init__(self, folder: Path, count: int, records: int) -> None:
        self.count = count
        self.records = records  # every record read, filtered ones included
        self._next = 0
        self.kind = np.memmap(folder / "kind.bin", np.uint8, "r", shape=(max(1, count),))
        self.of = np.memmap(folder / "of.bin", np.int64, "r", shape=(max(1, count),))
        self._offsets = np.memmap(folder / "id_offsets.bin", np.int64, "r", shape=(count + 1,))
        self._ids = (folder / "ids.bin").open("rb")

    def record_id(self, k: int) -> str:
        start, end = int(self._offsets[k]), int(self._offsets[k + 1])
        self._ids.seek(start)
        return self._ids.read(end - start).decode()

    def check(self, record_id: str, text: str) -> Duplicate | None:
        """The next filtered record's fate (the same call as Deduplicator.check)."""
        k = self._next
        self._next += 1
        if k >= self.count:
            raise UserError("the input changed while it was being cleaned: run glan clean again")
        kind = int(self.kind[k])
        if kind == NONE:
            return None
        return Duplicate(self.record_id(int(self.of[k])), "exact" if kind == EXACT else "near")

    def finish(self) -> None:
        if self._next != self.count:
            raise UserError("the input changed while it was being cleaned: run glan clean again")

    def close(self) -> None:
        self._ids.close()


def plan_duplicates(
    inp: Path,
    params: DedupParams,
    folder: Path,
    memory_bytes: int,
    workers: int = 1,
    steps: Steps | None = None,
) -> DedupPlan:
    """Steps 1-4 over `inp`, files in `folder` (removed with it); returns the plan."""
    count, records = _sign(inp, params, folder, workers, steps)
    kind = np.memmap(folder / "kind.bin", np.uint8, "w+", shape=(max(1, count),))
    of = np.memmap(folder / "of.bin", np.int64, "w+", shape=(max(1, count),))
    kind[:] = NONE
    if count:
        _exact(folder, count, kind, of, memory_bytes, steps)
        if params.near:
            _near(folder, count, params.bands, kind, of, memory_bytes, steps)
    kind.flush()
    of.flush()
    del kind, of
    return DedupPlan(folder, count, records)


def _sign(
    inp: Path, params: DedupParams, folder: Path, workers: int, steps: Steps | None
) -> tuple[int, int]:
    """Step 1; returns (records that passed the filters, records read)."""
    step = begin(steps, "dedup: signatures", inp.stat().st_size, "bytes")
    signer = _Signer(params, workers)
    count = 0
    records = 0
    offset = 0
    files = {n: (folder / f"{n}.bin").open("wb") for n in ("digests", "tokens", "keys", "ids")}
    with contextlib.ExitStack() as stack:
        for fh in files.values():
            stack.enter_context(fh)
        stack.callback(signer.close)
        offsets = (folder / "id_offsets.bin").open("wb")
        stack.enter_context(offsets)
        offsets.write(np.zeros(1, np.int64).tobytes())
        for result, done in signer.map(_chunks(inp)):
            if "error_line" in result:
                raise UserError(f"{inp}:{result['error_line']}: not a JSON line")
            encoded = [
                (str(records + i) if isinstance(i, int) else i).encode() for i in result["ids"]
            ]
            lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
            offsets.write((offset + np.cumsum(lengths)).tobytes())
            offset += int(lengths.sum())
            files["ids"].write(b"".join(encoded))
            files["digests"].write(result["digests"])
            files["tokens"].write(result["tokens"].tobytes())
            files["keys"].write(result["keys"].tobytes())
            records += result["records"]
            count += len(encoded)
            step.done = done
    return count, records


def _rows(path: Path, dtype: Any, width: int, start: int, end: int) -> np.ndarray:
    """Rows [start, end) of a file of `width` values per record, read (not mapped: mapped
    pages would stay in the process's resident size as the scan goes)."""
    size = np.dtype(dtype).itemsize * width
    flat = np.fromfile(path, dtype, count=(end - start) * width, offset=start * size)
    return flat.reshape(end - start, width)


def _exact(folder: Path, count: int, kind, of, memory_bytes: int, steps: Steps | None) -> None:
    dtype = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("k", "<i8")])
    parts = Partitions(folder, "exact", partitions_for(count, dtype.itemsize, memory_bytes), dtype)
    step = begin(steps, "dedup: exact", count)
    rows_per = max(1, (memory_bytes // 8) // (dtype.itemsize * 2))
    for start in range(0, count, rows_per):
        block = _rows(folder / "digests.bin", np.uint64, 2, start, min(count, start + rows_per))
        rows = np.empty(len(block), dtype)
        rows["hi"], rows["lo"] = block[:, 0], block[:, 1]
        rows["k"] = np.arange(start, start + len(block))
        parts.add(rows, parts.part_of_key(rows["hi"]))
        step.done = start + len(block)
    parts.close()
    for p in range(parts.parts):
        rows = parts.read(p)
        parts.remove(p)
        if not len(rows):
            continue
        rows = rows[np.lexsort((rows["lo"], rows["hi"]))]  # stable: file order among equals
        new = run_starts([rows["hi"], rows["lo"]])
        first = np.maximum.accumulate(np.where(new, np.arange(len(rows)), 0))
        dup = ~new
        kind[rows["k"][dup]] = EXACT
        of[rows["k"][dup]] = rows["k"][first[dup]]


def _near(
    folder: Path, count: int, bands: int, kind, of, memory_bytes: int, steps: Steps | None
) -> None:
    dtype = np.dtype([("key", "<u8"), ("k", "<i8")])
    n_parts = partitions_for(count * bands, dtype.itemsize, memory_bytes)
    parts = Partitions(folder, "bands", n_parts, dtype)
    step = begin(steps, "dedup: near-duplicate buckets", count)
    rows_per = max(1, (memory_bytes // 8) // (dtype.itemsize * bands * 2))
    for start in range(0, count, rows_per):
        end = min(count, start + rows_per)
        tokens = _rows(folder / "tokens.bin", np.bool_, 1, start, end)[:, 0]
        live = np.flatnonzero(tokens & (kind[start:end] == NONE))
        rows = np.empty(len(live) * bands, dtype)
        rows["key"] = _rows(folder / "keys.bin", np.uint64, bands, start, end)[live].reshape(-1)
        live += start
        rows["k"] = np.repeat(live, bands)
        parts.add(rows, parts.part_of_key(rows["key"]))
        step.done = end
    parts.close()
    # Memberships of shared buckets, re-partitioned by record so step 4 reads them in order.
    mdtype = np.dtype([("k", "<i8"), ("bucket", "<i8")])
    members = Partitions(folder, "members", n_parts, mdtype)
    buckets = 0
    for p in range(parts.parts):
        rows = parts.read(p)
        parts.remove(p)
        if not len(rows):
            continue
        rows = rows[np.argsort(rows["key"], kind="stable")]
        new = run_starts([rows["key"]])
        run = np.cumsum(new) - 1
        size = np.bincount(run)
        shared = size[run] >= 2
        if not shared.any():
            continue
        ids = np.unique(run[shared], return_inverse=True)[1] + buckets
        buckets = int(ids.max()) + 1
        out = np.empty(int(shared.sum()), mdtype)
        out["k"], out["bucket"] = rows["k"][shared], ids
        members.add(out, (out["k"] * members.parts) // count)
    members.close()
    _first_kept(members, buckets, kind, of, steps)


def _first_kept(members: Partitions, buckets: int, kind, of, steps: Steps | None) -> None:
    """Step 4: in file order, a record goes when a bucket of its already holds a kept record."""
    kept = np.full(max(1, buckets), -1, dtype=np.int64)  # per shared bucket: its kept record
    step = begin(steps, "dedup: first copies", members.rows, "memberships")
    for p in range(members.parts):
        rows = members.read(p)
        members.remove(p)
        rows = rows[np.lexsort((rows["bucket"], rows["k"]))]
        ks, bs = rows["k"].tolist(), rows["bucket"].tolist()
        i, n = 0, len(ks)
        while i < n:
            k, j, best = ks[i], i, -1
            while j < n and ks[j] == k:
                owner = int(kept[bs[j]])
                if owner >= 0 and (best < 0 or owner < best):
                    best = owner
                j += 1
            if best >= 0:
                kind[k], of[k] = NEAR, best
            else:
                kept[bs[i:j]] = k
            i = j
        step.done += n


def work_folder(out: Path) -> Any:
    """A temporary folder beside the output (on disk, not a RAM-backed /tmp)."""
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.dedup-")
