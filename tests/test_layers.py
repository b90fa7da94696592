"""The package's layers: every import (at the top of a module or inside a function) goes to the same layer or a
lower one, and the modules import no cycle. The layer list lives here, once."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "condensation"

# lowest first; a module may import its own layer and those below it
LAYERS = [
    ["condensation", "errors", "formatting", "io", "registry", "runtime", "distributed", "schema", "lazy"],
    ["results"],
    ["data"],
    ["networks"],
    ["containers"],
    ["engine", "engine.real", "engine.checkpoint", "engine.train", "engine.experts"],
    ["objectives"],
    ["engine.condense"],
    ["recipes", "evaluation"],
    ["selection", "pruning", "artifacts"],
    ["query", "run", "exports", "listing"],
    ["continual"],
    ["report"],
    ["cli", "__main__"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The layer of condensation.X.Y: the most specific entry of LAYERS that names it or a package above it."""
    name = module.removeprefix("condensation.") if module != "condensation" else "condensation"
    while True:
        for index, layer in enumerate(LAYERS):
            if name in layer:
                return index
        if "." not in name:
            raise AssertionError(f"module {module} is in no layer of tests/test_layers.py: add it")
        name = name.rsplit(".", 1)[0]


def imports() -> dict[str, set[str]]:
    """{module: the package modules it imports}; ``from .x import name`` counts as importing x (or x.name
    where that is a module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    targets.add(candidate if candidate in modules else target)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("condensation"):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("condensation"))
        found[module] = {t for t in targets if t != module}
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
            for module, targets in sorted(graph.items()) for target in sorted(targets)
            if layer_of(target) > layer_of(module)]


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Cycles among modules; a package importing its own submodules (to register them) is not one."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                if not all(step == cycle[0] or step.startswith(cycle[0] + ".") for step in cycle):
                    cycles.append(" -> ".join(cycle))
            elif state.get(target) is None and target in graph:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_every_import_goes_to_the_same_layer_or_below():
    upward = upward_imports(imports())
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_modules_import_no_cycle():
    cycles = import_cycles(imports())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_catch_a_planted_upward_import_and_cycle():
    graph = imports()
    assert "condensation.networks" in graph["condensation.containers.factorization"]  # seeded_network's home
    planted = {**graph, "condensation.engine.experts": graph["condensation.engine.experts"] | {"condensation.run"}}
    low, high = layer_of("condensation.engine.experts"), layer_of("condensation.run")
    assert upward_imports(planted) == [f"condensation.engine.experts (layer {low}) imports condensation.run (layer {high})"]
    looped = {"condensation.a": {"condensation.b"}, "condensation.b": {"condensation.a"}}
    assert import_cycles(looped) == ["condensation.a -> condensation.b -> condensation.a"]
