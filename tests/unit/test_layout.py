"""The package's shape, as issue 12 set it: parts you can see, and rules that keep them apart.

These read the source (no import), so a change that breaks a rule fails here first.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "wandbfs"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import, function-level ones included, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    walk(sub)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            walk(child)
    walk(tree)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in _imports(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{p}: relative import (use wandbfs.<part>.<module>)"
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                names = [a.name for a in node.names]
            graph[m] |= {n for n in names if n in mods and n != m}
    return graph


def test_at_most_six_modules_at_the_top_and_every_mechanism_a_subpackage():
    top = [p.name for p in PKG.glob("*.py")]
    assert len(top) <= 6, top
    for part in ("model", "sdk", "catalog", "cache", "fill", "fuse", "lineage", "daemon", "cli", "emulator", "shared"):
        assert (PKG / part / "__init__.py").is_file(), part


def test_the_shared_tier_stands_alone():
    """``shared/`` (the cluster's cache tier) knows only its store: the fill engine uses it,
    never the other way round, so it can be read and tested without a mount."""
    graph = _graph()
    for m, deps in graph.items():
        if m.startswith("wandbfs.shared"):
            assert all(d.startswith("wandbfs.shared") for d in deps), (m, deps)


def test_no_import_cycle_between_modules():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:   # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_sdk_is_used_only_from_sdk():
    allowed = ("wandbfs.sdk", "wandbfs.emulator", "wandbfs.bench")
    for m, p in _modules().items():
        if m.startswith(allowed):
            continue
        for node in _imports(ast.parse(p.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert not any(n == "wandb" or n.startswith("wandb.") for n in names), f"{p}: imports the SDK"


def test_the_fuse_operations_class_is_a_thin_file():
    ops = PKG / "fuse" / "ops.py"
    assert "pyfuse3.Operations" in ops.read_text()
    assert len(ops.read_text().splitlines()) <= 400


def test_one_mount_table_parser():
    for p in PKG.rglob("*.py"):
        if p == PKG / "daemon" / "mounttab.py":
            continue
        text = p.read_text()
        for node in ast.walk(ast.parse(text)):   # a string naming the table, outside docstrings
            if isinstance(node, ast.Call) and any(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                                  and a.value.startswith("/proc/self/mount") for a in node.args):
                raise AssertionError(f"{p}:{node.lineno} reads the mount table itself (use daemon/mounttab.py)")
        assert "unicode_escape" not in text, p
