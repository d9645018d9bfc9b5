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
    with pytest.raises(ConfigError, match="no metric values to plot"):
        plot_metrics([], tmp_path)
    with pytest.raises(ConfigError, match="'nope' is not in the records"):
        plot_metrics(RECORDS, tmp_path, metrics=["nope"])


class _Counted(dict):
    """A record's metrics that count how many are alive at once."""
    alive = peak = 0

    def __init__(self, *args) -> None:
        super().__init__(*args)
        _Counted.alive += 1
        _Counted.peak = max(_Counted.peak, _Counted.alive)

    def __del__(self) -> None:
        _Counted.alive -= 1


def test_plots_stream_their_records_one_at_a_time(tmp_path) -> None:
    """``grokmon report --pngs`` hands the plots a one-pass stream of a record that may not fit in
    memory: they keep the points they draw, never the records, and the heatmap is the last load."""
    need("matplotlib")

    def stream():
        for i in range(300):
            m = {"pathway_distance": 1.0 / (i + 1), "group/a/probe_loss": float(i)}
            if i <= 150:    # per-expert keys stop after step 1500: the heatmap must show step 1500
                m.update({f"layer/{layer}/expert/{e}/load": (i + e) / 1000 for layer in range(2) for e in range(8)})
            yield 10 * i, _Counted(m)

    _Counted.alive = _Counted.peak = 0
    written = plot_metrics(stream(), tmp_path / "curves")
    assert [p.name for p in written] == ["pathway_distance.png", "probe_loss.png"] and _Counted.peak <= 2
    _Counted.alive = _Counted.peak = 0
    streamed = plot_expert_load(stream(), tmp_path / "streamed")
    assert _Counted.peak <= 2
    last = [(s, dict(m)) for s, m in stream() if s == 1500]
    assert streamed.read_bytes() == plot_expert_load(last, tmp_path / "held").read_bytes()
