"""Contract: for each of the 12 families, the captured ids are the experts the MoE block dispatched to.

Ground truth is taken from the call into the block's experts module (its ``top_k_index``
argument; for Llama 4 the rows of the experts' input that the router's scores did not zero out),
independently of grokmon's extractors. JetMoe's experts receive tokens pre-sorted by expert, so
there the reference is its plain top-k of logits (JetMoe selects with no bias).
"""

from __future__ import annotations

import pytest
import torch
from moe_models import FAMILIES, tiny_model

from grokmon.routing import capture_pathways, find_routers

LAYERS = 3


def dispatched_experts(model: torch.nn.Module, family: str, input_ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """{layer: sorted expert ids [T, k]} as the blocks handed them to their experts."""
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        layer = next((int(p) for p in name.split(".") if p.isdigit()), None)
        if family == "jetmoe" and name.endswith("mlp.router"):
            def hook(mod, args, out, layer=layer):
                seen[layer] = torch.topk(out[4], mod.top_k, dim=-1).indices
            handles.append(module.register_forward_hook(hook))
        elif family == "llama4_text" and name.endswith("feed_forward.experts"):
            def pre(mod, args, layer=layer):
                routed = args[0].view(mod.num_experts, -1, args[0].shape[-1])  # [E, T, H]
                chosen = routed.abs().sum(-1).T > 0                            # [T, E]
                seen[layer] = chosen.nonzero()[:, 1].view(chosen.shape[0], -1)
            handles.append(module.register_forward_pre_hook(pre))
        elif name.endswith(".experts") and family not in ("jetmoe", "llama4_text"):
            def pre_kw(mod, args, kwargs, layer=layer):
                index = args[1] if len(args) > 1 else kwargs["top_k_index"]
                seen[layer] = index
            handles.append(module.register_forward_pre_hook(pre_kw, with_kwargs=True))
    try:
        with torch.no_grad():
            model(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {layer: ids.sort(-1).values for layer, ids in seen.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_ids_are_the_dispatched_experts(family: str) -> None:
    model = tiny_model(family, num_layers=LAYERS)
    input_ids = torch.randint(2, 128, (3, 9), generator=torch.Generator().manual_seed(0))
    truth = dispatched_experts(model, family, input_ids)
    result = capture_pathways(model, input_ids, keep_token_ids=True, compute_loss=False)
    p = result.pathways
    mlp = [i for i, kind in enumerate(p.meta["router_kinds"]) if kind == "mlp"]
    assert [p.layers[i] for i in mlp] == sorted(truth)
    for i in mlp:
        captured = p.token_ids[:, :, i, :].reshape(-1, p.token_ids.shape[-1]).long().sort(-1).values
        assert torch.equal(captured, truth[p.layers[i]]), f"{family} layer {p.layers[i]}"
    # pathways are distributions over experts; counts add up to tokens x k
    assert torch.allclose(p.mean_weights.sum(-1), torch.ones(p.mean_weights.shape[:2]), atol=1e-5)
    assert p.expert_counts.sum(-1).tolist() == [input_ids.numel() * p.token_ids.shape[-1]] * p.num_routers
    # weights are ordered: a token's first id is its highest-weighted expert
    assert p.router_weights is not None and p.router_weights.shape[:2] == (p.num_routers, 8)


def test_deepseek_v3_ids_come_from_the_router_not_from_logits() -> None:
    model = tiny_model("deepseek_v3", num_layers=LAYERS)
    input_ids = torch.randint(2, 128, (4, 16), generator=torch.Generator().manual_seed(1))
    logits = {}
    site = find_routers(model)[0]

    def keep_logits(module, args, out) -> None:
        logits["x"] = out[0]

    handle = site.module.register_forward_hook(keep_logits)
    result = capture_pathways(model, input_ids, keep_token_ids=True, compute_loss=False)
    handle.remove()
    naive = torch.topk(logits["x"], 2, dim=-1).indices.sort(-1).values
    captured = result.pathways.token_ids[:, :, 0, :].reshape(-1, 2).long().sort(-1).values
    assert (naive != captured).any(dim=-1).sum() > 0, "bias-corrected selection should differ from top-k of logits"
    truth = dispatched_experts(model, "deepseek_v3", input_ids)
    assert torch.equal(captured, truth[1])


def test_layer_index_skips_dense_layers() -> None:
    sites = find_routers(tiny_model("deepseek_v2", num_layers=LAYERS))
    assert [s.layer for s in sites] == [1, 2]  # first_k_dense_replace=1


def test_jetmoe_has_attention_and_mlp_routers() -> None:
    sites = find_routers(tiny_model("jetmoe", num_layers=2))
    assert [(s.layer, s.kind) for s in sites] == [(0, "attention"), (0, "mlp"), (1, "attention"), (1, "mlp")]


@pytest.mark.parametrize("family", ["phimoe", "mixtral", "dbrx"])
def test_stochastic_families_are_deterministic_in_the_probe(family: str) -> None:
    model = tiny_model(family).train()  # PhiMoE samples and Mixtral/DBRX jitter in train mode
    input_ids = torch.randint(2, 128, (3, 9), generator=torch.Generator().manual_seed(2))
    a = capture_pathways(model, input_ids, compute_loss=False).pathways.mean_weights
    b = capture_pathways(model, input_ids, compute_loss=False).pathways.mean_weights
    assert torch.equal(a, b)
    assert model.training  # the train flag is back
