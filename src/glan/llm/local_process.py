"""The embedded model's process, seen from the run: started once, asked one request at a time
over a pipe, and, when it dies, one line that says how and what to do about it.

llama.cpp runs there rather than in the run's process because a native crash cannot be caught
where it happens: in process, a llama.cpp built for CPU features this CPU mishandles ended the
run with a bare `Segmentation fault`. Here the run outlives it, closes its files (every reply
made so far is kept) and names the cause and the fix. The cost is one interpreter start per
run (tens of milliseconds) and a pipe round trip per request (BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from glan.llm.errors import EndpointFatal
from glan.llm.llama_build import reinstall_command

ENGINE_SCRIPT = Path(__file__).with_name("local_engine.py")
#: Signals of a native library gone wrong (a bad instruction, a bad address, an assertion).
NATIVE_CRASHES = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
RESUME = "re-run the same command to resume"


def death_message(returncode: int, last_words: str = "") -> str:
    """One line: how the engine's process ended, and what to do."""
    said = f" (llama.cpp's last words: {last_words})" if last_words else ""
    if returncode >= 0:
        return f"the embedded model's process exited with status {returncode}{said}; {RESUME}"
    sig = signal.Signals(-returncode)
    if sig in NATIVE_CRASHES:
        return (
            f"llama.cpp crashed ({sig.name}) in the embedded model's process{said}: its native "
            "library was most likely built for CPU features this CPU mishandles (pip builds it "
            "with -march=native, which crashes on some AVX-512/AMX CPUs); rebuild it portably "
            f"with: {reinstall_command()} ; then {RESUME}"
        )
    if sig == signal.SIGKILL:
        return f"the embedded model's process was killed (SIGKILL: out of memory?); {RESUME}"
    return f"the embedded model's process was stopped by {sig.name}; {RESUME}"


def last_line(log: IO[bytes], limit: int = 300) -> str:
    """The last line of text the engine wrote to stderr, shortened to `limit` characters."""
    log.seek(0, 2)
    log.seek(max(0, log.tell() - 4096))
    lines = log.read().decode("utf-8", "replace").splitlines()
    text = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class EngineProcess:
    """The process `glan.llm.local_engine` runs in: one request at a time (callers hold a lock)."""

    def __init__(self, process: subprocess.Popen[str], log: IO[bytes]) -> None:
        self.process = process
        self.log = log
        self.closed = False

    @classmethod
    def start(cls, model_path: Path, n_ctx: int, n_threads: int) -> EngineProcess:
        """Start the process and load the model there; EndpointFatal if it cannot."""
        log = tempfile.TemporaryFile()  # noqa: SIM115 - the engine owns it; close() closes it
        process = subprocess.Popen(
            # -P: the script's folder (glan/llm, with its types.py) stays off sys.path.
            [sys.executable, "-P", str(ENGINE_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            encoding="utf-8",
        )
        engine = cls(process, log)
        settings = {"model_path": str(model_path), "n_ctx": n_ctx, "n_threads": n_threads}
        try:
            reply = engine.ask(settings)
        except BaseException:
            engine.close()
            raise
        if "error" in reply:
            engine.close()
            error = reply["error"]
            raise EndpointFatal(
                f"llama.cpp could not load {model_path}: {error['type']}: {error['message']}"
            )
        return engine

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message and read its reply; EndpointFatal, in one line, if the process died."""
        assert self.process.stdin is not None and self.process.stdout is not None
        line = ""
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: the reader reports it
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        with contextlib.suppress(OSError, ValueError):
            line = self.process.stdout.readline()
        if not line:
            if self.closed:
                raise EndpointFatal("the embedded model's process was closed")
            raise EndpointFatal(death_message(self.process.wait(), last_line(self.log)))
        return json.loads(line)

    def close(self) -> None:
        """End the process (it exits when its input closes, even in a generation)."""
        self.closed = True
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()
