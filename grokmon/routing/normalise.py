"""Turn what each family's router returns into a :class:`RouterOutput`.

Expert ids always come from the router's own output when it gives them (DeepSeek-V3 selects with
bias-corrected, group-limited scores, so top-k of its logits would be wrong). Tuple elements are
classified by dtype and shape, which covers the (logits, weights, idx) order of transformers
>= 5.21 and the reversed (idx, weights, logits) of 5.20's Granite alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import RoutingError
from .types import RouterOutput


def finish(ids: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor | None, num_experts: int) -> RouterOutput:
    """Sort each token's experts by weight (descending) and divide the weights by their sum."""
    weights = weights.float()
    weights, order = torch.sort(weights, dim=-1, descending=True, stable=True)
    ids = torch.gather(ids.long(), -1, order)
    total = weights.sum(-1, keepdim=True)
    weights = weights / torch.where(total > 0, total, torch.ones_like(total))
    return RouterOutput(ids, weights, logits, num_experts)


def _top_k_of(module: nn.Module, parent: nn.Module | None) -> int | None:
    for owner in (module, parent):
        for attr in ("top_k", "num_experts_per_tok", "k", "moe_top_k"):
            value = getattr(owner, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def from_jetmoe_gating(out: tuple) -> RouterOutput:
    """JetMoe's 5-tuple (index_sorted_experts, batch_index, batch_gates, expert_size, logits).

    Entries are grouped by expert in id order, ``expert_size`` long each, and ``index_sorted_experts``
    is each entry's position in the flattened ``[T, k]`` choice: that rebuilds the exact dispatch.
    """
    index_sorted, _, gates, sizes, logits = out
    t, e = logits.shape
    k = index_sorted.numel() // max(t, 1)
    sizes = torch.as_tensor(sizes, device=index_sorted.device)
    experts = torch.repeat_interleave(torch.arange(e, device=index_sorted.device), sizes)
    ids = torch.empty(t * k, dtype=torch.long, device=index_sorted.device)
    weights = torch.empty(t * k, dtype=torch.float32, device=index_sorted.device)
    ids[index_sorted] = experts
    weights[index_sorted] = gates.float()
    return finish(ids.view(t, k), weights.view(t, k), logits, e)


def default_extractor(module: nn.Module, args: tuple, out: Any, parent: nn.Module | None = None) -> RouterOutput:
    """Normalise any supported router output (see the module docstring)."""
    parts = out if isinstance(out, (tuple, list)) else (out,)
    if len(parts) == 5 and isinstance(parts[3], (list, tuple, torch.Tensor)) and parts[4].dim() == 2:
        return from_jetmoe_gating(tuple(parts))
    tensors = [p for p in parts if isinstance(p, torch.Tensor)]
    ids = next((p for p in tensors if not p.is_floating_point() and p.dim() == 2), None)
    floats = [p for p in tensors if p.is_floating_point() and p.dim() == 2]
    if ids is not None:
        k = ids.shape[-1]
        weight_like = [p for p in floats if p.shape[-1] == k]
        wide = [p for p in floats if p.shape[-1] > k]
        if not weight_like:
            raise RoutingError(f"router {type(module).__name__} returned expert ids without their weights")
        if wide:
            logits, weights = wide[0], weight_like[0]
        else:  # every expert chosen (E == k): standard order is (logits, weights, ids)
            logits, weights = (floats[0], floats[-1]) if len(floats) > 1 else (None, floats[0])
        e = logits.shape[-1] if logits is not None else int(getattr(module, "num_experts", ids.max() + 1))
        return finish(ids, weights, logits, e)
    if not floats:
        raise RoutingError(f"router {type(module).__name__} returned no tensor grokmon can read: {type(out).__name__}")
    if parent is not None and hasattr(parent, "route_tokens_to_experts"):
        # DBRX: the router gives logits; its parent block chooses the experts
        weights, chosen = parent.route_tokens_to_experts(floats[0])
        return finish(chosen, weights, floats[0], floats[0].shape[-1])
    k = _top_k_of(module, parent)
    if k is None:
        raise RoutingError(
            f"router {type(module).__name__} returned only scores and has no top_k attribute: register it "
            "with grokmon.register_router(cls, extractor) to say how it picks experts"
        )
    if len(floats) == 2 and floats[0].shape == floats[1].shape:
        # Llama4: (dense scores that are 0 except at the chosen experts, logits)
        scores, logits = floats
        weights, chosen = torch.topk(scores.float(), k, dim=-1)
        return finish(chosen, weights, logits, logits.shape[-1])
    logits = floats[0]
    probs = torch.softmax(logits.float(), dim=-1)
    weights, chosen = torch.topk(probs, k, dim=-1)
    return finish(chosen, weights, logits, logits.shape[-1])


def check_finite(output: RouterOutput, site_name: str) -> None:
    """Raise :class:`RoutingError` when a router's weights or logits hold NaN or inf."""
    bad = ~torch.isfinite(output.weights).all()
    if output.logits is not None:
        bad = bad | ~torch.isfinite(output.logits).all()
    if bool(bad):
        raise RoutingError(
            f"router {site_name} produced NaN or inf routing values: the model has diverged or its router "
            "weights are corrupt; this probe is skipped"
        )
