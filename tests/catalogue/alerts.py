"""The error catalogue's cases: alerts (see tests/test_error_catalogue.py)."""

from __future__ import annotations

import json

from grokmon.errors import ConfigError, GrokmonError

from catalogue.inputs import monitor
from catalogue.registry import case


@case("alerts-stage-key-template", ConfigError, "must contain '{g}' exactly once")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    GroupStageTracker(stage_key_template="stage")


@case("alerts-distance-template-missing", ConfigError, "distance_key_template is needed with loss_key_template")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    GroupStageTracker(distance_key_template=None)


@case("alerts-saved-stage-unknown", ConfigError, "the state is corrupt or newer")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    tracker = GroupStageTracker()
    tracker.update(0, {"probe_loss": 1.0, "pathway_distance": 0.5})
    state = json.loads(json.dumps(tracker.state_dict()))
    state["overall"]["stage"] = "forgetting"
    GroupStageTracker().load_state_dict(state)


@case("alerts-wait-duration-not-number", ConfigError, "must be seconds (a number) or a timedelta")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", wait_duration="soon")


@case("alerts-number-not-number", ConfigError, "must be a number >=")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", min_delta="small")


@case("alerts-count-below-minimum", ConfigError, "patience=0 must be an integer >= 1 (it counts probes)")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", patience=0)


@case("alerts-choice-not-allowed", ConfigError, "mode='down' is not one of 'min', 'max', 'any'")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", mode="down")


@case("alerts-divergence-no-direction", ConfigError, "DivergenceRule('pathway_consistency'): pathway_consistency has "
      "no fixed good direction, so moving 'the wrong way' is undefined: pass mode='min' or mode='max'")
def _(tmp, mp):
    from grokmon.alerts import DivergenceRule

    DivergenceRule("pathway_consistency", max_change=0.1)


@case("monitor-metric-needs-more-moe-layers", RuntimeWarning, "grokmon: pathway_consistency needs >= 3 MoE layers and "
      "this model has 2: not logged (it could mean nothing here; docs/metrics.md)")
def _(tmp, mp):
    from moe_models import tiny_model

    m = monitor(async_metrics=False)
    try:
        m.step(tiny_model("olmoe", num_layers=2), 1)
    finally:
        m.close()


@case("alerts-number-negative", ConfigError, "min_delta=-0.1 must be a finite number >= 0")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", min_delta=-0.1)


@case("alerts-ema-alpha", ConfigError, "ema_alpha=0.0 must be in (0, 1]; 1 means no smoothing")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", smooth="ema", ema_alpha=0.0)


@case("alerts-level", ConfigError, "alert level 'CRITICAL' is not one of INFO, WARN, ERROR (W&B's AlertLevel); pick "
      "one")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", level="CRITICAL")


@case("alerts-rule-name", ConfigError, "rule name 'bad name!' is not usable in a metric key: use letters, digits and "
      "_ . - /")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", name="bad name!")


@case("alerts-wait-duration-negative", ConfigError, "wait_duration=-5 must be a finite number of seconds >= 0")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", wait_duration=-5)


@case("alerts-metric-empty", ConfigError, "metric='' must be a non-empty metric key such as 'pathway_distance'")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("")


@case("alerts-threshold-above-and-below", ConfigError, "ThresholdRule needs exactly one of above=... or below=...; "
      "use two rules for a band")
def _(tmp, mp):
    from grokmon.alerts import ThresholdRule

    ThresholdRule("pathway_distance", above=1.0, below=0.0)


@case("alerts-update-not-a-number", GrokmonError, "is not a scalar: 'high' of type str is not a number; pass scalar "
      "metrics (dict[str, float])")
def _(tmp, mp):
    from grokmon.alerts import ThresholdRule

    ThresholdRule("pathway_distance", above=1.0).update(0, {"pathway_distance": "high"})


@case("alerts-duplicate-names", ConfigError, "two alert rules are named ... names key the metric alert/ ... and the "
      "saved state, so pass a distinct name=... to each")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule, RuleSet

    RuleSet([PlateauRule("pathway_distance"), PlateauRule("pathway_distance", patience=3)])


@case("alerts-state-of-another-rule", ConfigError, "cannot load the state of a ... give each rule its own name or drop "
      "the old state")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule, ThresholdRule

    ThresholdRule("pathway_distance", above=1.0, name="x").load_state_dict(
        PlateauRule("pathway_distance", name="x").state_dict())


@case("alerts-loss-key-template", ConfigError, "loss_key_template='group/probe_loss' must contain '{g}' exactly once, "
      "e.g. 'group/{g}/probe_loss'")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    GroupStageTracker(loss_key_template="group/probe_loss")


@case("alerts-tracker-nothing-to-track", ConfigError, "GroupStageTracker has nothing to track: give loss_key or "
      "loss_key_template (or both)")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    GroupStageTracker(loss_key=None, loss_key_template=None)


@case("alerts-tracker-min-drop", ConfigError, "min_drop=1.0 is a fraction of the peak distance and must be < 1")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    GroupStageTracker(min_drop=1.0)


@case("alerts-tracker-state-of-a-rule", ConfigError, "not a GroupStageTracker state (type='PlateauRule')")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker, PlateauRule

    GroupStageTracker().load_state_dict(PlateauRule("pathway_distance").state_dict())
