"""The sandbox's launcher: a small stdlib-only script run as `python -I sandbox_launcher.py CONFIG
PROGRAM` in its own session. It is never imported by glan.

Why a launcher, not preexec_fn: glan's process has threads (torch, lm-eval), and code between
fork and exec in a threaded process can deadlock. Here the fork happens in a fresh one-thread
interpreter, which then:
- joins the cgroups glan made (glan kills through them, and one holds the pids limit),
- becomes a child subreaper, so that descendants which leave the session (setsid, double fork)
  are re-parented to it rather than to init, and can still be found and killed,
- takes the namespaces and the user sandbox_isolation.py sets up where the kernel allows, and
  writes to glan, on the report file descriptor, which protections hold (JSON),
- forks the program, under an init of its own where it has a process namespace, with no new
  privileges and resource limits (memory, CPU, file size, open files, no core dumps, and
  RLIMIT_NPROC where it counts: for a user other than root),
- waits for the program, then kills every descendant left (daemons, sleeping grandchildren),
- on SIGTERM (glan's timeout where it has no cgroup to kill through) kills them all and exits.
It exits with the program's status (128 + N when killed by signal N)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves this folder out
from sandbox_isolation import Isolation

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


def process_limit(config: dict, uid: int) -> tuple[int | None, str]:
    """RLIMIT_NPROC for a program run as uid, counted here (on the host's /proc), and in words."""
    if uid == 0:
        return None, "none: root ignores RLIMIT_NPROC and glan could make no pids cgroup"
    if not os.path.isdir("/proc"):
        return None, "none: no /proc to count the user's processes by"
    processes = config["processes"]
    return own_processes(uid) + processes, f"RLIMIT_NPROC: {processes} over uid {uid}'s own"


def set_limits(config: dict, processes: int | None) -> None:
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
    if processes is not None:
        cap(resource.RLIMIT_NPROC, processes)


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


def kill_all(cgroups: list[str], group: int) -> None:
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
        for cgroup in cgroups:
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


def start_program(isolation: Isolation, config: dict, program: str, nproc: int | None) -> None:
    """In the forked child: become the program."""
    isolation.drop_privileges()
    set_limits(config, nproc)
    os.execv(sys.executable, [sys.executable, "-I", "-c", program])


def run_init(isolation: Isolation, config: dict, program: str, nproc: int | None) -> None:
    """Pid 1 of the program's process namespace: forks the program and reaps what is orphaned
    there; when the program ends it leaves, and the kernel kills every process left inside."""
    isolation.enter_init()
    pid = os.fork()
    if pid == 0:
        start_program(isolation, config, program, nproc)
        return
    while True:
        done, status = os.waitpid(-1, 0)
        if done == pid:
            os._exit(exit_code(status))


def main() -> None:
    config, program = json.loads(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGTERM, _stop)
    for cgroup in config["cgroups"]:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    become_subreaper()
    isolation = Isolation(os.getcwd(), config["tmp_bytes"], config["tmp_entries"], config["user"])
    isolation.set_up(config["namespaces"])
    uid = isolation.run_as[0] if isolation.run_as else os.geteuid()
    nproc, limit = process_limit(config, uid)
    with os.fdopen(config["report_fd"], "w") as report:
        json.dump({**isolation.report, "process limit": limit}, report)
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)  # a group of its own, for the first sweep
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if isolation.own_processes:
                run_init(isolation, config, program, nproc)
            else:
                start_program(isolation, config, program, nproc)
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
    kill_all(config["cgroups"], pid)
    os._exit(code)


if __name__ == "__main__":
    main()
