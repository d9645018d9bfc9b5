"""compute_metrics: which keys appear for which config, and that each equals its metric function."""

from __future__ import annotations

import math

import pytest
import torch

from grokmon.errors import ConfigError
from grokmon.metrics import (
    MetricConfig, compute_metrics, expert_load, kept_experts_mask, pathway_consistency, pathway_distance,
    pathway_drift, routing_cosine, routing_entropy,
)
from grokmon.pathways import Pathways, pathway_sequences

HEADLINE = {
    "pathway_distance", "pathway_distance_raw", "pathway_distance_stderr", "pathway_length",
    "pathway_consistency", "pathway_cosine", "routing_cosine", "routing_entropy", "expert_load_entropy",
    "dead_expert_fraction", "expert_load_max_over_mean",
}


def make(seed: int, n: int = 10, l: int = 3, e: int = 6, groups: bool = True, rows: bool = True,
         tokens: bool = False, layers: tuple[int, ...] | None = None) -> Pathways:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, l, e, generator=g) ** 3
    w = w / w.sum(-1, keepdim=True)
    token_ids = None
    if tokens:
        token_ids = torch.stack([torch.randperm(e, generator=g)[:2] for _ in range(n * 4 * l)]).reshape(n, 4, l, 2)
        token_ids[:, 3] = -1  # one padding token per sample
        token_ids = token_ids.to(torch.int16)
    return Pathways(
        mean_weights=w, layers=layers or tuple(range(l)), router_names=tuple(f"r{i}" for i in range(l)),
        num_experts=e, expert_counts=torch.randint(0, 4, (l, e), generator=g),
        token_ids=token_ids, router_weights=torch.randn(l, e, 5, generator=g) if rows else None,
        groups=torch.tensor([0, 1, 1, 0, 2] * (n // 5)) if groups else None,
        group_names=("math", "code", "chem") if groups else (), meta={"top_k": 2},
    )


def test_default_keys_and_values_with_groups() -> None:
    p = make(0)
    out = compute_metrics(p)
    assert HEADLINE <= set(out)
    assert all(type(v) is float for v in out.values())
    seqs = pathway_sequences(p, "threshold", threshold=0.7)
    distance = pathway_distance(seqs, p.groups, group_names=p.group_names)
    assert out["pathway_distance"] == distance.normalized and out["pathway_distance_raw"] == distance.raw
    assert out["pathway_distance_stderr"] == 0.0
    assert out["pathway_length"] == pytest.approx(seqs.lengths.double().mean().item())
    consistency = pathway_consistency(p.mean_weights, p.router_weights)
    assert out["pathway_consistency"] == pytest.approx(consistency.score)
    assert out["pathway_cosine"] == pytest.approx(consistency.mean_cosine)
    assert out["routing_cosine"] == pytest.approx(routing_cosine(p.mean_weights).mean().item())
    assert out["routing_entropy"] == pytest.approx(routing_entropy(p.mean_weights).mean().item())
    load = expert_load(p.expert_counts)
    assert out["expert_load_entropy"] == pytest.approx(load.entropy.mean().item())
    assert out["dead_expert_fraction"] == pytest.approx(load.dead_fraction.mean().item())
    assert "pathway_drift" not in out and not any(k.startswith("layer/") for k in out)
    # groups present and per_group left at None: per-group keys, each the metric of the group's subset
    for g, name in enumerate(p.group_names):
        sub = p.select((p.groups == g).nonzero().flatten())
        sub_seqs = pathway_sequences(sub, "threshold")
        assert out[f"group/{name}/pathway_distance"] == pytest.approx(pathway_distance(sub_seqs).normalized)
        assert out[f"group/{name}/pathway_distance_raw"] == pytest.approx(pathway_distance(sub_seqs).raw)
        sub_c = pathway_consistency(sub.mean_weights, sub.router_weights)
        assert out[f"group/{name}/pathway_consistency"] == pytest.approx(sub_c.score, abs=1e-6)
        assert out[f"group/{name}/pathway_cosine"] == pytest.approx(sub_c.mean_cosine, abs=1e-6)


def test_per_group_off_keeps_the_within_group_headline() -> None:
    p = make(1)
    out = compute_metrics(p, config=MetricConfig(per_group=False))
    assert not any(k.startswith("group/") for k in out)
    assert out["pathway_distance"] == compute_metrics(p)["pathway_distance"]
    everyone = pathway_distance(pathway_sequences(p, "threshold")).normalized
    assert out["pathway_distance"] != pytest.approx(everyone)  # cross-group pairs do not count


def test_no_groups_no_group_keys() -> None:
    p = make(2, groups=False)
    out = compute_metrics(p, config=MetricConfig(per_group=True))
    assert not any(k.startswith("group/") for k in out)
    assert out["pathway_distance"] == pathway_distance(pathway_sequences(p, "threshold")).normalized


def test_per_layer_and_per_expert_keys() -> None:
    p = make(3, layers=(1, 3, 5))
    out = compute_metrics(p, config=MetricConfig(per_layer=True, per_expert=True))
    entropy = routing_entropy(p.mean_weights)
    load = expert_load(p.expert_counts)
    cos = pathway_consistency(p.mean_weights, p.router_weights).per_layer_cosine
    for i, layer in enumerate((1, 3, 5)):
        assert out[f"layer/{layer}/routing_entropy"] == pytest.approx(entropy[i].item())
        assert out[f"layer/{layer}/dead_expert_fraction"] == pytest.approx(load.dead_fraction[i].item())
        assert out[f"layer/{layer}/expert_load_entropy"] == pytest.approx(load.entropy[i].item())
        for e in range(6):
            assert out[f"layer/{layer}/expert/{e}/load"] == pytest.approx(load.fractions[i, e].item())
    assert out["layer/1/consistency_cosine"] == pytest.approx(cos[0].item())
    assert out["layer/3/consistency_cosine"] == pytest.approx(cos[1].item())
    assert "layer/5/consistency_cosine" not in out  # the last router has no next one
    assert sum(k.endswith("/load") for k in out) == 3 * 6
    # two routers in one model layer (attention + MLP MoE) get distinct keys
    twin = compute_metrics(make(3, layers=(2, 2, 4)), config=MetricConfig(per_layer=True))
    assert {"layer/2_0/routing_entropy", "layer/2_1/routing_entropy", "layer/4/routing_entropy"} <= set(twin)


def test_consistency_keys_absent_without_rows_one_router_or_when_off() -> None:
    consistency_keys = {"pathway_consistency", "pathway_cosine"}
    assert not consistency_keys & set(compute_metrics(make(4, rows=False)))
    assert not consistency_keys & set(compute_metrics(make(4), config=MetricConfig(consistency=False)))
    single = compute_metrics(make(4, l=1), config=MetricConfig(per_layer=True))
    assert not (consistency_keys | {"routing_cosine"}) & set(single)
    assert not any(k.endswith("consistency_cosine") for k in single)
    assert not any("pathway_consistency" in k for k in compute_metrics(make(4, rows=False)))


def test_kept_experts_consistency() -> None:
    p = make(5)
    out = compute_metrics(p, config=MetricConfig(consistency_experts="kept", threshold=0.5))
    kept = pathway_consistency(p.mean_weights, p.router_weights, kept_mask=kept_experts_mask(p.mean_weights, 0.5))
    assert out["pathway_consistency"] == pytest.approx(kept.score)


def test_drift_and_extra_forms() -> None:
    p, prev = make(6, tokens=True), make(7, tokens=True)
    config = MetricConfig(extra_forms=("topk", "token"), top_k=2)
    out = compute_metrics(p, prev, config)
    drift = pathway_drift(pathway_sequences(prev, "threshold"), pathway_sequences(p, "threshold"))
    assert out["pathway_drift"] == pytest.approx(drift.normalized)
    assert out["pathway_drift_raw"] == pytest.approx(drift.raw)
    topk = pathway_distance(pathway_sequences(p, "topk", top_k=2), p.groups)
    assert out["pathway_distance/topk"] == pytest.approx(topk.normalized)
    token = pathway_distance(pathway_sequences(p, "token"), p.groups)
    assert out["pathway_distance/token"] == pytest.approx(token.normalized)
    # the headline can use another form
    token_head = compute_metrics(p, config=MetricConfig(form="token"))
    assert token_head["pathway_distance"] == pytest.approx(token.normalized)
    # a previous probe of other samples gives no drift
    assert "pathway_drift" not in compute_metrics(p, make(7, n=5))
    with pytest.raises(ConfigError, match="keep_token_ids"):
        compute_metrics(make(6), config=MetricConfig(extra_forms=("token",)))


def test_subsampling_gives_a_stderr_and_seeded_values() -> None:
    p = make(8, n=40, groups=False)
    a = compute_metrics(p, config=MetricConfig(max_pairs=100, seed=1))
    assert a["pathway_distance_stderr"] > 0
    assert a == compute_metrics(p, config=MetricConfig(max_pairs=100, seed=1))
    assert a["pathway_distance"] != compute_metrics(p, config=MetricConfig(max_pairs=100, seed=2))["pathway_distance"]


def test_deterministic_and_nan_for_singleton_groups() -> None:
    p = make(9)
    assert compute_metrics(p, make(10)) == compute_metrics(p, make(10))
    lonely = make(9, n=5)  # group labels 0,1,1,0,2: "chem" has one sample
    out = compute_metrics(lonely)
    assert math.isnan(out["group/chem/pathway_distance"])
    assert not math.isnan(out["group/chem/pathway_consistency"])  # consistency is per sample


@pytest.mark.parametrize("bad", [dict(form="tokens"), dict(threshold=0.0), dict(max_pairs=0),
                                 dict(consistency_experts="some"), dict(extra_forms=("top",))])
def test_config_is_validated(bad: dict) -> None:
    with pytest.raises(ConfigError):
        MetricConfig(**bad)


def test_metrics_import_no_distributed_wandb_or_transformers() -> None:
    import ast
    from pathlib import Path

    import grokmon.metrics as metrics

    for path in Path(metrics.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.startswith(("torch.distributed", "wandb", "transformers")) for n in names), path
