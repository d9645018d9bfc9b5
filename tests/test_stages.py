"""GroupStageTracker: loss_falling -> grokking -> saturated per group, from probe loss and pathway distance."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grokmon.alerts import STAGE_CODES, GroupStageTracker
from grokmon.errors import ConfigError

P = 3  # patience used throughout


def group_stream(loss_last_improve: int, dist_fall_end: int, n: int, patience: int = P):
    """A memorize -> grok -> saturate group and the stage each probe must get.

    Loss falls until ``loss_last_improve`` then stays flat, so it counts as converged at
    ``conv = loss_last_improve + patience``. The distance rises until ``conv`` (memorization),
    falls until ``dist_fall_end``, then stays flat: saturated ``patience`` probes later.
    """
    conv = loss_last_improve + patience
    loss = [5.0 - 0.2 * min(i, loss_last_improve) for i in range(n)]
    dist = []
    for i in range(n):
        if i <= conv:
            dist.append(0.5 + 0.01 * i)
        else:
            dist.append(0.5 + 0.01 * conv - 0.02 * (min(i, dist_fall_end) - conv))
    expected = ["unknown" if i == 0 else "loss_falling" if i < conv else "grokking" if i < dist_fall_end + patience
                else "saturated" for i in range(n)]  # no fall seen at the first probe: not yet falling
    return loss, dist, expected


def feed(tracker, streams, n, extra=None):
    """streams: {group or None: (loss, dist)}; returns per-probe stages and all events."""
    stages, events = [], []
    for i in range(n):
        m = dict(extra(i)) if extra else {}
        for g, (loss, dist) in streams.items():
            lk, dk = ("probe_loss", "pathway_distance") if g is None else (f"group/{g}/probe_loss",
                                                                          f"group/{g}/pathway_distance")
            if loss[i] is not None:
                m[lk] = loss[i]
            if dist[i] is not None:
                m[dk] = dist[i]
        events += tracker.update(100 * i, m)
        stages.append({**tracker.stages(), None: tracker.overall_stage})
    return stages, events


def transitions(expected):
    return [(i, expected[i - 1], expected[i]) for i in range(1, len(expected)) if expected[i] != expected[i - 1]]


def test_asynchronous_groups_memorize_grok_and_saturate_at_the_right_probes():
    n = 70
    la, da, ea = group_stream(5, 20, n)      # group A groks early
    lb, db, eb = group_stream(25, 50, n)     # group B memorizes longer and groks later
    lo, do, eo = group_stream(12, 35, n)     # the whole probe set
    t = GroupStageTracker(claims="distance", patience=P, min_delta=0.0)
    stages, events = feed(t, {"math": (la, da), "code": (lb, db), None: (lo, do)}, n)
    assert [s["math"] for s in stages] == ea
    assert [s["code"] for s in stages] == eb
    assert [s[None] for s in stages] == eo
    assert ea.index("grokking") < eb.index("grokking") and ea.index("saturated") < eb.index("saturated")

    got = {g: [(e.probe, e.extra["previous"], e.extra["stage"]) for e in events if e.extra["group"] == g]
           for g in ("math", "code", None)}
    assert got == {"math": transitions(ea), "code": transitions(eb), None: transitions(eo)}
    e = next(e for e in events if e.extra["group"] == "code" and e.extra["stage"] == "grokking")
    assert (e.kind, e.level, e.rule, e.metric, e.step) == ("stage", "INFO", "stage", "group/code/stage", 100 * 28)
    assert e.value == 1.0 and len(e.title) < 64 and "code" in e.title and not e.stop
    assert t.stage_metrics() == {"stage": 2.0, "group/math/stage": 2.0, "group/code/stage": 2.0}


def test_stage_metrics_codes_follow_stages():
    n = 30
    la, da, ea = group_stream(3, 10, n)
    t = GroupStageTracker(claims="distance", patience=P, min_delta=0.0, loss_key=None)
    for i in range(n):
        t.update(i, {"group/a/probe_loss": la[i], "group/a/pathway_distance": da[i]})
        assert t.stage_metrics() == {"group/a/stage": float(STAGE_CODES[ea[i]])}
    assert t.overall_stage is None
    assert STAGE_CODES == {"loss_falling": 0, "grokking": 1, "saturated": 2, "unknown": 3}


def test_saturated_group_goes_back_to_grokking_when_distance_falls_again():
    n = 40
    loss, dist, _ = group_stream(3, 10, n)
    dist = dist[:20] + [dist[19] - 0.05] + [dist[19] - 0.05] * (n - 21)  # a second fall at probe 20
    t = GroupStageTracker(claims="distance", patience=P, min_delta=0.0)
    _, events = feed(t, {"g": (loss, dist)}, n)
    assert [(e.probe, e.extra["stage"]) for e in events] == [(1, "loss_falling"), (6, "grokking"), (13, "saturated"),
                                                             (20, "grokking"), (23, "saturated")]


def test_min_drop_keeps_a_group_grokking_until_the_distance_has_fallen():
    n = 30
    loss = [2.0 - 0.1 * min(i, 4) for i in range(n)]            # converged at 4 + P = 7
    dist = [0.6] * 15 + [0.5] * (n - 15)                        # flat after convergence, then -17 %
    flat = GroupStageTracker(claims="distance", patience=P, min_delta=0.0)
    _, ev = feed(flat, {"g": (loss, dist)}, n)
    # without min_drop a flat distance is a plateau: "saturated" at 10, back to grokking at 15
    assert [(e.probe, e.extra["stage"]) for e in ev] == [(1, "loss_falling"), (7, "grokking"), (10, "saturated"),
                                                         (15, "grokking"), (18, "saturated")]
    strict = GroupStageTracker(claims="distance", patience=P, min_delta=0.0, min_drop=0.1)
    _, ev = feed(strict, {"g": (loss, dist)}, n)
    assert [(e.probe, e.extra["stage"]) for e in ev] == [(1, "loss_falling"), (7, "grokking"), (18, "saturated")]


def test_distance_before_convergence_does_not_count():
    # the distance falls early (while memorizing) and is flat after: the fall before convergence
    # is not generalization, so the group saturates patience probes after convergence
    n = 25
    loss = [3.0 - 0.3 * min(i, 6) for i in range(n)]  # converged at 9
    dist = [0.9 - 0.05 * min(i, 8) for i in range(n)]  # last fall at 8, before convergence
    _, ev = feed(GroupStageTracker(claims="distance", patience=P, min_delta=0.0), {"g": (loss, dist)}, n)
    assert [(e.probe, e.extra["stage"]) for e in ev] == [(1, "loss_falling"), (9, "grokking"), (12, "saturated")]


def test_consistency_keys_do_not_influence_the_stage():
    n = 40
    la, da, ea = group_stream(4, 15, n)
    wild = lambda i: {"pathway_consistency": (-1) ** i * i, "group/a/pathway_consistency": math.sin(i)}  # noqa: E731
    s1, e1 = feed(GroupStageTracker(claims="distance", patience=P, min_delta=0.0), {"a": (la, da)}, n)
    s2, e2 = feed(GroupStageTracker(claims="distance", patience=P, min_delta=0.0), {"a": (la, da)}, n, extra=wild)
    assert s1 == s2 and e1 == e2 and [s["a"] for s in s1] == ea


def test_missing_and_nan_values_leave_the_stream_unchanged():
    n = 30
    la, da, ea = group_stream(4, 12, n)
    # insert probes where the group's loss is NaN and its distance missing: every stage is delayed
    loss, dist, where = [], [], []
    for i in range(n):
        if i % 5 == 2:
            loss.append(math.nan)
            dist.append(None)
        where.append(len(loss))
        loss.append(la[i])
        dist.append(da[i])
    stages, _ = feed(GroupStageTracker(claims="distance", patience=P, min_delta=0.0), {"a": (loss, dist)}, len(loss))
    assert [stages[where[i]]["a"] for i in range(n)] == ea


def test_groups_are_discovered_from_keys_when_they_appear():
    t = GroupStageTracker(claims="distance", patience=P)
    t.update(0, {"group/a/probe_loss": 1.0})
    assert t.stages() == {"a": "unknown"}   # one probe: no fall seen yet
    t.update(1, {"group/a/probe_loss": 0.5, "group/b/c/probe_loss": 2.0, "group/x/pathway_distance": 0.3,
                 "layer/0/probe_loss": 0.1})
    assert t.stages() == {"a": "loss_falling", "b/c": "unknown"}  # distance alone does not start a group
    assert t.overall_stage is None


def test_smoothing_removes_one_noisy_loss_probe():
    n = 30
    la, da, ea = group_stream(6, 16, n)
    noisy = list(la)
    noisy[12] = la[12] - 1.0  # one noisy low probe after convergence would look like progress
    raw = feed(GroupStageTracker(claims="distance", patience=P, min_delta=0.0), {"a": (noisy, da)}, n)[0]
    med = feed(GroupStageTracker(claims="distance", patience=P, min_delta=0.0, smooth="median"), {"a": (noisy, da)}, n)[0]
    ref = feed(GroupStageTracker(claims="distance", patience=P, min_delta=0.0, smooth="median"), {"a": (la, da)}, n)[0]
    assert med == ref
    assert [s["a"] for s in raw] == ea  # the loss had already converged: a converged group stays converged
    # and before convergence the same outlier delays convergence without smoothing, not with it
    noisy_early = list(la)
    noisy_early[7] = la[7] - 1.0
    raw_e = feed(GroupStageTracker(claims="distance", patience=P, min_delta=0.0), {"a": (noisy_early, da)}, n)[0]
    med_e = feed(GroupStageTracker(claims="distance", patience=P, min_delta=0.0, smooth="median"), {"a": (noisy_early, da)}, n)[0]
    assert [s["a"] for s in raw_e].index("grokking") == 7 + P
    assert med_e == ref


@settings(max_examples=40, deadline=None)
@given(split=st.integers(0, 60), smooth=st.sampled_from([None, "median", "ema"]),
       claims=st.sampled_from(["none", "distance"]))
def test_state_dict_round_trip_gives_identical_stages_and_events(split, smooth, claims):
    n = 60
    la, da, _ = group_stream(5, 20, n)
    lb, db, _ = group_stream(25, 45, n)
    streams = {"a": (la, da), "b": (lb, db), None: (lb, da)}
    kw = dict(patience=P, min_delta=0.001, smooth=smooth, min_drop=0.05, claims=claims)
    whole_stages, whole_events = feed(GroupStageTracker(**kw), streams, n)

    first = GroupStageTracker(**kw)
    part = {g: (l[:split], d[:split]) for g, (l, d) in streams.items()}
    s1, e1 = feed(first, part, split)
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    second = GroupStageTracker(**kw)
    second.load_state_dict(state)
    rest = {g: (l[split:], d[split:]) for g, (l, d) in streams.items()}
    s2, e2 = [], []
    for i in range(n - split):
        m = {}
        for g, (l, d) in rest.items():
            m["probe_loss" if g is None else f"group/{g}/probe_loss"] = l[i]
            m["pathway_distance" if g is None else f"group/{g}/pathway_distance"] = d[i]
        e2 += second.update(100 * (split + i), m)
        s2.append({**second.stages(), None: second.overall_stage})
    assert s1 + s2 == whole_stages
    assert e1 + e2 == whole_events
    assert second.probes == n


@pytest.mark.parametrize("kw, message", [
    (dict(loss_key_template="group/probe_loss"), "must contain '{g}' exactly once"),
    (dict(distance_key_template="group/{g}/{g}"), "distance_key_template"),
    (dict(loss_key=None, loss_key_template=None), "nothing to track"),
    (dict(patience=0), "patience=0"),
    (dict(distance_patience=0), "distance_patience=0"),
    (dict(min_delta=-1), "min_delta=-1"),
    (dict(min_drop=1.0), "min_drop=1.0"),
    (dict(threshold_mode="pct"), "threshold_mode='pct'"),
    (dict(smooth="gauss"), "smooth='gauss'"),
    (dict(level="LOUD"), "level 'LOUD'"),
])
def test_invalid_tracker_configs_raise(kw, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        GroupStageTracker(**kw)


def test_load_rejects_other_states():
    with pytest.raises(ConfigError, match="not a GroupStageTracker state"):
        GroupStageTracker().load_state_dict({"type": "PlateauRule"})


def test_by_default_a_converged_group_is_unknown_whatever_its_distance_does():
    """The default claims nothing about generalization: loss_falling, then unknown, never grokking/saturated."""
    n = 40
    for fall_end in (10, 25, 39):   # the distance falls briefly, long, or until the end
        loss, dist, expected = group_stream(3, fall_end, n)
        stages, events = feed(GroupStageTracker(patience=P, min_delta=0.0), {"g": (loss, dist)}, n)
        want = ["loss_falling" if e == "loss_falling" else "unknown" for e in expected]
        assert [s["g"] for s in stages] == want
        assert [(e.extra["previous"], e.extra["stage"]) for e in events] == [("unknown", "loss_falling"),
                                                                            ("loss_falling", "unknown")]
        assert events[1].title == "grokmon: group g probe loss converged (generalization unknown)"
        assert events[1].value == 3.0


@pytest.mark.parametrize("claims", ["none", "distance"])
def test_loss_falling_only_while_the_probe_loss_falls(claims):
    """Issue 24: a probe loss that rises from the start never says loss_falling (it said memorizing, then 'converged')."""
    rising = [5.2 + 0.3 * i for i in range(12)]     # 5.2, 5.5, ..., 8.5: never converged, never grokking
    t = GroupStageTracker(claims=claims)
    for i, loss in enumerate(rising):
        events = t.update(100 * i, {"group/g/probe_loss": loss, "group/g/pathway_distance": 0.5})
        assert t.stages() == {"g": "unknown"} and events == []
    # a fall, then a rise above the lowest value before convergence, then back below it
    t = GroupStageTracker(claims=claims, patience=5, min_delta=0.01)
    seen = []
    for i, loss in enumerate([3.0, 2.0, 1.0, 1.5, 2.5, 0.9, 0.9]):
        events = t.update(100 * i, {"group/g/probe_loss": loss})
        seen.append(t.stages()["g"])
        if i == 3:
            assert events[0].title == "grokmon: group g probe loss not falling (stage unknown)"
    assert seen == ["unknown", "loss_falling", "loss_falling", "unknown", "unknown", "loss_falling", "loss_falling"]


def test_claims_must_be_known():
    with pytest.raises(ConfigError, match="claims must be one of"):
        GroupStageTracker(claims="accuracy")
