"""Optional packages the tests use: a test that needs one skips, with the install line, where it is missing.

``need(module)`` is ``pytest.importorskip`` with the reason naming the extra that installs the package.
scripts/test.sh runs the core tests a second time with the optional packages hidden (``GROKMON_TEST_HIDE``),
where a skip without the install line fails.

Example:
    >>> from optional import need                                   # doctest: +SKIP
    >>> event_accumulator = need("tensorboard.backend.event_processing.event_accumulator")  # doctest: +SKIP
"""

from __future__ import annotations

from types import ModuleType

import pytest

#: Top-level import name -> the grokmon extra that installs it.
EXTRAS = {
    "tensorboard": "tensorboard",
    "lightning": "lightning",
    "matplotlib": "plot",
    "datasets": "datasets",
    "scipy": "test",
    "triton": "test",
    "deepspeed": "deepspeed",
    "torchtitan": "torchtitan",
    "megatron": "megatron",
    "olmo_core": "olmo-core",
}


def install_line(module: str) -> str:
    """``"tensorboard is not installed: pip install 'grokmon[tensorboard]'"`` for ``module`` or a submodule of it."""
    top = module.split(".")[0]
    return f"{top} is not installed: pip install 'grokmon[{EXTRAS[top]}]'"


def need(module: str) -> ModuleType:
    """Import ``module`` (an optional package or a submodule of one), or skip the test with the install line."""
    return pytest.importorskip(module, reason=install_line(module))
