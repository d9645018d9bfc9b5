"""The two records the routing package passes around: what a router said, and where it sits.

Example:
    >>> import torch
    >>> out = RouterOutput(expert_ids=torch.tensor([[2, 0]]), weights=torch.tensor([[0.75, 0.25]]),
    ...                    logits=None, num_experts=4)
    >>> canonical_name("_orig_mod.model._fsdp_wrapped_module.layers.3.mlp.gate")
    'model.layers.3.mlp.gate'
    >>> parse_layer("transformer.blocks.7.ffn.router")
    7
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import nn

RouterKind = Literal["mlp", "attention"]

# Tokens that wrappers (FSDP, torch.compile, activation checkpointing, DDP) insert into module paths.
_WRAPPER_TOKENS = ("_fsdp_wrapped_module.", "_orig_mod.", "_checkpoint_wrapped_module.", "module.")
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|blocks|h)\.(\d+)(?:\.|$)")


@dataclass
class RouterOutput:
    """One router call, normalised: ``T`` token rows (``b * seq + s`` order, padding included).

    * ``expert_ids [T, k]`` int64, each row ordered by weight, largest first;
    * ``weights [T, k]`` float32, divided by their per-token sum (rows sum to 1);
    * ``logits [T, E]`` as the router produced them, or ``None`` when it gives none;
    * ``num_experts`` ``E``;
    * ``routed [T, k]`` bool, or ``None`` (every slot routed): ``False`` marks a slot the block did
      not dispatch (a token dropped by an expert's capacity limit, DeepSpeed's ``-1``). Such a slot
      holds a placeholder id in ``[0, E)`` and weight 0; the capture counts it nowhere (no weight,
      no expert load, ``-1`` in per-token ids). A token whose every slot was dropped has weights 0
      (its row sums to 0, not 1): it reached no expert.
    """

    expert_ids: torch.Tensor
    weights: torch.Tensor
    logits: torch.Tensor | None
    num_experts: int
    routed: torch.Tensor | None = None


Extractor = Callable[[nn.Module, tuple, Any], RouterOutput]


@dataclass
class RouterSite:
    """A router module found in a model, with the function that reads its forward output.

    ``name`` is the canonical module path (wrapper tokens stripped), ``layer`` the decoder-layer
    index parsed from it, ``kind`` ``"mlp"`` or ``"attention"`` (JetMoe's mixture-of-attention
    router), ``extractor(module, args, output) -> RouterOutput``. ``num_experts`` is read from the
    module's attributes when it has them (``None`` otherwise; the captured output is authoritative).
    """

    name: str
    layer: int
    kind: RouterKind
    module: nn.Module
    extractor: Extractor
    num_experts: int | None = None

    def router_weight(self) -> torch.Tensor | None:
        """The router's ``[E, H]`` weight rows (expert embeddings), detached; ``None`` if not found.

        The 2-D parameter whose first dimension is the expert count (``router.layer.weight`` for
        DBRX, ``layer.weight`` for JetMoe, ``.weight`` for linear routers); without a known expert
        count, the first 2-D parameter. Else a flat ``weight`` of ``E * d_model`` values, viewed as
        ``[E, d_model]`` (OLMo-core keeps its router weight flat so that FSDP can shard it; read inside
        the forward, where it is whole).
        """
        matrices = [p for _, p in self.module.named_parameters() if p.dim() == 2]
        if self.num_experts is not None:
            matrices = [p for p in matrices if p.shape[0] == self.num_experts]
        if matrices:
            return matrices[0].detach()
        flat, hidden = getattr(self.module, "weight", None), getattr(self.module, "d_model", None)
        if (isinstance(flat, torch.Tensor) and flat.dim() == 1 and isinstance(hidden, int) and self.num_experts
                and flat.numel() == self.num_experts * hidden):
            return flat.detach().view(self.num_experts, hidden)
        return None


def canonical_name(name: str) -> str:
    """``name`` with the path tokens of FSDP / compile / checkpoint / DDP wrappers removed."""
    parts = name + "."
    for token in _WRAPPER_TOKENS:
        # only whole path components: "module." must not eat the end of "submodule."
        parts = re.sub(r"(?:(?<=^)|(?<=\.))" + re.escape(token), "", parts)
    return parts.rstrip(".")


def parse_layer(name: str) -> int | None:
    """The decoder-layer index in a module path (``layers.N`` / ``blocks.N`` / ``h.N``), or None."""
    match = _LAYER_RE.search(name)
    return int(match.group(1)) if match else None
