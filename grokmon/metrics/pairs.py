"""Seeded sampling of sample pairs for the pathway distance.

Pairs are unordered and written ``(i, j)`` with ``i < j``. The draws run on the CPU with their own
``torch.Generator``, so the same seed gives the same pairs on every device and machine.

Example:
    >>> import torch
    >>> pairs, exact = sample_pairs(torch.tensor([2, 5, 7]), max_pairs=None, seed=0)
    >>> (pairs.tolist(), exact)
    ([[2, 5], [2, 7], [5, 7]], True)
    >>> pairs, exact = sample_pairs(torch.arange(100), max_pairs=10, seed=0)
    >>> (tuple(pairs.shape), exact, bool((pairs[:, 0] < pairs[:, 1]).all()))
    ((10, 2), False, True)
"""

from __future__ import annotations

import torch

# Below this many candidate pairs per wanted pair, a permutation of all of them is cheap enough;
# above it, rejection of repeated draws wastes little (few collisions) and needs no O(total) memory.
_PERMUTE_RATIO = 4


def _distinct_indices(total: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct integers of ``[0, total)``, a uniform random subset, in random order."""
    if total <= _PERMUTE_RATIO * count:
        return torch.randperm(total, generator=generator)[:count]
    picked = torch.zeros(0, dtype=torch.long)
    while picked.numel() < count:
        draw = torch.randint(total, (count + count // 4 + 16,), generator=generator)
        picked = torch.unique(torch.cat([picked, draw]))
    # every subset of the (exchangeable) distinct draws is equally likely: keep a random one
    return picked[torch.randperm(picked.numel(), generator=generator)[:count]]


def triangle_index_to_pair(index: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major position in the strict upper triangle of an ``n x n`` matrix -> ``(row, col)``.

    Exact in integers (no float square root), so it holds for any ``n`` that fits int64.

    Example:
        >>> row, col = triangle_index_to_pair(torch.arange(6), 4)
        >>> list(zip(row.tolist(), col.tolist()))
        [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    """
    rows = torch.arange(max(n - 1, 0))
    starts = rows * n - rows * (rows + 1) // 2
    row = torch.searchsorted(starts, index, right=True) - 1
    col = index - starts[row] + row + 1
    return row, col


def sample_pairs(members: torch.Tensor, max_pairs: int | None, seed: int) -> tuple[torch.Tensor, bool]:
    """Unordered pairs of ``members``: all of them, or ``max_pairs`` distinct ones drawn with ``seed``.

    Args:
        members: ``[n]`` sample indices (sorted ascending for ``i < j`` to hold in the output).
        max_pairs: the most pairs to return; ``None`` for all pairs.
        seed: seeds the CPU generator of the draw.

    Returns:
        ``(pairs [P, 2] int64 on CPU, exact)``; ``exact`` is True when every pair was returned.
        All pairs come in row-major order; sampled pairs in a random (seeded) order.
    """
    members = members.detach().cpu().long()
    n = members.numel()
    total = n * (n - 1) // 2
    if max_pairs is None or total <= max_pairs:
        i, j = torch.triu_indices(n, n, offset=1)
        return torch.stack([members[i], members[j]], 1), True
    if max_pairs < 1:
        return torch.zeros(0, 2, dtype=torch.long), False
    generator = torch.Generator().manual_seed(seed)
    row, col = triangle_index_to_pair(_distinct_indices(total, max_pairs, generator), n)
    return torch.stack([members[row], members[col]], 1), False


def sample_cross_pairs(labels: torch.Tensor, max_pairs: int | None, seed: int) -> tuple[torch.Tensor, bool]:
    """Pairs ``(i, j)``, ``i < j``, of samples whose ``labels`` differ: all, or ``max_pairs`` seeded ones.

    A position in ``[0, cross pairs)`` is mapped to a block (group a against group b > a) and a
    member of each, so a sampled subset is uniform over cross-group pairs however few they are.

    Example:
        >>> pairs, exact = sample_cross_pairs(torch.tensor([0, 0, 1]), None, seed=0)
        >>> (pairs.tolist(), exact)
        ([[0, 2], [1, 2]], True)
    """
    labels = labels.detach().cpu().long()
    n = labels.numel()
    _, sizes = torch.unique(labels, return_counts=True)
    by_group = torch.argsort(labels, stable=True)  # members of each group, contiguous and ascending
    offsets = torch.cumsum(sizes, 0) - sizes
    a, b = torch.triu_indices(sizes.numel(), sizes.numel(), offset=1)
    block_sizes = sizes[a] * sizes[b]
    cross = int(block_sizes.sum())
    exact = max_pairs is None or cross <= max_pairs
    if exact:
        picked = torch.arange(cross)
    else:
        picked = _distinct_indices(cross, max(max_pairs, 0), torch.Generator().manual_seed(seed))
    starts = torch.cumsum(block_sizes, 0) - block_sizes
    block = torch.searchsorted(starts, picked, right=True) - 1
    offset = picked - starts[block]
    first = by_group[offsets[a[block]] + offset // sizes[b[block]]]
    second = by_group[offsets[b[block]] + offset % sizes[b[block]]]
    pairs = torch.stack([torch.minimum(first, second), torch.maximum(first, second)], 1)
    if exact:
        pairs = pairs[torch.argsort(pairs[:, 0] * n + pairs[:, 1])]
    return pairs, exact
