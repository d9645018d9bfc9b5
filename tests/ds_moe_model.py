"""A tiny causal LM built from DeepSpeed's native MoE layer, and a by-hand reference of its gate.

Shared by ``test_deepspeed.py`` and the rank processes it starts. Importing this module imports
DeepSpeed: test files import it only after ``pytest.importorskip("deepspeed")``.

Example:
    >>> model = TinyDSMoE(k=2, eval_capacity_factor=0.5)          # doctest: +SKIP
    >>> model(torch.randint(0, 64, (2, 12))).shape                # doctest: +SKIP
    torch.Size([2, 12, 64])
"""

from __future__ import annotations

import math
from typing import Any

import torch
from deepspeed.moe.layer import MoE
from torch import nn

VOCAB, HIDDEN, EXPERTS, LAYERS = 128, 16, 4, 2


class Block(nn.Module):
    """``x + MoE(x)``: the gate sees the block input as it is (no norm), which the reference reuses."""

    def __init__(self, moe: MoE) -> None:
        super().__init__()
        self.moe = moe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _l_aux, _counts = self.moe(x)
        return x + out


class TinyDSMoE(nn.Module):
    """Embedding → ``LAYERS`` blocks of ``deepspeed.moe.layer.MoE`` → LM head.

    Every global expert ``g`` of layer ``l`` gets the same weights whatever ``ep_size``/``ep_rank``
    (seeded by ``(l, g)``), so a model split over expert-parallel ranks equals the 1-process one.
    Gate sampling is off (``use_rts=False``, ``top2_2nd_expert_sampling=False``): DeepSpeed's
    defaults draw random numbers even in eval mode.
    """

    def __init__(self, *, k: int = 2, eval_capacity_factor: float = 0.5, ep_size: int = 1, ep_rank: int = 0,
                 drop_tokens: bool = True, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(
            Block(MoE(HIDDEN, nn.Sequential(nn.Linear(HIDDEN, 2 * HIDDEN), nn.GELU(), nn.Linear(2 * HIDDEN, HIDDEN)),
                      num_experts=EXPERTS, ep_size=ep_size, k=k, capacity_factor=eval_capacity_factor,
                      eval_capacity_factor=eval_capacity_factor, min_capacity=0, drop_tokens=drop_tokens,
                      use_rts=False, top2_2nd_expert_sampling=False))
            for _ in range(LAYERS))
        self.head = nn.Linear(HIDDEN, VOCAB)
        local = EXPERTS // ep_size
        for l, block in enumerate(self.layers):
            for j, expert in enumerate(block.moe.deepspeed_moe.experts.deepspeed_experts):
                g = torch.Generator().manual_seed(1000 + 100 * l + ep_rank * local + j)
                for p in expert.parameters():
                    p.data.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        x = self.embed(input_ids)
        for block in self.layers:
            x = block(x)
        return self.head(x)

    def gates(self) -> list[nn.Module]:
        """The ``TopKGate`` of each layer."""
        return [block.moe.deepspeed_moe.gate for block in self.layers]


def record_gate_inputs(model: nn.Module) -> tuple[list[list[torch.Tensor]], list[Any]]:
    """Forward pre-hooks (test-side, not grokmon's) keeping every gate call's input ``[S, D]``, per layer."""
    inputs: list[list[torch.Tensor]] = [[] for _ in model.gates()]
    handles = [gate.register_forward_pre_hook(lambda _m, args, i=i: inputs[i].append(args[0].detach().clone()))
               for i, gate in enumerate(model.gates())]
    return inputs, handles


def reference_routes(x: torch.Tensor, weight: torch.Tensor, k: int, capacity_factor: float,
                     min_capacity: int = 0) -> list[list[tuple[int, float]]]:
    """DeepSpeed's gate decisions for one call, by hand: per token the ``(expert, weight)`` it is sent to.

    From the gate weight ``[E, D]`` alone: logits, softmax, then
    * k = 1: the argmax, with its softmax value (no capacity drop is modelled: use a large capacity);
    * k = 2: first and second argmax; positions in each expert's buffer in token order, the
      first choices of all tokens before the second choices; a route whose position is not below
      ``capacity = max(ceil(S / E * factor * 2), min_capacity)`` is dropped; kept values divided
      by their sum;
    * k > 2: the top-k; each expert keeps the ``capacity = max(ceil(S / E * factor * k),
      min_capacity)`` routes with the largest softmax value; kept values divided by their sum.
    Dropped routes are left out.
    """
    probs = [[float(v) for v in row] for row in torch.softmax(x.double() @ weight.double().T, dim=-1)]
    s, e = len(probs), len(probs[0])
    order = [sorted(range(e), key=lambda j: -row[j]) for row in probs]
    if k == 1:
        return [[(o[0], 1.0)] for o in order]
    capacity = max(math.ceil(s / e * capacity_factor * k), min_capacity)
    kept: list[list[int]] = [[] for _ in range(s)]
    if k == 2:
        fill = [0] * e
        for rank in range(2):
            for t in range(s):
                expert = order[t][rank]
                if fill[expert] < capacity:
                    kept[t].append(expert)
                fill[expert] += 1
    else:
        for expert in range(e):
            chosen = [t for t in range(s) if expert in order[t][:k]]
            for t in sorted(chosen, key=lambda t: -probs[t][expert])[:capacity]:
                kept[t].append(expert)
    routes = []
    for t in range(s):
        total = sum(probs[t][j] for j in kept[t])
        routes.append([(j, probs[t][j] / total) for j in kept[t]])
    return routes


def reference_pathways(inputs: list[list[torch.Tensor]], weights: list[torch.Tensor], seq: int, k: int,
                       capacity_factor: float) -> tuple[torch.Tensor, torch.Tensor, list]:
    """``mean_weights [N, L, E]``, ``expert_counts [L, E]`` and per-token routes from recorded gate inputs."""
    per_layer_routes = []
    for calls, w in zip(inputs, weights):
        routes = []
        for x in calls:
            routes += reference_routes(x, w, k, capacity_factor)
        per_layer_routes.append(routes)
    n = len(per_layer_routes[0]) // seq
    mean = torch.zeros(n, len(weights), EXPERTS, dtype=torch.float64)
    counts = torch.zeros(len(weights), EXPERTS, dtype=torch.long)
    for l, routes in enumerate(per_layer_routes):
        for t, token in enumerate(routes):
            for expert, value in token:
                mean[t // seq, l, expert] += value / seq
                counts[l, expert] += 1
    return mean, counts, per_layer_routes
