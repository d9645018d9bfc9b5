"""Read OLMo-core's MoE routers (``olmo_core.nn.moe.router.MoERouter``, ai2-olmo-core 3.x).

Imported by :func:`grokmon.routing.registry.load_engine_readers` only once ``olmo_core`` itself has
been imported (a model built from an OLMo-core config): grokmon never imports OLMo-core on its own.

Where the router sits: ``blocks.{i}.feed_forward_moe.router`` of a ``MoETransformer``; its
``forward(x)`` returns ``(expert_weights [B, S, k], expert_indices [B, S, k],
batch_size_per_expert [E], aux_loss | None)``. What grokmon keeps of one call:

* ``expert_ids``: ``expert_indices`` as given: the experts the block dispatches to. With
  ``bias_gamma`` (DeepSeek-V3's auxiliary-loss-free balancing) they are chosen by
  ``scores + score_bias`` and differ from ``topk(scores)``: never recomputed.
* ``weights``: ``expert_weights`` (softmax or sigmoid scores of the chosen experts, divided by
  their p-norm when ``normalize_expert_weights`` is set), sorted and divided by their sum.
* ``logits``: the router's own ``get_expert_logits(x)`` (``x @ W.view(E, D).T``, before gating and
  before ``score_bias``), ``[T, E]``.
* router weight rows (pathway consistency): ``weight.view(E, D)``.

Example:
    >>> import torch                                                     # doctest: +SKIP
    >>> from olmo_core.nn.moe.router import MoELinearRouter              # doctest: +SKIP
    >>> r = MoELinearRouter(d_model=8, num_experts=4, top_k=2)           # doctest: +SKIP
    >>> x = torch.randn(2, 3, 8)                                          # doctest: +SKIP
    >>> read_moe_router(r, (x,), r(x)).expert_ids.shape                   # doctest: +SKIP
    torch.Size([6, 2])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import RoutingError
from .extract import finish
from .registry import register_router
from .types import RouterOutput

__all__ = ["read_moe_router", "router_weight_rows"]


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (tensor parallelism: the router weight is replicated) as a full plain tensor."""
    full = getattr(t, "full_tensor", None)
    return full() if callable(full) else t


def read_moe_router(module: nn.Module, args: tuple, output: Any) -> RouterOutput:
    """One ``MoERouter.forward`` call as a :class:`RouterOutput` (``T = B * S`` rows).

    Raises:
        RoutingError: the output is not OLMo-core's ``(weights, indices, counts, aux)`` tuple.
    """
    if not (isinstance(output, (tuple, list)) and len(output) >= 2
            and isinstance(output[0], torch.Tensor) and isinstance(output[1], torch.Tensor)):
        raise RoutingError(
            f"OLMo-core router {type(module).__name__} returned {type(output).__name__}, not "
            "(expert_weights, expert_indices, batch_size_per_expert, aux_loss): this OLMo-core version "
            "changed its router contract; register a reader with grokmon.routing.register_router"
        )
    weights, ids = output[0], output[1]
    num_experts = int(module.num_experts)
    logits = None
    get_logits = getattr(module, "get_expert_logits", None)
    if args and isinstance(args[0], torch.Tensor) and callable(get_logits):
        logits = get_logits(args[0]).float().flatten(0, -2)  # under no_grad in the probe
    return finish(ids.flatten(0, -2), weights.flatten(0, -2), logits, num_experts)


def router_weight_rows(module: nn.Module) -> torch.Tensor | None:
    """The router's ``[E, D]`` weight rows: OLMo-core stores them flat, ``(E * D,)``."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor):
        return None
    w = _local(w)
    e, d = int(module.num_experts), int(getattr(module, "d_model", 0) or w.numel() // max(1, module.num_experts))
    if w.numel() != e * d:  # a sharded weight outside the forward: no rows to read
        return None
    return w.view(e, d)


def _register() -> None:
    from olmo_core.nn.moe.router import MoERouter

    from .registry import _REGISTRY

    if MoERouter in _REGISTRY:
        return  # the user registered a reader of their own: theirs wins
    register_router(MoERouter, read_moe_router, weight_fn=router_weight_rows)


_register()
