"""Alert rules: plateau / threshold / divergence, smoothing, NaN handling, state, RuleSet."""

from __future__ import annotations

import json
import math
import statistics
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grokmon.alerts import AlertEvent, DivergenceRule, PlateauRule, RuleSet, ThresholdRule
from grokmon.errors import ConfigError, GrokmonError

KEY = "pathway_distance"


def run(rule, values, key=KEY, start=0):
    """Feed values (None = key missing) as probes every 200 steps; return all events."""
    events = []
    for i, v in enumerate(values, start=start):
        events += rule.update(200 * i, {} if v is None else {key: v})
    return events


def fire_probes(rule, values, **kw):
    return [e.probe for e in run(rule, values, **kw)]


def descend_then_flat(n_fall: int, n_total: int, step: float = 0.1, top: float = 1.0) -> list[float]:
    """Strictly falling for probes 0..n_fall-1, then flat at the last value (last improvement: n_fall-1)."""
    vals = [top - step * i for i in range(n_fall)]
    return vals + [vals[-1]] * (n_total - n_fall)


# ---- plateau ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("patience", [1, 3, 5])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_clean_plateau_fires_once_at_patience_after_last_improvement(patience, mode):
    k = 8
    vals = descend_then_flat(k, 40)
    if mode == "max":
        vals = [-v for v in vals]
    rule = PlateauRule(KEY, mode=mode, patience=patience, min_delta=0.0)
    events = run(rule, vals)
    assert [e.probe for e in events] == [k - 1 + patience]
    e = events[0]
    assert (e.kind, e.level, e.rule, e.metric, e.step) == ("plateau", "WARN", "plateau_pathway_distance", KEY,
                                                           200 * (k - 1 + patience))
    assert e.value == vals[-1]
    assert rule.active and rule.best == vals[k - 1]


def test_plateau_active_until_improvement_then_rearms():
    vals = descend_then_flat(5, 12) + [0.0] + [0.0] * 6  # improvement at probe 12, flat after
    rule = PlateauRule(KEY, patience=3, min_delta=0.0, threshold_mode="abs")
    active = []
    fires = []
    for i, v in enumerate(vals):
        fires += [e.probe for e in rule.update(i, {KEY: v})]
        active.append(rule.active)
    assert fires == [4 + 3, 12 + 3]
    assert active == [i >= 7 and i < 12 or i >= 15 for i in range(len(vals))]


@pytest.mark.parametrize("cooldown", [0, 1, 2, 4])
def test_cooldown_holds_the_next_alert_back(cooldown):
    # plateau fires at t1, an improvement right after it, then flat again
    patience, k = 3, 6
    t1 = k - 1 + patience
    vals = descend_then_flat(k, t1 + 1) + [-5.0] * 20
    rule = PlateauRule(KEY, patience=patience, min_delta=0.0, cooldown=cooldown)
    assert fire_probes(rule, vals) == [t1, t1 + max(cooldown, 1) + patience]


def test_repeat_refires_every_patience_probes_while_on_plateau():
    rule = PlateauRule(KEY, patience=3, min_delta=0.0, repeat=True)
    assert fire_probes(rule, descend_then_flat(4, 15)) == [6, 9, 12]


# ReduceLROnPlateau is an independent implementation of the same bookkeeping: with repeat=True our
# alerts fall exactly on its LR reductions (its patience counts one more bad epoch than ours).
@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.integers(1, 12), min_size=1, max_size=60),
    mode=st.sampled_from(["min", "max"]),
    tmode=st.sampled_from(["rel", "abs"]),
    tidx=st.integers(0, 2),
    patience=st.integers(1, 5),
    cooldown=st.integers(0, 3),
)
def test_plateau_repeat_matches_torch_reduce_lr_on_plateau(values, mode, tmode, tidx, patience, cooldown):
    torch = pytest.importorskip("torch")
    threshold = [0.0, 0.25, 0.5][tidx] if tmode == "rel" else [0.0, 1.0, 2.0][tidx]  # exact in binary
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=mode, factor=0.5, patience=patience - 1, threshold=threshold, threshold_mode=tmode,
        cooldown=cooldown, min_lr=0.0, eps=0.0)
    expected = []
    for i, v in enumerate(values):
        lr = opt.param_groups[0]["lr"]
        sched.step(float(v))
        if opt.param_groups[0]["lr"] < lr:
            expected.append(i)
    rule = PlateauRule(KEY, mode=mode, patience=patience, min_delta=threshold, threshold_mode=tmode,
                       cooldown=cooldown, repeat=True)
    assert fire_probes(rule, [float(v) for v in values]) == expected


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.integers(0, 9), min_size=1, max_size=60), patience=st.integers(1, 5),
       min_delta=st.sampled_from([0.0, 1.0, 2.0]))
