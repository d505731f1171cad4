"""MkDocs hook: pages filled at build time, so they can never drift: the config reference from
glan's pydantic models, and the benchmarks page from the repository's BENCHMARKS.md.

Each has a short stand-in in docs/ (what GitHub shows, saying where the content is), replaced
here by the content. Links to `../BENCHMARKS.md` (the file itself, for GitHub readers) lead to
the benchmarks page on the site. `python docs/hooks/config_reference.py` prints the reference.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

PAGE = "reference/config.md"
BENCHMARKS = "benchmarks.md"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
        return "(none)" if value is None else f"`{value!r}`"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(see below)"
        return f"`{value!r}`"
    return "**required**"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def model_table(model: type[BaseModel], prefix: str, sections: list[str]) -> None:
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(
            f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {description} |"
        )
        is_map = typing.get_origin(field.annotation) is dict
        for sub in _models_in(field.annotation):
            nested.append((f"{key}.<name>." if is_map else f"{key}.", sub))
    title = prefix.rstrip(".") or "top level"
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    sections.append(f"## `{title}` ({model.__name__})\n\n{doc}\n\n" + "\n".join(rows))
    for sub_prefix, sub in nested:
        if sub is not model:
            model_table(sub, sub_prefix, sections)


def render() -> str:
    from glan.config import GenerateConfig

    sections: list[str] = []
    model_table(GenerateConfig, "", sections)
    unique = list(dict.fromkeys(sections))  # a model reached twice is shown once
    return (
        "# Config reference\n\n"
        "Every key `glan generate --config FILE` accepts (and `--set KEY=VALUE` overrides), "
        "generated from the code's pydantic models when these docs are built. Unknown keys "
        "and wrong types are refused with one line naming the key.\n\n" + "\n\n".join(unique) + "\n"
    )


def _to_site(markdown: str, page: str) -> str:
    """`../BENCHMARKS.md` (the repository file, what GitHub opens) -> the site's page."""
    up = "../" * page.count("/")  # from reference/x.md the page is ../benchmarks.md
    return re.sub(r"\]\((?:\.\./)+BENCHMARKS\.md", f"]({up}{BENCHMARKS}", markdown)


def benchmarks_page(config: Any) -> str:
    """BENCHMARKS.md as a page of the site: its links into docs/ made relative to the site."""
    text = (Path(config["docs_dir"]).parent / "BENCHMARKS.md").read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/", "](", text)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    src = page.file.src_uri
    if src == PAGE:
        return render()
    if src == BENCHMARKS:
        return benchmarks_page(config)
    return _to_site(markdown, src)


if __name__ == "__main__":
    print(render(), end="")
