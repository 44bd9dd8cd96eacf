"""The package's imports run with the pipeline, never against it, and never in a circle.

Every `import` counts, at module level, inside functions and under `TYPE_CHECKING` alike: a cycle
hidden behind a lazy or type-only import is still a cycle for the reader.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "exporter"

# The pipeline, in order: a module may import from its own layer or an earlier one.
LAYERS = (
    ("exporter", "exporter.events", "exporter.defaults", "exporter.config"),
    ("exporter.sources",),
    ("exporter.pricing", "exporter.classify"),
    ("exporter.ledger",),
    ("exporter.metrics", "exporter.reports"),
    ("exporter.pipeline",),
    ("exporter.web",),
    ("exporter.daemon",),
    ("exporter.cli", "exporter.__main__"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module of the package that `path` imports, by its full name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from exporter.reports import blocks` imports the module exporter.reports.blocks
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules and name != module_name(path)}


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    """The layer of the longest prefix that names one."""
    best = max(
        (prefix for row in LAYERS for prefix in row if module == prefix or module.startswith(prefix + ".")), key=len
    )
    return next(i for i, row in enumerate(LAYERS) if best in row)


def subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_every_module_belongs_to_a_layer() -> None:
    assert {module: layer(module) for module in graph()}  # raises on a module no layer names


def test_no_import_runs_against_the_pipeline() -> None:
    against = sorted(
        f"{module} imports {name}" for module, names in graph().items() for name in names if layer(name) > layer(module)
    )
    assert against == []


def test_no_two_modules_import_each_other_even_through_others() -> None:
    try:
        tuple(TopologicalSorter(graph()).static_order())
    except CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None


def test_no_two_subpackages_import_each_other() -> None:
    between: dict[str, set[str]] = {}
    for module, names in graph().items():
        between.setdefault(subpackage(module), set()).update(
            subpackage(name) for name in names if subpackage(name) != subpackage(module)
        )
    try:
        tuple(TopologicalSorter(between).static_order())
    except CycleError as err:
        raise AssertionError(f"subpackage cycle: {' -> '.join(err.args[1])}") from None
