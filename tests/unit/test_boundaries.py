"""Module boundaries that a grep would check, kept checked: the simulator plays Plivo and
knows nothing of the product; only the composition root builds a process's long-lived parts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import plivo_tracker

PACKAGE = Path(plivo_tracker.__file__).parent
# What the simulator may not import: the product's storage, flows and HTTP layers.
PRODUCT = ("db", "messages", "outbound", "inbound", "web", "live", "conversations")
PRODUCT_MODULES = ("app", "cli", "composition", "demo", "doctor")
# Builders of a process's parts, and the modules allowed to call them: the composition root;
# db/engine.py (the factories themselves) and the migrations' own engine; the committer's
# fallback writer when none is passed in.
BUILDERS = {
    "make_engine": {"composition.py", "db/engine.py", "db/migrations/env.py"},
    "make_writer": {"composition.py", "db/engine.py", "inbound/committer.py"},
    "make_reader": {"composition.py", "db/engine.py"},
    "build_sending": {"composition.py"},
    "GroupCommitter": {"composition.py"},
    "database_hub": {"composition.py", "live/hub.py"},
    "Listener": {"composition.py", "live/notify.py"},
}


def _modules(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(
    "path", _modules(PACKAGE / "simulator"), ids=lambda p: p.relative_to(PACKAGE).as_posix()
)
def test_the_simulator_imports_nothing_of_the_product(path: Path) -> None:
    forbidden = [f"plivo_tracker.{name}" for name in (*PRODUCT, *PRODUCT_MODULES)]
    found = sorted(
        name
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )
    assert found == []


def test_only_the_composition_root_builds_a_process() -> None:
    calls: dict[str, set[str]] = {name: set() for name in BUILDERS}
    for path in _modules(PACKAGE):
        where = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in calls:
                    calls[name].add(where)
    assert {name: where - BUILDERS[name] for name, where in calls.items()} == {
        name: set() for name in BUILDERS
    }
