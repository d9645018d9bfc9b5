"""Sinks against their real backends: JSONL files, offline W&B runs, TensorBoard event files."""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass

import pytest
from optional import need

from grokmon.errors import SinkError
from grokmon.sinks import (
    AccelerateSink, AlertInfo, CallbackSink, JsonlSink, Sink, SinkLike, TensorBoardSink, WandbSink, as_alert,
    read_jsonl,
)

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _strict_lines(path):
    """Every line parsed by a JSON parser that rejects NaN / Infinity."""
    def reject(c):
        raise ValueError(f"non-standard JSON constant {c}")
    return [json.loads(line, parse_constant=reject) for line in open(path, encoding="utf-8")]


# ---------------------------------------------------------------------------- alerts


@dataclass
class _Event:  # shaped like grokmon.alerts.AlertEvent (duck-typed)
    title: str
    message: str
    level: str
    step: int
    rule: str = "plateau"


@dataclass
class _StageEvent(_Event):
    kind: str = "stage"


def test_as_alert_accepts_strings_events_and_mappings():
    a = as_alert("grokmon: plateau", "flat", "warning", 300)
    assert a == AlertInfo("grokmon: plateau", "flat", "WARN", 300.0, None)
    e = as_alert(_Event("t", "m", "error", 40))
    assert (e.title, e.text, e.level, e.step, e.extra) == ("t", "m", "ERROR", 40, {"rule": "plateau"})
    m = as_alert({"title": "t", "text": "x", "level": "INFO", "wait_duration": 2})
    assert (m.text, m.level, m.wait_duration) == ("x", "INFO", 2.0)
    with pytest.raises(SinkError, match="alert level"):
        as_alert("t", "x", "loud")
    with pytest.raises(SinkError, match="title"):
        as_alert(object())


# ---------------------------------------------------------------------------- JSONL


def test_jsonl_round_trip_nan_inf_and_alerts(tmp_path):
    path = tmp_path / "out" / "grokmon.jsonl"
    sink = JsonlSink(path)
    assert isinstance(sink, SinkLike) and sink.name == "jsonl"
    sink.log({"grokmon/a": 1.5, "grokmon/nan": float("nan"), "grokmon/inf": float("-inf")}, step=10)
    sink.alert(_Event("grokmon: plateau", "flat", "WARN", 10))
    sink.log({"grokmon/a": 2}, step=20)
    # each line is flushed as written: readable before close
    assert [r["step"] for r in read_jsonl(path)] == [10, 10, 20]
    sink.close()
    lines = _strict_lines(path)
    assert lines[0]["metrics"] == {"grokmon/a": 1.5, "grokmon/nan": None, "grokmon/inf": None}
    assert lines[1]["alert"]["title"] == "grokmon: plateau" and lines[1]["alert"]["text"] == "flat"
    assert lines[1]["alert"]["rule"] == "plateau" and "metrics" not in lines[1]
    assert lines[2]["metrics"] == {"grokmon/a": 2.0}
    assert all(isinstance(r["time"], float) for r in lines)
    with pytest.raises(SinkError, match="closed"):
        sink.log({"x": 1}, step=30)


def test_jsonl_reopen_never_goes_backwards(tmp_path):
    path = tmp_path / "g.jsonl"
    with JsonlSink(path) as s:
        for step in (100, 200, 300):
            s.log({"m": step / 100}, step=step)
    s2 = JsonlSink(path)  # plain reopen: appends, last step 300
    assert s2.last_step == 300
    with pytest.warns(RuntimeWarning, match="not after step 300"):
        s2.log({"m": 9.0}, step=300)
    s2.log({"m": 9.0}, step=200)  # warned once, still dropped
    s2.log({"m": 4.0}, step=400)
    s2.close()
    assert s2.dropped == 2
    steps = [r["step"] for r in read_jsonl(path)]
    assert steps == [100, 200, 300, 400]