def test_plateau_once_fires_exactly_when_run_since_last_improvement_reaches_patience(values, patience, min_delta):
    # independent characterisation (repeat=False, cooldown=0): improvements are judged against the
    # best value so far; the rule fires at t iff t is `patience` probes after the last improvement
    expected, best, last_imp = [], None, 0
    for t, v in enumerate(values):
        if best is None or v < best - min_delta:
            best, last_imp = v, t
        elif t - last_imp == patience:
            expected.append(t)
    rule = PlateauRule(KEY, patience=patience, min_delta=min_delta, threshold_mode="abs")
    assert fire_probes(rule, [float(v) for v in values]) == expected


def test_noise_within_min_delta_neither_fires_during_the_trend_nor_hides_the_plateau():
    k, patience = 20, 3
    trend = [10 - 0.1 * i + 0.02 * (-1) ** i for i in range(k)]            # every step improves by >= 0.06
    level = 10 - 0.1 * k
    plateau = [level + 0.02 * (-1) ** i for i in range(k, 60)]             # wiggles by 0.04 < min_delta
    rule = PlateauRule(KEY, patience=patience, min_delta=0.05, threshold_mode="abs")
    assert fire_probes(rule, trend + plateau) == [k + patience]
    # control: without min_delta the wiggle's lower point (probe k+1, k even) counts as an improvement
    rule0 = PlateauRule(KEY, patience=patience, min_delta=0.0)
    assert fire_probes(rule0, trend + plateau) == [k + 1 + patience]


def test_noisy_trend_with_some_non_improving_steps_does_not_fire():
    # steps of 0.1 +- 0.08: every other step improves by only 0.02 < min_delta, yet two steps do
    vals = [10 - 0.1 * i + 0.04 * (-1) ** i for i in range(80)]
    rule = PlateauRule(KEY, patience=2, min_delta=0.05, threshold_mode="abs")
    bad = []
    for i, v in enumerate(vals):
        assert rule.update(i, {KEY: v}) == []
        bad.append(rule.num_bad)
    assert max(bad) == 1  # some steps do not count as improvements, but never two in a row


def test_creep_smaller_than_min_delta_is_a_plateau():
    vals = [1.0 - 0.001 * i for i in range(10)]  # 0.1 % per probe, min_delta 1 % (the default)
    assert fire_probes(PlateauRule(KEY, patience=5), vals) == [5]
    assert fire_probes(PlateauRule(KEY, patience=5, min_delta=0.0), vals) == []


def test_rel_threshold_is_sign_correct_for_negative_values():
    # consistency (a mean cosine) can be negative: 1 % of |best| must still mean "better"
    rule = PlateauRule("pathway_consistency", mode="max", patience=2, min_delta=0.01)
    assert fire_probes(rule, [-1.0, -0.995, -0.991], key="pathway_consistency") == [2]
    rule = PlateauRule("pathway_consistency", mode="max", patience=2, min_delta=0.01)
    assert fire_probes(rule, [-1.0, -0.98, -0.96], key="pathway_consistency") == []


def test_mode_any_fires_when_the_curve_stops_moving_in_either_direction():
    up = [0.1 * i for i in range(6)] + [0.5] * 10
    down = [-v for v in up]
    for vals in (up, down):
        rule = PlateauRule("pathway_consistency", mode="any", patience=3, min_delta=0.0)
        assert fire_probes(rule, vals, key="pathway_consistency") == [5 + 3]
    # a curve that keeps moving, alternately up and down, never plateaus in mode "any"
    zigzag = [0.1 * (-1) ** i for i in range(30)]
    assert fire_probes(PlateauRule("c", mode="any", patience=2, min_delta=0.0), zigzag, key="c") == []
    assert fire_probes(PlateauRule("c", mode="min", patience=2, min_delta=0.0), zigzag, key="c") == [3]


# ---- smoothing -------------------------------------------------------------------------------------

