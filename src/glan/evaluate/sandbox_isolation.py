"""Namespaces, mounts and the user a sandboxed program runs as, set up by the sandbox's launcher
(stdlib only: the launcher loads it by path, glan never imports it). Where the kernel allows:

- a network namespace: no network at all, not even loopback (its `lo` is down);
- a mount namespace in which /tmp, /var/tmp and /dev/shm are fresh, small tmpfs (private to the
  program, gone with it) and /sys/fs/cgroup is empty;
- a process namespace: the program sees and signals no process outside it, and when its first
  process (an init the launcher forks) ends, the kernel kills every process left in it;
- an IPC namespace: no System V IPC object outlives the program;
- run by root, the program runs as `nobody` (no supplementary groups): it can write no cgroup
  file, signal none of glan's processes, and RLIMIT_NPROC counts for it. Directories `nobody`
  may not enter on the way to the interpreter (a pyenv under /root, mode 0700) are covered, in
  the mount namespace, by an empty tmpfs into which only that path is bound back;
- run by another user, a user namespace (the user mapped to itself) lets it make the others.
Every program also runs with no new privileges (setuid files do not raise them). Each step the
kernel refuses is skipped, and `report` says which protection is then missing, and why."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import stat
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
EMPTIED_DIRS = ("/sys/fs/cgroup",)  # so that no cgroup file is even in sight
NOBODY_IDS = (65534, 65534)  # where the system has no `nobody`

# The protections this module gives, as glan's sandbox names them.
NO_NETWORK = "no network"
PRIVATE_TMP = "private /tmp"
OWN_PROCESSES = "own process namespace"
UNPRIVILEGED = "unprivileged"

_libc = ctypes.CDLL(None, use_errno=True)


def _checked(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def unshare(flags: int) -> None:
    _checked(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, kind: str | None, flags: int, data: str = "") -> None:
    encoded = [s.encode() if s else None for s in (source, target, kind, data)]
    _libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    _checked(_libc.mount(*encoded[:3], flags, encoded[3]), f"mount on {target}")


def no_new_privileges() -> None:
    _checked(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")


def _ids(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return NOBODY_IDS
    return entry.pw_uid, entry.pw_gid


def _can_enter(path: str, uid: int, gid: int) -> bool:
    """Whether uid (with only gid as its group) may search the directory, by its mode bits."""
    found = os.stat(path)
    if found.st_uid == uid:
        return bool(found.st_mode & stat.S_IXUSR)
    return bool(found.st_mode & (stat.S_IXGRP if found.st_gid == gid else stat.S_IXOTH))


def interpreter_paths() -> list[str]:
    """What the program's interpreter reads: this one's, as the launcher runs the same `python
    -I` (so the same sys.path, less the launcher's own folder)."""
    paths = {os.path.realpath(sys.executable), os.path.realpath(sys.prefix)}
    paths |= {os.path.realpath(sys.base_prefix)}
    paths |= {os.path.realpath(p) for p in sys.path if p and os.path.exists(p)}
    return sorted(paths - {os.path.dirname(os.path.realpath(__file__))})


def cover(directory: str, kept: set[str], options: str) -> None:
    """Mounts a fresh tmpfs on `directory` with `kept` (names of its entries) bound back in."""
    handles = {name: os.open(os.path.join(directory, name), os.O_PATH) for name in kept}
    try:
        mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, options)
        for name, handle in handles.items():
            target = os.path.join(directory, name)
            if stat.S_ISDIR(os.fstat(handle).st_mode):
                os.mkdir(target)
            else:
                open(target, "x").close()
            mount(f"/proc/self/fd/{handle}", target, None, MS_BIND | MS_REC)
    finally:
        for handle in handles.values():
            os.close(handle)


def _entries_under(directory: str, paths: list[str]) -> set[str]:
    """The first names below `directory` on the way to each of `paths` under it."""
    prefix = directory.rstrip("/") + "/"
    return {p[len(prefix) :].split("/")[0] for p in paths if p.startswith(prefix)}