def test_jsonl_resume_step_truncates_lost_timeline(tmp_path):
    path = tmp_path / "g.jsonl"
    with JsonlSink(path) as s:
        for step in (100, 200, 300, 400):
            s.log({"m": float(step)}, step=step)
        s.alert("late alert", "from the lost part", step=400)
    # the run crashed after step 400 and resumes from the checkpoint at step 200
    with JsonlSink(path, resume_step=200) as s:
        assert s.last_step == 200
        with pytest.warns(RuntimeWarning):
            s.log({"m": -1.0}, step=200)  # re-probe of the checkpoint step: already in the file
        s.log({"m": 300.5}, step=300)
        s.log({"m": 400.5}, step=400)
    recs = read_jsonl(path)
    steps = [r["step"] for r in recs]
    assert steps == [100, 200, 300, 400]
    assert steps == sorted(set(steps))  # no duplicate, no backwards step
    assert [r["metrics"]["m"] for r in recs] == [100.0, 200.0, 300.5, 400.5]
    assert not any("alert" in r for r in recs)


def test_jsonl_half_written_last_line_is_repaired(tmp_path):
    path = tmp_path / "g.jsonl"
    with JsonlSink(path) as s:
        s.log({"m": 1.0}, step=1)
    with open(path, "a") as f:
        f.write('{"step": 2, "time": 0, "metr')  # crash mid-write
    assert [r["step"] for r in read_jsonl(path)] == [1]
    with JsonlSink(path) as s:
        s.log({"m": 3.0}, step=3)
    assert [r["step"] for r in _strict_lines(path)] == [1, 3]


def test_jsonl_corrupt_middle_line_raises(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text('{"step": 1, "metrics": {}}\nnot json\n{"step": 2, "metrics": {}}\n')
    with pytest.raises(SinkError, match="line 2"):
        JsonlSink(path)


def test_jsonl_rejects_non_scalar(tmp_path):
    with JsonlSink(tmp_path / "g.jsonl") as s, pytest.raises(SinkError, match="not a scalar"):
        s.log({"m": [1, 2]}, step=1)


# ---------------------------------------------------------------------------- W&B


@pytest.fixture
def wandb_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="grokmon-sinks")
    yield run, tmp_path
    if wandb.run is not None:
        wandb.finish()


def test_wandb_sink_logs_against_step_key_without_drops(wandb_run):
    from grokmon.sinks.wandb_file import read_wandb_run

    run, tmp_path = wandb_run
    sink = WandbSink()  # picks up wandb.run
    # the host (Trainer) has logged 6 rows: W&B's own _step is now ahead of the training step
    for gs in range(1, 7):
        run.log({"train/loss": 1.0 / gs, "train/global_step": gs})
    sink.log({"grokmon/pathway_distance": 3.5, "grokmon/nan": float("nan")}, step=2)
    sink.log({"grokmon/pathway_distance": 2.5, "grokmon/nan": 1.0}, step=4)
    sink.alert("grokmon: pathway distance plateau " + "x" * 80, "flat for 5 probes", "WARN", 120)
    sink.close()
    run.finish()

    rec = read_wandb_run(tmp_path / "wandb", wait=10)
    rows = [r for r in rec.history if "grokmon/pathway_distance" in r]
    assert [r["train/global_step"] for r in rows] == [2, 4]  # nothing dropped despite _step being ahead
    assert [r["grokmon/pathway_distance"] for r in rows] == [3.5, 2.5]
    # a key outside the headline goes to the diagnostics section
    assert math.isnan(rows[0]["grokmon_diag/nan"]) and rows[1]["grokmon_diag/nan"] == 1
    assert [r["_step"] for r in rows] == [6, 7]
    defined = [(m["name"], m["glob_name"], m["step_metric"]) for m in rec.metrics]
    assert ("train/global_step", None, None) in defined
    for glob in ("grokmon/*", "grokmon_group/*", "grokmon_diag/*"):  # every section on the host's step axis
        assert (None, glob, "train/global_step") in defined
    assert len(rec.alerts) == 1
    alert = rec.alerts[0]
    assert len(alert["title"]) == 64 and alert["title"].startswith("grokmon: pathway distance plateau")
    assert (alert["text"], alert["level"], alert["wait_duration"]) == ("flat for 5 probes", "WARN", 120.0)


