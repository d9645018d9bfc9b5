"""Paper-fidelity fixes (issue 11), each against a plain-Python reference written here.

* the pooled distance is the mean over every within-group pair, also when a group is subsampled;
* C_i is NaN (and counted) where the sample's largest layer cosine is near zero, instead of exploding;
* TF32-rounded float32 matmuls leave pathways and cosines unchanged;
* the threshold rule: landing exactly on the threshold counts as passing.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from grokmon.metrics import compute_metrics, pathway_consistency
from grokmon.metrics.distance import pathway_distance
from grokmon.pathways import Pathways, PathwaySequences, pathway_sequences
from references import lev


def _within_group_mean(rows: list[list[int]], labels: list[int]) -> tuple[float, float]:
    raw, norm = [], []
    for i, j in itertools.combinations(range(len(rows)), 2):
        if labels[i] == labels[j]:
            d = lev(rows[i], rows[j])
            raw.append(d)
            norm.append(d / max(len(rows[i]), len(rows[j])))
    return sum(raw) / len(raw), sum(norm) / len(norm)


def _seqs(rows: list[list[int]], vocab: int) -> PathwaySequences:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [-1] * (width - len(r)) for r in rows])
    return PathwaySequences(ids, torch.tensor([len(r) for r in rows]), vocab)


def test_subsampled_groups_weigh_their_real_pair_count() -> None:
    # the reproducer: 30 identical pathways (435 pairs, distance 0), 10 disjoint ones (45 pairs, 3)
    rows = [[0, 1, 2]] * 30 + [[10 + 3 * i, 11 + 3 * i, 12 + 3 * i] for i in range(10)]
    labels = [0] * 30 + [1] * 10
    want_raw, want_norm = _within_group_mean(rows, labels)
    assert (round(want_raw, 3), round(want_norm, 3)) == (0.281, 0.094)
    r = pathway_distance(_seqs(rows, 60), torch.tensor(labels), max_pairs=45)
    assert not r.exact
    assert r.raw == pytest.approx(want_raw) and r.normalized == pytest.approx(want_norm)
    # subsampling a group whose pairs are all equal gives its exact mean: the stratified stderr is 0
    assert r.raw_stderr == 0.0


def test_stratified_stderr_and_unbiased_pooling_on_random_pathways() -> None:
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(0, 5, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist()
            for _ in range(60)]
    labels = [0] * 40 + [1] * 12 + [2] * 8
    want_raw, want_norm = _within_group_mean(rows, labels)
    exact = pathway_distance(_seqs(rows, 5), torch.tensor(labels), max_pairs=None)
    assert exact.raw == pytest.approx(want_raw) and exact.normalized == pytest.approx(want_norm)
    # subsampled: the estimate is within a few stratified standard errors of the exact mean, over seeds
    z = []
    for seed in range(20):
        r = pathway_distance(_seqs(rows, 5), torch.tensor(labels), max_pairs=30, seed=seed)
        assert r.raw_stderr > 0
        z.append((r.raw - want_raw) / r.raw_stderr)
    assert abs(float(np.mean(z))) < 1.0 and float(np.max(np.abs(z))) < 4.5


def test_consistency_is_nan_and_counted_where_the_largest_cosine_is_near_zero() -> None:
    # two routers' embeddings built to give chosen cosines: sample 0 well-conditioned, sample 1 not
    rows = torch.zeros(3, 2, 2)
    rows[0] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rows[1] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rows[2] = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    w = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.5, 0.5]],
                      [[1.0, 0.0], [0.02, 0.98], [0.0, 1.0]]])
    r = pathway_consistency(w, rows)

    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    emb = [[sum(float(w[i, l, k]) * rows[l, k].numpy() for k in range(2)) for l in range(3)] for i in range(2)]
    c = [[cos(emb[i][l], emb[i][l + 1]) for l in range(2)] for i in range(2)]
    assert max(c[0]) >= 0.1 > max(c[1])
    want0 = 1 - (sum(c[0]) / 2) / (max(c[0]) + 1e-8)
    assert r.per_sample_score[0].item() == pytest.approx(want0, abs=1e-6)
    assert math.isnan(r.per_sample_score[1].item())
    assert r.score == pytest.approx(want0, abs=1e-6) and r.undefined_fraction == 0.5
    assert r.mean_cosine == pytest.approx(float(np.mean(c)), abs=1e-6)   # the raw cosine is always reported


def test_compute_metrics_reports_the_undefined_share() -> None:
    w = torch.softmax(torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(1)) * 3, -1)
    p = Pathways(mean_weights=w, layers=(0, 1, 2), router_names=("a", "b", "c"), num_experts=4,
                 expert_counts=torch.ones(3, 4, dtype=torch.long),
                 router_weights=torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(2)))
    m = compute_metrics(p)
    direct = pathway_consistency(w, p.router_weights)
    assert m["pathway_consistency_undefined"] == direct.undefined_fraction
    assert m["pathway_consistency"] == pytest.approx(direct.score, nan_ok=True)


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """Round float32 to TF32's 10-bit mantissa (round to nearest even), as tensor cores do."""
    bits = x.contiguous().view(torch.int32)
    rounded = (bits + 0x0FFF + ((bits >> 13) & 1)) & ~0x1FFF
    return rounded.view(torch.float32)


