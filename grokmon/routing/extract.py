"""Turn whatever a router's forward returned into a :class:`RouterOutput`.

Tuple elements are classified by dtype and shape, not position, so the router contract changes of
transformers 5.x (``(logits, weights, idx)``, Granite's reversed tuple in 5.20, Llama4's
``(scores, logits)``, JetMoe's 5-tuple, DBRX's bare logits) all read the same way:

* an integer ``[T, k]`` tensor is the chosen experts – always used as given, never recomputed
  (DeepSeek-V3 selects with bias-corrected, group-limited scores that ``topk(logits)`` misses);
* a float ``[T, k]`` tensor is their weights;
* a float ``[T, E]`` tensor is logits (or a dense score matrix, Llama4).

Without ids the selection is rebuilt the way the block does it: the parent's
``route_tokens_to_experts`` (DBRX), a dense score matrix's top-k (Llama4), else ``topk(logits, k)``
with softmax weights (JetMoe, GPT-OSS-style custom routers).

Example:
    >>> import torch
    >>> logits = torch.tensor([[0.0, 2.0, 1.0]])
    >>> out = standard_extractor(None, (), logits, top_k=2)
    >>> out.expert_ids.tolist(), [round(w, 4) for w in out.weights[0].tolist()]
    ([[1, 2]], [0.7311, 0.2689])
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import RoutingError
from .types import RouterOutput


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def _flat_tensors(output: Any) -> list[tuple[int, torch.Tensor]]:
    """(position, 2-D view) of every tensor of rank >= 2 in the output (tuple / list / ModelOutput)."""
    if isinstance(output, torch.Tensor):
        items = [output]
    elif isinstance(output, dict):
        items = list(output.values())
    elif isinstance(output, (tuple, list)):
        items = list(output)
    else:
        raise RoutingError(f"router returned {type(output).__name__}, not a tensor or a tuple of tensors")
    return [(i, _rows(t)) for i, t in enumerate(items) if isinstance(t, torch.Tensor) and t.dim() >= 2]


def finish(ids: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor | None, num_experts: int) -> RouterOutput:
    """Sort each token's experts by weight (descending) and divide the weights by their sum."""
    w = weights.float()
    w, order = torch.sort(w, dim=-1, descending=True, stable=True)
    ids = torch.gather(ids.long(), -1, order)
    w = w / w.sum(dim=-1, keepdim=True)
    return RouterOutput(expert_ids=ids, weights=w, logits=logits, num_experts=num_experts)


def standard_extractor(
    module: nn.Module | None,
    args: tuple,
    output: Any,
    *,
    top_k: int | None = None,
    logits_index: int | None = None,
    route_fn: Callable[[torch.Tensor], Any] | None = None,
) -> RouterOutput:
    """Read ``(logits, weights, idx)`` in any order, ``(scores, logits)``, a 5-tuple, or bare logits.

    Args:
        module: the router (its ``top_k`` / ``k`` / ``num_experts_per_tok`` attribute gives k when
            the output has no ids and ``top_k`` is not passed).
        args: the router's forward arguments (unused; part of the extractor signature).
        output: the router's forward output.
        top_k: experts per token, when the output carries no ids.
        logits_index: tuple position of the logits when known (from ``_can_record_outputs``); it
            tells logits from a dense score matrix of the same shape (Llama4).
        route_fn: the block's own ``logits -> (weights, ids)`` (DBRX's ``route_tokens_to_experts``).
    """
    tensors = _flat_tensors(output)
    if not tensors:
        raise RoutingError("router output holds no [tokens, experts] tensor")
    rows = max(t.shape[0] for _, t in tensors)
    tensors = [(i, t) for i, t in tensors if t.shape[0] == rows]
    ints = [(i, t) for i, t in tensors if not t.is_floating_point()]
    floats = [(i, t) for i, t in tensors if t.is_floating_point()]
    if ints:
        ids = ints[0][1]
        k = ids.shape[-1]
        wide = [(i, t) for i, t in floats if t.shape[-1] > k or i == logits_index]
        narrow = [(i, t) for i, t in floats if t.shape[-1] == k and i != logits_index]
        if not narrow and len(wide) >= 2:  # k == E: both [T, E]; by convention logits come first
            narrow = wide[1:]
            wide = wide[:1]
        if not narrow:
            raise RoutingError(f"router output has expert ids [T, {k}] but no [T, {k}] weights")
        logits = wide[0][1] if wide else None
        num_experts = logits.shape[-1] if logits is not None else _num_experts_attr(module, k)
        return finish(ids, narrow[0][1], logits, num_experts)
    if not floats:
        raise RoutingError("router output holds no floating-point logits")
    by_pos = dict(floats)
    if logits_index is not None and logits_index in by_pos:
        logits = by_pos[logits_index]
    else:
        logits = floats[-1][1]
    dense = [t for i, t in floats if t is not logits and t.shape == logits.shape]
    num_experts = logits.shape[-1]
    if route_fn is not None:
        routed = route_fn(logits)
        inner = standard_extractor(module, args, routed, top_k=top_k)
        return RouterOutput(inner.expert_ids, inner.weights, logits, num_experts)
    k = top_k or _top_k_attr(module)
    if k is None:
        raise RoutingError(
            f"router {type(module).__name__} returns logits only and has no top_k/k attribute: "
            "register it with grokmon.routing.register_router(cls, extractor) to say how it selects experts"
        )
    ids = torch.topk(logits, k, dim=-1).indices
    if dense:  # Llama4: sigmoid scores at the chosen experts, zero elsewhere
        weights = torch.gather(dense[0], -1, ids)
    else:
        weights = torch.gather(torch.softmax(logits.float(), dim=-1), -1, ids)
    return finish(ids, weights, logits, num_experts)


def _top_k_attr(module: nn.Module | None) -> int | None:
    for attr in ("top_k", "k", "num_experts_per_tok", "moe_top_k"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _num_experts_attr(module: nn.Module | None, fallback: int) -> int:
    for attr in ("num_experts", "n_routed_experts", "num_local_experts", "out_features"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return fallback
