"""The one registry of the error catalogue: ``CASES``, filled by ``@case`` in the area modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# id -> (exception type, literal message fragment, trigger(tmp_path, monkeypatch))
CASES: dict[str, tuple[type[BaseException], str, Callable[[Path, pytest.MonkeyPatch], Any]]] = {}
GPU_ONLY: set[str] = set()


def case(case_id: str, exception: type[BaseException], fragment: str, *, gpu: bool = False):
    """Register ``trigger(tmp_path, monkeypatch)`` as the case ``case_id`` (see tests/test_error_catalogue.py)."""
    def register(fn: Callable[[Path, pytest.MonkeyPatch], Any]) -> Callable[[Path, pytest.MonkeyPatch], Any]:
        assert case_id not in CASES, case_id
        CASES[case_id] = (exception, fragment, fn)
        if gpu:
            GPU_ONLY.add(case_id)
        return fn

    return register
