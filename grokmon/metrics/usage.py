"""Beyond the paper: how the experts are used (routing entropy, expert load) and pathway drift.

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

from ..errors import ConfigError
from ..pathways import PathwaySequences
from .info import MetricInfo

#: The keys this module computes (:mod:`grokmon.metrics.info`).
INFO = (
    MetricInfo("routing_entropy", None, "fraction of log E", description="normalised routing entropy"),
    MetricInfo("expert_load_entropy", "higher", "fraction of log E", description="balance of the expert load"),
    MetricInfo("dead_expert_fraction", "lower", "fraction of experts", description="experts that received no token"),
    MetricInfo("expert_load_max_over_mean", "lower", "ratio", description="busiest expert's load over the mean"),
    MetricInfo("load", None, "fraction of assignments", description="per expert: its share of the assignments"),
    MetricInfo("pathway_drift", None, "fraction", description="normalised change of each pathway since the last probe"),
    MetricInfo("pathway_drift_raw", None, "edit operations", description="unnormalised drift"),
)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) along the last dim of non-negative weights, renormalised to sum 1."""
    p = p.clamp(min=0)
    p = p / p.sum(-1, keepdim=True).clamp(min=1e-12)
    return -torch.special.xlogy(p, p).sum(-1)  # xlogy: 0 log 0 = 0


def routing_entropy(mean_weights: torch.Tensor) -> torch.Tensor:
    """``[L]``: mean over samples of the entropy of each sample's routing distribution, / log(E).

    ``H_l = mean_i ( -sum_k g_l(i,k) log g_l(i,k) ) / log E``: 0 when a sample's tokens all go to
    one expert, 1 when its weight is spread evenly over all ``E``. 0 for ``E = 1``; NaN for ``N = 0``.

    Example:
        >>> import torch
        >>> routing_entropy(torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])).tolist()
        [0.0, 1.0]
    """
    if mean_weights.dim() != 3:
        raise ConfigError(f"routing_entropy needs mean_weights [N, L, E], got {tuple(mean_weights.shape)}")
    n, l, e = mean_weights.shape
    if e < 2:
        return torch.zeros(l, device=mean_weights.device)
    return _entropy(mean_weights.double()).mean(0).float() / math.log(e)


@dataclass
class LoadResult:
    """Expert load per router, from the probe's token counts.

    ``fractions [L, E]``: share of the router's token assignments each expert received;
    ``entropy [L]``: entropy of those shares / log E (1 = perfectly balanced);
    ``dead_fraction [L]``: share of experts that received no token;
    ``max_over_mean [L]``: the busiest expert's count over the mean count (1 = balanced; 0 when no
    token was routed at all).
    """

    fractions: torch.Tensor
    entropy: torch.Tensor
    dead_fraction: torch.Tensor
    max_over_mean: torch.Tensor


def expert_load(expert_counts: torch.Tensor) -> LoadResult:
    """Load statistics from ``[L, E]`` token counts (:attr:`Pathways.expert_counts`).

    Example:
        >>> import torch
        >>> r = expert_load(torch.tensor([[2, 2, 0, 0], [1, 1, 1, 1]]))
        >>> r.entropy.tolist(), r.dead_fraction.tolist(), r.max_over_mean.tolist()
        ([0.5, 1.0], [0.5, 0.0], [2.0, 1.0])
    """
    if expert_counts.dim() != 2:
        raise ConfigError(f"expert_load needs expert_counts [L, E], got {tuple(expert_counts.shape)}")
    counts = expert_counts.double()
    e = counts.shape[-1]
    fractions = counts / counts.sum(-1, keepdim=True).clamp(min=1)
    if e > 1:
        entropy = _entropy(fractions) / math.log(e)
    else:
        entropy = torch.zeros(counts.shape[0], dtype=torch.float64, device=counts.device)
    dead = (counts == 0).double().mean(-1)
    max_over_mean = counts.max(-1).values / counts.mean(-1).clamp(min=1e-12)
    return LoadResult(fractions.float(), entropy.float(), dead.float(), max_over_mean.float())


@dataclass
class DriftResult:
    """Mean over samples of the edit distance between a sample's pathway now and at the previous
    probe: ``raw``, and ``normalized`` by the longer of the two (0 when both are empty)."""

    raw: float
    normalized: float


def pathway_drift(previous: PathwaySequences, current: PathwaySequences, *, backend: str = "auto") -> DriftResult:
    """How far each sample's pathway moved since the previous probe (same samples, same order).

    Large while routing still reorganises; near 0 once pathways have settled. Compare it across
    probes taken the same number of steps apart.

    Example:
        >>> import torch
        >>> before = PathwaySequences(torch.tensor([[1, 2, 3], [4, 5, -1]]), torch.tensor([3, 2]), 6)
        >>> after = PathwaySequences(torch.tensor([[1, 2, 4], [4, 5, -1]]), torch.tensor([3, 2]), 6)
        >>> r = pathway_drift(before, after)
        >>> (r.raw, round(r.normalized, 4))   # (1 + 0) / 2 and (1/3 + 0) / 2
        (0.5, 0.1667)
    """
    n = previous.ids.shape[0]
    if current.ids.shape[0] != n:
        raise ConfigError(
            f"pathway_drift compares the same samples at two probes, got {n} and {current.ids.shape[0]} "
            "samples: keep the probe set fixed between probes"
        )
    if n == 0:
        return DriftResult(math.nan, math.nan)
    from ..editdistance import edit_distance  # lazy: keeps `import grokmon.metrics` light

    device = previous.ids.device
    d = edit_distance(previous.ids, previous.lengths, current.ids.to(device), current.lengths.to(device),
                      backend=backend).double().cpu()
    longer = torch.maximum(previous.lengths.cpu(), current.lengths.cpu()).double()
    norm = torch.where(longer > 0, d / longer.clamp(min=1), torch.zeros_like(d))
    return DriftResult(float(d.mean()), float(norm.mean()))
