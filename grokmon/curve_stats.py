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

__all__ = ["Correlation", "correlation_table", "first_step_at_or_above", "grokking_window", "partial_spearman", "rank",
           "spearman"]


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


def partial_spearman(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> float:
    """Spearman correlation of ``x`` and ``y`` with ``z`` held fixed (partial correlation of the ranks).

    Answers "does ``x`` track ``y`` beyond what ``z`` already explains?", e.g. a pathway metric
    against held-out accuracy, given the training loss. NaN with fewer than 4 finite triples or
    when ``z`` explains ``x`` or ``y`` completely.

    Example:
        >>> round(partial_spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], [1, 2, 3, 4, 5]), 3)   # x is z
        nan
    """
    a, b, c = (np.asarray(v, dtype=np.float64) for v in (x, y, z))
    if not a.shape == b.shape == c.shape:
        raise ValueError(f"partial_spearman needs three paired series, got {a.shape}, {b.shape}, {c.shape}")
    keep = np.isfinite(a) & np.isfinite(b) & np.isfinite(c)
    if keep.sum() < 4:
        return math.nan
    a, b, c = a[keep], b[keep], c[keep]
    r_ab, r_ac, r_bc = spearman(a, b), spearman(a, c), spearman(b, c)
    if any(math.isnan(r) for r in (r_ab, r_ac, r_bc)):
        return math.nan
    denominator = math.sqrt(max(0.0, 1 - r_ac ** 2) * max(0.0, 1 - r_bc ** 2))
    if denominator < 1e-12:
        return math.nan
    return round((r_ab - r_ac * r_bc) / denominator, 12)


def grokking_window(train_accuracy: Mapping[int, float], heldout_accuracy: Mapping[int, float], *,
                    memorized: float = 1.0, generalized: float = 0.99) -> tuple[int, int] | None:
    """``(first step train accuracy >= memorized, first later step held-out >= generalized)``.

    The steps in which the model has memorized its training set and is still generalizing: where
    the paper correlates its metrics with test accuracy. The end is the last step when held-out
    accuracy never reaches ``generalized``; None when the training set is never memorized.

    Example:
        >>> grokking_window({0: 0.1, 10: 1.0, 20: 1.0, 30: 1.0}, {0: 0.0, 10: 0.2, 20: 0.995, 30: 1.0})
        (10, 20)
    """
    start = first_step_at_or_above(train_accuracy, memorized)
    if start is None:
        return None
    later = {s: v for s, v in heldout_accuracy.items() if s >= start}
    end = first_step_at_or_above(later, generalized)
    return start, end if end is not None else max(heldout_accuracy)
