"""A hand-written PyTorch MoE model, registered with register_router, captured correctly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grokmon.errors import RouterNotFoundError
from grokmon.routing import capture_pathways, find_routers, finish, register_router, unregister_router

V, H, E, K = 50, 16, 6, 2


class TinyGate(nn.Module):
    """Returns logits only; the block takes their top-k (k from ``self.top_k``)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(H, E, bias=False)
        self.top_k = K

    def forward(self, x):
        return self.proj(x.reshape(-1, H))


class ProbGate(TinyGate):
    """Returns ``(probs [T, E], ids [T, k])``: needs a custom extractor."""

    def forward(self, x):
        probs = torch.softmax(self.proj(x.reshape(-1, H)), dim=-1)
        return probs, torch.topk(probs, K, dim=-1).indices


class Block(nn.Module):
    def __init__(self, gate_cls):
        super().__init__()
        self.gate = gate_cls()
        self.experts = nn.ModuleList(nn.Linear(H, H) for _ in range(E))

    def forward(self, x):
        out = self.gate(x)
        logits = out if isinstance(out, torch.Tensor) else out[0].log()
        w, idx = torch.topk(torch.softmax(logits, -1), K, dim=-1)
        flat = x.reshape(-1, H)
        y = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            sel = (idx == e).any(-1)
            y[sel] += (w * (idx == e)).sum(-1)[sel, None] * expert(flat[sel])
        return x + y.view_as(x)


class TinyMoE(nn.Module):
    def __init__(self, gate_cls=TinyGate):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(V, H)
        self.layers = nn.ModuleList(Block(gate_cls) for _ in range(2))
        self.head = nn.Linear(H, V, bias=False)

    def forward(self, input_ids):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


@pytest.fixture
def registry():
    yield
    unregister_router(TinyGate)
    unregister_router(ProbGate)


def _gate_inputs(model):
    seen = {}
    handles = [layer.gate.register_forward_pre_hook(lambda m, a, i=i: seen.setdefault(i, a[0]))
               for i, layer in enumerate(model.layers)]
    return seen, handles


def test_unregistered_router_found_by_heuristic_or_not_at_all():
    # a module named ``gate`` with a ``top_k`` attribute is found without registration
    assert [s.name for s in find_routers(TinyMoE())] == ["layers.0.gate", "layers.1.gate"]
    dense = nn.Sequential(nn.Embedding(V, H), nn.Linear(H, V))
    with pytest.raises(RouterNotFoundError, match="Sequential.*register_router"):
        capture_pathways(dense, torch.zeros(1, 3, dtype=torch.long))


def test_registered_logits_router_is_captured(registry):
    register_router(TinyGate)
    model = TinyMoE().train()
    sites = find_routers(model)
    assert [(s.name, s.layer, s.kind) for s in sites] == [("layers.0.gate", 0, "mlp"), ("layers.1.gate", 1, "mlp")]
    assert torch.equal(sites[1].router_weight(), model.layers[1].gate.proj.weight)

    ids = torch.randint(0, V, (3, 7), generator=torch.Generator().manual_seed(0))
    seen, handles = _gate_inputs(model)
    res = capture_pathways(model, ids, keep_token_ids=True)
    for h in handles:
        h.remove()
    assert model.training
    for l in range(2):
        x = seen[l].reshape(-1, H)
        probs = torch.softmax(x @ model.layers[l].gate.proj.weight.T, -1)
        w, idx = torch.topk(probs, K, dim=-1)            # sorted, largest first
        got = res.pathways.token_ids[:, :, l].reshape(-1, K).long()
        assert torch.equal(got, idx)
        dense = torch.zeros(21, E).scatter_(1, idx, w / w.sum(-1, keepdim=True))
        torch.testing.assert_close(res.pathways.mean_weights[:, l], dense.view(3, 7, E).mean(1))
    # the loss comes from the model's full logits (no logits_to_keep / decoder on a plain module)
    with torch.no_grad():
        logits = model(ids)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), reduction="none").view(3, -1)
    torch.testing.assert_close(res.loss_per_sample, ce.mean(1))


def test_custom_extractor_and_kind(registry):
    calls = []

    def read(module, args, out):
        probs, ids = out
        calls.append(module)
        return finish(ids, probs.gather(-1, ids), None, probs.shape[-1])

    register_router(ProbGate, read, kind="attention")
    model = TinyMoE(ProbGate)
    ids = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(1))
    seen, handles = _gate_inputs(model)
    p = capture_pathways(model, ids, keep_token_ids=True, compute_loss=False).pathways
    for h in handles:
        h.remove()
    assert p.meta["router_kinds"] == ["attention", "attention"]
    assert calls == [model.layers[0].gate, model.layers[1].gate]
    for l in range(2):
        probs = torch.softmax(seen[l].reshape(-1, H) @ model.layers[l].gate.proj.weight.T, -1)
        assert torch.equal(p.token_ids[:, :, l].reshape(-1, K).long(), torch.topk(probs, K, -1).indices)
