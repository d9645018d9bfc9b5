"""The paper's memorized-sample selection (issue 11): tracker, stratified pairing, live and resumed.

References are plain Python written here: a loop over probes for the memorization rule, and a
loop over every pair for the stratified distance.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from moe_models import build_monitor, tiny_model
from references import lev
from moe_models import random_probe as make_probe
from test_monitor import train

from grokmon import GrokkingMonitor, MetricConfig
from grokmon.errors import ConfigError
from grokmon.metrics import MemorizationTracker, compute_metrics
from grokmon.metrics.distance import pathway_distance
from grokmon.pathways import Pathways, PathwaySequences, pathway_sequences


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), by hand."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _reference_since(losses: list[list[float]], groups: list[int], steps: list[int], fraction: float,
                     tolerance: float) -> list[list[int]]:
    since = [-1] * len(groups)
    previous = None
    out = []
    for step, loss in zip(steps, losses):
        eps = {g: _quantile([loss[i] for i in range(len(loss)) if groups[i] == g], fraction) for g in set(groups)}
        for i, value in enumerate(loss):
            ok = value <= eps[groups[i]] and previous is not None and abs(value - previous[i]) <= tolerance
            since[i] = (since[i] if since[i] >= 0 else step) if ok else -1
        previous = loss
        out.append(list(since))
    return out


def test_tracker_matches_the_rule_written_out() -> None:
    g = torch.Generator().manual_seed(0)
    n, probes = 24, 12
    groups = [i % 3 for i in range(n)]
    # losses that fall at sample-specific rates and settle, with jitter
    rate = torch.rand(n, generator=g) * 0.5 + 0.1
    losses = [[float(3.0 * math.exp(-rate[i] * t) + 0.03 * torch.rand(1, generator=g)) for i in range(n)]
              for t in range(probes)]
    steps = [100 * t for t in range(probes)]
    want = _reference_since(losses, groups, steps, 0.25, 0.05)
    tracker = MemorizationTracker(0.25, 0.05)
    for t in range(probes):
        got = tracker.update(steps[t], torch.tensor(losses[t]), torch.tensor(groups))
        assert got.tolist() == want[t], t
    assert any(s >= 0 for s in want[-1]) and any(s > 0 and s != want[-1][0] for s in want[-1])


def test_tracker_state_round_trips_through_json() -> None:
    import json

    a, b = MemorizationTracker(0.5, 0.1), MemorizationTracker(0.5, 0.1)
    a.update(0, torch.tensor([1.0, 2.0, 0.5, 3.0]))
    a.update(10, torch.tensor([1.0, 2.0, 0.5, 3.0]))
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    nxt = torch.tensor([1.02, 0.1, 0.5, 3.0])
    # eps = 0.76: sample 1 is low but moved 1.9, sample 0 is no longer low; sample 2 stays since step 10
    assert a.update(20, nxt).tolist() == b.update(20, nxt).tolist() == [-1, -1, 10, -1]


def test_bad_selection_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="selection must be"):
        MetricConfig(selection="memorised")
    with pytest.raises(ConfigError, match="memorized_fraction"):
        MetricConfig(selection="memorized", memorized_fraction=0.0)
    with pytest.raises(ConfigError, match="memorized_tolerance"):
        MetricConfig(memorized_tolerance=-1)
    w = torch.softmax(torch.randn(4, 2, 4), -1)
    p = Pathways(mean_weights=w, layers=(0, 1), router_names=("a", "b"), num_experts=4,
                 expert_counts=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ConfigError, match="needs memorized_since"):
        compute_metrics(p, config=MetricConfig(selection="memorized"))


def test_distance_pairs_within_group_and_memorization_step() -> None:
    g = torch.Generator().manual_seed(4)
    n = 30
    rows = [torch.randint(0, 6, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]
    groups = [i % 2 for i in range(n)]
    since = [[-1, 100, 200][i % 3] for i in range(n)]
    width = max(map(len, rows))
    seqs = PathwaySequences(torch.tensor([r + [-1] * (width - len(r)) for r in rows]),
                            torch.tensor([len(r) for r in rows]), 6)
    r = pathway_distance(seqs, torch.tensor(groups), group_names=("x", "y"), strata=torch.tensor(since))
    pairs = [(i, j) for i, j in itertools.combinations(range(n), 2)
             if groups[i] == groups[j] and since[i] == since[j] >= 0]
    want = sum(lev(rows[i], rows[j]) for i, j in pairs) / len(pairs)
    assert r.raw == pytest.approx(want) and r.num_pairs == len(pairs)
    x_pairs = [(i, j) for i, j in pairs if groups[i] == 0]
    assert r.per_group["x"].raw == pytest.approx(sum(lev(rows[i], rows[j]) for i, j in x_pairs) / len(x_pairs))


def _memorized_monitor(path, **kw) -> GrokkingMonitor:
    config = MetricConfig(selection="memorized", memorized_fraction=0.5, memorized_tolerance=10.0)
    return build_monitor(make_probe(12), every=1, output_dir=path, metrics=config, async_metrics=False,
                         on_error="raise", **kw)


def test_live_selection_logs_counts_and_survives_a_resume(tmp_path) -> None:
    model = tiny_model("mixtral")
    straight = _memorized_monitor(tmp_path / "a")
    train(model, 1, straight)  # step 1: first probe, nothing settled yet
    first = straight.history[-1][1]
    assert first["grokmon/memorized_samples"] == 0 and math.isnan(first["grokmon/pathway_distance"])
    state = straight.state_dict()
    train(model, 1, None, seed=1)
    straight.step(model, 2)
    # a monitor restored from the state after step 1 gives the same step-2 values
    resumed = _memorized_monitor(tmp_path / "b")
    resumed.load_state_dict(state)
    resumed.step(model, 2)
    a, b = straight.history[-1][1], resumed.history[-1][1]
    assert a["grokmon/memorized_samples"] == b["grokmon/memorized_samples"] == 6  # half of 12, all settled
    assert a["grokmon/group/a/memorized_samples"] + a["grokmon/group/b/memorized_samples"] == 6
    assert a["grokmon/pathway_distance"] == b["grokmon/pathway_distance"]
    # and the value is the distance over the memorized samples, paired by group and step
    since = straight.results.memorization.since  # the tracker moved to the result path
    p = pathway_sequences(straight._previous, "threshold")
    direct = pathway_distance(p, straight._previous.groups, strata=since)
    assert a["grokmon/pathway_distance"] == direct.normalized
    # a monitor without the state starts over: nothing is settled at its first probe
    fresh = _memorized_monitor(tmp_path / "c")
    fresh.step(model, 2)
    assert fresh.history[-1][1]["grokmon/memorized_samples"] == 0
    for m in (straight, resumed, fresh):
        m.close()


def test_selection_needs_the_probe_loss(tmp_path) -> None:
    with pytest.raises(ConfigError, match="compute_loss=True"):
        _memorized_monitor(tmp_path, compute_loss=False)
