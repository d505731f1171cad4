"""Model-written code never runs in glan's process: each program runs in a fresh, isolated Python
(`-I`: no site-packages of the user, no environment paths) in an empty temporary directory, in a
session of its own, with no stdin and a minimal environment, under these limits:

- wall clock (timeout_s), then the whole process tree is killed, grandchildren included;
- captured output (OUTPUT_BYTES, stdout and stderr together): past it the program is stopped;
- files written in its directory (DISK_BYTES in all, FILE_BYTES a file);
- memory (address space), CPU seconds, open files, per process;
- processes (PROCESSES): a pids cgroup where glan can make one (root on most Linux hosts), else
  RLIMIT_NPROC on top of the user's current count. Root without a writable pids cgroup has NO
  process limit (the kernel exempts root from RLIMIT_NPROC): `process_limit()` says which holds.

The limits are set by a small launcher (sandbox_launcher.py), never by preexec_fn, which can
deadlock in a process with threads. It is not a security boundary against a determined attacker
(same user, same file system, network reachable): run untrusted models in a container or VM
(docs/train-eval.md). Opt in with --allow-code-execution or HF_ALLOW_CODE_EVAL=1, as lm-eval
requires."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MEMORY_BYTES = 1 << 30
CPU_SECONDS = 10
FILE_BYTES = 1 << 20
DISK_BYTES = 16 << 20
DISK_ENTRIES = 1000
OPEN_FILES = 64
PROCESSES = 32
OUTPUT_BYTES = 64 << 10
PROGRAM_BYTES = 100_000  # passed as an argument: Linux caps one at 128 KiB
CHECK_EVERY_S = 0.2  # how often the written files are measured
GRACE_S = 5.0  # for the launcher to kill its tree before the group is killed outright
LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")
CGROUP_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))  # cgroup v1, then v2


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str  # passed, failed, timed out, too much output, wrote too much, program too long
    output: str = ""  # stdout and stderr, at most OUTPUT_BYTES


def code_execution_allowed(flag: bool = False) -> bool:
    return flag or os.environ.get("HF_ALLOW_CODE_EVAL") == "1"


def _make_cgroup() -> Path | None:
    """A pids cgroup for one program, or None where this process may not make one."""
    for root in CGROUP_ROOTS:
        if not (root / "pids.max").exists() and not (root / "cgroup.procs").exists():
            continue
        path = root / f"glan-sandbox-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
        except OSError:
            continue
        try:
            (path / "pids.max").write_text(str(PROCESSES))
            return path
        except OSError:
            _remove_cgroup(path)
    return None


def _remove_cgroup(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.rmdir()


def process_limit() -> str:
    """Which process limit holds for programs run here, in words."""
    cgroup = _make_cgroup()
    _remove_cgroup(cgroup)
    if cgroup is not None:
        return f"a pids cgroup ({PROCESSES} processes)"
    if os.getuid() != 0:
        return f"RLIMIT_NPROC ({PROCESSES} processes over the user's own)"
    return "none: root ignores RLIMIT_NPROC and no pids cgroup could be made; use a container"


def _disk_use(workdir: str) -> tuple[int, int]:
    """Bytes and entries under workdir (stops counting past the limits)."""
    size = entries = 0
    for parent, dirs, files in os.walk(workdir):
        for name in files:
            entries += 1
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(parent, name)).st_blocks * 512
        entries += len(dirs)
        if size > DISK_BYTES or entries > DISK_ENTRIES:
            break
    return size, entries


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ask the launcher to kill its tree; kill the session's group outright if it does not."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _supervise(proc: subprocess.Popen[bytes], workdir: str, timeout_s: float) -> tuple[str, bytes]:
    """Reads the output until the tree is gone; returns why it was stopped ("" if it ended)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    kept = bytearray()
    reason = ""
    next_check = 0.0
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                reason = "timed out"
                break
            if selector.select(min(left, CHECK_EVERY_S)):
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    break  # every process holding the pipe is gone
                kept += chunk[: OUTPUT_BYTES - len(kept)]
                if len(kept) >= OUTPUT_BYTES:
                    reason = "too much output"
                    break
            if time.monotonic() >= next_check:
                size, entries = _disk_use(workdir)
                if size > DISK_BYTES or entries > DISK_ENTRIES:
                    reason = "wrote too much"
                    break
                next_check = time.monotonic() + CHECK_EVERY_S
    if reason:
        _stop(proc)
    proc.wait()
    return reason, bytes(kept)


def run_program(program: str, timeout_s: float = 10.0) -> Outcome:
    if len(program.encode()) > PROGRAM_BYTES:
        return Outcome(False, "program too long")
    cgroup = _make_cgroup()
    config = {
        "memory_bytes": MEMORY_BYTES,
        "cpu_seconds": CPU_SECONDS,
        "file_bytes": FILE_BYTES,
        "open_files": OPEN_FILES,
        "processes": PROCESSES,
        "cgroup": str(cgroup) if cgroup else None,
    }
    try:
        with (
            tempfile.TemporaryDirectory(prefix="glan-sandbox-") as workdir,
            subprocess.Popen(
                [sys.executable, "-I", str(LAUNCHER), json.dumps(config), program],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session and process group
                env={"PATH": "/usr/bin:/bin", "HOME": workdir},
            ) as proc,
        ):
            reason, output = _supervise(proc, workdir, timeout_s)
    finally:
        _remove_cgroup(cgroup)
    passed = not reason and proc.returncode == 0
    reason = reason or ("passed" if passed else "failed")
    return Outcome(passed, reason, output.decode(errors="replace"))
