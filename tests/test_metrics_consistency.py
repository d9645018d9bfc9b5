"""Pathway consistency and routing cosine against numpy loops of the paper's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grokmon.errors import ConfigError
from grokmon.metrics import (
    consistency_from_cosines, kept_experts_mask, layer_cosines, pathway_consistency, routing_cosine,
)
from grokmon.pathways import Pathways, pathway_sequences


def reference(w: np.ndarray, rows: np.ndarray, mask: np.ndarray | None = None):
    """Per-sample paper score C_i and the [N, L-1] cosines, by explicit loops.

    C_i is NaN where the sample's largest cosine is below 0.1 (documented: ill-conditioned)."""
    n, l, e = w.shape
    scores, cosines = [], []
    for i in range(n):
        emb = []
        for layer in range(l):
            g = w[i, layer].astype(np.float64)
            if mask is not None:
                g = g * mask[i, layer]
                g = g / g.sum()
            emb.append(sum(g[k] * rows[layer, k].astype(np.float64) for k in range(e)))
        cos = [float(emb[a] @ emb[a + 1] / (np.linalg.norm(emb[a]) * np.linalg.norm(emb[a + 1])))
               for a in range(l - 1)]
        scores.append(1.0 - sum(cos) / (l - 1) / (max(cos) + 1e-8) if max(cos) >= 0.1 else float("nan"))
        cosines.append(cos)
    return np.array(scores), np.array(cosines)


def random_inputs(seed: int, n: int = 9, l: int = 4, e: int = 6, h: int = 7):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, l, e, generator=g) ** 3
    return w / w.sum(-1, keepdim=True), torch.randn(l, e, h, generator=g)


@pytest.mark.parametrize("seed", range(3))
def test_matches_the_paper_formula(seed: int) -> None:
    w, rows = random_inputs(seed)
    scores, cos = reference(w.numpy(), rows.numpy())
    r = pathway_consistency(w, rows)
    assert r.score == pytest.approx(np.nanmean(scores), abs=1e-5)
    assert r.undefined_fraction == pytest.approx(np.isnan(scores).mean())
    assert r.mean_cosine == pytest.approx(cos.mean(), abs=1e-5)
    np.testing.assert_allclose(r.per_sample_score.numpy(), scores, atol=1e-5)
    np.testing.assert_allclose(r.per_sample_cosine.numpy(), cos.mean(1), atol=1e-5)
    np.testing.assert_allclose(r.per_layer_cosine.numpy(), cos.mean(0), atol=1e-5)
    np.testing.assert_allclose(layer_cosines(w, rows).numpy(), cos, atol=1e-5)


def test_per_group_is_the_group_subset() -> None:
    w, rows = random_inputs(4, n=10)
    labels = torch.tensor([2, 0, 0, 2, 1, 0, 2, 2, 1, 0])
    r = pathway_consistency(w, rows, labels, group_names=("a", "b"))
    assert set(r.per_group) == {"a", "b", "2"}
    for name, g in (("a", 0), ("b", 1), ("2", 2)):
        scores, cos = reference(w[labels == g].numpy(), rows.numpy())
        assert r.per_group[name].score == pytest.approx(np.nanmean(scores), abs=1e-5, nan_ok=True)
        assert r.per_group[name].mean_cosine == pytest.approx(cos.mean(), abs=1e-5)
    assert r.score == pytest.approx(np.nanmean(reference(w.numpy(), rows.numpy())[0]), abs=1e-5)


def test_chunk_size_does_not_change_the_result() -> None:
    w, rows = random_inputs(5, n=13)
    whole = layer_cosines(w, rows, chunk=1000)
    for chunk in (1, 3, 13):
        assert torch.allclose(layer_cosines(w, rows, chunk=chunk), whole, atol=1e-6)
    assert pathway_consistency(w, rows, chunk=2).score == pytest.approx(pathway_consistency(w, rows).score, abs=1e-6)
    with pytest.raises(ConfigError, match="chunk"):
        layer_cosines(w, rows, chunk=0)


