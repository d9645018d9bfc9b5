"""``to_float``: a metric value as a Python float, or one clear error (used by the sinks and the alert rules).

Example:
    >>> import torch
    >>> to_float(torch.tensor(0.5), "pathway_distance")
    0.5
    >>> to_float("high", "pathway_distance")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    grokmon.errors.GrokmonError: metric 'pathway_distance' is not a scalar: 'high' of type str is not a number; ...
"""

from __future__ import annotations

from typing import Any

from .errors import GrokmonError

__all__ = ["to_float"]


def to_float(value: Any, key: str, *, error: type[GrokmonError] = GrokmonError,
             fix: str = "pass scalar metrics (dict[str, float])") -> float:
    """``float(value)`` for Python numbers, numpy scalars and one-element tensors; else ``error`` naming ``key``."""
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise error(f"metric {key!r} is not a scalar: {shown} of type {type(value).__name__} is not a number; "
                    f"{fix}") from None