def test_wandb_sink_own_steps_never_below_run_step(wandb_run):
    from grokmon.sinks.wandb_file import read_wandb_run

    run, tmp_path = wandb_run
    sink = WandbSink(run, step_key=None)
    sink.log({"grokmon/a": 1.0}, step=5)
    sink.log({"grokmon/b": 2.0}, step=5)  # same step: merges into one row (Accelerate semantics)
    sink.log({"grokmon/a": 3.0}, step=10)
    with pytest.warns(RuntimeWarning, match="below the run's current step 10"):
        sink.log({"grokmon/a": 9.0}, step=7)
    assert sink.dropped == 1
    run.finish()
    rec = read_wandb_run(tmp_path / "wandb", wait=10)
    rows = [r for r in rec.history if "grokmon_diag/a" in r or "grokmon_diag/b" in r]
    assert [(r["_step"], r.get("grokmon_diag/a"), r.get("grokmon_diag/b")) for r in rows] == [(5, 1, 2), (10, 3, None)]
    assert rec.metrics == []  # step_key=None defines no metrics


def test_wandb_sink_without_run_raises():
    wandb = pytest.importorskip("wandb")
    assert wandb.run is None
    with pytest.raises(SinkError, match=r"no active W&B run: call wandb.init\(\) first or pass run="):
        WandbSink().log({"grokmon/a": 1.0}, step=1)
    with pytest.raises(SinkError, match="suffix glob"):
        WandbSink(metric_glob="*/grokmon")


def _group_probe(step_codes, distance):
    """One probe of two groups: a stage code per group, a pathway distance per group (b's is NaN)."""
    (a, b) = step_codes
    return {"grokmon/pathway_distance": distance, "grokmon/group/a/pathway_distance": distance - 0.1,
            "grokmon/group/b/pathway_distance": float("nan"), "grokmon/group/a/probe_loss": 2.0 * distance,
            "grokmon/stage": 0.0, "grokmon/group/a/stage": float(a), "grokmon/group/b/stage": float(b)}


def test_wandb_sink_group_charts_summary_and_stage_table(wandb_run):
    from grokmon.sinks.wandb_file import read_wandb_run

    run, tmp_path = wandb_run
    for gs in range(1, 7):  # the host is ahead: W&B's _step is 6 when grokmon first logs
        run.log({"train/loss": 1.0 / gs, "train/global_step": gs})
    sink = WandbSink(run, charts_every=2)
    probes = {0: (3, 0), 2: (0, 3), 4: (3, 3)}   # a starts unknown (no fall seen): a start, not a change
    for step, codes in probes.items():
        sink.log(_group_probe(codes, 0.5 - step / 100), step=step)
    sink.alert(_Event("grokmon: plateau_pathway_distance plateau", "flat", "WARN", 4, rule="plateau_pd"))
    sink.alert(_Event("grokmon: plateau_pathway_distance plateau", "flat again", "WARN", 6, rule="plateau_pd"))
    sink.close()
    run.finish()

    rec = read_wandb_run(tmp_path / "wandb", wait=10)
    rows = [r for r in rec.history if any(k.startswith("grokmon/") for k in r)]
    assert all("train/global_step" in r for r in rows)  # every grokmon row on the host's step axis
    assert [r["_step"] for r in rows] == sorted(r["_step"] for r in rows) and rows[0]["_step"] >= 6
    assert [r["train/global_step"] for r in rows if "grokmon/pathway_distance" in r] == [0, 2, 4]

    # one line-series chart per metric with group keys; refreshed at probe 2 and at close
    assert set(rec.visualize) == {"grokmon/by_group/pathway_distance", "grokmon/by_group/probe_loss"}
    spec = rec.visualize["grokmon/by_group/pathway_distance"]["panel_config"]
    assert spec["panelDefId"] == "wandb/lineseries/v0"
    assert [r["train/global_step"] for r in rows if "grokmon/by_group/pathway_distance_table" in r] == [2, 4]
    chart = rec.table("grokmon/by_group/pathway_distance_table")
    assert chart["columns"] == ["step", "lineKey", "lineVal"]
    lines = {}
    for step, key, value in chart["data"]:
        lines.setdefault(key, []).append((step, round(value, 6)))
    assert lines == {"a": [(0, 0.4), (2, 0.38), (4, 0.36)],          # b is all NaN: no line
                     "all samples": [(0, 0.5), (2, 0.48), (4, 0.46)]}

    # the stage timeline: one row per stretch of a group in one stage
    timeline = rec.table("grokmon/stage_timeline")
    assert timeline["columns"] == ["group", "stage", "stage_code", "start_step", "end_step", "probes"]
    assert timeline["data"] == [["overall", "loss_falling", 0, 0, 4, 3], ["a", "unknown", 3, 0, 0, 1],
                                ["b", "loss_falling", 0, 0, 0, 1], ["a", "loss_falling", 0, 2, 2, 1],
                                ["b", "unknown", 3, 2, 4, 2], ["a", "unknown", 3, 4, 4, 1]]
    # the summary: stages now, transitions, alert firings
    assert rec.summary["grokmon/stages"] == {"overall": "loss_falling", "a": "unknown", "b": "unknown"}
    assert rec.summary["grokmon/stage_transitions"] == [
        {"step": 2, "group": "a", "previous": "unknown", "stage": "loss_falling"},
        {"step": 2, "group": "b", "previous": "loss_falling", "stage": "unknown"},
        {"step": 4, "group": "a", "previous": "loss_falling", "stage": "unknown"}]
    alerts = rec.summary["grokmon/alerts"]
    assert alerts["count"] == 2 and alerts["last"]["text"] == "flat again" and alerts["last"]["step"] == 6
    assert alerts["by_rule"] == {"plateau_pd": {"count": 2, "first_step": 4, "last_step": 6, "level": "WARN"}}
    assert [a["text"] for a in rec.alerts] == ["flat", "flat again"]  # run.alert as before
    with pytest.raises(SinkError, match="no history value 'nope' in .*: was the table logged under another key"):
        rec.table("nope")


