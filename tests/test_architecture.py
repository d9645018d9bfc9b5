"""docs/architecture.md against the code: every module sits in the layer table, and imports go down.

The imports are read from the source with ``ast`` (no module is imported), all of them: at the top,
inside functions (lazy imports count: they are dependencies too) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "grokmon"
DOC = ROOT / "docs" / "architecture.md"

#: The adapters: they may import the core; the core never imports them.
ADAPTERS = ("grokmon.integrations", "grokmon.engines")
#: The one import of an adapter package by the core, with its reason: ``import grokmon`` declares
#: the engines' routers by class path (``grokmon/engines/__init__.py`` imports only
#: ``grokmon._router_table``: neither torch nor an engine), so ``find_routers`` knows them.
ALLOWED_UPWARD = {("grokmon", "grokmon.engines")}
#: DESIGN.md: metrics never import torch.distributed, W&B or transformers.
METRICS_NEVER = ("torch.distributed", "wandb", "transformers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """Every module ``name`` imports (grokmon's own resolved to module names; others as written)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
            found.update(subs or [target])
    return found


def _layer_table() -> list[tuple[int, str, list[str]]]:
    """(layer, its name as written, the backticked entries of its modules cell) per table row."""
    text = DOC.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0].isdigit():
            rows.append((int(cells[0]), cells[0], re.findall(r"`([^`]+)`", cells[1])))
    return rows


def _owner_of() -> dict[str, tuple[int, str]]:
    """module -> (layer, table entry) for every module the table covers."""
    owner: dict[str, tuple[int, str]] = {}
    for layer, _, entries in _layer_table():
        for entry in entries:
            if entry.endswith("/"):
                prefix = "grokmon." + entry.rstrip("/").replace("/", ".")
                covered = [m for m in MODULES if m == prefix or m.startswith(prefix + ".")]
            else:
                covered = [m for m in MODULES if MODULES[m] == PACKAGE / entry]
            assert covered, f"docs/architecture.md's layer table names {entry!r}, which is no module under grokmon/"
            for module in covered:
                assert module not in owner, f"{module} is in the layer table twice"
                owner[module] = (layer, entry)
    return owner


def test_every_module_is_in_the_layer_table() -> None:
    owner = _owner_of()
    missing = sorted(set(MODULES) - set(owner) - {"grokmon"})
    assert not missing, f"modules missing from docs/architecture.md's layer table: {missing}"
    assert len(MODULES) > 60  # the walk found the package


def test_imports_go_down_the_layers() -> None:
    owner = _owner_of()
    wrong = []
    for module in MODULES:
        if module == "grokmon":
            continue  # the facade: lazy names; checked below
        layer, entry = owner[module]
        for target in _imports(module):
            if target == "grokmon":
                continue  # ``from grokmon import __version__`` (a constant of the facade)
            if target not in owner:
                continue  # not grokmon's
            target_layer, target_entry = owner[target]
            if target_entry != entry and target_layer >= layer:
                wrong.append(f"{module} (layer {layer}) imports {target} (layer {target_layer})")
    assert not wrong, "imports against docs/architecture.md's layers:\n" + "\n".join(wrong)


def test_the_core_never_imports_an_adapter() -> None:
    wrong = []
    for module in MODULES:
        if module.startswith(ADAPTERS):
            continue
        for target in _imports(module):
            if target.startswith(ADAPTERS) and (module, target) not in ALLOWED_UPWARD:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "the core imports adapters (adapters import the core, never the reverse):\n" + "\n".join(wrong)
    facade = _imports("grokmon")
    assert {t for t in facade if t.startswith("grokmon.")} <= {"grokmon._lazy", "grokmon.engines", "grokmon.errors",
                                                               "grokmon.pathways"}


def test_engine_declarations_import_nothing_heavy() -> None:
    """The one allowed upward import stays cheap: the declarations import only the router table."""
    assert _imports("grokmon.engines") == {"__future__", "grokmon._router_table"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("grokmon.metrics")))
def test_metrics_never_import_distributed_wandb_or_transformers(module: str) -> None:
    bad = sorted(t for t in _imports(module) if t.startswith(METRICS_NEVER))
    assert not bad, f"{module} imports {bad} (DESIGN.md: metrics never import {', '.join(METRICS_NEVER)})"


def test_the_checks_catch_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The import reader sees lazy and relative imports (a check that cannot fail is no check)."""
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from ..integrations import hf\n    import torch.distributed as dist\n"
                    "    from . import usage\n")
    monkeypatch.setitem(MODULES, "grokmon.metrics.fake", fake)
    assert _imports("grokmon.metrics.fake") == {"grokmon.integrations.hf", "torch.distributed",
                                                "grokmon.metrics.usage"}
