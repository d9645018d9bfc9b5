"""Every ```python block in README.md and docs/*.md runs (blocks fenced ```python notest are shown only).

Blocks of one file run in order in one namespace, so a page can build on its earlier blocks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python[ \t]*(?P<tag>\w*)[ \t]*\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)


def runnable_blocks(page: Path) -> list[str]:
    return [m["code"] for m in BLOCK.finditer(page.read_text()) if m["tag"] != "notest"]


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)], ids=lambda p: p.name)
def test_code_blocks_run(page: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for index, code in enumerate(runnable_blocks(page)):
        try:
            exec(compile(code, f"{page.name}[block {index}]", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            raise AssertionError(f"{page.name}, code block {index} failed: {error!r}\n{code}") from error


def test_block_pattern_sees_tags() -> None:
    text = "```python\nx = 1\n```\n```python notest\nboom()\n```\n"
    found = [(m["tag"], m["code"]) for m in BLOCK.finditer(text)]
    assert found == [("", "x = 1\n"), ("notest", "boom()\n")]
