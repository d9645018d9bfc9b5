"""Read OLMo-core's MoE routers (``olmo_core.nn.moe.router.MoERouter``, ai2-olmo-core 3.x).

Declared by class path in :mod:`grokmon.engines` (``olmo_core.nn.moe.router.MoERouter``, subclasses
included): this module is imported the first time :func:`grokmon.routing.find_routers` meets such a
router, and imports only torch and grokmon, never OLMo-core.

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
* router weight rows (pathway consistency): ``weight.view(E, D)``, by
  :meth:`grokmon.routing.RouterSite.router_weight` (a flat ``weight`` of ``E * d_model`` values).

Example:
    >>> import torch                                                     # doctest: +SKIP
    >>> from olmo_core.nn.moe.router import MoELinearRouter              # doctest: +SKIP
    >>> r = MoELinearRouter(d_model=8, num_experts=4, top_k=2)           # doctest: +SKIP
    >>> x = torch.randn(2, 3, 8)                                          # doctest: +SKIP
    >>> read_router(r, (x,), r(x)).expert_ids.shape                       # doctest: +SKIP
    torch.Size([6, 2])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import RoutingError
from ..routing.extract import finish
from ..routing.types import RouterOutput

__all__ = ["read_router"]


def read_router(module: nn.Module, args: tuple, output: Any) -> RouterOutput:
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
