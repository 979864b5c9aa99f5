"""The import structure of docs/architecture.md: no cycles among the project's modules, and
project imports inside functions only where a backend is chosen at run time. The layer
contracts themselves are `.importlinter` (run by `lint-imports` in scripts/test.sh)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compiler", "passes", "targets")


def test_no_import_cycles_among_project_modules() -> None:
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    g = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            g.add_edge(module, imported)
    # a package importing its own submodule is how Python packages work, not a cycle
    g.remove_edges_from([(a, b) for a, b in list(g.edges) if b.startswith(a + ".")])
    cycles = [c for c in nx.simple_cycles(g) if len(c) > 1]
    assert cycles == [], f"import cycles: {cycles[:5]}"


def _in_function_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [(node.lineno, n) for n in names if n.split(".")[0] in PACKAGES]
    return found


def test_no_project_imports_inside_functions() -> None:
    """Lazy imports are for heavy backend libraries (never project modules), except a backend's
    own modules chosen at run time through `targets.runtime_index`."""
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for pkg in PACKAGES
        for path in sorted((ROOT / pkg).rglob("*.py"))
        for line, name in _in_function_imports(path)
    ]
    assert bad == []
