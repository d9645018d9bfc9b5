"""Read Megatron-core's MoE router, ``TopKRouter`` (megatron-core 0.16).

Where it sits: ``decoder.layers.{i}.mlp.router`` of a Megatron ``GPTModel`` (the ``MoELayer`` is
the layer's ``mlp``), class ``megatron.core.transformer.moe.router.TopKRouter``; its gate is
``router.weight`` ``[E, hidden]``.

What it returns: ``forward(hidden_states [S, B, H], padding_mask=None)`` gives ``(probs [S*B, E],
routing_map [S*B, E] bool)``: sequence-first (row ``s * B + b``), ``probs`` zero outside the
chosen experts and ``routing_map`` True at them. The block dispatches each token to the experts of
its ``routing_map`` row, weighted by ``probs``.

What grokmon keeps:

* ``expert_ids``: the experts marked in ``routing_map`` (never recomputed from logits: expert
  bias, group-limited routing and routing replay decide the choice), ordered by weight;
* ``weights``: ``probs`` at those experts divided by their per-token sum (softmax top-k, and
  sigmoid top-k with ``k > 1``, already sum to 1 before ``moe_router_topk_scaling_factor``);
* ``logits``: ``None`` (the router does not return them);
* rows reordered from sequence-first to batch-major (``b * S + s``), as
  :class:`~grokmon.routing.RouterOutput` requires: ``S`` and ``B`` come from the router's input
  ``hidden_states [S, B, H]``, the first forward argument.

Token dropping (``moe_expert_capacity_factor``): a token that lost a chosen expert to the capacity
has fewer than ``k`` marked experts; its free slots get weight 0 (their id is meaningless), and a
token that lost them all has all-zero weights (it reached no expert, and adds nothing to its
sample's pathway). Probe without a capacity factor to see the router's full choice.

Not supported: sequence or context parallelism (each rank sees a slice of the sequence, so a
router call covers fewer tokens than the probe batch and the capture says so), pipeline
parallelism (each stage holds only its layers' routers). Only the MoE layer runs on a CPU
(Megatron's full model needs CUDA and Transformer Engine): the GPU path is untested here.

Example:
    >>> import torch
    >>> probs = torch.tensor([[0.7, 0.0, 0.3], [0.0, 1.0, 0.0]])   # S=2, B=1: rows s=0, s=1
    >>> out = read_router(None, (torch.zeros(2, 1, 4),), (probs, probs > 0), top_k=2)
    >>> out.expert_ids.tolist(), out.weights.tolist()[1]
    ([[0, 2], [1, 0]], [1.0, 0.0])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import RoutingError
from ..routing.types import RouterOutput

__all__ = ["read_router", "batch_major"]


def batch_major(rows: torch.Tensor, seq: int, batch: int) -> torch.Tensor:
    """``[S*B, ...]`` rows in sequence-first order (``s * B + b``) reordered to ``b * S + s``."""
    return rows.reshape(seq, batch, *rows.shape[1:]).transpose(0, 1).reshape(rows.shape)


def read_router(module: nn.Module | None, args: tuple, output: Any, *, top_k: int | None = None) -> RouterOutput:
    """The :class:`~grokmon.routing.RouterOutput` of one ``TopKRouter`` forward.

    Args:
        module: the router; its ``topk`` is ``k`` (``top_k`` overrides it).
        args: its forward arguments: ``hidden_states [S, B, H]`` first.
        output: ``(probs [S*B, E], routing_map [S*B, E] bool)``.
        top_k: experts per token, when ``module`` is not given.

    Returns:
        ids and weights ``[B*S, k]`` in batch-major row order, ``logits=None``, ``E``.

    Raises:
        RoutingError: the output is not ``(probs, routing_map)`` of one ``[T, E]`` shape, the input
            is not ``[S, B, H]`` with ``S * B == T``, or ``k`` is unknown or outside ``[1, E]``.
    """
    if not (isinstance(output, (tuple, list)) and len(output) == 2
            and all(isinstance(t, torch.Tensor) for t in output)):
        raise RoutingError(
            "Megatron TopKRouter: expected (probs [tokens, E], routing_map [tokens, E]) as in megatron-core 0.16, "
            f"got {type(output).__name__}: for another version register a reader with "
            "grokmon.routing.register_router(TopKRouter, fn)"
        )
    probs, routing_map = output
    if probs.dim() != 2 or routing_map.shape != probs.shape or routing_map.dtype != torch.bool:
        raise RoutingError(
            f"Megatron TopKRouter: expected float probs and a bool routing_map of one [tokens, E] shape, got "
            f"{probs.dtype} {tuple(probs.shape)} and {routing_map.dtype} {tuple(routing_map.shape)}: for another "
            "version register a reader with grokmon.routing.register_router(TopKRouter, fn)"
        )
    hidden = args[0] if args else None
    tokens, num_experts = probs.shape
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or hidden.shape[0] * hidden.shape[1] != tokens:
        raise RoutingError(
            "Megatron TopKRouter: its input must be hidden_states [seq, batch, hidden] with seq * batch = "
            f"{tokens} token rows, got {tuple(getattr(hidden, 'shape', ())) or type(hidden).__name__}: grokmon "
            "needs seq and batch to put the sequence-first rows in batch-major order"
        )
    seq, batch = hidden.shape[0], hidden.shape[1]
    k = top_k if top_k is not None else getattr(module, "topk", None)
    if not isinstance(k, int) or not 1 <= k <= num_experts:
        raise RoutingError(f"Megatron TopKRouter: top-k must be in [1, {num_experts}], got {k!r} "
                           "(the router's .topk, from moe_router_topk): set moe_router_topk to the experts per "
                           "token, or pass read_router(..., top_k=k)")
    w_all = probs.float()
    # the marked experts first, by weight; unmarked ones (dropped slots) after them, at weight 0
    key = w_all.masked_fill(~routing_map, float("-inf"))
    ids = torch.topk(key, k, dim=-1).indices
    weights = torch.where(routing_map.gather(-1, ids), w_all.gather(-1, ids), torch.zeros((), dtype=w_all.dtype,
                                                                                           device=w_all.device))
    total = weights.sum(dim=-1, keepdim=True)
    weights = weights / torch.where(total > 0, total, torch.ones_like(total))
    return RouterOutput(expert_ids=batch_major(ids, seq, batch), weights=batch_major(weights, seq, batch),
                        logits=None, num_experts=num_experts)
