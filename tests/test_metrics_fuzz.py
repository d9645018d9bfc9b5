"""Hypothesis fuzzing of the metric functions on random pathways: bounds, determinism, no crash."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grokmon.metrics import MetricConfig, compute_metrics, expert_load, pathway_drift
from grokmon.pathways import Pathways, pathway_sequences

BOUNDED = ("pathway_distance", "routing_entropy", "expert_load_entropy", "dead_expert_fraction", "pathway_drift")


@st.composite
def pathways(draw) -> tuple[Pathways, Pathways]:
    n, layers, experts = draw(st.integers(2, 12)), draw(st.integers(1, 4)), draw(st.integers(1, 9))
    k = draw(st.integers(1, experts))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    sharp = draw(st.sampled_from([0.1, 1.0, 10.0]))

    def one() -> Pathways:
        w = torch.softmax(torch.randn(n, layers, experts, generator=g) * sharp, -1)
        if draw(st.booleans()):  # exact ties and exact zeros
            w = torch.zeros_like(w).scatter_(-1, torch.zeros(n, layers, 1, dtype=torch.long), 1.0)
        counts = torch.randint(0, 5, (layers, experts), generator=g)
        tokens = torch.randint(-1, experts, (n, 3, layers, k), generator=g).to(torch.int16)
        rows = torch.randn(layers, experts, 4, generator=g) if draw(st.booleans()) else None
        groups = torch.randint(0, 3, (n,), generator=g) if draw(st.booleans()) else None
        return Pathways(mean_weights=w, layers=tuple(range(layers)), router_names=tuple(f"r{i}" for i in range(layers)),
                        num_experts=experts, expert_counts=counts, token_ids=tokens, router_weights=rows,
                        groups=groups, group_names=("a", "b", "c") if groups is not None else ())

    return one(), one()


@settings(max_examples=120, deadline=None)
@given(pathways(), st.sampled_from(["threshold", "topk", "token"]), st.floats(0.05, 1.0),
       st.sampled_from([None, 3]), st.booleans())
def test_compute_metrics_is_bounded_and_deterministic(pair, form, threshold, max_pairs, per_layer) -> None:
    now, before = pair
    config = MetricConfig(form=form, threshold=threshold, max_pairs=max_pairs, per_layer=per_layer, per_expert=True,
                          extra_forms=("topk",))
    metrics = compute_metrics(now, before, config)
    assert metrics == compute_metrics(now, before, config) or all(  # same numbers (NaN != NaN)
        (math.isnan(a) and math.isnan(b)) or a == b
        for a, b in zip(metrics.values(), compute_metrics(now, before, config).values()))
    assert all(isinstance(v, float) for v in metrics.values())
    for key in BOUNDED:
        if key in metrics and not math.isnan(metrics[key]):
            assert -1e-9 <= metrics[key] <= 1 + 1e-9, (key, metrics[key])
    assert metrics["pathway_distance_raw"] >= 0 or math.isnan(metrics["pathway_distance_raw"])
    if now.num_routers < 2 or now.router_weights is None:
        assert "pathway_consistency" not in metrics
    per_expert = [v for k, v in metrics.items() if k.endswith("/load")]
    assert len(per_expert) == now.num_routers * now.num_experts
    assert "pathway_drift" in metrics  # same sample count


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_expert_load_shares_sum_to_one_or_are_all_dead(layers, experts, seed) -> None:
    counts = torch.randint(0, 4, (layers, experts), generator=torch.Generator().manual_seed(seed))
    load = expert_load(counts)
    for i in range(layers):
        total = int(counts[i].sum())
        if total:
            assert float(load.fractions[i].sum()) == 1.0 or abs(float(load.fractions[i].sum()) - 1) < 1e-6
            assert float(load.dead_fraction[i]) == float((counts[i] == 0).float().mean())
            assert float(load.max_over_mean[i]) >= 1 - 1e-6
        assert 0 <= float(load.entropy[i]) <= 1 + 1e-6 or math.isnan(float(load.entropy[i]))


@settings(max_examples=100, deadline=None)
@given(pathways())
def test_drift_of_a_probe_against_itself_is_zero(pair) -> None:
    now, _ = pair
    seqs = pathway_sequences(now, "threshold")
    drift = pathway_drift(seqs, seqs)
    assert drift.raw == 0.0 and drift.normalized == 0.0