@pytest.fixture
def tf32_matmuls(monkeypatch):
    """Every float32 matmul / einsum rounds its inputs to TF32 first (what allow_tf32 does on a GPU)."""
    matmul, einsum = torch.Tensor.__matmul__, torch.einsum

    def rounded_matmul(a, b):
        if a.dtype == torch.float32 and b.dtype == torch.float32:
            return matmul(_tf32(a), _tf32(b))
        return matmul(a, b)

    def rounded_einsum(eq, *ops):
        return einsum(eq, *(_tf32(o) if o.dtype == torch.float32 else o for o in ops))

    monkeypatch.setattr(torch.Tensor, "__matmul__", rounded_matmul)
    monkeypatch.setattr(torch, "einsum", rounded_einsum)


def _threshold_reference(w: torch.Tensor, threshold: float) -> list[list[list[int]]]:
    """Per sample and layer: experts by weight (ties: lower id), kept while the sum before < t - 1e-6."""
    out = []
    for sample in w.double().tolist():
        layers = []
        for weights in sample:
            order = sorted(range(len(weights)), key=lambda k: (-weights[k], k))
            kept, total = [], 0.0
            for rank, k in enumerate(order):
                if rank > 0 and (total >= threshold - 1e-6 or weights[k] <= 0):
                    break
                kept.append(k)
                total += weights[k]
            layers.append(kept)
        out.append(layers)
    return out


def _olmoe_like(n: int = 256, layers: int = 16, experts: int = 64, k: int = 8) -> torch.Tensor:
    """Mean top-k weights over tokens, as a capture gives: many near-ties around the threshold."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, 32, layers, experts, generator=g)
    top = torch.softmax(logits, -1).topk(k, -1)
    w = torch.zeros(n, 32, layers, experts).scatter(-1, top.indices, top.values / top.values.sum(-1, keepdim=True))
    return w.mean(1)


def test_tf32_rounding_leaves_pathways_unchanged(tf32_matmuls) -> None:
    w = _olmoe_like()
    # the simulation bites: a float32 exclusive cumsum through a TF32 matmul loses the 1e-6 tolerance
    e = w.shape[-1]
    values = torch.sort(w, -1, descending=True).values
    tri = torch.ones(e, e).triu(1)
    assert not torch.equal(values @ tri, values.double().matmul(tri.double()).float())
    p = Pathways(mean_weights=w, layers=tuple(range(16)), router_names=tuple(map(str, range(16))),
                 num_experts=e, expert_counts=torch.ones(16, e, dtype=torch.long))
    seqs = pathway_sequences(p, "threshold", threshold=0.7)
    want = _threshold_reference(w, 0.7)
    for i in range(w.shape[0]):
        flat = [x for layer in want[i] for x in (*layer, e)][:-1]
        assert seqs.ids[i, : seqs.lengths[i]].tolist() == flat


def test_tf32_rounding_leaves_consistency_cosines_unchanged(tf32_matmuls) -> None:
    g = torch.Generator().manual_seed(5)
    w = torch.softmax(torch.randn(32, 4, 8, generator=g), -1)
    rows = torch.randn(4, 8, 16, generator=g)
    from grokmon.metrics import layer_cosines
    got = layer_cosines(w, rows)
    ref = np.zeros((32, 3))
    for i in range(32):
        e_l = [sum(float(w[i, l, k]) * rows[l, k].double().numpy() for k in range(8)) for l in range(4)]
        for l in range(3):
            ref[i, l] = np.dot(e_l[l], e_l[l + 1]) / (np.linalg.norm(e_l[l]) * np.linalg.norm(e_l[l + 1]))
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)


def test_landing_exactly_on_the_threshold_counts_as_passing() -> None:
    # the cumulative weight before the next expert lands exactly on 0.7: the layer stops there
    w = torch.tensor([[[0.5, 0.2, 0.2, 0.1]], [[0.4, 0.3, 0.3, 0.0]]])
    p = Pathways(mean_weights=w, layers=(0,), router_names=("r",), num_experts=4,
                 expert_counts=torch.ones(1, 4, dtype=torch.long))
    seqs = pathway_sequences(p, "threshold", threshold=0.7)
    # sample 0: 0.5 + 0.2 = 0.7 before the third expert; sample 1: 0.4 + 0.3 = 0.7 (in float32, 0.70000005)
    assert seqs.ids[0, : seqs.lengths[0]].tolist() == [0, 1]
    assert seqs.ids[1, : seqs.lengths[1]].tolist() == [0, 1]
    assert _threshold_reference(w, 0.7) == [[[0, 1]], [[0, 1]]]