def test_median_smoothing_one_low_outlier_neither_hides_nor_fakes_a_plateau():
    k, patience = 10, 4
    clean = descend_then_flat(k, 40)
    spiked = list(clean)
    spiked[k + 2] = clean[k] - 0.5  # one noisy low probe inside the plateau
    raw = fire_probes(PlateauRule(KEY, patience=patience, min_delta=0.0), spiked)
    assert raw == [k + 2 + patience]  # raw: the outlier is a new best, delaying the alert
    med_clean = fire_probes(PlateauRule(KEY, patience=patience, min_delta=0.0, smooth="median"), clean)
    med_spiked = fire_probes(PlateauRule(KEY, patience=patience, min_delta=0.0, smooth="median"), spiked)
    assert med_spiked == med_clean == [k + patience]  # median lags a falling curve by one probe

    improving = [1.0 - 0.05 * i for i in range(20)]
    improving[5] = 0.0  # one absurdly low probe in a curve that keeps improving
    assert fire_probes(PlateauRule(KEY, patience=3, min_delta=0.0), improving) == [8]  # false alarm raw
    assert fire_probes(PlateauRule(KEY, patience=3, min_delta=0.0, smooth="median"), improving) == []


@pytest.mark.parametrize("smooth", ["mean", "median", "ema"])
def test_smoothing_equals_judging_the_reference_smoothed_series(smooth):
    import random

    rng = random.Random(3)
    vals = [max(0.0, 1.0 - 0.02 * i) + rng.uniform(-0.03, 0.03) for i in range(120)]
    window, alpha = 4, 0.25
    ref, ema = [], None
    for i, v in enumerate(vals):
        ema = v if ema is None else alpha * v + (1 - alpha) * ema
        win = vals[max(0, i - window + 1): i + 1]
        ref.append({"mean": sum(win) / len(win), "median": statistics.median(win), "ema": ema}[smooth])
    smoothed = PlateauRule(KEY, patience=4, min_delta=0.005, smooth=smooth, smooth_window=window, ema_alpha=alpha)
    seen = []
    events = []
    for i, v in enumerate(vals):
        events += smoothed.update(i, {KEY: v})
        seen.append(smoothed.last_value)
    assert seen == pytest.approx(ref, rel=1e-12, abs=1e-12)
    plain = PlateauRule(KEY, patience=4, min_delta=0.005)
    assert [e.probe for e in events] == fire_probes(plain, ref)
    assert events  # the curve does flatten


def test_warmup_skips_the_rising_memorization_phase():
    rise = [0.3 + 0.02 * i for i in range(10)]      # distance rises while memorizing
    vals = rise + [0.5 - 0.02 * i for i in range(10)] + [0.3] * 10
    # raw: a false alarm while memorizing, and the real plateau (from probe 20) is never reported
    assert fire_probes(PlateauRule(KEY, patience=5, min_delta=0.0), vals) == [5]
    assert fire_probes(PlateauRule(KEY, patience=5, min_delta=0.0, warmup=10), vals) == [20 + 5]


# ---- threshold and divergence ----------------------------------------------------------------------

def test_threshold_below_fires_on_crossing_and_rearms_when_back():
    rule = ThresholdRule(KEY, below=0.3, level="info")
    vals = [0.5, 0.4, 0.29, 0.2, 0.25, 0.31, 0.35, 0.1, 0.1]
    events = run(rule, vals)
    assert [e.probe for e in events] == [2, 7]
    assert events[0].level == "INFO" and events[0].kind == "threshold" and events[0].value == 0.29


def test_threshold_above_with_hysteresis_and_first_probe():
    rule = ThresholdRule("probe_loss", above=2.0, hysteresis=0.5)
    vals = [3.0, 2.5, 1.9, 2.1, 1.4, 2.2]  # starts above: fires at 0; 1.9 is not back by 0.5; 1.4 is
    assert fire_probes(rule, vals, key="probe_loss") == [0, 5]


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.integers(1, 20), min_size=1, max_size=50), window=st.integers(1, 6),
       max_change=st.sampled_from([0.0, 0.5, 2.0, 5.0]), mode=st.sampled_from(["min", "max"]),
       change_mode=st.sampled_from(["abs", "rel"]))
def test_divergence_matches_bruteforce(values, window, max_change, mode, change_mode):
    vals = [float(v) for v in values]
    expected, was = [], False
    for t in range(len(vals)):
        prev = vals[max(0, t - window): t]
        if not prev:
            was = False
            continue
        ref = min(prev) if mode == "min" else max(prev)
        ch = (vals[t] - ref) if mode == "min" else (ref - vals[t])
        if change_mode == "rel":
            ch /= abs(ref)
        now = ch > max_change
        if now and not was:
            expected.append(t)
        was = now
    rule = DivergenceRule(KEY, max_change=max_change, window=window, mode=mode, change_mode=change_mode)
    assert fire_probes(rule, vals) == expected


