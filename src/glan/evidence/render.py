"""The evidence page as evidence.json (everything), evidence.md and evidence.html (one
self-contained page, no scripts)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from glan.evidence.compose import Evidence
from glan.evidence.parts import Table
from glan.run.files import atomic_write_json, atomic_write_text

TITLE = "glan evidence: does the tuned model beat its base, and where does each number come from"


def _md_text(text: Any) -> str:
    """User text (labels, paths, reasons) as markdown shows it, not as HTML it would run nor
    a code span it would open."""
    return html.escape(str(text), quote=False).replace("`", "\\`")


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", "<br>")


def _fence(text: str, least: int = 1) -> str:
    """Backticks enough to hold `text` (a run of them inside cannot close it)."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    return "`" * max(least, longest + 1)


def _code(text: Any) -> str:
    shown = str(text)
    fence = _fence(shown)
    pad = " " if shown.startswith("`") or shown.endswith("`") else ""
    return f"{fence}{pad}{shown}{pad}{fence}"


def _code_cell(text: str) -> str:
    """Code in a table cell: shown as is, but a `|` would end the cell."""
    return _code(text).replace("|", "\\|")


def _md_table(table: Table) -> list[str]:
    lines = [f"**{_md_text(table.title)}** (from {_code(table.source)})", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h in table.head) + " |")
    lines.append("|" + "---|" * len(table.head))
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.body]
    return [*lines, ""]


def _md_tree(value: Any, depth: int = 0) -> list[str]:
    """Nested provenance as nested bullets; leaves as `key: value`."""
    pad = "  " * depth
    lines = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            lines += [f"{pad}- {_md_text(key)}:", *_md_tree(item, depth + 1)]
        else:
            shown = ", ".join(map(str, item)) if isinstance(item, list) else item
            lines.append(f"{pad}- {_md_text(key)}: {_code(shown)}")
    return lines


def markdown(evidence: Evidence) -> str:
    lines = [f"# {TITLE}", "", *[f"- {_md_text(line)}" for line in evidence.headline], ""]
    for part in evidence.parts:
        lines += [f"## {_md_text(part.name)}", ""]
        if not part.shown:
            lines += [_md_text(part.why), ""]
            continue
        for table in part.tables:
            lines += _md_table(table)
        lines += [line for text in part.lines for line in (_md_text(text), "")]
    lines += ["## Provenance", "", "### Source files (every number above is read from one)", ""]
    lines += ["| file | sha256 | bytes | holds |", "|---|---|---|---|"]
    lines += [
        f"| {_code_cell(s.path)} | `{s.sha256}` | {s.bytes:,} | {_md_cell(s.holds)} |"
        for s in evidence.sources
    ]
    lines += ["", "### Versions, models, data, seeds, settings (as the files record them)", ""]
    lines += _md_tree(evidence.provenance) or ["Nothing recorded: no part ran."]
    fence = _fence("\n".join(evidence.commands), 3)
    lines += ["", "### Commands to reproduce", "", f"{fence}bash", *evidence.commands, fence, ""]
    lines.append(f"Composed by glan {evidence.glan_version}; evidence.json holds all of it.")
    return "\n".join(lines) + "\n"


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>glan evidence</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ padding: 4px 10px; text-align: left; border-bottom: 1px solid #eee;
  vertical-align: top; white-space: pre-line; }}
code, pre {{ background: #f6f6f6; }}
pre {{ padding: 8px; overflow-x: auto; }}
.missing {{ color: #a40; }}
</style></head><body>
<h1>{title}</h1>
<ul>{headline}</ul>
{body}
</body></html>
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in table.head)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in table.body
    )
    return (
        f"<p><b>{_e(table.title)}</b> (from <code>{_e(table.source)}</code>)</p>"
        f"<table><tr>{head}</tr>{rows}</table>"
    )


def _html_tree(value: dict[str, Any]) -> str:
    items = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            items.append(f"<li>{_e(key)}:{_html_tree(item)}</li>")
        else:
            shown = ", ".join(map(str, item)) if isinstance(item, list) else item
            items.append(f"<li>{_e(key)}: <code>{_e(shown)}</code></li>")
    return "<ul>" + "".join(items) + "</ul>"


def page(evidence: Evidence) -> str:
    body = []
    for part in evidence.parts:
        body.append(f"<h2>{_e(part.name)}</h2>")
        if not part.shown:
            body.append(f'<p class="missing">{_e(part.why)}</p>')
            continue
        body += [_html_table(t) for t in part.tables]
        body += [f"<p>{_e(line)}</p>" for line in part.lines]
    body.append("<h2>Provenance</h2><h3>Source files (every number above is read from one)</h3>")
    body.append(
        _html_table(
            Table(
                title="source files",
                source="this page's folder (paths relative to it)",
                head=["file", "sha256", "bytes", "holds"],
                body=[[s.path, s.sha256, f"{s.bytes:,}", s.holds] for s in evidence.sources],
            )
        )
    )
    body.append("<h3>Versions, models, data, seeds, settings (as the files record them)</h3>")
    body.append(_html_tree(evidence.provenance) if evidence.provenance else "<p>Nothing.</p>")
    body.append("<h3>Commands to reproduce</h3>")
    body.append("<pre>" + _e("\n".join(evidence.commands)) + "</pre>")
    return PAGE.format(
        title=_e(TITLE),
        headline="".join(f"<li>{_e(line)}</li>" for line in evidence.headline),
        body="\n".join(body),
    )


def write(evidence: Evidence, page_dir: Path) -> list[Path]:
    page_dir.mkdir(parents=True, exist_ok=True)
    paths = [page_dir / f"evidence.{ext}" for ext in ("json", "md", "html")]
    atomic_write_json(paths[0], evidence.model_dump(mode="json"))
    atomic_write_text(paths[1], markdown(evidence))
    atomic_write_text(paths[2], page(evidence))
    return paths
