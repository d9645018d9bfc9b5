"""Seeded sample selection for probe sets: plain random picks and the stratified (per-group) pick.

Example:
    >>> stratified_counts([10, 2, 10], 12)
    [5, 2, 5]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ProbeError

__all__ = ["sample_indices", "sort_labels", "stratified_counts", "stratified_pick"]


def stratified_counts(available: Sequence[int], n: int) -> list[int]:
    """Per-group sample counts that add up to ``n`` and are as equal as possible.

    Water-filling: a group with fewer samples than its share is taken whole and the rest is spread
    over the others; leftover single samples go to the first groups (in the given order).

    Example:
        >>> stratified_counts([10, 2, 10], 12)
        [5, 2, 5]
        >>> stratified_counts([10, 10, 10], 8)
        [3, 3, 2]
    """
    if n > sum(available):
        raise ProbeError(f"n={n} is larger than the dataset ({sum(available)} samples): lower n")
    counts = [0] * len(available)
    open_ = list(range(len(available)))
    left = n
    while open_:  # take whole every group no larger than an equal share of what is left
        small = [i for i in open_ if available[i] <= left // len(open_)]
        if not small:
            break
        for i in small:
            counts[i] = available[i]
            left -= available[i]
        open_ = [i for i in open_ if i not in small]
    if open_:  # every open group has more than `share`, so share + 1 always fits
        share, extra = divmod(left, len(open_))
        for j, i in enumerate(open_):
            counts[i] = share + (1 if j < extra else 0)
    return counts


def sort_labels(labels: Sequence[Any]) -> list[Any]:
    """The distinct group labels in name order (ints numerically, anything else as strings)."""
    uniq = set(labels)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in uniq):
        return sorted(uniq)
    return sorted(uniq, key=str)


def sample_indices(size: int, n: int, gen: torch.Generator) -> list[int]:
    """``n`` distinct indices in ``[0, size)``, sorted, seeded; O(n) memory for huge datasets."""
    if size <= (1 << 22) or n > size // 4:
        return sorted(torch.randperm(size, generator=gen)[:n].tolist())
    picked: dict[int, None] = {}
    while len(picked) < n:  # rejection sampling: few repeats when n << size
        for i in torch.randint(size, (2 * (n - len(picked)),), generator=gen).tolist():
            picked.setdefault(i)
            if len(picked) == n:
                break
    return sorted(picked)


def stratified_pick(labels: Sequence[Any], n: int, gen: torch.Generator) -> list[int]:
    """``n`` indices into ``labels``, per-group counts from :func:`stratified_counts`, seeded order within a group."""
    perm = torch.randperm(len(labels), generator=gen).tolist()
    names = sort_labels(labels)
    by_group: dict[Any, list[int]] = {g: [] for g in names}
    for i in perm:
        by_group[labels[i]].append(i)
    counts = stratified_counts([len(by_group[g]) for g in names], n)
    chosen = [i for g, c in zip(names, counts) for i in by_group[g][:c]]
    return sorted(chosen)
