"""The shape of the package: imports go one way (no cycles, none hidden in functions), one declaration per runtime."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import networkx

import fat_deploy

PACKAGE = Path(fat_deploy.__file__).parent


def test_no_import_cycles_counting_every_static_import() -> None:
    """grimp reads every import statement (in functions and TYPE_CHECKING blocks too); a package also depends on
    each package above it that Python initialises first, so those edges count as well."""
    graph = grimp.build_graph("fat_deploy")
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        targets = set(graph.find_modules_directly_imported_by(module))
        for target in list(targets):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            parts = target.split(".")
            targets.update(".".join(parts[:i]) for i in range(2, len(parts)))
        edges[module] = {t for t in targets if t != module and not module.startswith(t + ".")}
    graph = networkx.DiGraph([(module, target) for module, targets in edges.items() for target in targets])
    assert [sorted(c) for c in networkx.strongly_connected_components(graph) if len(c) > 1] == []


def test_no_fat_deploy_import_inside_a_function() -> None:
    """Imports of our own modules sit at the top of the module: none is moved into a function to dodge a cycle."""
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    module = node.module if isinstance(node, ast.ImportFrom) else None
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                    if (module or "").startswith("fat_deploy") or any(n.startswith("fat_deploy") for n in names):
                        hidden.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert hidden == []
