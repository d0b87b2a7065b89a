"""Layers point one way: models ← rules ← delivery ← demo_services ← resources ← factory ← defs ← cli.

The stand-ins (demo_services) speak the contract's payloads and nothing of the product above
them; only the composition root (definitions.py) and the CLI reach them. The benchmarks sit
on top of everything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cron_pipelines", "demo_services", "benchmarks")
# Where the embedded demo is chosen (definitions.py) and served by hand (the CLI's demo commands).
DEMO_CHOOSERS = ("cron_pipelines.definitions", "cron_pipelines.cli")

# Lowest first; a module may import from its own layer and the ones before it.
LAYERS: list[tuple[str, ...]] = [
    ("cron_pipelines.safe_text", "cron_pipelines.secrets", "cron_pipelines.batching", "cron_pipelines.models"),
    ("cron_pipelines.log_format", "cron_pipelines.clients"),
    ("cron_pipelines.rules",),
    ("cron_pipelines.delivery",),
    ("demo_services",),
    ("cron_pipelines.settings", "cron_pipelines.resources"),
    ("cron_pipelines.deployment",),
    ("cron_pipelines.factory",),
    ("cron_pipelines.defs",),
    ("cron_pipelines.health", "cron_pipelines.cli", "cron_pipelines.definitions"),
    ("benchmarks", "cron_pipelines_tests"),  # the tools: they may use anything, the tests' peers included
]


def _layer(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def _modules() -> list[tuple[str, Path]]:
    return [
        (".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"), path)
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / package / "__init__.py" or package != "cron_pipelines"  # the package's docstring only
    ]


def _project_imports(path: Path) -> set[str]:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):  # function-level imports count too
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGES):
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith(PACKAGES))
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


def test_only_the_composition_root_and_the_cli_reach_the_stand_ins() -> None:
    reaching = {
        module
        for module, path in _modules()
        if module.startswith("cron_pipelines")
        and any(name.startswith("demo_services") for name in _project_imports(path))
    }
    assert reaching <= set(DEMO_CHOOSERS), reaching
