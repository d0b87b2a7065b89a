"""Layers point one way: models ← rules ← notifications ← resources ← defs ← cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cron_pipelines"

# Lowest first; a module may import from its own layer and the ones before it.
LAYERS: list[tuple[str, ...]] = [
    ("cron_pipelines.safe_text", "cron_pipelines.secrets", "cron_pipelines.batching", "cron_pipelines.models"),
    ("cron_pipelines.log_format", "cron_pipelines.clients"),
    ("cron_pipelines.rules",),
    ("cron_pipelines.delivery",),
    ("cron_pipelines.settings", "cron_pipelines.resources"),
    ("cron_pipelines.deployment",),
    ("cron_pipelines.factory",),
    ("cron_pipelines.defs",),
    ("cron_pipelines.health", "cron_pipelines.cli", "cron_pipelines.definitions"),
]


def _layer(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def _modules() -> list[tuple[str, Path]]:
    return [
        (".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"), path)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "__init__.py"  # the package's docstring only
    ]


def _project_imports(path: Path) -> set[str]:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):  # function-level imports count too
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cron_pipelines"):
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith("cron_pipelines"))
    return imported


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[module for module, _ in _modules()])
def test_a_module_imports_only_from_its_layer_and_below(module: str, path: Path) -> None:
    own = _layer(module)
    upward = sorted(name for name in _project_imports(path) if _layer(name) > own)
    assert upward == [], f"{module} (layer {own}) imports from higher layers: {upward}"


def test_rules_import_only_models_and_rules() -> None:
    for module, path in _modules():
        if module.startswith("cron_pipelines.rules"):
            others = {
                name
                for name in _project_imports(path)
                if not name.startswith(("cron_pipelines.models", "cron_pipelines.rules"))
            }
            assert others == set(), f"{module} imports {others}"
