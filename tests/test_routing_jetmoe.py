"""JetMoe's pathways include its mixture-of-attention routers (docs/metrics.md says so): one
attention router and one MLP router per layer, the attention one first."""

from __future__ import annotations

import torch
from moe_models import tiny_model

from grokmon.pathways import pathway_sequences
from grokmon.routing import capture_pathways


def test_jetmoe_pathways_hold_attention_and_mlp_routers_per_layer() -> None:
    layers = 3
    model = tiny_model("jetmoe", num_layers=layers)
    ids = torch.randint(0, 100, (4, 12), generator=torch.Generator().manual_seed(0))
    p = capture_pathways(model, ids).pathways
    kinds = p.meta["router_kinds"]
    assert p.num_routers == 2 * layers and kinds == ["attention", "mlp"] * layers
    assert p.layers == tuple(i for i in range(layers) for _ in range(2))
    # top-k form: k symbols per router, so the pathway is twice as long as the MLP routers' alone (k * layers)
    seqs = pathway_sequences(p, "topk", top_k=2)
    assert seqs.lengths.tolist() == [2 * (2 * layers)] * 4
