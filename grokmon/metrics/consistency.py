"""Pathway consistency (paper metric 2): how smoothly one sample's routing moves from layer to layer.

Expert ``k`` of router ``l`` is embedded by its router weight row ``v_k^l = W_l[k]``; the sample's
embedding at router ``l`` is the routing-weighted sum ``e_l = sum_k g_l(k) v_k^l``, and consecutive
routers are compared by cosine ``cos_l = cos(e_l, e_{l+1})``. The paper's score is
``C = 1 - mean_l cos_l / (max_l cos_l + 1e-8)``.

Its direction is NOT fixed: the paper contradicts itself and small runs rose on one architecture
and fell on another. Report it, watch for plateaus, never assume that up (or down) is good.

Example:
    >>> import torch
    >>> w = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])           # N=1, L=2, E=2
    >>> rows = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]] * 2)    # L=2, E=2, H=2
    >>> r = pathway_consistency(w, rows)
    >>> (round(r.mean_cosine, 4), round(r.score, 4))
    (1.0, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..pathways import threshold_keep
from .distance import group_name
from .info import MetricInfo

#: The keys this module computes (:mod:`grokmon.metrics.info`). With 2 MoE layers C_i is one cosine
#: divided by itself (~1e-8 on every probe): it needs 3.
INFO = (
    MetricInfo("pathway_consistency", None, "", min_moe_layers=3,
               description="the paper's C (no fixed direction: the paper contradicts itself)"),
    MetricInfo("pathway_consistency_undefined", None, "fraction of samples", min_moe_layers=2,
               description="samples whose largest layer cosine is below 0.1 (C_i left out)"),
    MetricInfo("pathway_cosine", None, "cosine", min_moe_layers=2,
               description="mean consecutive-layer cosine of the expert embeddings"),
    MetricInfo("consistency_cosine", None, "cosine", min_moe_layers=2, description="per layer: cosine with the next"),
    MetricInfo("routing_cosine", None, "cosine", min_moe_layers=2,
               description="index-aligned cosine of raw routing vectors"),
)

PAPER_EPS = 1e-8  # the paper's constant in C = 1 - mean cos / (max cos + eps)
#: C_i divides by the sample's largest consecutive-layer cosine; below this it is ill-conditioned
#: (on a Qwen3-MoE run a largest cosine near 0.04 made C jump -3.7, +0.4, +13.3 between probes), so
#: the sample's C_i is NaN, left out of the mean and counted in ``undefined_fraction``.
MIN_MAX_COSINE = 0.1


@dataclass
class ConsistencyResult:
    """Pathway consistency of ``N`` samples over ``L`` routers.

    ``score``: mean over samples of the paper's C, leaving out the samples where C is
    ill-conditioned (largest cosine below :data:`MIN_MAX_COSINE`; their ``per_sample_score`` is NaN,
    and ``score`` is NaN when every sample is); ``undefined_fraction``: the share left out;
    ``mean_cosine``: mean over samples and layer pairs of ``cos_l``; ``per_sample_cosine`` ``[N]``
    (mean over layer pairs); ``per_layer_cosine`` ``[L-1]`` (mean over samples); ``per_group`` by
    group name.
    """

    score: float
    mean_cosine: float
    per_sample_score: torch.Tensor
    per_sample_cosine: torch.Tensor
    per_layer_cosine: torch.Tensor
    undefined_fraction: float = 0.0
    per_group: dict[str, "ConsistencyResult"] = field(default_factory=dict)


def _check(mean_weights: torch.Tensor, router_weights: torch.Tensor, kept_mask: torch.Tensor | None) -> None:
    if mean_weights.dim() != 3 or router_weights.dim() != 3:
        raise ConfigError(
            "pathway_consistency needs mean_weights [N, L, E] and router_weights [L, E, H], got shapes "
            f"{tuple(mean_weights.shape)} and {tuple(router_weights.shape)}"
        )
    _, l, e = mean_weights.shape
    if l < 2:
        raise ConfigError(
            "pathway consistency compares consecutive MoE layers: the model needs at least 2 routers "
            "(turn it off with MetricConfig(consistency=False))"
        )
    if tuple(router_weights.shape[:2]) != (l, e):
        raise ConfigError(
            f"router_weights {tuple(router_weights.shape)} do not match mean_weights "
            f"{tuple(mean_weights.shape)}: need one row per expert of every router, [L, E, H]"
        )
    if kept_mask is not None and kept_mask.shape != mean_weights.shape:
        raise ConfigError(f"kept_mask must have mean_weights' shape {tuple(mean_weights.shape)}, "
                          f"got {tuple(kept_mask.shape)}")


def layer_cosines(
    mean_weights: torch.Tensor,
    router_weights: torch.Tensor,
    *,
    kept_mask: torch.Tensor | None = None,
    chunk: int = 256,
) -> torch.Tensor:
    """``[N, L-1]``: ``cos(e_{i,l}, e_{i,l+1})`` for every sample and pair of consecutive routers.

    Embeddings ``[chunk, L, H]`` are built ``chunk`` samples at a time in float64 (so TF32 matmul
    settings never change them), and memory stays bounded whatever ``N`` (N=4096, L=16, H=2048:
    64 MiB per chunk of 256).
    With ``kept_mask`` the weights outside the mask are dropped and the rest renormalised to sum 1.
    A zero embedding (all weight masked away) has cosine 0 with anything.

    Example:
        >>> import torch
        >>> w = torch.tensor([[[0.5, 0.5], [1.0, 0.0]]])
        >>> rows = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]] * 2)
        >>> round(layer_cosines(w, rows).item(), 4)   # (0.5, 0.5) against (1, 0)
        0.7071
    """
    _check(mean_weights, router_weights, kept_mask)
    if chunk < 1:
        raise ConfigError(f"chunk must be a positive number of samples, got {chunk}")
    n = mean_weights.shape[0]
    rows = router_weights.to(device=mean_weights.device, dtype=torch.float64)
    out = [torch.zeros(0, mean_weights.shape[1] - 1, device=mean_weights.device, dtype=torch.float64)]
    for start in range(0, n, chunk):
        g = mean_weights[start:start + chunk].double()
        if kept_mask is not None:
            g = g * kept_mask[start:start + chunk].to(g.device, g.dtype)
            g = g / g.sum(-1, keepdim=True).clamp(min=1e-12)
        emb = torch.einsum("nle,leh->nlh", g, rows)
        out.append(F.cosine_similarity(emb[:, :-1], emb[:, 1:], dim=-1))
    return torch.cat(out).float()


def consistency_from_cosines(cos: torch.Tensor) -> ConsistencyResult:
    """Summarise ``[N, L-1]`` consecutive-layer cosines into the paper's score and the mean cosine.

    Example:
        >>> import torch
        >>> r = consistency_from_cosines(torch.tensor([[1.0, 0.5]]))
        >>> round(r.score, 4)   # 1 - mean(1, 0.5) / 1
        0.25
        >>> r = consistency_from_cosines(torch.tensor([[1.0, 0.5], [0.04, -0.2]]))
        >>> round(r.score, 4), r.undefined_fraction   # the second sample's largest cosine is 0.04
        (0.25, 0.5)
    """
    cos = cos.float()
    if cos.shape[0] == 0:
        empty = torch.zeros(0, device=cos.device)
        return ConsistencyResult(math.nan, math.nan, empty, empty, torch.full((cos.shape[1],), math.nan), math.nan)
    largest = cos.max(1).values
    score = 1.0 - cos.mean(1) / (largest + PAPER_EPS)
    undefined = ~(largest >= MIN_MAX_COSINE)
    score = torch.where(undefined, torch.full_like(score, math.nan), score)
    defined = score[~undefined]
    mean_score = float(defined.mean()) if defined.numel() else math.nan
    return ConsistencyResult(mean_score, float(cos.mean()), score, cos.mean(1), cos.mean(0),
                             float(undefined.float().mean()))


def pathway_consistency(
    mean_weights: torch.Tensor,
    router_weights: torch.Tensor,
    groups: torch.Tensor | None = None,
    *,
    group_names: Sequence[str] = (),
    kept_mask: torch.Tensor | None = None,
    chunk: int = 256,
) -> ConsistencyResult:
    """The paper's consistency score C and the mean consecutive-layer cosine, overall and per group.

    Args:
        mean_weights: ``[N, L, E]`` each sample's routing weights ``g_l(i, k)`` (rows sum to 1).
        router_weights: ``[L, E, H]`` the router weight rows, the expert embeddings ``v_k^l``.
        groups: ``[N]`` group labels; adds ``per_group`` results (means over the group's samples).
        group_names: names of the labels.
        kept_mask: ``[N, L, E]`` bool, e.g. :func:`kept_experts_mask`: use only these experts'
            weights (renormalised), i.e. the experts of the sample's pathway.
        chunk: samples per embedding chunk (memory bound; the result does not depend on it).

    Returns:
        :class:`ConsistencyResult`. No direction is implied: see the module docstring.

    Raises:
        ConfigError: fewer than 2 routers, or shapes that do not match.

    Example:
        >>> import torch
        >>> w = torch.full((3, 2, 2), 0.5)
        >>> rows = torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(0))
        >>> r = pathway_consistency(w, rows, torch.tensor([0, 0, 1]), group_names=("a", "b"))
        >>> sorted(r.per_group), tuple(r.per_sample_score.shape), tuple(r.per_layer_cosine.shape)
        (['a', 'b'], (3,), (1,))
    """
    cos = layer_cosines(mean_weights, router_weights, kept_mask=kept_mask, chunk=chunk)
    result = consistency_from_cosines(cos)
    if groups is not None:
        if groups.shape != (mean_weights.shape[0],):
            raise ConfigError(f"groups must be [N]={mean_weights.shape[0]}, got {tuple(groups.shape)}")
        labels = groups.detach().to(cos.device).long()
        for g in torch.unique(labels).tolist():
            result.per_group[group_name(g, group_names)] = consistency_from_cosines(cos[labels == g])
    return result


def kept_experts_mask(mean_weights: torch.Tensor, threshold: float = 0.7) -> torch.Tensor:
    """``[N, L, E]`` bool: the experts of the paper's threshold pathway at every sample and router.

    The rule of :func:`grokmon.pathways.threshold_keep` (the pathway's own), scattered back to
    expert order.

    Example:
        >>> import torch
        >>> kept_experts_mask(torch.tensor([[[0.5, 0.3, 0.2, 0.0]]]), 0.7).tolist()
        [[[True, True, False, False]]]
    """
    experts, keep = threshold_keep(mean_weights, threshold)
    return torch.zeros_like(keep).scatter(-1, experts, keep)


def routing_cosine(mean_weights: torch.Tensor) -> torch.Tensor:
    """``[N, L-1]``: cosine of the raw routing vectors of consecutive routers, index against index.

    ``cos(g_l(i, .), g_{l+1}(i, .))`` pairs expert ``j`` of router ``l`` with expert ``j`` of router
    ``l+1``, which are unrelated experts; yet small runs found this variant moved with generalization
    on some runs, so grokmon reports it beside the paper's form. No direction is implied.

    Example:
        >>> import torch
        >>> w = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
        >>> round(routing_cosine(w).item(), 4)
        0.7071
    """
    if mean_weights.dim() != 3 or mean_weights.shape[1] < 2:
        raise ConfigError(f"routing_cosine needs mean_weights [N, L>=2, E], got {tuple(mean_weights.shape)}")
    w = mean_weights.float()
    return F.cosine_similarity(w[:, :-1], w[:, 1:], dim=-1)
