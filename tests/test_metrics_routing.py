"""Routing entropy, expert load and pathway drift against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grokmon.errors import ConfigError
from grokmon.metrics import expert_load, pathway_drift, routing_entropy
from grokmon.pathways import PathwaySequences

from references import lev, seqs_from


def entropy_reference(w: np.ndarray) -> list[float]:
    n, l, e = w.shape
    out = []
    for layer in range(l):
        per_sample = [-sum(p * math.log(p) for p in w[i, layer] if p > 0) for i in range(n)]
        out.append(float(np.mean(per_sample)) / math.log(e))
    return out


def test_routing_entropy_matches_hand_values() -> None:
    w = torch.tensor([
        [[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]],
        [[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]],
    ])
    got = routing_entropy(w).tolist()
    assert got == pytest.approx(entropy_reference(w.numpy()), abs=1e-6)
    # layer 0: mean of 0 and log 2 / log 4 = 0.25; layer 1: uniform = 1
    assert got[:2] == pytest.approx([0.25, 1.0], abs=1e-6)


def test_routing_entropy_random_and_single_expert() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.rand(7, 3, 5, generator=g) ** 4
    w = w / w.sum(-1, keepdim=True)
    assert routing_entropy(w).tolist() == pytest.approx(entropy_reference(w.numpy()), abs=1e-6)
    assert routing_entropy(torch.ones(3, 2, 1)).tolist() == [0.0, 0.0]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 4), st.integers(2, 9), st.integers(0, 10_000), st.floats(0.5, 8))
def test_routing_entropy_is_in_unit_interval(n: int, l: int, e: int, seed: int, power: float) -> None:
    w = torch.rand(n, l, e, generator=torch.Generator().manual_seed(seed)) ** power
    w = w / w.sum(-1, keepdim=True)
    h = routing_entropy(w)
    assert h.shape == (l,) and bool(((h >= -1e-6) & (h <= 1 + 1e-6)).all())


def test_expert_load_matches_hand_values() -> None:
    counts = torch.tensor([[6, 2, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    r = expert_load(counts)
    assert r.fractions[0].tolist() == pytest.approx([0.75, 0.25, 0.0, 0.0])
    assert r.fractions[2].tolist() == [0.0, 0.0, 0.0, 0.0]
    h0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(4)
    assert r.entropy.tolist() == pytest.approx([h0, 1.0, 0.0], abs=1e-6)
    assert r.dead_fraction.tolist() == pytest.approx([0.5, 0.0, 1.0])
    assert r.max_over_mean.tolist() == pytest.approx([6 / 2, 1.0, 0.0])
    with pytest.raises(ConfigError, match=r"\[L, E\]"):
        expert_load(torch.zeros(4, dtype=torch.long))


def test_drift_matches_reference() -> None:
    rng = np.random.default_rng(3)
    before = [rng.integers(0, 5, rng.integers(0, 9)).tolist() for _ in range(12)]
    after = [rng.integers(0, 5, rng.integers(0, 9)).tolist() for _ in range(12)]
    before[0] = after[0] = []  # both empty: distance 0, normalised 0
    d = [lev(a, b) for a, b in zip(before, after)]
    norm = [x / max(len(a), len(b)) if max(len(a), len(b)) else 0.0 for x, a, b in zip(d, before, after)]
    for backend in ("torch", "rapidfuzz"):
        drift = pathway_drift(seqs_from(before), seqs_from(after), backend=backend)
        assert drift.raw == pytest.approx(np.mean(d)) and drift.normalized == pytest.approx(np.mean(norm))
    same = pathway_drift(seqs_from(before), seqs_from(before))
    assert same.raw == 0.0 and same.normalized == 0.0


def test_drift_needs_the_same_samples() -> None:
    with pytest.raises(ConfigError, match="same samples"):
        pathway_drift(seqs_from([[1], [2]]), seqs_from([[1]]))
    empty = PathwaySequences(torch.zeros(0, 1, dtype=torch.int32), torch.zeros(0, dtype=torch.long), 4)
    assert math.isnan(pathway_drift(empty, empty).raw)