def test_wandb_sink_charts_with_own_steps_never_go_below_the_run(wandb_run):
    from grokmon.sinks.wandb_file import read_wandb_run

    run, tmp_path = wandb_run
    sink = WandbSink(run, step_key=None)  # Accelerate-style: explicit step=
    sink.log(_group_probe((0, 0), 0.5), step=5)
    sink.log(_group_probe((3, 0), 0.4), step=10)
    run.log({"user/loss": 1.0}, step=20)  # the user moved on to step 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "step below the run's step" drop, from us or from W&B
        sink.close()
    run.log({"user/loss": 0.5}, step=21)
    run.finish()
    rec = read_wandb_run(tmp_path / "wandb", wait=10)
    assert [r["_step"] for r in rec.history] == [5, 10, 20, 21]
    closing = rec.history[2]
    assert closing["user/loss"] == 1 and "grokmon/by_group/pathway_distance_table" in closing  # merged into 20
    assert [row[:2] for row in rec.table("grokmon/stage_timeline")["data"]] == [
        ["overall", "loss_falling"], ["a", "loss_falling"], ["b", "loss_falling"], ["a", "unknown"]]
    assert rec.summary["grokmon/stage_transitions"] == [
        {"step": 10, "group": "a", "previous": "loss_falling", "stage": "unknown"}]


def test_wandb_sink_extras_off_and_close_after_finish(wandb_run):
    from grokmon.sinks.wandb_file import read_wandb_run

    run, tmp_path = wandb_run
    quiet = WandbSink(run, group_charts=False, stage_table=False, summary=False)
    quiet.log(_group_probe((3, 3), 0.5), step=1)
    quiet.close()  # nothing extra to log
    sink = WandbSink(run)
    sink.log({"grokmon/group/a/pathway_distance": 0.3}, step=2)  # a chart to log at close; no stage keys
    run.finish()
    with pytest.raises(SinkError, match=r"the W&B run finished before WandbSink.close\(\).*monitor.close\(\)"):
        sink.close()
    rec = read_wandb_run(tmp_path / "wandb", wait=10)
    assert rec.visualize == {} and "grokmon/stages" not in rec.summary
    with pytest.raises(SinkError, match="charts_every=0 must be a positive number of probes"):
        WandbSink(run, charts_every=0)


