"""The API reference builds from the docstrings (pdoc), and every grokmon import the docs show resolves."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from optional import need

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)


def shown_imports() -> list[tuple[str, str, str | None]]:
    """``(page, module, name)`` for every ``from grokmon... import name`` / ``import grokmon...`` in a
    Python block of the docs, runnable or ``notest``."""
    found = []
    for page in PAGES:
        for block in FENCE.finditer(page.read_text(encoding="utf-8")):
            code = block["code"]
            try:
                nodes = list(ast.walk(ast.parse(code)))
            except SyntaxError:  # a sketch with "..." in odd places: read its import lines one by one
                nodes = []
                for line in code.splitlines():
                    try:
                        nodes += list(ast.walk(ast.parse(line.strip())))
                    except SyntaxError:
                        continue
            for node in nodes:
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "grokmon":
                    found += [(page.name, node.module, alias.name) for alias in node.names]
                elif isinstance(node, ast.Import):
                    found += [(page.name, alias.name, None) for alias in node.names
                              if alias.name.split(".")[0] == "grokmon"]
    return found


def test_the_docs_show_grokmon_imports() -> None:
    pages = {page for page, _, _ in shown_imports()}
    assert {"README.md", "guide-trainer.md", "guide-dashboards.md", "engines.md"} <= pages


#: modules that import a training engine: their imports are checked in the `engine` test environment
ENGINE_MODULES = ("grokmon.integrations.olmo_core", "grokmon.integrations.torchtitan", "grokmon.integrations.megatron",
                  "grokmon.engines.")


@pytest.mark.parametrize("page,module,name", [
    pytest.param(*shown, marks=[pytest.mark.engine] if shown[1].startswith(ENGINE_MODULES) else [])
    for shown in sorted(set(shown_imports()))], ids=lambda x: str(x))
def test_every_import_shown_in_the_docs_resolves(page: str, module: str, name: str | None) -> None:
    if module.startswith(ENGINE_MODULES):
        need({"olmo_core": "olmo_core", "torchtitan": "torchtitan", "megatron": "megatron.core"}.get(
            module.split(".")[2], "torch"))
    if name == "GrokkingLightningCallback" or module.endswith(".lightning"):
        need("lightning")
    mod = importlib.import_module(module)
    if name is None or name == "*":
        return
    if hasattr(mod, name):
        return
    try:  # a submodule: from grokmon import report
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        pytest.fail(f"{page} shows `from {module} import {name}`, which does not resolve")


def test_api_reference_builds(tmp_path) -> None:
    pytest.importorskip("pdoc")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_api_docs.py"), str(tmp_path / "api")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Error importing module" not in done.stderr, done.stderr[-3000:]
    api = tmp_path / "api"
    for page in ("grokmon.html", "grokmon/monitor.html", "grokmon/config.html", "grokmon/probe.html",
                 "grokmon/sinks/wandb.html", "grokmon/report.html", "grokmon/cli.html", "grokmon/runinfo.html"):
        assert (api / page).is_file(), page
    config = (api / "grokmon" / "config.html").read_text(encoding="utf-8")
    assert "MonitorConfig" in config and "wandb_charts_every" in config   # fields from the docstring
    monitor = (api / "grokmon" / "monitor.html").read_text(encoding="utf-8")
    assert "GrokkingMonitor" in monitor and "probe_now" in monitor
    assert not list(api.rglob("_*.html"))        # private modules stay out
