"""Pathway consistency (paper metric 2): how smoothly a sample's routing moves from layer to layer.

The sample's embedding at router l is the routing-weighted sum of that router's weight rows,
e_l = sum_k g_l(k) W_l[k]; consistency compares consecutive layers by cosine. The paper's score is
C = 1 - mean_l cos_l / (max_l cos_l + 1e-8). Its direction is NOT fixed (the paper contradicts
itself and small runs differed by architecture): report it, never assume up is good.

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


@dataclass
class ConsistencyResult:
    """``score``: mean paper C over samples; ``mean_cosine``: mean consecutive-layer cosine."""

    score: float
    mean_cosine: float
    per_sample_score: torch.Tensor
    per_sample_cosine: torch.Tensor
    per_layer_cosine: torch.Tensor
    per_group: dict[str, "ConsistencyResult"] = field(default_factory=dict)


def layer_cosines(mean_weights: torch.Tensor, router_weights: torch.Tensor, *, kept_mask: torch.Tensor | None = None,
                  chunk: int = 256) -> torch.Tensor:
    """``[N, L-1]`` cosine between the sample embeddings of consecutive routers, in sample chunks."""
    if mean_weights.dim() != 3 or router_weights.dim() != 3:
        raise ConfigError("pathway_consistency needs mean_weights [N, L, E] and router_weights [L, E, H]")
    n, l, e = mean_weights.shape
    if l < 2:
        raise ConfigError("pathway consistency compares consecutive MoE layers: the model needs at least 2 routers")
    if router_weights.shape[:2] != (l, e):
        raise ConfigError(f"router_weights {tuple(router_weights.shape)} do not match mean_weights {tuple(mean_weights.shape)}")
    rows = router_weights.float().to(mean_weights.device)
    out = []
    for start in range(0, n, chunk):
        g = mean_weights[start:start + chunk].float()
        if kept_mask is not None:
            g = g * kept_mask[start:start + chunk]
            g = g / g.sum(-1, keepdim=True).clamp(min=1e-12)
        emb = torch.einsum("nle,leh->nlh", g, rows)
        out.append(F.cosine_similarity(emb[:, :-1], emb[:, 1:], dim=-1))
    return torch.cat(out)


def _result(cos: torch.Tensor) -> ConsistencyResult:
    if cos.shape[0] == 0:
        empty = torch.zeros(0)
        return ConsistencyResult(math.nan, math.nan, empty, empty, torch.full((cos.shape[1],), math.nan))
    score = 1.0 - cos.mean(1) / (cos.max(1).values + 1e-8)
    return ConsistencyResult(float(score.mean()), float(cos.mean()), score, cos.mean(1), cos.mean(0))


def pathway_consistency(
    mean_weights: torch.Tensor,
    router_weights: torch.Tensor,
    groups: torch.Tensor | None = None,
    *,
    group_names: Sequence[str] = (),
    kept_mask: torch.Tensor | None = None,
) -> ConsistencyResult:
    """Paper score C and mean consecutive-layer cosine, overall and per group (see module doc)."""
    cos = layer_cosines(mean_weights, router_weights, kept_mask=kept_mask)
    result = _result(cos)
    if groups is not None:
        labels = groups.to(cos.device)
        for g in torch.unique(labels).tolist():
            name = group_names[g] if g < len(group_names) else str(g)
            result.per_group[name] = _result(cos[labels == g])
    return result


def routing_cosine(mean_weights: torch.Tensor) -> torch.Tensor:
    """``[N, L-1]`` cosine of raw routing vectors of consecutive routers, expert index against expert index.

    Experts of different layers are unrelated, yet small runs found this index-aligned variant moved
    with generalization on some runs, so grokmon reports it beside the paper's form.
    """
    w = mean_weights.float()
    return F.cosine_similarity(w[:, :-1], w[:, 1:], dim=-1)
