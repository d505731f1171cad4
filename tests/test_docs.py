"""The docs site: its config reference is generated from the models, and says what each key does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import BaseModel

from glan.config import GenerateConfig

ROOT = Path(__file__).resolve().parent.parent


def _reference():
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "docs" / "hooks" / "config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        for sub in _reference()._models_in(field.annotation):
            _models(sub, seen)
    return seen


def test_every_config_key_says_what_it_does():
    undocumented = [
        f"{model.__name__}.{name}"
        for model in _models(GenerateConfig, set())
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert undocumented == []


def test_the_reference_lists_every_key_of_every_backend_kind():
    page = _reference().render()
    for model in _models(GenerateConfig, set()):
        for name in model.model_fields:
            assert f"{name}` |" in page, f"{model.__name__}.{name} missing from the reference"
