"""The code sandbox (glan.evaluate.sandbox) against hostile programs: each escape is attempted for
real, and the test checks it was contained, or, where this machine's kernel or user gives the
sandbox no such protection, that the sandbox says so (a skip here, a failure in CI)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from glan.evaluate import sandbox, sandbox_cgroup
from glan.evaluate.sandbox import run_program
from glan.testing.deps import unavailable

TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def _needs(protection: str) -> None:
    """This test checks `protection`: where the sandbox says it does not hold here, there is
    nothing to contain (skipped on a developer's machine, a failure in CI)."""
    how = sandbox.protections()[protection]
    if how.startswith("none"):
        unavailable(f"the sandbox's {protection}", how)


def _token() -> str:
    return f"glan-probe-{uuid.uuid4().hex}"


def _running(token: str) -> list[int]:
    """Processes alive now whose command line holds `token` (zombies count as dead): found by
    what they run, as a program's own pids mean nothing outside its process namespace."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if token.encode() not in (entry / "cmdline").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _sandbox_cgroups(listing: str) -> list[Path]:
    """The directories of the sandbox's cgroups in a program's /proc/self/cgroup."""
    where, found = sandbox_cgroup.mounts(), []
    for line in listing.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and sandbox_cgroup.PREFIX in parts[2]:
            for hierarchy in parts[1].split(",") if parts[1] else [sandbox_cgroup.V2]:
                if hierarchy in where:
                    found.append(where[hierarchy] / parts[2].lstrip("/"))
    return found


def test_the_sandbox_runs_programs_apart_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_program("while True: pass", timeout_s=1).reason == "timed out"
    assert not run_program("x = bytearray(4 << 30)").passed  # over the memory limit
    monkeypatch.setenv("GLAN_PROBE_SECRET", "s3cret")  # the caller's environment stays out
    assert run_program("import os, sys; sys.exit('GLAN_PROBE_SECRET' in os.environ)").passed
    assert run_program("import os; assert os.listdir('.') == []").passed  # an empty workdir


def test_a_file_bomb_is_stopped() -> None:
    one_big_file = run_program("open('f', 'wb').write(b'x' * (8 << 20))", timeout_s=60)
    assert not one_big_file.passed and "File too large" in one_big_file.output
    many_files = "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * 500_000)\n    i += 1\n"
    assert run_program(many_files, timeout_s=60).reason == "wrote too much"


def test_every_protection_is_said_to_hold_or_why_not() -> None:
    said = sandbox.protections()
    assert list(said) == list(sandbox.PROTECTIONS)
    assert all(
        how and (not how.startswith("none") or how.startswith("none: ")) for how in said.values()
    )
    assert sandbox.process_limit() == said["process limit"]


@pytest.mark.parametrize("then", ["exits", "sleeps until the timeout"])
def test_a_grandchild_in_its_own_session_dies_with_the_program(then: str) -> None:
    token = _token()
    program = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)  # {token}'],\n"
        "                 start_new_session=True)\n"
    )
    if then != "exits":
        program += "time.sleep(120)\n"
    outcome = run_program(program, timeout_s=60 if then == "exits" else 3)
    assert outcome.reason == ("passed" if then == "exits" else "timed out")
    assert not _running(token)


KILLS_ITS_LAUNCHER = """
import os, signal, subprocess, sys
subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)  # {token}"],
    start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
