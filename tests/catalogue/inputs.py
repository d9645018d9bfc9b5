"""The error catalogue's cases: tiny inputs (see tests/test_error_catalogue.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import transformers as tf
from torch import nn

from grokmon.probe import ProbeSet
from grokmon.routing import capture_pathways, register_router, unregister_router


def ids(n: int = 4, t: int = 8) -> torch.Tensor:
    return (torch.arange(n * t).reshape(n, t) % 50 + 2).long()


def tiny_probe(n: int = 4, t: int = 8) -> ProbeSet:
    return ProbeSet.from_token_ids(ids(n, t), min_length=4)


def llama() -> nn.Module:
    config = tf.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                            pad_token_id=0, eos_token_id=1, bos_token_id=None)
    return tf.LlamaForCausalLM(config).eval()


class Gate(nn.Module):
    """A custom router; ``out`` turns its logits into what its forward returns."""

    def __init__(self, out: Callable[[torch.Tensor], Any] = lambda x: x, top_k: int | None = 2) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 4, bias=False)
        self.out = out
        self.top_k = top_k

    def forward(self, x: torch.Tensor) -> Any:
        return self.out(self.proj(x).reshape(-1, 4))


class RouterModel(nn.Module):
    """Embedding + a Gate called ``calls`` times per forward (no lm head: no probe loss)."""

    def __init__(self, calls: int = 1, **gate: Any) -> None:
        super().__init__()
        self.emb = nn.Embedding(64, 8)
        self.gate = Gate(**gate)
        self.calls = calls

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        h = self.emb(input_ids)
        for _ in range(self.calls):
            self.gate(h)
        return h


def capture_custom(model: nn.Module, extractor: Any = None, **kwargs: Any) -> Any:
    register_router(Gate, extractor)
    try:
        return capture_pathways(model, ids(2, 4), compute_loss=False, **kwargs)
    finally:
        unregister_router(Gate)


def monitor(**kwargs: Any):
    from moe_models import build_monitor

    probe_set = kwargs.pop("probe") if "probe" in kwargs else tiny_probe()
    return build_monitor(probe_set, **{"every": 1, "jsonl": False, **kwargs})


def moe() -> nn.Module:
    from moe_models import tiny_model

    return tiny_model("mixtral", num_layers=1, num_experts=4)
