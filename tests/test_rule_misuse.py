"""Misused alert rules are named, not silent: a single rule is accepted, a typo'd metric warns."""

from __future__ import annotations

import warnings

import pytest
from moe_models import tiny_model
from moe_models import random_probe as make_probe
from test_monitor import train

from grokmon import GrokkingMonitor, MonitorConfig, PlateauRule
from grokmon.alerts import RuleSet


def test_a_single_rule_is_accepted_like_a_list(tmp_path) -> None:
    rule = PlateauRule("pathway_distance", patience=1)
    assert list(RuleSet(rule)) == [rule]
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False),
                              alerts=PlateauRule("probe_loss"))
    assert [r.name for r in monitor.rules] == ["plateau_probe_loss"]
    monitor.close()


def test_a_rule_on_a_metric_that_never_appears_warns_with_the_closest_keys() -> None:
    rules = RuleSet([PlateauRule("pathway_distnace"), PlateauRule("pathway_distance")])
    with pytest.warns(RuntimeWarning, match=r"'pathway_distnace'.*closest: pathway_distance") as caught:
        rules.update(0, {"pathway_distance": 0.5, "probe_loss": 2.0})
    assert len(caught) == 1   # the rule on a logged key does not warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rules.update(1, {"pathway_distance": 0.5, "probe_loss": 2.0})   # once, at the first probe only


def test_the_warning_reaches_a_user_of_the_monitor(tmp_path) -> None:
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False),
                              alerts=[PlateauRule("group/c/pathway_distance")])
    with pytest.warns(RuntimeWarning, match=r"group/c/pathway_distance.*closest: group/b/pathway_distance, group/a/pathway_distance"):
        train(tiny_model("mixtral"), 1, monitor)
    monitor.close()
