"""The sandbox's launcher: a small stdlib-only script run as `python -I sandbox_launcher.py CONFIG
PROGRAM` in its own session. It is never imported by glan.

Why a launcher, not preexec_fn: glan's process has threads (torch, lm-eval), and code between
fork and exec in a threaded process can deadlock. Here the fork happens in a fresh one-thread
interpreter, which then:
- joins the pids cgroup glan made (when it could: as root, the only process limit that holds),
- becomes a child subreaper, so that descendants which leave the session (setsid, double fork)
  are re-parented to it rather than to init, and can still be found and killed,
- forks the program under resource limits (memory, CPU, file size, open files, no core dumps,
  and RLIMIT_NPROC where it counts: for a user other than root),
- waits for the program, then kills every descendant left (daemons, sleeping grandchildren),
- on SIGTERM (glan's timeout or output cap) kills them all and exits.
It exits with the program's status (128 + N when killed by signal N)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


class Stop(Exception):
    """SIGTERM from glan: kill everything and leave."""


def _stop(signum: int, frame: object) -> None:
    raise Stop


def become_subreaper() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def own_processes(uid: int) -> int:
    """How many processes this user runs now (RLIMIT_NPROC counts all of them)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                count += os.stat(f"/proc/{entry}").st_uid == uid
    return count


def set_limits(config: dict) -> None:
    def cap(which: int, value: int) -> None:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    cap(resource.RLIMIT_AS, config["memory_bytes"])
    cap(resource.RLIMIT_CPU, config["cpu_seconds"])
    cap(resource.RLIMIT_FSIZE, config["file_bytes"])
    cap(resource.RLIMIT_NOFILE, config["open_files"])
    cap(resource.RLIMIT_CORE, 0)
    uid = os.getuid()
    if uid != 0 and os.path.isdir("/proc"):  # root ignores RLIMIT_NPROC; the cgroup covers it
        cap(resource.RLIMIT_NPROC, own_processes(uid) + config["processes"])


def children() -> list[int]:
    """This process's children (orphaned descendants included, as it is a subreaper)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            found.append(int(entry))
    return found


def kill_all(cgroup: str | None, group: int) -> None:
    """SIGKILL every descendant: the program's process group first, then, where /proc tells
    who they are, round after round every child and cgroup member (killing a child re-parents
    its children here, and a fork in flight may add one more)."""
    with contextlib.suppress(OSError):
        os.killpg(group, signal.SIGKILL)
    if not os.path.isdir("/proc"):
        with contextlib.suppress(ChildProcessError):
            while True:
                os.waitpid(-1, 0)
        return
    while True:
        targets = set(children())
        if cgroup:
            try:
                with open(os.path.join(cgroup, "cgroup.procs")) as procs:
                    targets |= {int(p) for p in procs.read().split()} - {os.getpid()}
            except OSError:
                pass
        if not targets:
            return
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
            os.waitpid(-1, 0)  # at least one killed child ends; then look again
        except ChildProcessError:
            pass  # the rest were not our children (cgroup members): look again


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main() -> None:
    config, program = json.loads(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGTERM, _stop)
    cgroup = config.get("cgroup")
    if cgroup:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    become_subreaper()
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)  # a group of its own, for the first sweep
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            set_limits(config)
            os.execv(sys.executable, [sys.executable, "-I", "-c", program])
        finally:
            os._exit(127)
    code = 128 + signal.SIGTERM
    try:
        while True:
            done, status = os.waitpid(-1, 0)
            if done == pid:
                code = exit_code(status)
                break
    except Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kill_all(cgroup, pid)
    os._exit(code)


if __name__ == "__main__":
    main()