def test_wandb_sink_sections_uninformative_keys_and_alert_level(wandb_run):
    """Headline apart from diagnostics; a 0 stderr stays out of W&B (the 2-router consistency score never
    reaches a sink: the monitor leaves it out, test_hf_trainer); an INFO event (a group's stage change)
    reaches the summary but not run.alert, a WARN rule does."""
    from grokmon.sinks.wandb_file import read_wandb_run

    run, tmp_path = wandb_run
    sink = WandbSink(run)
    exact = {"grokmon/pathway_distance": 0.5, "grokmon/pathway_distance_stderr": 0.0,
             "grokmon/group/a/pathway_distance": 0.4, "grokmon/pathway_cosine": 0.9, "grokmon/probe_seconds": 0.1,
             "grokmon/alert/plateau": 0.0}
    sink.log(exact, step=1)
    sink.log({**exact, "grokmon/pathway_distance_stderr": 0.02, "grokmon/pathway_consistency": 0.3,
              "grokmon/pathway_consistency_undefined": 0.0, "grokmon/group/a/pathway_consistency": 0.2}, step=2)
    sink.alert(_StageEvent("grokmon: stage of a", "a: loss_falling -> grokking", "INFO", 2, rule="stage"))
    sink.alert(_Event("grokmon: plateau", "flat", "WARN", 2, rule="plateau"))
    sink.close()
    run.finish()
    rec = read_wandb_run(tmp_path / "wandb", wait=10)
    first, second = [r for r in rec.history if "grokmon/pathway_distance" in r]
    assert {k for k in first if k.startswith("grokmon")} == {
        "grokmon/pathway_distance", "grokmon/pathway_cosine", "grokmon/alert/plateau",
        "grokmon_group/a/pathway_distance", "grokmon_diag/probe_seconds"}
    assert second["grokmon/pathway_consistency"] == 0.3 and second["grokmon_group/a/pathway_consistency"] == 0.2
    assert second["grokmon_diag/pathway_distance_stderr"] == 0.02
    assert second["grokmon_diag/pathway_consistency_undefined"] == 0.0
    assert [a["title"] for a in rec.alerts] == ["grokmon: plateau"]          # the INFO stage event did not alert
    # the rule's alert is counted; the stage change is a transition (what grokmon report counts too)
    assert rec.summary["grokmon/alerts"]["count"] == 1
    assert set(rec.summary["grokmon/alerts"]["by_rule"]) == {"plateau"}
    with pytest.raises(SinkError, match="alert_level='LOUD' must be one of"):
        WandbSink(run, alert_level="LOUD")


# ---------------------------------------------------------------------------- TensorBoard


def test_tensorboard_sink_read_back(tmp_path):
    ea_mod = need("tensorboard.backend.event_processing.event_accumulator")
    sink = TensorBoardSink(tmp_path / "tb")
    sink.log({"grokmon/pathway_distance": 3.5, "grokmon/entropy": 0.25}, step=200)
    sink.log({"grokmon/pathway_distance": 2.75, "grokmon/entropy": 0.5}, step=400)
    sink.alert("grokmon: plateau", "flat", "WARN", step=400)
    sink.close()
    acc = ea_mod.EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"grokmon/pathway_distance", "grokmon/entropy"}
    dist = [(e.step, e.value) for e in acc.Scalars("grokmon/pathway_distance")]
    assert dist == [(200, 3.5), (400, 2.75)]
    assert [(e.step, e.value) for e in acc.Scalars("grokmon/entropy")] == [(200, 0.25), (400, 0.5)]
    texts = acc.Tensors("grokmon/alerts/text_summary")
    assert texts[0].step == 400
    assert b"grokmon: plateau" in texts[0].tensor_proto.string_val[0]


def _custom_scalars(logdir):
    """What TensorBoard's Custom Scalars tab shows for ``logdir``: its layout, and each chart's lines.

    Runs TensorBoard's own plugin (layout and per-regex scalar lookup) on the event files.
    """
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.custom_scalar import custom_scalars_plugin
    from tensorboard.plugins.scalar import scalars_plugin

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    plugins: dict = {}
    ctx = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux, plugin_name_to_instance=plugins,
                                data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)))
    plugins["scalars"] = scalars_plugin.ScalarsPlugin(ctx)
    plugin = custom_scalars_plugin.CustomScalarsPlugin(ctx)
    request = context.RequestContext()
    layout = json.loads(plugin.layout_impl(request, ""))  # the JSON the tab fetches
    charts = {}
    for category in layout["category"]:
        for chart in category["chart"]:
            lines = {}
            for pattern in chart["multiline"]["tag"]:
                found = plugin.scalars_impl(request, ".", pattern, "")
                assert found["regex_valid"], pattern
                for tag, events in found["tag_to_events"].items():
                    lines[tag] = [(step, round(value, 5)) for _, step, value in events]  # float32 in the file
            charts[(category["title"], chart["title"])] = lines
    return charts


