"""Pathway distance and pair sampling against plain-Python references."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grokmon.errors import ConfigError
from grokmon.metrics import cross_group_distance, pathway_distance, sample_cross_pairs, sample_pairs
from grokmon.metrics.pairs import triangle_index_to_pair
from grokmon.pathways import PathwaySequences

from references import lev, seqs_from

BACKENDS = ["torch", "rapidfuzz"]


def pair_values(rows: list[list[int]], pairs) -> tuple[np.ndarray, np.ndarray]:
    raw, norm = [], []
    for i, j in pairs:
        d = lev(rows[i], rows[j])
        longer = max(len(rows[i]), len(rows[j]))
        raw.append(d)
        norm.append(d / longer if longer else 0.0)
    return np.array(raw, dtype=float), np.array(norm, dtype=float)


def random_rows(n: int, seed: int, max_len: int = 12) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 7, rng.integers(0, max_len)).tolist() for _ in range(n)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(3))
def test_all_pairs_mean_matches_reference(seed: int, backend: str) -> None:
    rows = random_rows(14, seed)
    result = pathway_distance(seqs_from(rows), backend=backend)
    raw, norm = pair_values(rows, itertools.combinations(range(14), 2))
    assert result.raw == pytest.approx(raw.mean(), abs=1e-12)
    assert result.normalized == pytest.approx(norm.mean(), abs=1e-12)
    assert result.num_pairs == 91 and result.exact
    assert result.raw_stderr == 0.0 and result.normalized_stderr == 0.0
    assert result.per_group == {}


def test_two_empty_pathways_are_identical() -> None:
    result = pathway_distance(seqs_from([[], [], [1, 2]]))
    # pairs: (empty, empty) -> 0/0 counts as 0; (empty, [1,2]) -> 2/2 twice
    assert result.raw == pytest.approx(4 / 3) and result.normalized == pytest.approx(2 / 3)


def test_groups_pool_within_group_pairs_and_name_groups() -> None:
    rows = random_rows(11, 5)
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 1, 3, 3]  # unequal sizes: pooled mean != mean of group means
    result = pathway_distance(seqs_from(rows), torch.tensor(labels), group_names=("math", "code"))
    within = [(i, j) for i, j in itertools.combinations(range(11), 2) if labels[i] == labels[j]]
    raw, norm = pair_values(rows, within)
    assert result.raw == pytest.approx(raw.mean()) and result.normalized == pytest.approx(norm.mean())
    assert result.num_pairs == 15 + 3 + 1
    assert set(result.per_group) == {"math", "code", "3"}  # label 3 has no name
    for name, g in (("math", 0), ("code", 1), ("3", 3)):
        members = [r for r, lab in zip(rows, labels) if lab == g]
        r_raw, r_norm = pair_values(members, itertools.combinations(range(len(members)), 2))
        assert result.per_group[name].raw == pytest.approx(r_raw.mean())
        assert result.per_group[name].normalized == pytest.approx(r_norm.mean())
        assert result.per_group[name].num_pairs == len(r_raw)
    group_means = np.mean([result.per_group[k].raw for k in ("math", "code", "3")])
    assert result.raw != pytest.approx(group_means)  # the overall value pools pairs


def test_groups_with_fewer_than_two_samples_are_nan_and_skipped() -> None:
    rows = [[1, 2], [1, 3], [5]]
    result = pathway_distance(seqs_from(rows), torch.tensor([0, 0, 1]), group_names=("a", "b"))
    assert math.isnan(result.per_group["b"].raw) and math.isnan(result.per_group["b"].normalized)
    assert result.per_group["b"].num_pairs == 0
    assert result.raw == 1.0 and result.num_pairs == 1
    lonely = pathway_distance(seqs_from(rows), torch.tensor([0, 1, 2]))
    assert math.isnan(lonely.raw) and lonely.num_pairs == 0


def test_groups_shape_is_checked() -> None:
    with pytest.raises(ConfigError, match="one label per sample"):
        pathway_distance(seqs_from([[1], [2]]), torch.tensor([0, 0, 0]))


def test_triangle_index_matches_triu_indices() -> None:
    for n in range(1, 25):
        i, j = torch.triu_indices(n, n, offset=1)
        row, col = triangle_index_to_pair(torch.arange(n * (n - 1) // 2), n)
        assert torch.equal(row, i) and torch.equal(col, j)


@pytest.mark.parametrize("n,max_pairs", [(30, 300), (200, 1000)])  # permutation / rejection branches
def test_sampled_pairs_are_distinct_ordered_and_seeded(n: int, max_pairs: int) -> None:
    members = torch.arange(n) * 3 + 1  # sample indices need not be 0..n-1
    pairs, exact = sample_pairs(members, max_pairs, seed=3)
    assert not exact and pairs.shape == (max_pairs, 2)
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert set(pairs.flatten().tolist()) <= set(members.tolist())
    assert len({tuple(p) for p in pairs.tolist()}) == max_pairs
    assert torch.equal(pairs, sample_pairs(members, max_pairs, seed=3)[0])
    assert not torch.equal(pairs, sample_pairs(members, max_pairs, seed=4)[0])
    everything, exact = sample_pairs(members, None, seed=3)
    assert exact and everything.shape == (n * (n - 1) // 2, 2)


@pytest.mark.parametrize("n,max_pairs,draws", [(6, 5, 3000), (40, 100, 1500)])
def test_sampled_pairs_are_uniform(n: int, max_pairs: int, draws: int) -> None:
    counts: Counter = Counter()
    for seed in range(draws):
        counts.update(map(tuple, sample_pairs(torch.arange(n), max_pairs, seed)[0].tolist()))
    total = n * (n - 1) // 2
    expected = draws * max_pairs / total
    assert len(counts) == total
    assert min(counts.values()) > 0.6 * expected and max(counts.values()) < 1.4 * expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_subsampled_distance_uses_the_sampled_pairs_and_reports_stderr(backend: str) -> None:
    rows = random_rows(60, 1)
    result = pathway_distance(seqs_from(rows), max_pairs=300, seed=7, backend=backend)
    sampled, _ = sample_pairs(torch.arange(60), 300, seed=7)
    raw, norm = pair_values(rows, sampled.tolist())
    assert not result.exact and result.num_pairs == 300
    assert result.raw == pytest.approx(raw.mean()) and result.normalized == pytest.approx(norm.mean())
    assert result.raw_stderr == pytest.approx(raw.std(ddof=1) / math.sqrt(300))
    assert result.normalized_stderr == pytest.approx(norm.std(ddof=1) / math.sqrt(300))
    again = pathway_distance(seqs_from(rows), max_pairs=300, seed=7, backend=backend)
    other = pathway_distance(seqs_from(rows), max_pairs=300, seed=8, backend=backend)
    assert again == result and other.raw != result.raw


def test_each_group_draws_with_its_own_seed() -> None:
    rows = random_rows(40, 2)
    labels = torch.tensor([0] * 20 + [1] * 20)
    result = pathway_distance(seqs_from(rows), labels, max_pairs=50, seed=11)
    for g in (0, 1):
        pairs, _ = sample_pairs(torch.arange(20) + 20 * g, 50, seed=11 + g)
        raw, _ = pair_values(rows, pairs.tolist())
        assert result.per_group[str(g)].raw == pytest.approx(raw.mean())
        assert not result.per_group[str(g)].exact
    assert result.num_pairs == 100 and not result.exact


def test_cross_group_distance_is_the_mean_over_pairs_of_different_groups() -> None:
    rows = random_rows(12, 9)
    labels = [0, 2, 1, 0, 2, 2, 1, 0, 0, 1, 2, 2]
    result = cross_group_distance(seqs_from(rows), torch.tensor(labels))
    cross = [(i, j) for i, j in itertools.combinations(range(12), 2) if labels[i] != labels[j]]
    raw, norm = pair_values(rows, cross)
    assert result.exact and result.num_pairs == len(cross)
    assert result.raw == pytest.approx(raw.mean()) and result.normalized == pytest.approx(norm.mean())
    pairs, exact = sample_cross_pairs(torch.tensor(labels), None, seed=0)
    assert exact and pairs.tolist() == [list(p) for p in cross]
    one_group = cross_group_distance(seqs_from(rows), torch.zeros(12, dtype=torch.long))
    assert math.isnan(one_group.raw) and one_group.num_pairs == 0


def test_sampled_cross_pairs_are_cross_group_distinct_and_seeded() -> None:
    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 30)
    pairs, exact = sample_cross_pairs(labels, 200, seed=1)
    assert not exact and pairs.shape == (200, 2)
    assert (pairs[:, 0] < pairs[:, 1]).all() and (labels[pairs[:, 0]] != labels[pairs[:, 1]]).all()
    assert len({tuple(p) for p in pairs.tolist()}) == 200
    assert torch.equal(pairs, sample_cross_pairs(labels, 200, seed=1)[0])
    assert not torch.equal(pairs, sample_cross_pairs(labels, 200, seed=2)[0])
    # the small group's pairs are drawn in proportion to how many cross pairs it has
    counts: Counter = Counter()
    for seed in range(200):
        p, _ = sample_cross_pairs(labels, 200, seed=seed)
        small = int((labels[p] == 1).any(1).sum())
        counts.update(small=small, big=p.shape[0] - small)
    share = counts["small"] / (counts["small"] + counts["big"])
    assert share == pytest.approx(3 * 80 / (50 * 3 + 50 * 30 + 3 * 30), abs=0.01)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), max_size=9), min_size=2, max_size=8), st.randoms())
def test_distance_bounds_and_sample_order_invariance(rows: list[list[int]], rnd) -> None:
    result = pathway_distance(seqs_from(rows))
    assert 0.0 <= result.normalized <= 1.0
    assert 0.0 <= result.raw <= max(len(r) for r in rows)
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    again = pathway_distance(seqs_from(shuffled))
    assert again.raw == pytest.approx(result.raw) and again.normalized == pytest.approx(result.normalized)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_gives_the_cpu_numbers_and_pairs() -> None:
    rows = random_rows(80, 4)
    seqs = seqs_from(rows)
    on_gpu = PathwaySequences(seqs.ids.cuda(), seqs.lengths.cuda(), seqs.alphabet_size)
    labels = torch.tensor([0, 1] * 40)
    for max_pairs in (None, 500):
        cpu = pathway_distance(seqs, labels, max_pairs=max_pairs, seed=3)
        gpu = pathway_distance(on_gpu, labels.cuda(), max_pairs=max_pairs, seed=3)
        assert gpu == cpu
