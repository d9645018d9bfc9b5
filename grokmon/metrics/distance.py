"""Pathway distance (paper metric 1): mean edit distance between pathways of samples of one group.

The edit distance runs over expert ids (the layer separator is one more symbol), from
:mod:`grokmon.editdistance`. Lower means more shared pathways: it falls as the model generalizes.

Example:
    >>> import torch
    >>> from grokmon.pathways import PathwaySequences
    >>> seqs = PathwaySequences(torch.tensor([[0, 1, -1], [0, 2, 3]]), torch.tensor([2, 3]), 4)
    >>> r = pathway_distance(seqs)
    >>> (r.raw, round(r.normalized, 3), r.num_pairs, r.exact)
    (2.0, 0.667, 1, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import ConfigError
from ..pathways import PathwaySequences
from .pairs import sample_cross_pairs, sample_pairs
from .info import MetricInfo

#: The keys this module computes (:mod:`grokmon.metrics.info`).
INFO = (
    MetricInfo("pathway_distance", "lower", "fraction of the longer pathway",
               description="normalised within-group mean edit distance between pathways; falls with generalization"),
    MetricInfo("pathway_distance_raw", "lower", "edit operations", description="the paper's unnormalised distance"),
    MetricInfo("pathway_distance_stderr", None, "fraction", description="pair-sample standard error of the distance"),
    MetricInfo("pathway_length", None, "experts", description="mean pathway length"),
)


@dataclass
class DistanceResult:
    """Mean pairwise edit distance: ``raw`` (the paper's), ``normalized`` (ED / longer length, 0..1).

    ``raw_stderr`` / ``normalized_stderr`` are the standard errors of the pair sample,
    ``std / sqrt(num_pairs)`` (unbiased std), when pairs were subsampled (``exact`` False); with every
    pair used the mean is exact and they are 0.0. ``per_group`` maps group names to their own result.
    """

    raw: float
    normalized: float
    raw_stderr: float
    normalized_stderr: float
    num_pairs: int
    exact: bool
    per_group: dict[str, "DistanceResult"] = field(default_factory=dict)


def group_name(label: int, group_names: Sequence[str]) -> str:
    """The name of group ``label``: ``group_names[label]`` when given, else ``str(label)``."""
    return str(group_names[label]) if 0 <= label < len(group_names) else str(label)


def _summarise(raw: torch.Tensor, norm: torch.Tensor, exact: bool) -> DistanceResult:
    count = raw.numel()
    if count == 0:
        return DistanceResult(math.nan, math.nan, math.nan, math.nan, 0, exact)

    def stderr(x: torch.Tensor) -> float:
        return 0.0 if exact or count < 2 else float(x.std(unbiased=True)) / math.sqrt(count)

    return DistanceResult(float(raw.mean()), float(norm.mean()), stderr(raw), stderr(norm), count, exact)


def _pair_distances(seqs: PathwaySequences, pairs: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw and length-normalised edit distances of ``pairs`` (float64, CPU)."""
    if pairs.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, empty
    from ..editdistance import pairwise_edit_distance  # lazy: keeps `import grokmon.metrics` light

    d = pairwise_edit_distance(seqs.ids, seqs.lengths, pairs.to(seqs.ids.device), backend=backend)
    d = d.double().cpu()
    lengths = seqs.lengths.cpu()
    longer = torch.maximum(lengths[pairs[:, 0]], lengths[pairs[:, 1]]).double()
    # two empty pathways are identical: distance 0, not 0/0
    return d, torch.where(longer > 0, d / longer.clamp(min=1), torch.zeros_like(d))


def _labels(groups: torch.Tensor | None, n: int) -> torch.Tensor:
    if groups is None:
        return torch.zeros(n, dtype=torch.long)
    if groups.shape != (n,):
        raise ConfigError(f"groups must be one label per sample, shape [{n}], got {tuple(groups.shape)}")
    return groups.detach().cpu().long()


def pathway_distance(
    seqs: PathwaySequences,
    groups: torch.Tensor | None = None,
    *,
    group_names: Sequence[str] = (),
    max_pairs: int | None = 100_000,
    seed: int = 0,
    backend: str = "auto",
    strata: torch.Tensor | None = None,
) -> DistanceResult:
    """Mean edit distance over pairs of samples of the same group (all samples one group by default).

    Args:
        seqs: pathways of ``N`` samples (:func:`grokmon.pathways.pathway_sequences`).
        groups: ``[N]`` integer group labels (e.g. data domain); None puts every sample in one group.
        group_names: names of the labels (``group_names[g]``); unnamed labels are called ``str(g)``.
        max_pairs: a group with more unordered pairs than this uses a seeded random subset of
            ``max_pairs`` distinct pairs ``(i < j)``; None always uses every pair.
        seed: seed of that subset (group ``g`` draws with ``seed + g``); the draw is on the CPU,
            so the result does not depend on the device.
        backend: edit-distance backend (``"auto"``, ``"torch"``, ``"rapidfuzz"``).
        strata: ``[N]`` integer labels within each group (e.g. the memorization step of the
            paper's selection); pairs are then taken only within the same group *and* stratum, and
            each group's value pools its strata by their real pair counts. A label ``< 0`` leaves
            the sample out.

    Returns:
        :class:`DistanceResult`. The overall values are the mean over every within-group pair: each
        group's mean weighted by its real pair count ``C(n_g, 2)``, also when the group was
        subsampled (cross-group pairs never count, as in the paper);
        ``per_group`` holds each group's own mean when ``groups`` is given. A group of fewer than
        2 samples has no pair: its entry is NaN and it adds nothing to the pool.

    Example:
        >>> import torch
        >>> from grokmon.pathways import PathwaySequences
        >>> ids = torch.tensor([[1, 2], [1, 3], [4, 5], [4, 5]], dtype=torch.int32)
        >>> r = pathway_distance(PathwaySequences(ids, torch.tensor([2, 2, 2, 2]), 6),
        ...                      torch.tensor([0, 0, 1, 1]), group_names=("a", "b"))
        >>> (r.raw, r.per_group["a"].raw, r.per_group["b"].normalized)
        (0.5, 1.0, 0.0)
    """
    n = seqs.ids.shape[0]
    labels = _labels(groups, n)
    within = torch.zeros(n, dtype=torch.long) if strata is None else _labels(strata, n)
    pooled, exact_all, per_group = [], True, {}
    for g in torch.unique(labels).tolist():
        group_strata, group_exact = [], True
        for s in torch.unique(within[(labels == g) & (within >= 0)]).tolist():
            members = ((labels == g) & (within == s)).nonzero().flatten()
            pairs, exact = sample_pairs(members, max_pairs, seed + g)
            d, norm = _pair_distances(seqs, pairs, backend)
            group_exact &= exact
            size = members.numel()
            group_strata.append((size * (size - 1) // 2, d, norm, exact))
        exact_all &= group_exact
        pooled += group_strata
        if groups is not None:
            per_group[group_name(g, group_names)] = _pool(group_strata, group_exact)
    result = _pool(pooled, exact_all)
    result.per_group = per_group
    return result


def _pool(strata: list[tuple[int, torch.Tensor, torch.Tensor, bool]], exact: bool) -> DistanceResult:
    """Mean over every within-group pair: each group's sample mean weighted by its real pair count.

    A group subsampled to ``max_pairs`` still weighs ``C(n_g, 2)``, so the pooled value estimates the
    mean over all within-group pairs. The standard error is the stratified one,
    ``sqrt(sum_g (W_g / W)^2 s_g^2 / m_g)`` over the subsampled groups (exact groups add nothing).
    """
    strata = [s for s in strata if s[1].numel() > 0]
    total = sum(weight for weight, *_ in strata)
    if not strata or total == 0:
        return DistanceResult(math.nan, math.nan, math.nan, math.nan, 0, exact)
    values, variances = [], []
    for column in (1, 2):
        mean = sum(x[0] * float(x[column].double().mean()) for x in strata) / total
        var = sum((x[0] / total) ** 2 * float(x[column].double().var(unbiased=True)) / x[column].numel()
                  for x in strata if not x[3] and x[column].numel() > 1)
        values.append(mean)
        variances.append(var)
    count = sum(x[1].numel() for x in strata)
    return DistanceResult(values[0], values[1], math.sqrt(variances[0]), math.sqrt(variances[1]), count, exact)


def cross_group_distance(
    seqs: PathwaySequences,
    groups: torch.Tensor,
    *,
    max_pairs: int | None = 100_000,
    seed: int = 0,
    backend: str = "auto",
) -> DistanceResult:
    """The paper's control: mean edit distance over pairs of samples from *different* groups.

    In the paper this shows no fall with generalization, unlike the within-group distance.
    Subsampling (uniform over cross-group pairs) and stderr follow :func:`pathway_distance`.

    Example:
        >>> import torch
        >>> from grokmon.pathways import PathwaySequences
        >>> ids = torch.tensor([[1, 2], [1, 3], [4, 5]], dtype=torch.int32)
        >>> r = cross_group_distance(PathwaySequences(ids, torch.tensor([2, 2, 2]), 6), torch.tensor([0, 0, 1]))
        >>> (r.raw, r.num_pairs)
        (2.0, 2)
    """
    labels = _labels(groups, seqs.ids.shape[0])
    pairs, exact = sample_cross_pairs(labels, max_pairs, seed)
    d, norm = _pair_distances(seqs, pairs, backend)
    return _summarise(d, norm, exact)
