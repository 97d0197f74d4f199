"""The package's structure: no import cycle (module-level and function-level imports alike),
each module imports only from its own layer or below, and the simulator depends on nothing of
the library it stands in for. The layers are drawn in docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "plextera_data"

#: Bottom to top. A module may import modules of its own layer or of the layers below.
LAYERS: list[set[str]] = [
    {"_version", "errors", "_loop", "_serving", "models", "progress", "clock"},
    {"retry", "pacing", "journal", "bodies", "tables", "parquet"},
    {"client", "rows", "flatten", "events"},
    {"ledger"},
    {"sending", "poll", "reconcile", "uploads"},
    {"events_feed"},
    {"batch"},
    {"submit"},
    {"dask", "jobs", "demo", "cli", "__init__", "__main__"},
]


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every plextera_data module ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("plextera_data"):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("plextera_data"):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    name = module_name(path)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(path, known) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    edges = graph()
    assert "plextera_data.batch" in edges  # the graph was read
    assert cycles(edges) == []


def test_the_cycle_finder_finds_function_level_cycles(tmp_path: Path) -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


def layer_of(module: str) -> int | None:
    short = module.removeprefix("plextera_data").lstrip(".") or "__init__"
    for number, names in enumerate(LAYERS):
        if short in names:
            return number
    return None


def test_each_module_imports_only_its_layer_or_below() -> None:
    wrong = []
    for module, targets in graph().items():
        if module.startswith("plextera_data.simulator") or module == "plextera_data":
            continue
        mine = layer_of(module)
        if mine is None:
            continue
        for target in targets:
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                wrong.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    assert wrong == []


@pytest.mark.parametrize("engine", ["plextera_data.sending", "plextera_data.poll"])
def test_engines_do_not_know_the_batch_or_the_display(engine: str) -> None:
    targets = graph()[engine]
    assert "plextera_data.batch" not in targets
    assert "plextera_data.progress" not in targets


#: What the simulator may share with the library: plumbing that knows nothing of the API.
SHARED_PLUMBING = {"plextera_data._serving"}


def test_the_simulator_depends_on_nothing_of_the_library() -> None:
    outside = {
        f"{module} imports {target}"
        for module, targets in graph().items()
        if module.startswith("plextera_data.simulator")
        for target in targets
        if not target.startswith("plextera_data.simulator") and target not in SHARED_PLUMBING
    }
    assert outside == set()


def test_no_object_writes_another_objects_private_attributes() -> None:
    """``x._name = ...`` only where ``x`` is ``self`` or ``cls``."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr.startswith("_")
                    and not target.attr.startswith("__")
                    and not (
                        isinstance(target.value, ast.Name) and target.value.id in ("self", "cls")
                    )
                ):
                    offenders.append(f"{path.name}:{node.lineno} {ast.unparse(target)}")
    assert offenders == []
