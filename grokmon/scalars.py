"""``to_float``: a metric value as a Python float, or one clear error (used by the sinks and the alert rules).

Example:
    >>> import torch
    >>> to_float(torch.tensor(0.5), "pathway_distance")
    0.5
    >>> to_float("high", "pathway_distance")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    grokmon.errors.GrokmonError: metric 'pathway_distance' is not a scalar: 'high' of type str is not a number; ...
    >>> to_float(torch.tensor([0.5, 0.25]), "pathway_distance")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    grokmon.errors.GrokmonError: metric 'pathway_distance' is not a scalar: a tensor of 2 values (shape [2]); ...
"""

from __future__ import annotations

from typing import Any

from .errors import GrokmonError

__all__ = ["to_float"]


def to_float(value: Any, key: str, *, error: type[GrokmonError] = GrokmonError,
             fix: str = "pass scalar metrics (dict[str, float])") -> float:
    """``float(value)`` for Python numbers, numpy scalars and one-element tensors; else ``error`` naming ``key``.

    A tensor or array of several values (or none) is named by its size and shape, e.g.
    ``metric 'm' is not a scalar: a tensor of 2 values (shape [2]); log scalars only``: reduce it
    (``.mean()``) or log each value under its own key.
    """
    size = _size(value)
    if size is not None and size != 1:
        kind = "an array" if type(value).__module__.startswith("numpy") else "a tensor"
        shape = list(getattr(value, "shape", ()))
        raise error(f"metric {key!r} is not a scalar: {kind} of {size} values (shape {shape}); {fix}")
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError, OverflowError, AttributeError):
        try:
            shown = repr(value)
        except Exception:  # noqa: BLE001 - a value whose repr fails is still named by its type
            shown = "<unprintable>"
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise error(f"metric {key!r} is not a scalar: {shown} of type {type(value).__name__} is not a number; "
                    f"{fix}") from None


def _size(value: Any) -> int | None:
    """The number of values of a tensor / array (``numel()`` or ``.size``), or None for anything else."""
    numel = getattr(value, "numel", None)
    if callable(numel):
        try:
            return int(numel())
        except Exception:  # noqa: BLE001 - not a tensor after all: let float() decide
            return None
    size = getattr(value, "size", None)
    if isinstance(size, int) and hasattr(value, "shape"):
        return size
    return None
