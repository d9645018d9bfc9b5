"""Validate metric curves against a known generalization curve: rank correlations and milestones.

Used by the grokking demo and ``docs/validation.md``: when held-out accuracy is known (a benchmark,
a small grokking task), how well does each grokmon metric, and the training loss, track it?
Pure Python and numpy; no torch.

Example:
    >>> table = correlation_table({"pathway_distance": {0: 0.9, 10: 0.7, 20: 0.5}},
    ...                           reference={0: 0.1, 10: 0.4, 20: 0.95})
    >>> table["pathway_distance"].spearman, table["pathway_distance"].points
    (-1.0, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["Correlation", "correlation_table", "first_step_at_or_above", "rank", "spearman"]


def rank(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties given their mean rank (the convention of ``scipy.stats.rankdata``).

    Example:
        >>> rank([10.0, 30.0, 20.0, 20.0]).tolist()
        [1.0, 4.0, 2.5, 2.5]
    """
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of paired values; NaN with fewer than 3 pairs or a constant side.

    Pairs where either value is not finite are dropped first.

    Example:
        >>> spearman([1, 2, 3, 4], [10, 20, 40, 30])
        0.8
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"spearman needs paired values, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3:
        return math.nan
    ra, rb = rank(a), rank(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return math.nan
    return round(float(np.corrcoef(ra, rb)[0, 1]), 12)


@dataclass(frozen=True)
class Correlation:
    """Spearman and Pearson correlation of one metric with the reference, over ``points`` steps."""

    spearman: float
    pearson: float
    points: int


def correlation_table(
    series: Mapping[str, Mapping[int, float]],
    reference: Mapping[int, float],
    *,
    from_step: int | None = None,
) -> dict[str, Correlation]:
    """Correlate each ``{step: value}`` series with ``reference`` on the steps both have.

    Args:
        series: metric name -> ``{step: value}``.
        reference: ``{step: value}``, e.g. held-out accuracy.
        from_step: only steps >= this (the paper correlates only after memorization).

    Returns:
        ``{name: Correlation}``; NaN where fewer than 3 common finite points or a constant side.
    """
    table = {}
    for name, values in series.items():
        steps = sorted(s for s in values if s in reference and (from_step is None or s >= from_step))
        x = np.array([values[s] for s in steps], dtype=np.float64)
        y = np.array([reference[s] for s in steps], dtype=np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        pearson = math.nan
        if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            pearson = round(float(np.corrcoef(x, y)[0, 1]), 12)
        table[name] = Correlation(spearman(x, y), pearson, int(len(x)))
    return table


def first_step_at_or_above(series: Mapping[int, float], level: float) -> int | None:
    """The first step (in step order) whose value is >= ``level``; None if there is none.

    Example:
        >>> first_step_at_or_above({0: 0.1, 50: 1.0, 100: 1.0}, 1.0)
        50
    """
    return next((s for s in sorted(series) if series[s] >= level), None)
