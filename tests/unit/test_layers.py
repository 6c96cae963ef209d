"""Imports only point down the declared layer order, and no dfwe module imports itself back through others.

Every module under ``src/dfwe`` is parsed with ``ast``; each import of a dfwe module (module level,
function-local and ``TYPE_CHECKING`` alike) is an edge. An edge may go to a lower layer or stay in its own;
within a layer the edges must form no cycle. This is the one place the order is declared (the README's
architecture section describes it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# Bottom first. A module belongs to the layer of the longest prefix that names it.
LAYERS: list[tuple[str, ...]] = [
    ("dfwe", "dfwe.errors", "dfwe.io", "dfwe.cache", "dfwe.progress", "dfwe.stats", "dfwe.schema", "dfwe.runtime"),
    ("dfwe.modeling",),  # the model classes: an encoder body, its pooling, one head per shape
    ("dfwe.data",),  # records, encoding, the task shapes, example sets, metrics, task folders, the data stage
    ("dfwe.checkpoints", "dfwe.forward"),  # checkpoint I/O; running a model over a set, fitting its head
    ("dfwe.train",),  # the base stage, the one training loop, experts, target fine-tunes
    ("dfwe.merge",),  # the weight space, merge methods, the live merged model, export
    ("dfwe.search",),  # search spaces, optimisers, the objective, the journal, the search stage
    ("dfwe.eval",),  # baselines, barriers, the scores stage, statistics over seeds
    ("dfwe.config",),  # the whole run's configuration, assembled from every stage's section
    ("dfwe.report",),  # results.json, tables, plots, report.md, the Codalab files
    ("dfwe.commands",),  # what the CLI runs besides the pipeline: search, merge, evaluate, mergekit
    ("dfwe.pipeline",),
    ("dfwe.bench",),
    ("dfwe.cli",),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    matches = [(len(prefix), index) for index, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no declared layer: add it to LAYERS"
    return max(matches)[1]


def imported_modules(module: str, tree: ast.AST, known: set[str]) -> set[str]:
    """The dfwe modules ``module`` imports anywhere in its body (``from x import y`` counts ``x.y`` when that
    is a module)."""
    package = module if (SRC / module.replace(".", "/") / "__init__.py").exists() else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if name == "dfwe" or name.startswith("dfwe.")} - {module}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = sorted((SRC / "dfwe").rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imported_modules(module_name(f), ast.parse(f.read_text(), str(f)), known) for f in files}


def test_every_module_has_a_layer(graph):
    for module in graph:
        layer_of(module)


def test_imports_only_point_down(graph):
    upward = [f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
              for module, targets in graph.items() for target in sorted(targets) if layer_of(target) > layer_of(module)]
    assert upward == []


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk closes, as the modules along it (first and last the same)."""
    state: dict[str, str] = {}
    found: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":  # on the walk's current path: a cycle
                found.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_import_cycles(graph):
    assert import_cycles(graph) == []


def test_every_imported_name_exists(graph):
    """A function-local import runs only when its function does: check every ``from dfwe... import name`` now."""
    import importlib

    missing = []
    for path in sorted((SRC / "dfwe").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("dfwe"):
                module = importlib.import_module(node.module)
                missing += [f"{module_name(path)}: {node.module}.{alias.name}" for alias in node.names
                            if not hasattr(module, alias.name) and f"{node.module}.{alias.name}" not in graph]
    assert missing == []


def test_the_checker_sees_upward_function_local_and_cyclic_imports():
    known = {"dfwe.data.tasks", "dfwe.data.shapes", "dfwe.pipeline"}
    tree = ast.parse("def f():\n    from dfwe.pipeline import run\nfrom dfwe.data import shapes\n")
    assert imported_modules("dfwe.data.tasks", tree, known) == {"dfwe.pipeline", "dfwe.data.shapes"}
    assert layer_of("dfwe.pipeline") > layer_of("dfwe.data.tasks")
    assert layer_of("dfwe.data.shapes.span") == layer_of("dfwe.data")
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
