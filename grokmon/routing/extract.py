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
    return t if t.dim() == 2 else t.flatten(0, -2)  # flatten, not reshape(-1, d): d may be 0


def _is_index(t: torch.Tensor) -> bool:
    """An integer tensor (bool masks and complex tensors are neither ids nor weights)."""
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


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
    """Sort each token's experts by weight (descending) and divide the weights by their sum.

    Ties keep their input order (a stable sort). Only shapes are checked (no host sync): ids out of
    ``[0, num_experts)`` and NaN/inf weights are caught by :func:`grokmon.routing.capture_pathways`.

    Raises:
        RoutingError: ``ids`` is not an integer ``[T, k]`` tensor with ``k >= 1``, or ``weights``
            has another shape.
    """
    if not isinstance(ids, torch.Tensor) or not isinstance(weights, torch.Tensor):
        raise RoutingError(f"expert ids and weights must be tensors, got {type(ids).__name__} and "
                           f"{type(weights).__name__}")
    if ids.dim() != 2 or ids.shape[-1] < 1 or not _is_index(ids):
        raise RoutingError(f"expert ids must be an integer [tokens, k] tensor with k >= 1, got {ids.dtype} "
                           f"{tuple(ids.shape)}")
    if weights.shape != ids.shape or weights.is_complex():
        raise RoutingError(f"expert weights must be a real tensor shaped like the ids {tuple(ids.shape)}, got "
                           f"{weights.dtype} {tuple(weights.shape)}")
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

    Only the tensors of rank >= 2 with the most rows count (each flattened to ``[T, last dim]``).
    With integer ids ``[T, k]``: the weights are the (first) float ``[T, k]`` tensor, the logits the
    first float ``[T, E]`` one with ``E > k`` (or the one at ``logits_index``). When ``k == E`` and
    ``logits_index`` is not given, two float ``[T, k]`` tensors are told apart by the convention
    that the logits come first.

    Args:
        module: the router (its ``top_k`` / ``k`` / ``num_experts_per_tok`` attribute gives k when
            the output has no ids and ``top_k`` is not passed).
        args: the router's forward arguments (unused; part of the extractor signature).
        output: the router's forward output.
        top_k: experts per token, when the output carries no ids.
        logits_index: tuple position of the logits when known (from ``_can_record_outputs``); it
            tells logits from a dense score matrix of the same shape (Llama4).
        route_fn: the block's own ``logits -> (weights, ids)`` (DBRX's ``route_tokens_to_experts``).

    Raises:
        RoutingError: the output is not a tensor / tuple / list / dict of tensors, holds no usable
            ``[T, E]`` tensor, has ids without weights of their shape, logits narrower than the
            ids, an empty expert dimension, or ``k`` outside ``[1, E]``. Values are
            not inspected (no host sync): NaN/inf and out-of-range ids are reported by the capture.
    """
    tensors = _flat_tensors(output)
    if not tensors:
        raise RoutingError("router output holds no [tokens, experts] tensor")
    rows = max(t.shape[0] for _, t in tensors)
    tensors = [(i, t) for i, t in tensors if t.shape[0] == rows]
    ints = [(i, t) for i, t in tensors if _is_index(t)]
    floats = [(i, t) for i, t in tensors if t.is_floating_point()]
    if ints:
        ids = ints[0][1]
        k = ids.shape[-1]
        if k == 0:
            raise RoutingError(f"router output has expert ids of shape {tuple(ids.shape)}: no expert per token")
        short = [t for _, t in floats if t.shape[-1] < k]
        if short:  # e.g. weights of the wrong width: never guess which tensor holds the weights
            raise RoutingError(f"router output has a float [T, {short[0].shape[-1]}] tensor beside expert ids "
                               f"[T, {k}]: the weights must be [T, {k}], one per chosen expert")
        if logits_index is not None and any(i == logits_index for i, _ in floats):
            wide = [(i, t) for i, t in floats if i == logits_index]
            if wide[0][1].shape[-1] < k:
                raise RoutingError(f"router logits [T, {wide[0][1].shape[-1]}] are narrower than its "
                                   f"expert ids [T, {k}]")
            narrow = [(i, t) for i, t in floats if t.shape[-1] == k and i != logits_index]
        else:
            wide = [(i, t) for i, t in floats if t.shape[-1] > k]
            narrow = [(i, t) for i, t in floats if t.shape[-1] == k]
            if not wide and len(narrow) >= 2:  # k == E: both [T, E]; by convention logits come first
                wide, narrow = narrow[:1], narrow[1:]
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
    if num_experts == 0:
        raise RoutingError(f"router logits have shape {tuple(logits.shape)}: no expert")
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
    if k > num_experts:
        raise RoutingError(f"router selects top-{k} experts but its logits have only {num_experts} "
                           f"(shape {tuple(logits.shape)})")
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