def test_divergence_example_distance_rises_again():
    vals = [0.50, 0.45, 0.40, 0.38, 0.39, 0.45, 0.47, 0.40, 0.37]
    rule = DivergenceRule(KEY, max_change=0.15, window=3, change_mode="rel", level="ERROR")
    events = run(rule, vals)
    assert [e.probe for e in events] == [5]  # 0.45 vs min(0.40, 0.38, 0.39): +18 %
    assert events[0].level == "ERROR" and "18.4%" in events[0].text
    assert not rule.active  # 0.37 is back below the reference


# ---- NaN, missing keys -----------------------------------------------------------------------------

def test_nan_and_missing_values_are_skipped_and_counted():
    clean = descend_then_flat(5, 20)
    holes = []
    index_of = {}  # finite-value index -> probe index in the stream with holes
    for i, v in enumerate(clean):
        if i % 3 == 1:
            holes.append(math.nan)
        if i % 4 == 2:
            holes.append(None)
        index_of[i] = len(holes)
        holes.append(v)
    rule = PlateauRule(KEY, patience=3, min_delta=0.0)
    assert fire_probes(rule, holes) == [index_of[4 + 3]]
    assert rule.num_nonfinite == sum(1 for v in holes if v is not None and math.isnan(v))
    assert rule.num_values == len(clean) and rule.probes == len(holes)
    for v in (math.inf, -math.inf, math.nan):  # never an improvement, never a fire
        r = PlateauRule(KEY, patience=1, min_delta=0.0)
        assert run(r, [1.0, v, v, v]) == [] and r.best == 1.0


def test_check_finite_fires_once_per_run_of_non_finite_values():
    rule = PlateauRule(KEY, patience=10, check_finite=True, stop_training=True)
    events = run(rule, [1.0, math.nan, math.nan, 0.9, math.inf, 0.8])
    assert [(e.probe, e.kind, e.level, e.stop) for e in events] == [(1, "nonfinite", "ERROR", True),
                                                                  (4, "nonfinite", "ERROR", True)]
    assert events[0].to_dict()["value"] is None
    json.dumps(events[0].to_dict())


def test_values_of_other_numeric_types_and_bad_types():
    np = pytest.importorskip("numpy")
    rule = ThresholdRule(KEY, above=1.0)
    assert fire_probes(rule, [np.float32(0.5), np.float64(2.0)]) == [1]
    with pytest.raises(GrokmonError, match="not a number"):
        rule.update(0, {KEY: "high"})


# ---- events, names, prefix -------------------------------------------------------------------------

def test_event_fields_title_and_wait_duration():
    rule = PlateauRule("grokmon/group/a-very-long-domain-name-for-testing-titles/pathway_distance",
                       patience=1, min_delta=0.0, wait_duration=timedelta(minutes=10), stop_training=True)
    assert rule.metric == "group/a-very-long-domain-name-for-testing-titles/pathway_distance"
    assert rule.name == "plateau_group_a-very-long-domain-name-for-testing-titles_pathway_distance"
    ev = run(rule, [1.0, 1.0, 1.0, 0.5, 0.5], key=rule.metric)
    assert [e.probe for e in ev] == [1, 4]
    assert all(len(e.title) < 64 for e in ev) and ev[0].title == ev[1].title  # stable: W&B rate-limits per title
    assert ev[0].wait_duration == 600.0 and ev[0].stop
    assert isinstance(ev[0], AlertEvent) and json.loads(json.dumps(ev[0].to_dict()))["probe"] == 1


# ---- state -----------------------------------------------------------------------------------------

def _rules():
    return [
        PlateauRule(KEY, patience=3, min_delta=0.01, cooldown=2, smooth="median", check_finite=True, name="p"),
        PlateauRule("c", mode="any", patience=2, smooth="ema", ema_alpha=0.5, name="pc", warmup=2),
        ThresholdRule(KEY, below=0.4, hysteresis=0.05, smooth="mean", name="t"),
        DivergenceRule(KEY, max_change=0.1, window=3, name="d"),
    ]


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.floats(0.0, 1.0), st.just(math.nan), st.none()), min_size=2, max_size=40),
       data=st.data())
def test_state_dict_round_trip_mid_stream_gives_identical_decisions(values, data):
    split = data.draw(st.integers(0, len(values)))
    metrics = [{} if v is None else {KEY: v, "c": 1 - v} for v in values]
    whole = RuleSet(_rules())
    ev_whole = [e for i, m in enumerate(metrics) for e in whole.update(10 * i, m)]
    first = RuleSet(_rules())
    ev_split = [e for i, m in enumerate(metrics[:split]) for e in first.update(10 * i, m)]
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))  # strict JSON
    second = RuleSet(_rules())
    assert second.load_state_dict(state) == ([], [])
    for i, m in enumerate(metrics[split:], start=split):
        ev_split += second.update(10 * i, m)
        assert second.active_metrics() == whole_active(metrics[: i + 1])
    assert ev_split == ev_whole


