"""Plots: one PNG per metric with groups as lines, the expert-load heatmap, clear errors."""

from __future__ import annotations

import math

import pytest
from optional import need

from grokmon.errors import ConfigError
from grokmon.plots import plot_expert_load, plot_metrics, split_series

RECORDS = [
    (step, {
        "grokmon/pathway_distance": 1.0 - step / 1000,
        "group/math/pathway_distance": 0.5,
        "group/code/pathway_distance": math.nan,  # undefined values are left out, not plotted as 0
        "layer/0/expert/3/load": 0.25,
        "layer/1/expert/0/load": 0.75,
        "probe_loss": 2.0,
    })
    for step in (0, 100, 200)
]


def test_split_series_groups_and_drops_nan() -> None:
    overall, grouped = split_series(RECORDS)
    assert overall["pathway_distance"] == [(0, 1.0), (100, 0.9), (200, 0.8)]
    assert grouped["pathway_distance"] == {"math": [(0, 0.5), (100, 0.5), (200, 0.5)]}
    assert "layer/0/expert/3/load" not in overall


def test_plot_metrics_writes_one_png_per_metric(tmp_path) -> None:
    need("matplotlib")
    paths = plot_metrics(RECORDS, tmp_path, marks={"memorized": 100}, reference={"acc": [(0, 0.1), (200, 0.9)]})
    assert [p.name for p in paths] == ["pathway_distance.png", "probe_loss.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_expert_load_heatmap(tmp_path) -> None:
    need("matplotlib")
    path = plot_expert_load(RECORDS, tmp_path)
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    assert plot_expert_load([(0, {"pathway_distance": 1.0})], tmp_path) is None


def test_errors_name_the_problem(tmp_path) -> None:
    need("matplotlib")
    with pytest.raises(ConfigError, match="no records"):
        plot_metrics([], tmp_path)
    with pytest.raises(ConfigError, match="'nope' is not in the records"):
        plot_metrics(RECORDS, tmp_path, metrics=["nope"])
