"""Routers declared by class path (how grokmon knows torchtitan's and Megatron's routers without
importing them), and the two engine readers on hand-made outputs. Needs no engine installed."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from grokmon import _router_table
from grokmon.errors import RoutingError
from grokmon.routing import RouterOutput, find_routers, register_router, unregister_router


def _module_with_router(modname: str):
    """A fake engine module ``modname`` holding a ``Gate`` router class (never a real engine)."""
    mod = types.ModuleType(modname)

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 8))

        def forward(self, x):
            return torch.softmax(x @ self.weight.T, dim=-1)

    Gate.__module__, Gate.__qualname__ = modname, "Gate"
    mod.Gate = Gate
    return mod


def read_gate(module, args, output):
    ids = output.topk(1, dim=-1).indices.reshape(-1, 1)
    return RouterOutput(ids, torch.ones_like(ids, dtype=torch.float32), None, output.shape[-1])


def test_a_declared_class_is_found_by_path_and_a_registered_one_wins(monkeypatch):
    mod = _module_with_router("fake_engine_for_grokmon.moe")
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(_router_table._NAMED, "fake_engine_for_grokmon.moe.Gate",
                        ("test_router_table:read_gate", "mlp"))

    class Sub(mod.Gate):  # a subclass of a declared class matches along its MRO
        pass

    model = nn.Module()
    model.layers = nn.ModuleList(nn.Module() for _ in range(2))
    model.layers[0].router, model.layers[1].router = mod.Gate(), Sub()
    sites = find_routers(model)
    assert [(s.name, s.layer) for s in sites] == [("layers.0.router", 0), ("layers.1.router", 1)]
    assert all(s.extractor is read_gate for s in sites)

    def mine(module, args, output):  # pragma: no cover - only its identity matters
        raise AssertionError

    register_router(mod.Gate, mine)
    try:
        assert all(s.extractor is mine for s in find_routers(model))
    finally:
        unregister_router(mod.Gate)


def test_declarations_are_checked():
    with pytest.raises(ValueError, match="package.module.Class"):
        _router_table.declare_router("Gate", "m:f")
    with pytest.raises(ValueError, match="module:function"):
        _router_table.declare_router("pkg.Gate", "m.f")


def test_engines_are_declared_without_importing_them():
    import grokmon  # noqa: F401  - importing grokmon declares them

    assert _router_table.lookup("torchtitan.models.common.moe.TokenChoiceTopKRouter") == (
        "grokmon.engines.torchtitan:read_router", "mlp")
    assert _router_table.lookup("megatron.core.transformer.moe.router.TopKRouter") == (
        "grokmon.engines.megatron:read_router", "mlp")


def test_torchtitan_reader_on_a_hand_made_output():
    from grokmon.engines.torchtitan import read_router

    scores = torch.tensor([[[0.9, 0.1, 0.6, 0.3], [0.2, 0.8, 0.4, 0.7]]])  # B=1, L=2, E=4 (sigmoid)
    ids = torch.tensor([[[2, 0], [3, 1]]])  # unordered, as topk(sorted=False) may give them
    out = read_router(None, (), (scores.gather(-1, ids) * 2.5, ids, scores))  # route_scale 2.5 cancels
    assert out.expert_ids.tolist() == [[0, 2], [1, 3]]
    torch.testing.assert_close(out.weights, torch.tensor([[0.6, 0.4], [0.8 / 1.5, 0.7 / 1.5]]))
    assert out.logits.shape == (2, 4) and out.num_experts == 4
    with pytest.raises(RoutingError, match="topk_scores"):
        read_router(None, (), (scores, ids))


def test_megatron_reader_puts_sequence_first_rows_batch_major():
    from grokmon.engines.megatron import read_router

    seq, batch, experts = 2, 3, 5
    # token (s, b) picks experts (s + b) % 5 (weight 0.75) and (s + b + 1) % 5 (weight 0.25)
    probs = torch.zeros(seq * batch, experts)
    for s in range(seq):
        for b in range(batch):
            probs[s * batch + b, (s + b) % experts] = 0.75
            probs[s * batch + b, (s + b + 1) % experts] = 0.25
    out = read_router(None, (torch.zeros(seq, batch, 8),), (probs, probs > 0), top_k=2)
    expected = [[(s + b) % experts, (s + b + 1) % experts] for b in range(batch) for s in range(seq)]
    assert out.expert_ids.tolist() == expected
    torch.testing.assert_close(out.weights, torch.tensor([[0.75, 0.25]] * (seq * batch)))
    with pytest.raises(RoutingError, match=r"\[seq, batch, hidden\]"):
        read_router(None, (torch.zeros(seq * batch, 8),), (probs, probs > 0), top_k=2)