print(open("/proc/self/cgroup").read(), flush=True)
os.kill(os.getppid(), signal.SIGKILL)
"""


def test_a_program_that_kills_its_launcher_leaves_no_process_and_no_cgroup() -> None:
    _needs("cgroup kill")
    token = _token()
    outcome = run_program(KILLS_ITS_LAUNCHER.format(token=token), timeout_s=60)
    cgroups = _sandbox_cgroups(outcome.output)
    assert cgroups, outcome.output  # it ran in the sandbox's cgroup(s)...
    assert not [path for path in cgroups if path.exists()]  # ...which are gone
    assert not _running(token)  # and so is the grandchild it left in a session of its own


def test_with_no_namespace_and_no_user_switch_the_cgroup_alone_kills_what_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _needs("cgroup kill")
    monkeypatch.setattr(sandbox, "NAMESPACES", False)
    monkeypatch.setattr(sandbox, "RUN_AS", None)
    token = _token()
    outcome = run_program(KILLS_ITS_LAUNCHER.format(token=token), timeout_s=60)
    off = ("no network", "private /tmp", "own process namespace")
    assert all(outcome.protections[name].startswith("none: ") for name in off)
    assert outcome.reason == "failed"  # its launcher was killed: only glan was left to kill
    cgroups = _sandbox_cgroups(outcome.output)
    assert cgroups and not [path for path in cgroups if path.exists()]
    assert not _running(token)


# Run as root, it moves itself into every cgroup hierarchy's root, then forks as far as it can.
# Bounded, so that a broken process limit costs 200 sleeping processes, not the machine.
LEAVES_ITS_CGROUP_AND_FORKS = """
import os, time
moved = []
for line in open("/proc/self/mounts"):
    _device, point, kind = line.split()[:3]
    if kind in ("cgroup", "cgroup2"):
        try:
            with open(point + "/cgroup.procs", "w") as procs:
                procs.write(str(os.getpid()))
            moved.append(point)
        except OSError:
            pass
made = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(120)  # {token}
        os._exit(0)
    made += 1
print("uid", os.getuid(), "moved", moved, "made", made, flush=True)
"""


def test_a_program_cannot_leave_its_cgroup_to_fork_past_the_process_limit() -> None:
    _needs("process limit")
    _needs("unprivileged")
    token = _token()
    outcome = run_program(LEAVES_ITS_CGROUP_AND_FORKS.format(token=token), timeout_s=60)
    said = outcome.output.split()
    assert said[said.index("moved") + 1] == "[]", outcome.output
    made = int(said[said.index("made") + 1])
    assert 0 < made < sandbox.PROCESSES
    assert not _running(token)


def test_with_no_cgroup_a_program_run_as_nobody_still_meets_a_process_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _needs("unprivileged")
    monkeypatch.setattr(sandbox.ProgramCgroups, "make", lambda processes: sandbox.ProgramCgroups())
    token = _token()
    outcome = run_program(LEAVES_ITS_CGROUP_AND_FORKS.format(token=token), timeout_s=60)
    assert outcome.protections["cgroup kill"].startswith("none: ")
    assert outcome.protections["process limit"].startswith("RLIMIT_NPROC")
    said = outcome.output.split()
    assert 0 < int(said[said.index("made") + 1]) <= sandbox.PROCESSES
    assert not _running(token)


def test_files_written_to_tmp_are_gone_after_the_program() -> None:
    _needs("private /tmp")
    token = _token()
    program = f"for d in {TMP_DIRS!r}:\n    open(d + '/{token}', 'w').write('x')\n"
    try:
        assert run_program(program, timeout_s=60).passed
        assert not [d for d in TMP_DIRS if Path(d, token).exists()]
    finally:
        for d in TMP_DIRS:
            Path(d, token).unlink(missing_ok=True)


# Writes its name into a file of /tmp that another program, running at the same time, writes
# too, then watches it for three seconds: it must only ever read its own name.
WATCHES_A_SHARED_TMP_FILE = """
import sys, time
path = "/tmp/{token}"
with open(path, "w") as mine:
    mine.write("{me}")
end = time.monotonic() + 3
while time.monotonic() < end:
    with open(path) as seen:
        if seen.read() != "{me}":
            sys.exit("another program wrote " + path)
    time.sleep(0.05)
"""


def test_two_programs_at_once_each_see_a_tmp_of_their_own() -> None:
    _needs("private /tmp")
    token = _token()
    outcomes: dict[str, sandbox.Outcome] = {}

    def run(me: str) -> None:
        program = WATCHES_A_SHARED_TMP_FILE.format(token=token, me=me)
        outcomes[me] = run_program(program, timeout_s=60)

    threads = [threading.Thread(target=run, args=(me,)) for me in ("first", "second")]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        Path("/tmp", token).unlink(missing_ok=True)
    assert {me: o.passed for me, o in outcomes.items()} == {"first": True, "second": True}, [
        o.output for o in outcomes.values()
    ]


CONNECTS = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
except OSError as error:
    print("no connection:", error)
else:
    sys.exit("connected")
"""


