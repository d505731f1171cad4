"""Model-written code never runs in glan's process: each program runs in a fresh, isolated Python
(`-I`: no site-packages of the user, no environment paths) in an empty temporary directory, in a
session of its own, with no stdin and a minimal environment, under these limits:

- wall clock (timeout_s), then every process of the program is killed, grandchildren included;
- captured output (stdout and stderr together): its first and last bytes are kept, OUTPUT_BYTES
  in all, and the rest dropped (Hugging Face's code_eval ignores output: printing fails nothing);
- files written in its directory (DISK_BYTES in all, FILE_BYTES a file);
- memory (address space), CPU seconds, open files, per process;
- processes (PROCESSES): a pids cgroup where glan can make one, else RLIMIT_NPROC for a program
  that does not run as root.
and, where the kernel and glan's user allow, these protections (PROTECTIONS; `protections()`
says which hold here, and why not; docs/train-eval.md says which need what):

- cgroup kill: glan kills every process of the program through its cgroups when it ends or is
  stopped (sandbox_cgroup.py): killing its launcher saves nothing;
- unprivileged: root runs it as `nobody`, so it can neither leave its cgroups nor signal glan;
- private /tmp, no network, own process namespace (sandbox_isolation.py).

The limits are set by a small launcher (sandbox_launcher.py), never by preexec_fn, which can
deadlock in a process with threads. Even with every protection it reads what `nobody` may read
and runs on the host's kernel: run untrusted models in a container or VM (docs/train-eval.md).
Opt in with --allow-code-execution or HF_ALLOW_CODE_EVAL=1, as lm-eval requires."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from glan.evaluate.sandbox_cgroup import ProgramCgroups
from glan.evaluate.sandbox_isolation import NO_NETWORK, OWN_PROCESSES, PRIVATE_TMP, UNPRIVILEGED

MEMORY_BYTES = 1 << 30
CPU_SECONDS = 10
FILE_BYTES = 1 << 20
DISK_BYTES = 16 << 20
DISK_ENTRIES = 1000
OPEN_FILES = 64
PROCESSES = 32
OUTPUT_BYTES = 64 << 10
TAIL_BYTES = 4 << 10  # of OUTPUT_BYTES, kept from the end (code_eval's harness reports there)
PROGRAM_BYTES = 100_000  # passed as an argument: Linux caps one at 128 KiB
CHECK_EVERY_S = 0.2  # how often the written files are measured
GRACE_S = 5.0  # for the launcher to kill its tree before the group is killed outright
LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")
NAMESPACES = True  # False: none taken (tests check what the cgroups hold alone)
RUN_AS = "nobody"  # whom root runs programs as; None: root (tests)
CGROUP_KILL, PROCESS_LIMIT = "cgroup kill", "process limit"
PROTECTIONS = (CGROUP_KILL, PROCESS_LIMIT, UNPRIVILEGED, PRIVATE_TMP, NO_NETWORK, OWN_PROCESSES)


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str  # passed, failed, timed out, wrote too much, program too long
    output: str = ""  # stdout and stderr: their start and end, at most OUTPUT_BYTES
    # Each of PROTECTIONS: how it held for this program, or "none: " and why it did not.
    protections: dict[str, str] = field(default_factory=dict, compare=False)


class KeptOutput:
    """What glan keeps of a program's output: its start and its last TAIL_BYTES, OUTPUT_BYTES in
    all with the line that says how much was dropped between them."""

    NOTE = "\n[glan: {} bytes of output dropped]\n"
    HEAD_BYTES = OUTPUT_BYTES - TAIL_BYTES - 64  # room for the note

    def __init__(self) -> None:
        self.head, self.tail, self.dropped = bytearray(), bytearray(), 0

    def add(self, chunk: bytes) -> None:
        room = self.HEAD_BYTES - len(self.head)
        self.head += chunk[:room]
        self.tail += chunk[room:]
        if len(self.tail) > TAIL_BYTES:
            self.dropped += len(self.tail) - TAIL_BYTES
            del self.tail[:-TAIL_BYTES]

    def text(self) -> str:
        note = self.NOTE.format(self.dropped).encode() if self.dropped else b""
        return (self.head + note + self.tail).decode(errors="replace")


def code_execution_allowed(flag: bool = False) -> bool:
    return flag or os.environ.get("HF_ALLOW_CODE_EVAL") == "1"


def protections() -> dict[str, str]:
    """Which PROTECTIONS hold for programs run here (how, or "none: " and why): what the launcher
    and glan did for a program that does nothing (once a process)."""
    return dict(_probe())


@functools.cache
def _probe() -> tuple[tuple[str, str], ...]:
    return tuple(run_program("pass", timeout_s=60).protections.items())


def process_limit() -> str:
    """Which process limit holds for programs run here, in words."""
    return protections()[PROCESS_LIMIT]


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


def _stop(proc: subprocess.Popen[bytes], cgroups: ProgramCgroups) -> None:
    """Kill the program's processes through its cgroups; without one, ask the launcher to kill
    its tree, and kill the session's group outright if it does not."""
    if cgroups.made:
        cgroups.kill()
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _supervise(
    proc: subprocess.Popen[bytes], workdir: str, timeout_s: float, kept: KeptOutput
) -> str:
    """Reads the output until every process holding it is gone; returns why the program must be
    stopped ("" if it ended)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    next_check = 0.0
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timed out"
            if selector.select(min(left, CHECK_EVERY_S)):
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    return ""
                kept.add(chunk)
            if time.monotonic() >= next_check:
                size, entries = _disk_use(workdir)
                if size > DISK_BYTES or entries > DISK_ENTRIES:
                    return "wrote too much"
                next_check = time.monotonic() + CHECK_EVERY_S


def _read_report(fd: int) -> dict[str, str]:
    """What the launcher wrote on its report pipe (nothing if it was killed before)."""
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    try:
        return json.loads(data)
    except ValueError:
        return {}


def run_program(program: str, timeout_s: float = 10.0) -> Outcome:
    if len(program.encode()) > PROGRAM_BYTES:
        return Outcome(False, "program too long")
    cgroups = ProgramCgroups.make(PROCESSES)
    report_in, report_out = os.pipe()
    config = {
        "memory_bytes": MEMORY_BYTES,
        "cpu_seconds": CPU_SECONDS,
        "file_bytes": FILE_BYTES,
        "open_files": OPEN_FILES,
        "processes": PROCESSES,
        "cgroups": [str(path) for path in cgroups.made],
        "namespaces": NAMESPACES,
        "user": RUN_AS,
        "tmp_bytes": DISK_BYTES,
        "tmp_entries": DISK_ENTRIES,
        "report_fd": report_out,
    }
    kept = KeptOutput()
    try:
        with tempfile.TemporaryDirectory(prefix="glan-sandbox-") as workdir:
            with subprocess.Popen(
                [sys.executable, "-I", str(LAUNCHER), json.dumps(config), program],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session and process group
                env={"PATH": "/usr/bin:/bin", "HOME": workdir},
                pass_fds=(report_out,),
            ) as proc:
                os.close(report_out)
                report_out = -1
                reason = _supervise(proc, workdir, timeout_s, kept)
                if reason:
                    _stop(proc, cgroups)
                proc.wait()
                cgroups.kill()  # whatever outlived the launcher, or killed it
            said = _read_report(report_in)
    finally:
        cgroups.kill()
        cgroups.remove()
        os.close(report_in)
        if report_out >= 0:
            os.close(report_out)
    said.update(cgroups.describe(PROCESSES))
    held = {name: said.get(name, "none: the launcher did not say") for name in PROTECTIONS}
    passed = not reason and proc.returncode == 0
    reason = reason or ("passed" if passed else "failed")
    return Outcome(passed, reason, kept.text(), held)
