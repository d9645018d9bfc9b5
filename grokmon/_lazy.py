"""Lazy public names for a package ``__init__``: a name's module is imported on first use.

Keeps ``import grokmon`` cheap (no transformers, W&B or Lightning until the part that needs them
is used).

Example:
    >>> getattr_, dir_ = lazy_exports("pkg", {"sqrt": "math"}, {}, ["sqrt"])
    >>> getattr_("sqrt")(4.0), dir_()
    (2.0, ['sqrt'])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any],
                 names: list[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` / ``__dir__`` for ``exports`` (public name -> defining module).

    A name, once imported, is cached in ``namespace`` (the package's ``globals()``).
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__