def test_kept_mask_restricts_and_renormalises() -> None:
    w, rows = random_inputs(6)
    mask = kept_experts_mask(w, 0.7)
    scores, cos = reference(w.numpy(), rows.numpy(), mask.numpy())
    r = pathway_consistency(w, rows, kept_mask=mask)
    assert r.score == pytest.approx(np.nanmean(scores), abs=1e-5)
    assert r.mean_cosine == pytest.approx(cos.mean(), abs=1e-5)
    assert r.score != pytest.approx(pathway_consistency(w, rows).score, abs=1e-4)


def test_kept_experts_mask_is_the_threshold_pathway() -> None:
    w, _ = random_inputs(7, n=20, l=3, e=8)
    p = Pathways(mean_weights=w, layers=(0, 1, 2), router_names=("a", "b", "c"), num_experts=8,
                 expert_counts=torch.zeros(3, 8, dtype=torch.long))
    for threshold in (0.3, 0.7, 1.0):
        mask = kept_experts_mask(w, threshold)
        seqs = pathway_sequences(p, "threshold", threshold=threshold)
        for i in range(20):
            ids = seqs.ids[i, : seqs.lengths[i]].tolist()
            per_layer, current = [], []
            for x in ids + [8]:
                if x == 8:
                    per_layer.append(set(current))
                    current = []
                else:
                    current.append(x)
            for layer in range(3):
                assert set(mask[i, layer].nonzero().flatten().tolist()) == per_layer[layer]


def test_identical_embeddings_give_cosine_one_and_score_zero() -> None:
    w = torch.tensor([[[0.7, 0.3], [0.7, 0.3], [0.7, 0.3]]])
    rows = torch.randn(1, 2, 5).expand(3, 2, 5)
    r = pathway_consistency(w, rows)
    assert r.mean_cosine == pytest.approx(1.0, abs=1e-6) and r.score == pytest.approx(0.0, abs=1e-6)
    # the paper's normalisation by the sample's largest cosine
    assert consistency_from_cosines(torch.tensor([[1.0, 0.5], [0.5, 0.25]])).per_sample_score.tolist() == \
        pytest.approx([0.25, 0.25])


def test_positive_scaling_of_router_rows_changes_nothing() -> None:
    w, rows = random_inputs(8)
    assert torch.allclose(layer_cosines(w, rows * 3.5), layer_cosines(w, rows), atol=1e-6)


def test_errors_name_the_problem() -> None:
    w, rows = random_inputs(0)
    with pytest.raises(ConfigError, match="at least 2 routers"):
        pathway_consistency(w[:, :1], rows[:1])
    with pytest.raises(ConfigError, match="do not match"):
        pathway_consistency(w, rows[:, :3])
    with pytest.raises(ConfigError, match="kept_mask"):
        pathway_consistency(w, rows, kept_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ConfigError, match="groups"):
        pathway_consistency(w, rows, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError):
        routing_cosine(w[:, :1])


def test_routing_cosine_is_index_aligned() -> None:
    w, _ = random_inputs(9)
    got = routing_cosine(w).numpy()
    x = w.numpy().astype(np.float64)
    expected = [[x[i, a] @ x[i, a + 1] / (np.linalg.norm(x[i, a]) * np.linalg.norm(x[i, a + 1]))
                 for a in range(x.shape[1] - 1)] for i in range(x.shape[0])]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # the same routing vector at consecutive layers is cosine 1, a disjoint one 0
    hand = torch.tensor([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
    assert routing_cosine(hand).tolist() == [pytest.approx([1.0, 0.0])]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(2, 5), st.integers(1, 6), st.integers(0, 10_000))
def test_cosines_are_bounded(n: int, l: int, e: int, seed: int) -> None:
    w, rows = random_inputs(seed, n=n, l=l, e=e, h=3)
    r = pathway_consistency(w, rows)
    assert -1.0 - 1e-5 <= r.mean_cosine <= 1.0 + 1e-5
    assert (r.per_layer_cosine.abs() <= 1.0 + 1e-5).all()
    assert r.per_sample_score.shape == (n,) and r.per_layer_cosine.shape == (l - 1,)