def whole_active(prefix):
    rs = RuleSet(_rules())
    for i, m in enumerate(prefix):
        rs.update(10 * i, m)
    return rs.active_metrics()


def test_reset_forgets_everything():
    rule = PlateauRule(KEY, patience=2, min_delta=0.0)
    first = fire_probes(rule, descend_then_flat(3, 10))
    rule.reset()
    assert fire_probes(rule, descend_then_flat(3, 10)) == first == [4]


def test_load_state_of_another_rule_raises():
    a = PlateauRule(KEY, name="x")
    b = ThresholdRule(KEY, above=1.0, name="x")
    with pytest.raises(ConfigError, match="cannot load the state"):
        b.load_state_dict(a.state_dict())


# ---- RuleSet ---------------------------------------------------------------------------------------

def test_ruleset_collects_events_metrics_and_stop():
    rs = RuleSet([PlateauRule(KEY, patience=2, min_delta=0.0, name="plateau"),
                  ThresholdRule(KEY, below=0.5, name="low", stop_training=True)])
    assert rs.active_metrics() == {"alert/plateau": 0.0, "alert/low": 0.0}
    evs = [(i, e.rule) for i, v in enumerate([0.9, 0.9, 0.9, 0.4]) for e in rs.update(i, {KEY: v})]
    assert evs == [(2, "plateau"), (3, "low")]
    assert rs.active_metrics() == {"alert/plateau": 0.0, "alert/low": 1.0}  # 0.4 ended the plateau
    assert rs.stop_requested and "low" in rs and rs["low"].active and len(rs) == 2


def test_ruleset_duplicate_names_and_partial_state():
    with pytest.raises(ConfigError, match="two alert rules are named 'plateau_pathway_distance'"):
        RuleSet([PlateauRule(KEY), PlateauRule(KEY, patience=3)])
    with pytest.raises(ConfigError, match="PlateauRule, ThresholdRule"):
        RuleSet([lambda s, m: []])
    old = RuleSet([PlateauRule(KEY, name="a"), PlateauRule(KEY, name="gone")])
    run_set = [old.update(i, {KEY: 1.0}) for i in range(3)]
    new = RuleSet([PlateauRule(KEY, name="a"), PlateauRule(KEY, name="new")])
    res = new.load_state_dict(old.state_dict())
    assert res.missing == ["new"] and res.unexpected == ["gone"] and run_set
    assert new["a"].probes == 3 and new["new"].probes == 0


# ---- configuration errors --------------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: PlateauRule(KEY, patience=0), "patience=0 must be an integer >= 1"),
    (lambda: PlateauRule(KEY, mode="down"), "mode='down' is not one of"),
    (lambda: PlateauRule(KEY, threshold_mode="pct"), "threshold_mode='pct'"),
    (lambda: PlateauRule(KEY, min_delta=-0.1), "min_delta=-0.1 must be a finite number >= 0"),
    (lambda: PlateauRule(KEY, cooldown=-1), "cooldown=-1"),
    (lambda: PlateauRule(KEY, smooth="gauss"), "smooth='gauss'"),
    (lambda: PlateauRule(KEY, smooth="ema", ema_alpha=0.0), r"ema_alpha=0.0 must be in \(0, 1\]"),
    (lambda: PlateauRule(KEY, smooth_window=0), "smooth_window=0"),
    (lambda: PlateauRule(KEY, level="CRITICAL"), "level 'CRITICAL' is not one of INFO, WARN, ERROR"),
    (lambda: PlateauRule(KEY, name="bad name!"), "rule name 'bad name!'"),
    (lambda: PlateauRule(KEY, wait_duration=-5), "wait_duration=-5"),
    (lambda: PlateauRule(""), "metric=''"),
    (lambda: PlateauRule(KEY, warmup=1.5), "warmup=1.5"),
    (lambda: ThresholdRule(KEY), "exactly one of above"),
    (lambda: ThresholdRule(KEY, above=1.0, below=0.0), "exactly one of above"),
    (lambda: DivergenceRule(KEY, max_change=-1), "max_change=-1"),
    (lambda: DivergenceRule(KEY, max_change=0.1, window=0), "window=0"),
    (lambda: DivergenceRule(KEY, max_change=0.1, mode="any"), "mode='any'"),
])
def test_invalid_configs_raise_config_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_level_aliases():
    assert PlateauRule(KEY, level="warning").level == "WARN"
    assert PlateauRule(KEY, level="error").level == "ERROR"
