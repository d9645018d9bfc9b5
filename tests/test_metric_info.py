"""Metric metadata declared once beside each metric, and used by the rules, the report and the monitor."""

from __future__ import annotations

import warnings

import pytest
import torch
from moe_models import tiny_model

from grokmon import DivergenceRule, MetricConfig, Pathways, PlateauRule, compute_metrics
from grokmon.errors import ConfigError
from grokmon.metrics.info import all_metric_info, metric_info
from grokmon.report.charts import direction_note


def _pathways(routers: int) -> Pathways:
    g = torch.Generator().manual_seed(0)
    weights = torch.rand(6, routers, 8, generator=g) ** 4
    return Pathways(mean_weights=weights / weights.sum(-1, keepdim=True), layers=tuple(range(routers)),
                    router_names=tuple(f"l{i}" for i in range(routers)), num_experts=8,
                    expert_counts=torch.randint(0, 9, (routers, 8), generator=g),
                    router_weights=torch.randn(routers, 8, 16, generator=g),
                    groups=torch.tensor([0, 0, 0, 1, 1, 1]), group_names=("a", "b"))


def test_every_key_compute_metrics_makes_is_declared() -> None:
    config = MetricConfig(per_layer=True, per_expert=True, extra_forms=("topk",))
    metrics = compute_metrics(_pathways(3), _pathways(3), config, loss_per_sample=torch.rand(6))
    undeclared = sorted(k for k in metrics if metric_info(k) is None)
    assert undeclared == []
    assert metric_info("grokmon/group/a/pathway_distance").better == "lower"
    assert metric_info("layer/1/expert/3/load").name == "load"
    assert metric_info("pathway_distance/topk").name == "pathway_distance"
    assert {i.name for i in all_metric_info().values() if i.min_moe_layers >= 3} == {"pathway_consistency"}


def test_rules_take_their_default_mode_from_the_metric() -> None:
    assert PlateauRule("pathway_distance").mode == "min"
    assert PlateauRule("grokmon/expert_load_entropy").mode == "max"
    assert PlateauRule("pathway_consistency").mode == "any"   # no fixed direction: fires when it stops moving
    assert PlateauRule("eval/loss").mode == "min"              # not grokmon's: the old default
    assert PlateauRule("pathway_consistency", mode="max").mode == "max"
    assert DivergenceRule("probe_loss", max_change=0.1).mode == "min"
    with pytest.raises(ConfigError, match="pathway_consistency has no fixed good direction"):
        DivergenceRule("pathway_consistency", max_change=0.1)


def test_the_report_says_which_way_is_good() -> None:
    assert direction_note("pathway_distance") == "lower is better"
    assert direction_note("expert_load_entropy") == "higher is better"
    assert direction_note("pathway_consistency") == "no fixed direction"


@pytest.mark.parametrize("layers", [2, 3])
def test_the_monitor_leaves_out_what_too_few_moe_layers_cannot_mean(make_monitor, layers: int) -> None:
    """With 2 MoE layers C_i is one cosine over itself (~1e-8 every probe): not logged, warned once."""
    model = tiny_model("olmoe", num_layers=layers)
    monitor = make_monitor(every=1, async_metrics=False, jsonl=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in (1, 2, 3):
            monitor.step(model, step)
    about = [w for w in caught if "pathway_consistency needs >= 3 MoE layers" in str(w.message)]
    keys = monitor.history[-1][1]
    assert "grokmon/pathway_cosine" in keys
    if layers == 2:
        assert len(about) == 1 and "this model has 2" in str(about[0].message)
        assert not any(k.endswith("pathway_consistency") for k in keys)
    else:
        assert about == [] and "grokmon/pathway_consistency" in keys and "grokmon/group/a/pathway_consistency" in keys