class Isolation:
    """What the launcher sets up for one program, and, in `report`, which protection holds and
    how, or "none: " and why not."""

    def __init__(self, workdir: str, tmp_bytes: int, tmp_entries: int, user: str | None) -> None:
        self.workdir = workdir
        self.tmp_options = f"size={tmp_bytes},nr_inodes={tmp_entries},mode=1777"
        self.user = user  # whom root runs the program as; None: as the caller
        self.run_as: tuple[int, int] | None = None
        self.own_mounts = self.own_processes = False
        self.report: dict[str, str] = {}

    def set_up(self, namespaces: bool) -> None:
        """In the launcher, before it forks: every step it can take, each reported."""
        if not namespaces:
            off = "none: switched off (glan.evaluate.sandbox.NAMESPACES)"
            self.report.update(dict.fromkeys((NO_NETWORK, PRIVATE_TMP, OWN_PROCESSES), off))
        else:
            self._namespaces()
        self._choose_user()

    def _namespaces(self) -> None:
        if os.geteuid() != 0:
            try:
                self._own_user_namespace()
            except OSError as error:
                why = f"none: {error} (a user other than root needs user namespaces)"
                self.report.update(dict.fromkeys((NO_NETWORK, PRIVATE_TMP, OWN_PROCESSES), why))
                return
        with contextlib.suppress(OSError):
            unshare(CLONE_NEWIPC)
        steps = (
            (NO_NETWORK, CLONE_NEWNET, "a network namespace of its own, no interface up"),
            (OWN_PROCESSES, CLONE_NEWPID, "a process namespace of its own, ended with it"),
            (PRIVATE_TMP, CLONE_NEWNS, ""),
        )
        for name, flag, how in steps:
            try:
                unshare(flag)
            except OSError as error:
                self.report[name] = f"none: {error}"
            else:
                self.report[name] = how
        self.own_processes = not self.report[OWN_PROCESSES].startswith("none")
        if not self.report[PRIVATE_TMP].startswith("none"):
            try:
                self._private_mounts()
            except OSError as error:
                self.report[PRIVATE_TMP] = f"none: {error}"

    @staticmethod
    def _own_user_namespace() -> None:
        """A user namespace in which this user is itself: it may then make the others."""
        uid, gid = os.geteuid(), os.getegid()
        unshare(CLONE_NEWUSER)
        with contextlib.suppress(OSError), open("/proc/self/setgroups", "w") as setgroups:
            setgroups.write("deny")
        for name, own in (("uid_map", uid), ("gid_map", gid)):
            with open(f"/proc/self/{name}", "w") as ids:
                ids.write(f"{own} {own} 1")

    def _private_mounts(self) -> None:
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here reaches the host
        self.own_mounts = True
        kept = [os.path.realpath(self.workdir), *interpreter_paths()]
        covered = [d for d in TMP_DIRS if os.path.isdir(d)]
        for directory in covered:
            cover(directory, _entries_under(os.path.realpath(directory), kept), self.tmp_options)
        for directory in EMPTIED_DIRS:
            if os.path.isdir(directory):
                cover(directory, set(), "size=4k,nr_inodes=16,mode=0555")
        os.chdir(self.workdir)  # the bound-back copy: its path is the same inside
        size = self.tmp_options.split(",")[0].split("=")[1]
        self.report[PRIVATE_TMP] = f"fresh tmpfs ({size} bytes each) on {', '.join(covered)}"

    def _choose_user(self) -> None:
        if os.geteuid() != 0:
            self.report[UNPRIVILEGED] = f"runs as uid {os.geteuid()}, no new privileges"
            return
        if self.user is None:
            self.report[UNPRIVILEGED] = "none: switched off (glan.evaluate.sandbox.RUN_AS)"
            return
        uid, gid = _ids(self.user)
        if self.own_mounts:
            with contextlib.suppress(OSError):  # then _unreachable says what is not shown
                self._reveal(uid, gid)
        unreachable = self._unreachable(uid, gid)
        if unreachable:
            where = "" if self.own_mounts else ", and no mount namespace could show it"
            self.report[UNPRIVILEGED] = f"none: {self.user} cannot read {unreachable}{where}"
            return
        os.chown(self.workdir, uid, gid)
        self.run_as = (uid, gid)
        self.report[UNPRIVILEGED] = f"runs as {self.user} (uid {uid}), no new privileges"

    def _reveal(self, uid: int, gid: int) -> None:
        """Covers each directory `uid` may not enter on the way to the interpreter, top down,
        with only that way bound back into it."""
        paths = interpreter_paths()
        blocked: dict[str, set[str]] = {}
        for path in paths:
            parts = path.split("/")[1:-1]
            for depth in range(len(parts) + 1):
                directory = "/" + "/".join(parts[:depth])
                if not _can_enter(directory, uid, gid):
                    blocked.setdefault(directory, set())
        for directory in sorted(blocked, key=lambda d: d.count("/") if d != "/" else 0):
            if directory != "/":
                cover(directory, _entries_under(directory, paths), "size=4k,mode=0755")

    def _unreachable(self, uid: int, gid: int) -> str | None:
        """The first of the interpreter's files and folders that uid may not read, tried with
        uid as this process's effective user (one thread here: safe to switch and back)."""
        groups = os.getgroups()
        os.setgroups([])
        os.setegid(gid)
        os.seteuid(uid)
        try:
            for path in interpreter_paths():
                mode = os.R_OK | os.X_OK if os.path.isdir(path) else os.R_OK
                if path == os.path.realpath(sys.executable):
                    mode = os.X_OK
                if not os.access(path, mode, effective_ids=True):
                    return path
            return None
        finally:
            os.seteuid(0)
            os.setegid(0)
            os.setgroups(groups)

    def enter_init(self) -> None:
        """In the process namespace's init, before it forks the program: a /proc of its own
        (in a mount namespace nested in the program's, so the launcher keeps the host's)."""
        if self.own_mounts:
            with contextlib.suppress(OSError):
                unshare(CLONE_NEWNS)
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)

    def drop_privileges(self) -> None:
        """In the program's process, before its limits and exec."""
        if self.run_as is not None:
            uid, gid = self.run_as
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        no_new_privileges()
