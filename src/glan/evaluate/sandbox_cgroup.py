"""The cgroups one sandboxed program runs in, made, killed and removed from glan's side: the
program cannot stop that by killing its launcher, and, run as `nobody`, cannot leave them.

- cgroup v2 (any kernel since 5.14): `cgroup.kill` kills every process in it at once; it holds the
  pids limit too where the pids controller is enabled for it.
- cgroup v1's pids hierarchy: the pids limit; where it is the only cgroup, glan kills every
  member, round after round, until none is left (the pids limit bounds a fork race).
Both are made where this process may make them: as root, or in a delegated cgroup."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "glan-sandbox-"
KILL_WAIT_S = 5.0  # for the killed to leave the cgroup (SIGKILL cannot be caught)
V2 = ""  # the key of cgroup v2 in /proc/self/cgroup and mounts()


def mounts() -> dict[str, Path]:
    """Where the hierarchies glan uses are mounted: cgroup v2 (key V2) and v1's "pids"."""
    found: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            _device, point, kind, options, *_ = line.split()
            if kind == "cgroup2":
                found.setdefault(V2, Path(point))
            elif kind == "cgroup" and "pids" in options.split(","):
                found.setdefault("pids", Path(point))
    return found


def _own_path(hierarchy: str) -> str:
    """This process's cgroup in one hierarchy (V2 or a v1 controller), "/" if unknown."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _id, controllers, path = line.split(":", 2)
            if hierarchy in (controllers.split(",") if controllers else [V2]):
                return path
    return "/"


def _make(hierarchy: str, mount: Path, name: str) -> Path | None:
    """A new cgroup under this process's own (else under the root) or None where refused."""
    for parent in dict.fromkeys((mount / _own_path(hierarchy).lstrip("/"), mount)):
        with contextlib.suppress(OSError):
            (parent / name).mkdir()
            return parent / name
    return None


def _members(path: Path) -> set[int]:
    try:
        return {int(pid) for pid in (path / "cgroup.procs").read_text().split()}
    except OSError:
        return set()


@dataclass
class ProgramCgroups:
    made: list[Path] = field(default_factory=list)  # the launcher joins each
    kill_file: Path | None = None  # cgroup.kill of the v2 one
    limited: Path | None = None  # the one whose pids.max holds the process limit

    @classmethod
    def make(cls, processes: int) -> ProgramCgroups:
        cgroups, where, name = cls(), mounts(), f"{PREFIX}{uuid.uuid4().hex[:12]}"
        for hierarchy in (V2, "pids"):
            if hierarchy not in where or (hierarchy == "pids" and cgroups.limited):
                continue
            path = _make(hierarchy, where[hierarchy], name)
            if path is None:
                continue
            cgroups.made.append(path)
            if (path / "cgroup.kill").exists():
                cgroups.kill_file = path / "cgroup.kill"
            if (path / "pids.max").exists():
                (path / "pids.max").write_text(str(processes))
                cgroups.limited = path
        return cgroups

    def kill(self) -> None:
        """SIGKILL every process in the program's cgroups, then wait until none is left."""
        if self.kill_file is not None:
            with contextlib.suppress(OSError):
                self.kill_file.write_text("1")
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline:
            members = set().union(*map(_members, self.made))
            if not members:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.002)

    def remove(self) -> None:
        for path in self.made:
            with contextlib.suppress(OSError):
                path.rmdir()

    def describe(self, processes: int) -> dict[str, str]:
        """The "cgroup kill" protection, and the "process limit" one where a cgroup holds it."""
        if self.kill_file is not None:
            kill = f"cgroup.kill on {self.kill_file.parent}"
        elif self.made:
            kill = f"every member of {self.made[0]} killed until none is left"
        else:
            kill = "none: glan may make no cgroup here (needs root or a delegated cgroup)"
        said = {"cgroup kill": kill}
        if self.limited is not None:
            said["process limit"] = f"a pids cgroup: {processes} processes"
        return said
