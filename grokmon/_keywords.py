"""A dataclass mixin: a keyword that is not a field raises :class:`~grokmon.errors.ConfigError` naming the closest field.

Python's own message (``__init__() got an unexpected keyword argument 'output'``) names no
fix; this one does.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Settings(CheckedKeywords):
    ...     output_dir: str = "out"
    >>> Settings(output="x")
    Traceback (most recent call last):
    grokmon.errors.ConfigError: Settings has no field 'output': did you mean output_dir? ...
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from .errors import ConfigError

__all__ = ["CheckedKeywords"]


class CheckedKeywords:
    """Checks the keywords of a dataclass before its ``__init__`` runs (also for ``dataclasses.replace``)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
                hint = f"did you mean {close[0]}? " if close else ""
                raise ConfigError(f"{cls.__name__} has no field {key!r}: {hint}(fields: {', '.join(names)})")
        return super().__new__(cls)