def test_tensorboard_sink_puts_each_metrics_groups_on_one_chart(tmp_path):
    need("tensorboard.plugins.custom_scalar.custom_scalars_plugin")
    sink = TensorBoardSink(tmp_path / "tb")
    sink.log({"grokmon/probe_seconds": 0.1}, step=0)  # no group keys yet: no layout
    assert sink.layout is None
    sink.log({"grokmon/pathway_distance": 0.5, "grokmon/pathway_distance_raw": 4.0,
              "grokmon/group/a/pathway_distance": 0.4, "grokmon/group/b/pathway_distance": 0.6,
              "grokmon/group/a/probe_loss": 2.0}, step=100)
    layout = sink.layout
    # a group first seen later still lands on the chart (the layout selects tags by regex)
    sink.log({"grokmon/pathway_distance": 0.45, "grokmon/group/a/pathway_distance": 0.35,
              "grokmon/group/b/pathway_distance": 0.55, "grokmon/group/c/pathway_distance": 0.7,
              "grokmon/group/c/stage": 3.0}, step=200)
    assert sink.layout is layout  # written once
    sink.close()
    charts = _custom_scalars(tmp_path / "tb")
    assert set(charts) == {("grokmon by group", "grokmon/pathway_distance"),
                           ("grokmon by group", "grokmon/probe_loss")}
    dist = charts[("grokmon by group", "grokmon/pathway_distance")]
    assert dist == {"grokmon/pathway_distance": [(100, 0.5), (200, 0.45)],
                    "grokmon/group/a/pathway_distance": [(100, 0.4), (200, 0.35)],
                    "grokmon/group/b/pathway_distance": [(100, 0.6), (200, 0.55)],
                    "grokmon/group/c/pathway_distance": [(200, 0.7)]}  # not _raw, not stage
    assert charts[("grokmon by group", "grokmon/probe_loss")] == {"grokmon/group/a/probe_loss": [(100, 2.0)]}
    # the layout is one summary in the event file, as TensorBoard expects
    ea_mod = need("tensorboard.backend.event_processing.event_accumulator")
    acc = ea_mod.EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert len(acc.Tensors("custom_scalars__config__")) == 1


def test_tensorboard_sink_group_layout_off(tmp_path):
    ea_mod = need("tensorboard.backend.event_processing.event_accumulator")
    sink = TensorBoardSink(tmp_path / "tb", group_layout=False)
    sink.log({"grokmon/group/a/pathway_distance": 0.4}, step=1)
    sink.close()
    acc = ea_mod.EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert acc.Tags()["tensors"] == [] and sink.layout is None


