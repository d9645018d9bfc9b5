"""Metrics against plain-Python / numpy references, and compute_metrics' keys."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grokmon.editdistance import levenshtein
from grokmon.errors import ConfigError
from grokmon.metrics import (
    MetricConfig, compute_metrics, cross_group_distance, expert_load, pathway_consistency, pathway_distance,
    pathway_drift, routing_cosine, routing_entropy, sample_pairs,
)
from grokmon.pathways import Pathways, PathwaySequences, pathway_sequences


def seqs_from(rows: list[list[int]]) -> PathwaySequences:
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), -1, dtype=torch.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.int32)
    return PathwaySequences(ids, torch.tensor([len(r) for r in rows]), 10)


def reference_distance(rows: list[list[int]], labels: list[int] | None = None) -> tuple[float, float]:
    labels = labels or [0] * len(rows)
    raw, norm = [], []
    for i, j in itertools.combinations(range(len(rows)), 2):
        if labels[i] == labels[j]:
            d = levenshtein(rows[i], rows[j])
            longer = max(len(rows[i]), len(rows[j]))
            raw.append(d)
            norm.append(d / longer if longer else 0.0)
    return float(np.mean(raw)), float(np.mean(norm))


def random_rows(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 6, rng.integers(0, 12)).tolist() for _ in range(n)]


@pytest.mark.parametrize("seed", range(4))
def test_distance_all_pairs_matches_reference(seed: int) -> None:
    rows = random_rows(15, seed)
    result = pathway_distance(seqs_from(rows))
    raw, norm = reference_distance(rows)
    assert result.raw == pytest.approx(raw) and result.normalized == pytest.approx(norm)
    assert result.exact and result.num_pairs == 105 and result.raw_stderr == 0.0


def test_distance_pools_within_group_pairs_only() -> None:
    rows = random_rows(12, 7)
    labels = [0, 1, 2] * 4
    result = pathway_distance(seqs_from(rows), torch.tensor(labels), group_names=("a", "b", "c"))
    assert result.raw == pytest.approx(reference_distance(rows, labels)[0])
    for g, name in enumerate("abc"):
        members = [r for r, lab in zip(rows, labels) if lab == g]
        assert result.per_group[name].normalized == pytest.approx(reference_distance(members)[1])
    cross = cross_group_distance(seqs_from(rows), torch.tensor(labels))
    pairs = [(i, j) for i, j in itertools.combinations(range(12), 2) if labels[i] != labels[j]]
    assert cross.raw == pytest.approx(np.mean([levenshtein(rows[i], rows[j]) for i, j in pairs]))


def test_singleton_group_is_nan() -> None:
    result = pathway_distance(seqs_from([[1], [2], [3]]), torch.tensor([0, 0, 1]), group_names=("a", "b"))
    assert math.isnan(result.per_group["b"].raw) and result.num_pairs == 1


def test_subsampled_pairs_are_distinct_seeded_and_carry_stderr() -> None:
    pairs, exact = sample_pairs(torch.arange(200), 1000, seed=3)
    assert not exact and pairs.shape == (1000, 2)
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert len({tuple(p) for p in pairs.tolist()}) == 1000
    again, _ = sample_pairs(torch.arange(200), 1000, seed=3)
    other, _ = sample_pairs(torch.arange(200), 1000, seed=4)
    assert torch.equal(pairs, again) and not torch.equal(pairs, other)
    rows = random_rows(60, 1)
    result = pathway_distance(seqs_from(rows), max_pairs=300, seed=0)
    sampled, _ = sample_pairs(torch.arange(60), 300, seed=0)
    d = np.array([levenshtein(rows[i], rows[j]) for i, j in sampled.tolist()])
    assert result.raw == pytest.approx(d.mean())
    assert result.raw_stderr == pytest.approx(d.std(ddof=1) / math.sqrt(300))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), max_size=10), min_size=2, max_size=8))
def test_normalized_distance_in_unit_interval(rows: list[list[int]]) -> None:
    result = pathway_distance(seqs_from(rows))
    assert 0.0 <= result.normalized <= 1.0


def reference_consistency(w: np.ndarray, rows: np.ndarray) -> tuple[float, float]:
    scores, cosines = [], []
    for sample in w:
        emb = [sum(sample[l, k] * rows[l, k] for k in range(w.shape[2])) for l in range(w.shape[1])]
        cos = [float(np.dot(emb[l], emb[l + 1]) / (np.linalg.norm(emb[l]) * np.linalg.norm(emb[l + 1])))
               for l in range(len(emb) - 1)]
        scores.append(1 - np.mean(cos) / (max(cos) + 1e-8))
        cosines.extend(cos)
    return float(np.mean(scores)), float(np.mean(cosines))


def test_consistency_matches_reference_and_chunking() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.rand(9, 4, 5, generator=g)
    w = w / w.sum(-1, keepdim=True)
    rows = torch.randn(4, 5, 7, generator=g)
    result = pathway_consistency(w, rows, torch.tensor([0] * 5 + [1] * 4), group_names=("x", "y"))
    score, cosine = reference_consistency(w.numpy(), rows.numpy())
    assert result.score == pytest.approx(score, abs=1e-5) and result.mean_cosine == pytest.approx(cosine, abs=1e-5)
    assert result.per_group["y"].score == pytest.approx(reference_consistency(w[5:].numpy(), rows.numpy())[0], abs=1e-5)
    from grokmon.metrics import layer_cosines

    assert torch.allclose(layer_cosines(w, rows, chunk=2), layer_cosines(w, rows, chunk=100), atol=1e-6)
    with pytest.raises(ConfigError, match="at least 2 routers"):
        pathway_consistency(w[:, :1], rows[:1])


def test_routing_entropy_load_and_cosine() -> None:
    w = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]])
    assert routing_entropy(w).tolist() == pytest.approx([0.0, 1.0])
    assert routing_cosine(w).tolist() == [pytest.approx([0.5])]
    load = expert_load(torch.tensor([[2, 2, 0, 0], [1, 1, 1, 1]]))
    assert load.dead_fraction.tolist() == [0.5, 0.0]
    assert load.entropy.tolist() == pytest.approx([0.5, 1.0])
    assert load.max_over_mean.tolist() == pytest.approx([2.0, 1.0])


def test_drift() -> None:
    before = [[1, 2, 3], [4, 5], []]
    after = [[1, 2, 4], [4, 5], [1]]
    drift = pathway_drift(seqs_from(before), seqs_from(after))
    assert drift.raw == pytest.approx((1 + 0 + 1) / 3)
    assert drift.normalized == pytest.approx((1 / 3 + 0 + 1) / 3)


def make_pathways(seed: int, n: int = 8, with_groups: bool = True) -> Pathways:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, 3, 6, generator=g) ** 3
    w = w / w.sum(-1, keepdim=True)
    return Pathways(
        mean_weights=w, layers=(0, 1, 2), router_names=("a", "b", "c"), num_experts=6,
        expert_counts=torch.randint(0, 5, (3, 6), generator=g), router_weights=torch.randn(3, 6, 4, generator=g),
        groups=torch.tensor([0, 1] * (n // 2)) if with_groups else None, group_names=("math", "code") if with_groups else (),
        meta={"top_k": 2},
    )


def test_compute_metrics_keys_and_values() -> None:
    p, prev = make_pathways(0), make_pathways(1)
    out = compute_metrics(p, prev, MetricConfig(per_layer=True, per_expert=True, extra_forms=("topk",)))
    seqs = pathway_sequences(p, "threshold")
    assert out["pathway_distance"] == pytest.approx(pathway_distance(seqs, p.groups).normalized)
    sub = p.select(torch.tensor([0, 2, 4, 6]))
    assert out["group/math/pathway_distance"] == pytest.approx(pathway_distance(pathway_sequences(sub)).normalized)
    assert out["group/math/pathway_consistency"] == pytest.approx(
        pathway_consistency(sub.mean_weights, sub.router_weights).score)
    for key in ("pathway_consistency", "pathway_cosine", "routing_cosine", "routing_entropy", "pathway_drift",
                "pathway_distance/topk", "layer/1/routing_entropy", "layer/0/consistency_cosine",
                "layer/2/expert/5/load", "dead_expert_fraction"):
        assert key in out
    plain = compute_metrics(make_pathways(0, with_groups=False))
    assert not any(k.startswith(("group/", "layer/")) for k in plain) and "pathway_drift" not in plain
    assert compute_metrics(p) == compute_metrics(p)  # deterministic
    no_rows = make_pathways(0)
    no_rows.router_weights = None
    assert "pathway_consistency" not in compute_metrics(no_rows)
