"""Beyond the paper: routing entropy, expert load and pathway drift.

Example:
    >>> import torch
    >>> load = expert_load(torch.tensor([[3, 1, 0, 0]]))
    >>> load.dead_fraction.tolist()
    [0.5]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..pathways import PathwaySequences


def _entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(min=0)
    p = p / p.sum(-1, keepdim=True).clamp(min=1e-12)
    return -(p * torch.log(p.clamp(min=1e-30))).sum(-1)


def routing_entropy(mean_weights: torch.Tensor) -> torch.Tensor:
    """``[L]``: mean over samples of the entropy of a sample's routing distribution, / log(E) (0..1)."""
    e = mean_weights.shape[-1]
    return _entropy(mean_weights.float()).mean(0) / math.log(e) if e > 1 else torch.zeros(mean_weights.shape[1])


@dataclass
class LoadResult:
    """Per router: share of tokens per expert, load entropy / log(E), share of experts with no token,
    and the busiest expert's load over the mean load."""

    fractions: torch.Tensor
    entropy: torch.Tensor
    dead_fraction: torch.Tensor
    max_over_mean: torch.Tensor


def expert_load(expert_counts: torch.Tensor) -> LoadResult:
    """Load statistics from ``[L, E]`` token counts."""
    counts = expert_counts.double()
    e = counts.shape[-1]
    fractions = counts / counts.sum(-1, keepdim=True).clamp(min=1)
    entropy = _entropy(fractions) / math.log(e) if e > 1 else torch.zeros(counts.shape[0])
    dead = (counts == 0).double().mean(-1)
    max_over_mean = counts.max(-1).values / counts.mean(-1).clamp(min=1e-12)
    return LoadResult(fractions.float(), entropy.float(), dead.float(), max_over_mean.float())


@dataclass
class DriftResult:
    """Mean edit distance between each sample's pathway now and at the previous probe."""

    raw: float
    normalized: float


def pathway_drift(previous: PathwaySequences, current: PathwaySequences, *, backend: str = "auto") -> DriftResult:
    """How far pathways moved since the previous probe (same samples, same order)."""
    from ..editdistance import edit_distance

    if previous.ids.shape[0] != current.ids.shape[0]:
        raise ValueError("pathway_drift needs the same samples at both probes (the probe set changed)")
    d = edit_distance(previous.ids, previous.lengths, current.ids.to(previous.ids.device), current.lengths.to(previous.ids.device),
                      backend=backend).double().cpu()
    longer = torch.maximum(previous.lengths.cpu(), current.lengths.cpu()).double()
    norm = torch.where(longer > 0, d / longer.clamp(min=1), torch.zeros_like(d))
    return DriftResult(float(d.mean()), float(norm.mean()))
