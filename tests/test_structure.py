"""The package's import structure, drawn from the source with `ast` (no module is imported).

Every `import` / `from ... import` of a crossctr module counts, at the top of a file or inside a
function (a late import is still a dependency). Nodes are the packages (data, layers, models,
training, inference, serving, evaluation, experiments) and each top-level module on its own.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "crossctr"
PACKAGES = {"data", "layers", "models", "training", "inference", "serving", "evaluation", "experiments"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _resolve(name: str) -> str:
    """The crossctr module `name` is or lies in (`crossctr.models.REGISTRY` -> `crossctr.models`)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str, source: str) -> set[str]:
    """The crossctr modules `module` (with source text `source`) imports, anywhere in the file."""
    is_package = MODULES.get(module, Path()).name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" for a in node.names]  # `from pkg import submodule` names a module
        else:
            continue
        out |= {_resolve(t) for t in targets if t.split(".")[0] == "crossctr"}
    return out


def node_of(module: str) -> str:
    """A package's name for its modules; a top-level module's own name; `crossctr` for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "crossctr"


def module_graph(extra: dict[str, str] | None = None) -> dict[str, set[str]]:
    """module -> crossctr modules it imports; `extra` adds source text to a module (for the test's own check)."""
    graph = {}
    for module, path in MODULES.items():
        source = path.read_text(encoding="utf-8") + "\n" + (extra or {}).get(module, "")
        graph[module] = imports_of(module, source)
    return graph


def node_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        out[node_of(module)] |= {node_of(t) for t in targets} - {node_of(module)}
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _edges(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    """`a -> b` for every module of node `source` that imports a module of node `target`."""
    return sorted(f"{m} -> {t}" for m, ts in graph.items() if node_of(m) == source for t in ts if node_of(t) == target)


def test_the_graph_is_drawn() -> None:
    graph = module_graph()
    assert "crossctr.serving.export" in graph and "crossctr.inference.runfolder" in graph
    assert "crossctr.inference.runfolder" in graph["crossctr.inference.predictor"]
    assert set(node_graph(graph)) >= PACKAGES - {"layers"} | {"cli"}  # every package that imports one


def test_no_cycle_between_packages_and_top_level_modules() -> None:
    graph = module_graph()
    nodes = node_graph(graph)
    found = cycles(nodes)
    detail = [
        edge for cycle in found for a in cycle for b in cycle if b in nodes.get(a, ()) for edge in _edges(graph, a, b)
    ]
    assert not found, f"import cycles {found}: {detail}"


@pytest.mark.parametrize(
    "package, forbidden",
    [("serving", {"training"}), ("inference", {"training", "serving", "experiments"})],
)
def test_layering(package: str, forbidden: set[str]) -> None:
    graph = module_graph()
    bad = [edge for target in sorted(forbidden) for edge in _edges(graph, package, target)]
    assert not bad, f"crossctr.{package} must not import {sorted(forbidden)}: {bad}"


def model_classes_named(source: str) -> set[str]:
    """The registered models' classes and configs that `source` names (a name, an attribute or an import)."""
    from crossctr.models import REGISTRY

    tree = ast.parse(source)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    classes = {getattr(spec.build, "__name__", "") for spec in REGISTRY.values()}
    classes |= {spec.config.__name__ for spec in REGISTRY.values()}
    return names & classes


def test_export_names_no_model_class() -> None:
    named = model_classes_named((SRC / "serving" / "export.py").read_text(encoding="utf-8"))
    assert not named, f"serving/export.py names model classes {sorted(named)}"
    assert model_classes_named("from crossctr.models import CNAN\nx = isinstance(m, models.STAR)") == {"CNAN", "STAR"}


# The checks above can fail: the same functions find an import added on purpose.
@pytest.mark.parametrize(
    "module, line, found",
    [
        ("crossctr.data.batch", "from crossctr.models.base import ModelOutput", ["data", "losses", "models"]),
        # the cycle there was: clihelp reads the registries (a deliberate late import), so the
        # progress rule data's commands share lives below both, in crossctr.progress
        ("crossctr.data.cli", "    from crossctr.clihelp import registry_names", ["clihelp", "data", "training"]),
        ("crossctr.serving.app", "    from crossctr.training.run import RunConfig", "crossctr.training.run"),
        ("crossctr.inference.score", "from ..experiments import grid", "crossctr.experiments.grid"),
        ("crossctr.inference.score", "import crossctr.serving", "crossctr.serving"),
        ("crossctr.serving.export", "import crossctr.serving.app", []),
    ],
)
def test_an_added_import_is_found(module: str, line: str, found: list[str] | str) -> None:
    """`found`: the nodes that must now lie on one cycle ([]: still none), or the forbidden module now imported."""
    source = f"def _late():\n{line}\n" if line.startswith(" ") else line  # inside a function too
    graph = module_graph({module: source})
    if isinstance(found, list):
        found_cycles = cycles(node_graph(graph))
        assert any(set(found) <= set(c) for c in found_cycles) if found else not found_cycles
    else:
        assert _edges(graph, node_of(module), node_of(found)) == [f"{module} -> {found}"]