def test_a_program_cannot_connect_even_to_loopback() -> None:
    _needs("no network")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        outcome = run_program(CONNECTS.format(port=port), timeout_s=60)
        server.settimeout(0)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody came
    assert outcome.passed and "no connection" in outcome.output, outcome.output


def test_output_past_the_cap_is_discarded_and_the_program_still_passes() -> None:
    outcome = run_program("print('x' * 200_000)\nprint('the end')\n", timeout_s=60)
    assert outcome.passed, outcome.reason
    assert outcome.output.startswith("xxx") and outcome.output.endswith("the end\n")
    assert len(outcome.output.encode()) <= sandbox.OUTPUT_BYTES


def test_a_print_loop_runs_into_the_timeout_with_its_output_capped() -> None:
    outcome = run_program("while True: print('x' * 1000)", timeout_s=2)
    assert outcome.reason == "timed out" and not outcome.passed
    assert len(outcome.output.encode()) <= sandbox.OUTPUT_BYTES


# Run by a user other than root, through sandbox.run_program: the namespaces come from a user
# namespace of its own, and the escapes of the tests above are tried once more.
AS_ANOTHER_USER = """
import json, os, sys
from glan.evaluate import sandbox
outcome = sandbox.run_program('''
import os, socket, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)  # {token}"],
                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
open("/tmp/{token}", "w").write("x")
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
except OSError:
    pass
else:
    sys.exit("connected")
print("uid", os.getuid(), flush=True)
os.kill(os.getppid(), 9)
''', timeout_s=60)
print(json.dumps([outcome.reason, outcome.output, outcome.protections]))
"""


def _python_for(uid: int) -> str | None:
    """An interpreter (3.11+) that uid may run: glan's, or the system's."""
    for python in dict.fromkeys((sys.executable, shutil.which("python3"), "/usr/bin/python3")):
        if python is None:
            continue
        check = [python, "-I", "-c", "import sys; assert sys.version_info >= (3, 11)"]
        with contextlib.suppress(OSError):
            if subprocess.run(check, user=uid, group=uid, extra_groups=[]).returncode == 0:
                return python
    return None


def test_run_by_another_user_the_sandbox_isolates_through_a_user_namespace(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("every other test here runs the sandbox as this user, not root")
    nobody = 65534
    python = _python_for(nobody)
    if python is None:
        unavailable("a Python 3.11+ that nobody may run", "glan's is out of its reach")
    # The sandbox's modules are stdlib only: a copy nobody may read, wherever glan lies.
    package, token = Path(tempfile.mkdtemp(prefix="glan-sandbox-test-")), _token()
    try:
        package.chmod(0o755)
        source = Path(sandbox.__file__).parent
        (package / "glan" / "evaluate").mkdir(parents=True)
        (package / "glan" / "__init__.py").write_text("")
        (package / "glan" / "evaluate" / "__init__.py").write_text("")
        for module in source.glob("sandbox*.py"):
            shutil.copy(module, package / "glan" / "evaluate")
        with socket.create_server(("127.0.0.1", 0)) as server:
            script = AS_ANOTHER_USER.format(token=token, port=server.getsockname()[1])
            ran = subprocess.run(
                [python, "-I", "-c", f"import sys; sys.path.insert(0, {str(package)!r})\n{script}"],
                user=nobody,
                group=nobody,
                extra_groups=[],
                capture_output=True,
                text=True,
                cwd=package,
                timeout=120,
            )
    finally:
        shutil.rmtree(package)
        Path("/tmp", token).unlink(missing_ok=True)
    assert ran.returncode == 0, ran.stderr
    reason, output, protections = json.loads(ran.stdout.splitlines()[-1])
    namespaces = ("no network", "private /tmp", "own process namespace")
    refused = {
        name: protections[name] for name in namespaces if protections[name].startswith("none")
    }
    if refused:
        unavailable("user namespaces for a user other than root", str(refused))
    assert protections["unprivileged"] == f"runs as uid {nobody}, no new privileges"
    assert protections["process limit"].startswith("RLIMIT_NPROC")
    assert (reason, output) == ("passed", f"uid {nobody}\n")  # it never connected
    assert not Path("/tmp", token).exists()
    assert not _running(token)
