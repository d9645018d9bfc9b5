"""Pathway distance (paper metric 1): mean edit distance between pathways of samples of one group.

Example:
    >>> import torch
    >>> from grokmon.pathways import PathwaySequences
    >>> seqs = PathwaySequences(torch.tensor([[0, 1, -1], [0, 2, 3]]), torch.tensor([2, 3]), 4)
    >>> r = pathway_distance(seqs)
    >>> (r.raw, round(r.normalized, 3), r.num_pairs)
    (2.0, 0.667, 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..pathways import PathwaySequences


@dataclass
class DistanceResult:
    """Mean pairwise edit distance: ``raw`` (the paper's), ``normalized`` (ED / longer length).

    The standard errors are those of the pair sample (std / sqrt(pairs)) when pairs were
    subsampled, and 0.0 when every pair was used (the mean is then exact).
    """

    raw: float
    normalized: float
    raw_stderr: float
    normalized_stderr: float
    num_pairs: int
    exact: bool
    per_group: dict[str, "DistanceResult"] = field(default_factory=dict)


def sample_pairs(members: torch.Tensor, max_pairs: int | None, seed: int) -> tuple[torch.Tensor, bool]:
    """Unordered pairs (i < j) of ``members``: all of them, or ``max_pairs`` distinct ones drawn with ``seed``.

    The draw happens on the CPU with its own generator, so it does not depend on the device.
    """
    members = members.cpu()
    n = members.numel()
    total = n * (n - 1) // 2
    if max_pairs is None or total <= max_pairs:
        i, j = torch.triu_indices(n, n, offset=1)
        return torch.stack([members[i], members[j]], 1), True
    g = torch.Generator().manual_seed(seed)
    if total <= 20_000_000:
        picked = torch.randperm(total, generator=g)[:max_pairs]
    else:  # distinct draws without a permutation of every pair
        picked = torch.zeros(0, dtype=torch.long)
        while picked.numel() < max_pairs:
            picked = torch.unique(torch.cat([picked, torch.randint(total, (max_pairs,), generator=g)]))
        picked = picked[torch.randperm(picked.numel(), generator=g)[:max_pairs]]
    # row-major index of the strict upper triangle -> (row, col), exactly, in integers
    rows = torch.arange(n - 1)
    starts = rows * n - rows * (rows + 1) // 2
    row = torch.searchsorted(starts, picked, right=True) - 1
    col = picked - starts[row] + row + 1
    return torch.stack([members[row], members[col]], 1), False


def _summarise(raw: torch.Tensor, norm: torch.Tensor, exact: bool) -> DistanceResult:
    count = raw.numel()
    if count == 0:
        nan = math.nan
        return DistanceResult(nan, nan, nan, nan, 0, exact)

    def stderr(x: torch.Tensor) -> float:
        return 0.0 if exact or count < 2 else float(x.std(unbiased=True) / math.sqrt(count))

    return DistanceResult(float(raw.mean()), float(norm.mean()), stderr(raw), stderr(norm), count, exact)


def pathway_distance(
    seqs: PathwaySequences,
    groups: torch.Tensor | None = None,
    *,
    group_names: Sequence[str] = (),
    max_pairs: int | None = 100_000,
    seed: int = 0,
    backend: str = "auto",
) -> DistanceResult:
    """Mean edit distance over pairs of samples of the same group (all samples one group by default).

    The overall value pools the within-group pairs of every group (cross-group pairs never count,
    as in the paper); ``per_group`` holds each group's own mean. A group with more than
    ``max_pairs`` pairs is subsampled with ``seed``. Groups of fewer than 2 samples give NaN.
    """
    from ..editdistance import pairwise_edit_distance

    n = seqs.ids.shape[0]
    labels = torch.zeros(n, dtype=torch.long) if groups is None else groups.detach().cpu().long()
    lengths = seqs.lengths
    raws, norms, exact_all, per_group = [], [], True, {}
    for g in torch.unique(labels).tolist():
        members = (labels == g).nonzero().flatten()
        pairs, exact = sample_pairs(members, max_pairs, seed + g)
        if pairs.shape[0]:
            d = pairwise_edit_distance(seqs.ids, lengths, pairs.to(seqs.ids.device), backend=backend).double().cpu()
            longer = torch.maximum(lengths.cpu()[pairs[:, 0]], lengths.cpu()[pairs[:, 1]]).double()
            norm = torch.where(longer > 0, d / longer.clamp(min=1), torch.zeros_like(d))
        else:
            d = norm = torch.zeros(0, dtype=torch.double)
        exact_all &= exact
        raws.append(d)
        norms.append(norm)
        if groups is not None:
            name = group_names[g] if g < len(group_names) else str(g)
            per_group[name] = _summarise(d, norm, exact)
    result = _summarise(torch.cat(raws), torch.cat(norms), exact_all)
    result.per_group = per_group
    return result


def cross_group_distance(
    seqs: PathwaySequences, groups: torch.Tensor, *, max_pairs: int | None = 100_000, seed: int = 0,
    backend: str = "auto",
) -> DistanceResult:
    """The paper's control: mean distance over pairs of samples from *different* groups."""
    from ..editdistance import pairwise_edit_distance

    labels = groups.detach().cpu().long()
    pairs, exact = sample_pairs(torch.arange(labels.numel()), None if max_pairs is None else max_pairs * 4, seed)
    pairs = pairs[labels[pairs[:, 0]] != labels[pairs[:, 1]]]
    if max_pairs is not None and pairs.shape[0] > max_pairs:
        pairs, exact = pairs[:max_pairs], False
    d = pairwise_edit_distance(seqs.ids, seqs.lengths, pairs.to(seqs.ids.device), backend=backend).double().cpu()
    longer = torch.maximum(seqs.lengths.cpu()[pairs[:, 0]], seqs.lengths.cpu()[pairs[:, 1]]).double().clamp(min=1)
    return _summarise(d, d / longer, exact)
