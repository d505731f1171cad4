"""The docs site: its config reference is generated from the models, and says what each key does."""

from __future__ import annotations

import importlib.util
import os
import re
import unicodedata
from pathlib import Path
from types import SimpleNamespace

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


# ---- links: every page read on GitHub and on the built site ----------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _links(text: str) -> list[str]:
    """Relative links (no scheme, not mailto) outside code blocks."""
    text = FENCE.sub("", text)
    return [t for t in LINK.findall(text) if "://" not in t and not t.startswith("mailto:")]


def _github_slug(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _site_slug(heading: str) -> str:  # Python-Markdown's toc slugify, as mkdocs uses it
    text = unicodedata.normalize("NFKD", heading.replace("`", "")).encode("ascii", "ignore")
    text = re.sub(r"[^\w\s-]", "", text.decode("ascii")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _headings(text: str) -> list[str]:
    return [
        line.lstrip("#").strip()
        for line in FENCE.sub("", text).splitlines()
        if line.startswith("#")
    ]


def test_every_link_in_the_docs_leads_somewhere_on_github():
    """Read on GitHub (no build), a link to a page the site generates must not be dead, and an
    anchor must be one both GitHub and the site give that heading."""
    broken = []
    for page in _pages():
        for link in _links(page.read_text()):
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.is_file():
                broken.append(f"{page.relative_to(ROOT)}: {link}")
            elif anchor and target.suffix == ".md":
                headings = _headings(target.read_text())
                both = {_github_slug(h) for h in headings} & {_site_slug(h) for h in headings}
                if anchor not in both:
                    broken.append(f"{page.relative_to(ROOT)}: {link} (no such anchor on both)")
    assert broken == []


class _Page:
    def __init__(self, src_uri: str) -> None:
        self.file = SimpleNamespace(src_uri=src_uri)


def test_the_site_shows_the_generated_pages_and_every_link_resolves_in_it():
    """What the hook hands mkdocs: the reference and the benchmarks in place of their GitHub
    stand-ins, and links that all land on a page of the site."""
    hook = _reference()
    config = {"docs_dir": str(ROOT / "docs")}
    docs = ROOT / "docs"
    built = {
        str(p.relative_to(docs)): hook.on_page_markdown(
            p.read_text(), page=_Page(str(p.relative_to(docs))), config=config, files=None
        )
        for p in sorted(docs.rglob("*.md"))
    }
    assert built["reference/config.md"] == hook.render()
    assert "| `llm.model` |" in built["reference/config.md"]
    assert built["benchmarks.md"].startswith((ROOT / "BENCHMARKS.md").read_text().split("\n")[0])
    dead = []
    for name, text in built.items():
        for link in _links(text):
            path = link.partition("#")[0]
            if path and os.path.normpath(str(Path(name).parent / path)) not in built:
                dead.append(f"{name}: {link}")
    assert dead == []
