"""DeepSpeed's own MoE routers: native ``deepspeed.moe`` (``TopKGate``) and AutoEP's router.

grokmon never imports DeepSpeed: ``grokmon/engines/__init__.py`` declares these classes by dotted
path (:mod:`grokmon._router_table`), and this module is imported only when
:func:`grokmon.routing.find_routers` meets one of them:

* ``deepspeed.moe.sharded_moe.TopKGate`` (``deepspeed.moe.layer.MoE`` →
  ``.deepspeed_moe`` (``MOELayer``) → ``.gate``), read by :func:`read_topk_gate`. Its weight rows
  ``gate.wg.weight [E, D]`` are the expert embeddings of pathway consistency.
* ``deepspeed.moe.ep_router.TokenChoiceTopKRouter``, the router AutoEP puts in place of a Hugging
  Face MoE block's gate; it returns ``(top_scores [T, k], selected_experts [T, k], counts [E])``,
  which the standard extractor reads.

**Dropped tokens.** With ``drop_tokens=True`` (DeepSpeed's default) an expert takes at most
``capacity`` tokens per forward (``eval_capacity_factor`` in eval mode, so in the probe too); the
gate marks a route it evicted with expert id ``-1`` and gate value 0, and the layer sends that
route nowhere. grokmon keeps such a slot as *not routed*: placeholder id 0 (so the capture's check
that ids are in ``[0, E)`` still holds) with weight 0 and ``RouterOutput.routed`` False. The slot
adds nothing to ``mean_weights``, nothing to ``expert_counts`` (expert load) and is ``-1`` in
per-token ids. The surviving routes of a token keep DeepSpeed's gate values, renormalised to sum 1.
A token with every route dropped reached no expert (DeepSpeed passes it on as zeros): it adds no
weight, so that sample's ``mean_weights[n, l]`` sums to the share of its tokens that reached an
expert, below 1.

**State a probe must not change.** ``MOELayer`` stores the last forward's ``l_aux`` and
``exp_counts`` (timings too with ``wall_clock_breakdown``), AutoEP's layer adds every forward's
token counts into ``tokens_per_expert``; the training step reads them. They are declared as probe
state (``declare_probe_state``, the by-path twin of :func:`grokmon.routing.register_probe_state`),
so every probe forward puts them back.

**Randomness.** DeepSpeed's gate samples even in eval mode: top-2 picks its second expert with
Gumbel noise (``top2_2nd_expert_sampling=True``, the default), top-1 picks which tokens overflow a
full expert at random (``use_rts=True``). The capture records the experts really dispatched to,
so such pathways carry that noise; grokmon's probe forks the RNG, so training's random stream is
not moved.

Example:
    >>> import torch
    >>> out = (torch.tensor(0.0), 4, 4, torch.tensor([[2, -1], [0, 3]], dtype=torch.int32),
    ...        torch.zeros(2, 2, dtype=torch.int32), torch.tensor([[0.75, 0.0], [0.25, 1.0]]), None)
    >>> r = read_topk_gate(None, (), out)                 # sparse_routes output, 2 tokens, k = 2
    >>> r.expert_ids.tolist(), r.weights.tolist(), r.routed.tolist()
    ([[2, 0], [3, 0]], [[0.75, 0.25], [1.0, 0.0]], [[True, True], [True, False]])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import RoutingError
from ..routing.types import RouterOutput

__all__ = ["read_topk_gate"]


def _sorted_routes(ids: torch.Tensor, gates: torch.Tensor, routed: torch.Tensor, num_experts: int) -> RouterOutput:
    """Routes ``[T, k]`` → a RouterOutput: dropped slots last, id 0, weight 0; kept weights sum to 1."""
    w = torch.where(routed, gates.float(), torch.zeros((), dtype=torch.float32, device=gates.device))
    # sort key: kept routes by gate value, dropped ones after every kept one (stable: ties keep order)
    key = torch.where(routed, w, torch.full_like(w, -1.0))
    key, order = torch.sort(key, dim=-1, descending=True, stable=True)
    ids = torch.gather(ids.long(), -1, order)
    w = torch.gather(w, -1, order)
    routed = torch.gather(routed, -1, order)
    ids = torch.where(routed, ids, torch.zeros_like(ids))
    w = w / w.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)  # all dropped: stays 0
    return RouterOutput(expert_ids=ids, weights=w, logits=None, num_experts=num_experts, routed=routed)


def read_topk_gate(module: nn.Module | None, args: tuple, output: Any) -> RouterOutput:
    """Read one forward of DeepSpeed's ``TopKGate`` (top-1, top-2 and top-k gating).

    ``MOELayer`` calls the gate with ``sparse_routes=True``; the gate then returns ``(l_aux,
    capacity, num_experts, indices [k, S] int32 (-1 = dropped), locations [k, S], gates [k, S],
    exp_counts [E])``. Called on its own with ``sparse_routes=False`` it returns ``(l_aux,
    combine_weights [S, E, C], dispatch_mask [S, E, C], exp_counts)``; both are read. See the module
    doc for how dropped routes are represented.

    Raises:
        RoutingError: the output has neither form (a DeepSpeed release that changed the gate's
            contract): register your own extractor with :func:`grokmon.routing.register_router`.
    """
    if isinstance(output, (tuple, list)) and len(output) == 7 and isinstance(output[3], torch.Tensor):
        indices, gates, num_experts = output[3], output[5], int(output[2])
        if indices.dim() != 2 or gates.shape != indices.shape:
            raise RoutingError(f"DeepSpeed TopKGate returned indices {tuple(indices.shape)} and gates "
                               f"{tuple(gates.shape)}: expected both [k, tokens]. This DeepSpeed release changed "
                               "the gate: register an extractor with "
                               "grokmon.routing.register_router(TopKGate, extractor)")
        ids, g = indices.t(), gates.t()
        return _sorted_routes(ids, g, ids >= 0, num_experts)
    if isinstance(output, (tuple, list)) and len(output) == 4 and isinstance(output[1], torch.Tensor) \
            and output[1].dim() == 3:
        combine, dispatch = output[1], output[2]
        per_expert = combine.float().sum(dim=-1)  # [S, E]: a token's gate value at each expert, 0 if not sent
        sent = dispatch.bool().any(dim=-1)
        k = int(getattr(module, "k", 0) or 0) or int(sent.sum(dim=-1).max().clamp(min=1))
        k = min(k, per_expert.shape[-1])
        key = torch.where(sent, per_expert, torch.full_like(per_expert, -1.0))
        ids = torch.topk(key, k, dim=-1).indices
        return _sorted_routes(ids, per_expert.gather(-1, ids), sent.gather(-1, ids), per_expert.shape[-1])
    shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
              for t in (output if isinstance(output, (tuple, list)) else [output])]
    raise RoutingError(
        f"DeepSpeed TopKGate returned {shapes}: expected the 7-tuple of sparse_routes=True (indices [k, S]) or "
        "the 4-tuple (l_aux, combine_weights [S, E, C], dispatch_mask, exp_counts). This DeepSpeed release "
        "changed the gate: register an extractor with grokmon.routing.register_router(TopKGate, extractor)"
    )
