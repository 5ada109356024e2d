"""The package's import graph: layers point one way, and no module imports itself back.

Every `import` counts, including those inside functions (the lazy imports that keep `--help`
free of torch), because a cycle or an upward import there breaks just as surely at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "visiontool"

# Lowest first. A module may import from its own group or from any lower group, never higher;
# groups on the same level (train, anchors, bench) may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("visiontool.errors",),
    ("visiontool.registry", "visiontool.results", "visiontool.runtime", "visiontool.distributed"),
    ("visiontool.ops",),
    ("visiontool.metrics",),
    ("visiontool.io",),
    ("visiontool.data",),
    ("visiontool.models",),
    ("visiontool.tasks",),  # what each task trains, predicts and scores (above models, data)
    ("visiontool.engine.predict",),
    ("visiontool.engine.evaluate",),
    ("visiontool.engine.train", "visiontool.engine.anchors", "visiontool.engine.benchmark"),
    ("visiontool.engine", "visiontool.api"),
    ("visiontool.cli",),
    ("visiontool.__main__",),
]
ROOT_OK = {"visiontool"}  # the package root is lazy (`__version__`, PEP 562 exports)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every visiontool module `path` imports (from-imports resolved to a module when they
    name one)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("visiontool"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("visiontool"):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if module_path(candidate) else node.module)
    return found


def module_path(name: str) -> Path | None:
    base = PACKAGE.parent / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def group_of(name: str) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for level, groups in enumerate(LAYERS):
        for group in groups:
            if (name == group or name.startswith(group + ".")) and (
                best is None or len(group) > len(best[1])
            ):
                best = (level, group)
    return best


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = [m for m in graph() if m not in ROOT_OK and group_of(m) is None]
    assert not unplaced, f"modules outside every layer: {unplaced}"


def test_imports_point_down() -> None:
    wrong = []
    for module, targets in graph().items():
        if module in ROOT_OK:
            continue
        level, group = group_of(module)  # type: ignore[misc]
        for target in targets - ROOT_OK:
            placed = group_of(target)
            assert placed is not None, f"{module} imports unknown {target}"
            target_level, target_group = placed
            if target_group == group or target_level < level:
                continue
            wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges or nxt in ROOT_OK:
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    # a package __init__ that re-exports its own submodules is not a cycle in practice
    real = [
        c
        for c in cycles
        if not any(
            a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:], strict=False)
        )
    ]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def test_the_checker_sees_a_planted_violation(tmp_path: Path) -> None:
    """The checks above would fail on an upward import (guards against a checker that sees
    nothing)."""
    source = tmp_path / "draw.py"
    source.write_text("from visiontool.engine.predict import detect\n")
    assert imports_of(source) == {"visiontool.engine.predict.detect"}
    assert group_of("visiontool.io.draw")[0] < group_of("visiontool.engine.predict.detect")[0]
