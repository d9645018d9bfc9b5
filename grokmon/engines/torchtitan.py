"""Read torchtitan's MoE router, ``TokenChoiceTopKRouter`` (torchtitan 0.3.0).

Where it sits: ``layers.{i}.moe.router`` of a torchtitan decoder (Qwen3-MoE, DeepSeek-V3, Llama4
...), class ``torchtitan.models.common.moe.TokenChoiceTopKRouter``; its gate is
``router.gate.weight`` ``[E, dim]`` (the expert embeddings of pathway consistency).

What it returns: ``forward(x_BLD, expert_bias_E)`` gives ``(topk_scores [B, L, k],
topk_expert_ids [B, L, k], scores [B, L, E])``, unflattened, batch-major, with the ids of
``topk(..., sorted=False)`` (not ordered), chosen from the scores plus ``expert_bias`` and, with
``num_expert_groups``, only inside the best groups. The block dispatches every token to exactly
those ``k`` experts and weights their outputs by ``topk_scores``.

What grokmon keeps:

* ``expert_ids``: the router's ids as given (never recomputed: the bias and the group limit
  decide the choice, and the weights alone would not reproduce it), ordered by weight;
* ``weights``: ``topk_scores`` divided by their per-token sum. With softmax gating and
  ``route_norm`` (Qwen3) they already sum to 1 (times ``route_scale``). With sigmoid gating (the
  default, DeepSeek-V3) each score is an independent gate in ``(0, 1)`` and the ``k`` scores do not
  sum to 1: divided by their sum they are each expert's share of the token's combined expert
  output, the same normalisation as ``route_norm`` and as Megatron's sigmoid router. Without
  normalising, a token with confident gates would weigh more in a sample's pathway than a token
  with hesitant ones; the monitor compares shares, not magnitudes. ``route_scale`` cancels.
* ``logits``: the full ``scores [T, E]`` (after sigmoid/softmax, before the bias).

Tensor parallelism: the router outputs are DTensors sharded on tokens there; they are gathered
with ``full_tensor()`` (on every rank of the TP group in the same forward). Untested: it needs
several GPUs.

Example:
    >>> import torch
    >>> scores = torch.tensor([[[0.9, 0.2, 0.6]]])            # sigmoid scores, B=1, L=1, E=3
    >>> ids = torch.tensor([[[2, 0]]])                         # topk(sorted=False): not ordered
    >>> out = read_router(None, (), (scores.gather(-1, ids), ids, scores))
    >>> out.expert_ids.tolist(), [round(w, 3) for w in out.weights[0].tolist()]
    ([[0, 2]], [0.6, 0.4])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import RoutingError
from ..routing.extract import finish
from ..routing.types import RouterOutput

__all__ = ["read_router"]


def _plain(t: Any) -> Any:
    """A DTensor (tensor parallelism) gathered into a plain tensor; anything else unchanged."""
    full = getattr(t, "full_tensor", None)
    return full() if callable(full) else t


def read_router(module: nn.Module | None, args: tuple, output: Any) -> RouterOutput:
    """The :class:`~grokmon.routing.RouterOutput` of one ``TokenChoiceTopKRouter`` forward.

    Args:
        module: the router (unused: everything needed is in its output).
        args: its forward arguments (unused).
        output: ``(topk_scores [B, L, k], topk_expert_ids [B, L, k], scores [B, L, E])``.

    Returns:
        ids ``[B*L, k]`` (the router's, ordered by weight), weights ``[B*L, k]`` (the top-k scores
        divided by their per-token sum), logits = the scores ``[B*L, E]``, ``E``; rows in
        ``b * L + l`` order.

    Raises:
        RoutingError: the output is not that 3-tuple (another torchtitan version: register a reader
            with ``grokmon.routing.register_router``).
    """
    if not (isinstance(output, (tuple, list)) and len(output) == 3
            and all(isinstance(t, torch.Tensor) for t in output)):
        raise RoutingError(
            "torchtitan TokenChoiceTopKRouter: expected (topk_scores [B, L, k], topk_expert_ids [B, L, k], "
            f"scores [B, L, E]) as in torchtitan 0.3.0, got {type(output).__name__}"
            f"{'' if not isinstance(output, (tuple, list)) else f' of {len(output)}'}: for another torchtitan "
            "version register a reader with grokmon.routing.register_router(TokenChoiceTopKRouter, fn)"
        )
    topk_scores, ids, scores = (_plain(t) for t in output)
    if ids.is_floating_point() or ids.shape != topk_scores.shape or ids.dim() < 2 or scores.dim() != ids.dim():
        raise RoutingError(
            f"torchtitan TokenChoiceTopKRouter: expected integer ids and scores of one shape [B, L, k] and scores "
            f"[B, L, E], got ids {ids.dtype} {tuple(ids.shape)}, top-k scores {tuple(topk_scores.shape)}, "
            f"scores {tuple(scores.shape)}: for another torchtitan version register a reader with "
            "grokmon.routing.register_router(TokenChoiceTopKRouter, fn)"
        )
    k, num_experts = ids.shape[-1], scores.shape[-1]
    return finish(ids.reshape(-1, k), topk_scores.reshape(-1, k), scores.reshape(-1, num_experts), num_experts)