def test_tensorboard_sink_borrowed_writer_is_not_closed(tmp_path):
    need("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    sink = TensorBoardSink(writer=writer)
    sink.log({"a": 1.0}, step=1)
    sink.close()
    writer.add_scalar("b", 2.0, 2)  # still usable: the sink did not close it
    writer.close()
    with pytest.raises(SinkError, match="exactly one"):
        TensorBoardSink()


# ---------------------------------------------------------------------------- callback


def test_callback_sink():
    seen, alerts = [], []
    sink = CallbackSink(lambda m, s: seen.append((s, m)), alert_fn=alerts.append, name="mine")
    metrics = {"grokmon/a": 1.0}
    sink.log(metrics, step=3)
    seen[0][1]["grokmon/a"] = 99.0  # the callback gets its own dict
    assert metrics == {"grokmon/a": 1.0} and seen[0][0] == 3 and sink.name == "mine"
    sink.alert("t", "x", "INFO")
    assert alerts == [AlertInfo("t", "x", "INFO")]

    def boom(m, s):
        raise KeyError("user bug")

    with pytest.raises(KeyError):  # sinks do not swallow: the monitor decides
        CallbackSink(boom).log({"a": 1.0}, step=1)
    with pytest.raises(SinkError):
        CallbackSink(42)


def test_base_sink_alert_is_noop_and_log_required():
    class Minimal(Sink):
        name = "min"

    Minimal().alert("t", "x")  # no alert channel: nothing happens
    with pytest.raises(NotImplementedError):
        Minimal().log({"a": 1.0}, step=1)


# ---------------------------------------------------------------------------- Accelerate


def test_accelerate_sink_with_real_wandb_tracker(tmp_path, monkeypatch):
    """Late background results are never dropped by W&B: no step=, plotted against grokmon_step."""
    pytest.importorskip("wandb")
    accelerate = pytest.importorskip("accelerate")
    from grokmon.sinks.wandb_file import read_wandb_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    acc = accelerate.Accelerator(log_with="wandb", project_dir=str(tmp_path))
    acc.init_trackers("grokmon-acc", init_kwargs={"wandb": {"mode": "offline", "dir": str(tmp_path)}})
    sink = AccelerateSink(acc)
    acc.log({"train/loss": 2.0}, step=10)
    sink.log({"grokmon/a": 1.0}, step=10)  # joins the user's row 10
    acc.log({"train/loss": 1.5}, step=12)
    sink.log({"grokmon/a": 2.0}, step=11)  # late: the user is at step 12 already
    sink.log({"grokmon/a": 3.0}, step=12)  # two results before the user's next log: one row each
    acc.log({"train/loss": 1.0}, step=13)  # the user's step= logs are never pushed behind W&B's counter
    sink.alert("grokmon: plateau", "flat", "WARN", 60)
    acc.end_training()
    rec = read_wandb_run(tmp_path / "wandb", wait=10)
    assert rec.column("train/loss") == [2.0, 1.5, 1.0]
    assert [(r["grokmon_step"], r["grokmon/a"]) for r in rec.history if "grokmon/a" in r] == [(10, 1), (11, 2), (12, 3)]
    assert next(m for m in rec.metrics if m.get("glob_name") == "grokmon/*")["step_metric"] == "grokmon_step"
    assert rec.alerts == [{"title": "grokmon: plateau", "text": "flat", "level": "WARN", "wait_duration": 60.0}]


def test_wandb_summary_and_the_report_tell_the_same_story(wandb_run, make_monitor, probe) -> None:
    """One monitored run, two sinks: the W&B summary's alert counts, current stages and stage changes
    equal what ``grokmon report`` reads from the JSONL record of the same run."""
    import torch
    from moe_models import tiny_model

    from grokmon import GroupStageTracker, PlateauRule
    from grokmon.report.data import load_run
    from grokmon.sinks.wandb_file import read_wandb_run

    run, tmp_path = wandb_run
    rule = PlateauRule("pathway_distance", patience=1, min_delta=10.0)   # no probe improves by 10: it fires
    monitor = make_monitor(every=1, async_metrics=False, sinks=[WandbSink(run)], alerts=[rule],
                           stage_tracker=GroupStageTracker(patience=2, min_delta=0.0))
    torch.manual_seed(0)
    model = tiny_model("olmoe")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ids = probe.input_ids
    for step in range(10):   # the probe loss falls while the model fits the probe, then the steps stop
        monitor.step(model, step)
        if step < 6:
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    monitor.close()
    run.finish()

    rec = read_wandb_run(tmp_path / "wandb", wait=10)
    report = load_run(monitor.jsonl_path)
    fired = [a for a in report.alerts if a.get("rule") == rule.name]
    assert fired and len([t for t in report.transitions if t.previous]) >= 2   # something to compare
    summary = rec.summary["grokmon/alerts"]
    assert summary["by_rule"][rule.name]["count"] == len(fired)
    assert summary["by_rule"][rule.name]["first_step"] == fired[0]["step"]
    assert summary["by_rule"][rule.name]["last_step"] == fired[-1]["step"]
    from grokmon.keys import stage_name
    assert rec.summary["grokmon/stages"] == {g: stage_name(points[-1][1]) for g, points in report.stages.items()}
    assert [(t["step"], t["group"], t["previous"], t["stage"]) for t in rec.summary["grokmon/stage_transitions"]] == [
        (t.step, t.group, t.previous, t.stage) for t in report.transitions if t.previous]
