"""The package's shape: imports run one way, and run-directory helpers live under glan.run."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import glan

SRC = Path(glan.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every glan module and the glan modules it imports, at any depth of its code (an import
    inside a function is still an edge: it runs whenever that function does)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_post_modules_do_not_import_each_other_in_a_circle():
    graph = _imports()
    for name in sorted(n for n in graph if n.startswith("glan.post")):
        cycle = _cycle_through(graph, name)
        assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_run_directory_helpers_live_under_glan_run():
    assert importlib.util.find_spec("glan.runstate") is None
    from glan.run.files import atomic_file, atomic_write_json, run_lock  # noqa: F401
