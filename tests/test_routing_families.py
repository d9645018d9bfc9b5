"""Contract test per MoE family: the experts grokmon captures are the experts each block dispatched to.

Ground truth comes from the block's own dispatch, not from grokmon's extractor: a pre-hook on the
block's ``experts`` module reads the ``top_k_index`` / ``top_k_weights`` it is called with; Llama4's
experts get a dense ``[E*T, H]`` input that is zero for unchosen experts; JetMoe's blocks dispatch with
the ``batch_index`` / ``expert_size`` / ``batch_gates`` of their gating (not the logits grokmon reads).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from grokmon.routing import capture_pathways, find_routers
from moe_models import FAMILIES, tiny_model

N, T = 3, 9


def _ground_truth_hooks(model, names):
    """Per router name: list of (ids [T, k], weights [T, k]) that its block dispatched with."""
    truth = {n: [] for n in names}
    handles = []
    for name in names:
        router = model.get_submodule(name)
        block = model.get_submodule(name.rsplit(".", 1)[0])
        cls = type(router).__name__
        if cls == "JetMoeTopKGating":
            def on_gate(_m, _a, out, name=name):
                _, batch_index, batch_gates, expert_size, logits = out
                tokens = logits.shape[0]
                k = batch_index.numel() // tokens
                experts = torch.repeat_interleave(torch.arange(len(expert_size)), torch.tensor(expert_size))
                ids = torch.full((tokens, k), -1, dtype=torch.long)
                w = torch.zeros(tokens, k)
                slot = torch.zeros(tokens, dtype=torch.long)
                for j in range(batch_index.numel()):
                    t = int(batch_index[j])
                    ids[t, slot[t]] = experts[j]
                    w[t, slot[t]] = batch_gates[j]
                    slot[t] += 1
                truth[name].append((ids, w))
            handles.append(router.register_forward_hook(on_gate))
        elif cls == "Llama4Router":
            def on_experts(_m, args, name=name, e=router.num_experts):
                routed = args[0].view(e, -1, args[0].shape[-1])          # [E, T, H]
                chosen = (routed.abs().sum(-1) > 0).T                     # [T, E]
                assert bool((chosen.sum(-1) == 1).all())                  # num_experts_per_tok=1
                ids = chosen.float().argmax(-1, keepdim=True)
                truth[name].append((ids, torch.ones_like(ids, dtype=torch.float)))
            handles.append(block.experts.register_forward_pre_hook(on_experts))
        else:
            def on_experts(_m, args, kwargs, name=name):
                ids, w = args[1], args[2]
                truth[name].append((ids.reshape(-1, ids.shape[-1]), w.reshape(-1, w.shape[-1]).float()))
            handles.append(block.experts.register_forward_pre_hook(on_experts, with_kwargs=True))
    return truth, handles


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_ids_are_the_dispatched_experts(family):
    model = tiny_model(family, seed=1)
    ids = torch.randint(2, 128, (N, T), generator=torch.Generator().manual_seed(7))
    names = [s.name for s in find_routers(model)]
    truth, handles = _ground_truth_hooks(model, names)
    try:
        res = capture_pathways(model, ids, keep_token_ids=True, batch_size=N, compute_loss=False)
    finally:
        for h in handles:
            h.remove()
    p = res.pathways
    assert p.router_names == tuple(names)
    for l, name in enumerate(names):
        assert len(truth[name]) == 1, f"{name}: block dispatched {len(truth[name])} times"
        true_ids, true_w = truth[name][0]
        got = p.token_ids[:, :, l, :].reshape(N * T, -1).long()
        k = true_ids.shape[-1]
        assert got.shape[-1] == k
        for t in range(N * T):
            assert set(got[t].tolist()) == set(true_ids[t].tolist()), (family, name, t)
        # mean weights = the dispatched weights, normalised per token, averaged over each sample
        dense = torch.zeros(N * T, p.num_experts).scatter_add_(1, true_ids, true_w / true_w.sum(-1, keepdim=True))
        expected = dense.view(N, T, -1).mean(1)
        torch.testing.assert_close(p.mean_weights[:, l], expected, atol=1e-6, rtol=1e-5)
        # expert order: by weight, descending
        w_sorted = torch.gather(
            torch.zeros(N * T, p.num_experts).scatter_add_(1, true_ids, true_w), 1, got)
        assert bool((w_sorted[:, :-1] >= w_sorted[:, 1:]).all())
        # the counts are the dispatch counts
        assert p.expert_counts[l].tolist() == torch.bincount(true_ids.flatten(), minlength=p.num_experts).tolist()


def test_layer_indices_and_kinds():
    ds = find_routers(tiny_model("deepseek_v3", num_layers=3))   # first_k_dense_replace=1
    assert [(s.name, s.layer) for s in ds] == [("model.layers.1.mlp.gate", 1), ("model.layers.2.mlp.gate", 2)]
    jet = find_routers(tiny_model("jetmoe"))
    assert [(s.layer, s.kind, s.name) for s in jet] == [
        (0, "attention", "model.layers.0.self_attention.experts.router"),
        (0, "mlp", "model.layers.0.mlp.router"),
        (1, "attention", "model.layers.1.self_attention.experts.router"),
        (1, "mlp", "model.layers.1.mlp.router"),
    ]
    dbrx = find_routers(tiny_model("dbrx", num_layers=3))
    assert [s.layer for s in dbrx] == [0, 1, 2] and dbrx[0].name == "transformer.blocks.0.ffn.router"


def test_deepseek_v3_ids_are_not_topk_of_logits():
    model = tiny_model("deepseek_v3", seed=3)
    gate = model.model.layers[1].mlp.gate
    assert bool(gate.e_score_correction_bias.abs().sum() > 0)
    logits = []
    h = gate.register_forward_hook(lambda _m, _a, out: logits.append(out[0]))
    ids = torch.randint(2, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    try:
        p = capture_pathways(model, ids, keep_token_ids=True, compute_loss=False).pathways
    finally:
        h.remove()
    got = p.token_ids[:, :, 0].reshape(-1, 2).long()
    naive = torch.topk(logits[0], 2, dim=-1).indices
    differ = sum(set(a.tolist()) != set(b.tolist()) for a, b in zip(got, naive))
    assert differ > 0


def test_phimoe_capture_is_deterministic_even_from_train_mode():
    model = tiny_model("phimoe", seed=2).train()
    ids = torch.randint(2, 128, (4, 12), generator=torch.Generator().manual_seed(1))
    a = capture_pathways(model, ids, keep_token_ids=True).pathways
    b = capture_pathways(model, ids, keep_token_ids=True).pathways
    assert torch.equal(a.token_ids, b.token_ids)
    assert torch.equal(a.mean_weights, b.mean_weights)
    assert model.training and all(m.training for m in model.modules())


def test_router_weight_rows():
    for family, attr in [("olmoe", "model.layers.0.mlp.gate.weight"),
                         ("dbrx", "transformer.blocks.0.ffn.router.layer.weight"),
                         ("jetmoe", "model.layers.0.self_attention.experts.router.layer.weight"),
                         ("llama4_text", "model.layers.0.feed_forward.router.weight")]:
        model = tiny_model(family)
        site = find_routers(model)[0]
        w = site.router_weight()
        assert w is not None and w.shape == (8, 32)
        assert torch.equal(w, model.get_parameter(attr))
