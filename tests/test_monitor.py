"""GrokkingMonitor in a plain training loop: schedule, exact values, async delivery, faults, state."""

from __future__ import annotations

import math

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from child_env import child_env
import torch
from moe_models import random_probe as make_probe  # 8 samples of 12 tokens, groups a/b halves
from moe_models import tiny_model

import grokmon.results as results_module  # the metric job (compute_metrics) lives on the result path
from grokmon import GrokkingMonitor, MonitorConfig, MetricConfig, ProbeSet, ThresholdRule, capture_pathways, compute_metrics
from grokmon.errors import ConfigError, GrokmonError, ProbeError
from grokmon.metrics.info import drop_meaningless
from grokmon.sinks import CallbackSink


def train(model, steps: int, monitor: GrokkingMonitor | None = None, seed: int = 0, opt=None) -> list[float]:
    torch.manual_seed(seed)
    opt = opt or torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.randint(2, 128, (steps, 4, 12), generator=torch.Generator().manual_seed(1))
    losses = []
    for step in range(1, steps + 1):
        model.train()
        loss = model(input_ids=data[step - 1], labels=data[step - 1]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        if monitor is not None:
            monitor.step(model, step, optimizer=opt)
    return losses


def test_probes_only_on_schedule(tmp_path) -> None:
    model = tiny_model("olmoe")
    forwards = []
    model.register_forward_pre_hook(lambda m, a, k: forwards.append(m.training) and None, with_kwargs=True)
    monitor = GrokkingMonitor(make_probe(),
                              MonitorConfig(every=3, output_dir=tmp_path, async_metrics=False, batch_size=4))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    for step in (1, 2, 4, 5, 7):
        assert monitor.step(model, step, optimizer=opt) == {}
    assert forwards == []  # no forward at all off schedule
    first = monitor.step(model, 3)
    assert monitor.step(model, 3) == {}  # the same step twice probes once
    assert forwards == [False, False]  # 8 samples / batch 4 = two eval-mode forwards
    assert monitor.last_probe_step == 3 and [s for s, _ in monitor.history] == [3]
    assert first == monitor.history[0][1] and first["grokmon/probe_tokens"] == 8 * 12
    monitor.step(model, 6)
    assert len(forwards) == 4 and [s for s, _ in monitor.history] == [3, 6]
    monitor.close()


def test_values_equal_direct_capture(tmp_path) -> None:
    model = tiny_model("mixtral")
    probe = make_probe()
    config = MetricConfig(per_group=True, per_layer=True)
    monitor = GrokkingMonitor(probe, MonitorConfig(every=2, output_dir=tmp_path, metrics=config))
    train(model, 4, monitor)
    monitor.close()
    assert [s for s, _ in monitor.history] == [2, 4]
    direct = capture_pathways(model, probe.input_ids, probe.attention_mask, groups=probe.groups,
                              group_names=probe.group_names)
    expected = compute_metrics(direct.pathways, config=config)
    assert drop_meaningless(expected, direct.pathways.num_routers) == ["pathway_consistency"]  # 2 MoE layers
    last = monitor.history[-1][1]
    for key, value in expected.items():
        if key != "pathway_drift" and not key.startswith("pathway_drift"):
            got = last["grokmon/" + key]  # bit-identical: same capture, same function (NaN where C_i is undefined)
            assert got == value or (math.isnan(got) and math.isnan(value)), key
    assert last["grokmon/probe_loss"] == float(direct.loss_per_sample.mean())
    loss_b = direct.loss_per_sample[probe.groups == probe.group_names.index("b")]
    assert last["grokmon/group/b/probe_loss"] == float(loss_b.mean())
    assert "grokmon/pathway_drift" in last and "grokmon/pathway_drift" not in monitor.history[0][1]
    assert last["grokmon/probe_tokens"] == probe.num_tokens and last["grokmon/errors"] == 0
    assert last["grokmon/probe_seconds"] > 0 and last["grokmon/metric_seconds"] > 0
    assert "grokmon/stage" in last and "grokmon/group/a/stage" in last  # the stage tracker's metrics
    rows = [json.loads(line) for line in (tmp_path / "grokmon.jsonl").read_text().splitlines()]
    assert "config" in rows.pop(0)  # the configuration line first
    assert [r["step"] for r in rows] == [2, 4]
    assert rows[-1]["metrics"]["grokmon/pathway_distance"] == last["grokmon/pathway_distance"]


def test_async_results_arrive_later_with_their_step(tmp_path, monkeypatch) -> None:
    release = threading.Event()
    real = results_module.compute_metrics

    def slow(*args, **kwargs):
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(results_module, "compute_metrics", slow)
    seen = []
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=2, output_dir=tmp_path),
                              sinks=[CallbackSink(lambda m, s: seen.append((s, threading.current_thread().name)))])
    model = tiny_model("olmoe")
    start = time.perf_counter()
    assert monitor.step(model, 2) == {} and monitor.step(model, 3) == {}  # the loop does not wait
    assert time.perf_counter() - start < 5 and seen == []
    release.set()
    results = monitor.flush()
    assert [s for s, _ in results] == [2]
    assert seen == [(2, "grokmon-sink-callback")]  # sinks are written from their own thread, never training's
    # the thread that ran the metrics' torch ops is gone: its OpenMP team would slow training down
    assert not [t for t in threading.enumerate() if t.name.endswith("-job")]
    monitor.step(model, 4)
    monitor.close()
    assert [s for s, _ in monitor.history] == [2, 4]
    assert not [t for t in threading.enumerate() if t.name.startswith("grokmon-metrics")]


def test_probe_does_not_change_training(tmp_path) -> None:
    def dropout_model():
        model = tiny_model("olmoe")
        for module in model.modules():
            if hasattr(module, "attention_dropout"):
                module.attention_dropout = 0.3  # training consumes RNG; the probe (eval) must not
        return model

    baseline = train(dropout_model(), 5)
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path))
    with_monitor = train(dropout_model(), 5, monitor)
    monitor.close()
    assert len(monitor.history) == 5
    assert baseline == with_monitor  # bit-identical: no RNG use, no weight change, modes restored
    assert train(dropout_model(), 5, seed=1) != baseline  # the dropout really draws random numbers


class ScheduleFreeLike(torch.optim.SGD):
    """An optimizer with schedule-free's eval()/train() switch, recording when it is in eval mode."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.evaluating = False
        self.calls: list[str] = []

    def eval(self):
        self.evaluating = True
        self.calls.append("eval")

    def train(self):
        self.evaluating = False
        self.calls.append("train")


def test_model_mode_and_optimizer_restored(tmp_path) -> None:
    model = tiny_model("olmoe").train()
    model.model.layers[1].eval()  # a mixed mode must come back exactly as it was
    modes = {name: m.training for name, m in model.named_modules()}
    opt = ScheduleFreeLike(model.parameters(), lr=0.1, momentum=0.9)
    train(model, 1, opt=opt)  # momentum buffers exist
    model.model.layers[1].eval()
    opt.calls.clear()
    during = []
    model.register_forward_pre_hook(lambda m, a: during.append((m.training, opt.evaluating)) and None)
    state = {k: v.clone() for k, v in opt.state_dict()["state"][0].items()}
    weights = [p.detach().clone() for p in model.parameters()]
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False))
    monitor.step(model, 1, optimizer=opt)
    assert during == [(False, True)]  # eval-mode model, optimizer switched to eval for the forward
    assert opt.calls == ["eval", "train"] and not opt.evaluating
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert all(torch.equal(v, opt.state_dict()["state"][0][k]) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())


def test_failing_sink_is_dropped_and_jsonl_keeps_the_record(tmp_path) -> None:
    def broken(metrics, step):
        raise ConnectionError("W&B unreachable")

    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False),
                              sinks=[CallbackSink(broken)])
    model = tiny_model("olmoe")
    with pytest.warns(RuntimeWarning) as caught:
        for step in range(1, 6):
            monitor.step(model, step)
        monitor.flush(timeout=10.0)  # the sink's own thread has had every record
    messages = [str(w.message) for w in caught]
    assert sum("unreachable" in m and "detached" not in m for m in messages) == 1  # warned once
    assert sum("failed 3 times in a row" in m and "is detached" in m for m in messages) == 1
    assert len(monitor.sinks) == 1  # the broken one is gone after 3 failures
    assert monitor.errors == 3
    monitor.close()
    lines = (tmp_path / "grokmon.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 5 and json.loads(lines[-1])["metrics"]["grokmon/errors"] == 3


def test_probe_failure_warns_counts_and_training_goes_on(tmp_path) -> None:
    model = tiny_model("olmoe")
    with torch.no_grad():
        model.model.layers[1].mlp.gate.weight.fill_(float("nan"))
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path))
    with pytest.warns(RuntimeWarning, match="NaN"):
        assert monitor.step(model, 1) == {}
    assert monitor.errors == 1
    monitor.close()
    strict = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path / "s", on_error="raise"))
    with pytest.raises(GrokmonError, match="NaN"):
        strict.step(model, 1)
    strict.close()


@pytest.mark.parametrize("on_error", ["warn", "raise"])
def test_worker_exception_reaches_the_training_thread(tmp_path, monkeypatch, on_error) -> None:
    def explode(*args, **kwargs):
        raise RuntimeError("metric bug")

    monkeypatch.setattr(results_module, "compute_metrics", explode)
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path, on_error=on_error))
    monitor.step(tiny_model("olmoe"), 1)  # never raises inside the worker thread
    if on_error == "warn":
        with pytest.warns(RuntimeWarning, match="metric bug"):
            assert monitor.flush() == []
    else:
        with pytest.raises(RuntimeError, match="metric bug"):
            monitor.flush()
    assert monitor.errors == 1
    monitor.close()


def test_alert_goes_to_sinks_log_and_callback_and_stops(tmp_path, caplog) -> None:
    sink_alerts, fn_alerts = [], []
    rule = ThresholdRule("probe_loss", above=0.0, stop_training=True)
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=2, output_dir=tmp_path, async_metrics=False),
                              alerts=[rule],
                              sinks=[CallbackSink(lambda m, s: None, alert_fn=sink_alerts.append)],
                              on_alert=fn_alerts.append)
    with caplog.at_level(logging.WARNING, logger="grokmon"):
        train(tiny_model("olmoe"), 2, monitor)
    monitor.flush()  # sinks are called from their own threads
    assert monitor.should_stop and len(fn_alerts) == 1 and fn_alerts[0].step == 2
    assert [a.title for a in sink_alerts] == [fn_alerts[0].title]
    assert any(fn_alerts[0].title in r.getMessage() for r in caplog.records)
    assert monitor.history[-1][1][f"grokmon/alert/{rule.name}"] == 1.0
    monitor.close()


def test_state_round_trip_and_probe_fingerprint(tmp_path) -> None:
    rule = ThresholdRule("probe_loss", above=0.0, stop_training=True)
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=2, output_dir=tmp_path, async_metrics=False),
                              alerts=[rule])
    train(tiny_model("olmoe"), 2, monitor)
    assert monitor.should_stop  # the rule fired on the first probe and asks to stop
    state = json.loads(json.dumps(monitor.state_dict(include_pathways=False)))
    assert state["every"] == 2 and state["last_probe_step"] == 2 and state["errors"] == 0
    fresh = GrokkingMonitor(make_probe(), MonitorConfig(every=2, output_dir=tmp_path),
                            alerts=[ThresholdRule("probe_loss", above=0.0, stop_training=True)])
    fresh.load_state_dict(state)
    assert fresh.last_probe_step == 2 and fresh.should_stop and not fresh.should_probe(2) and fresh.should_probe(4)
    assert fresh.state_dict(include_pathways=False) == state
    other = GrokkingMonitor(make_probe(seed=9), MonitorConfig(every=2, output_dir=tmp_path / "o"))
    with pytest.raises(GrokmonError, match="probe changed"):
        other.load_state_dict(state)
    for m in (monitor, fresh, other):
        m.close()


def test_save_and_load_keep_drift_across_a_restart(tmp_path) -> None:
    model = tiny_model("olmoe")
    continuous = GrokkingMonitor(make_probe(), MonitorConfig(every=1, jsonl=False, async_metrics=False))
    continuous.step(model, 1)
    continuous.save(tmp_path / "monitor.pt")
    with torch.no_grad():
        model.model.layers[0].mlp.gate.weight.mul_(-1.0)  # training moved the router
    continuous.step(model, 2)
    resumed = GrokkingMonitor(make_probe(), MonitorConfig(every=1, jsonl=False, async_metrics=False))
    resumed.load(tmp_path / "monitor.pt")
    assert not resumed.should_probe(1)
    resumed.step(model, 2)
    drift = continuous.history[-1][1]["grokmon/pathway_drift"]
    assert drift > 0 and resumed.history[-1][1]["grokmon/pathway_drift"] == drift
    with pytest.raises(GrokmonError, match="probe changed"):
        GrokkingMonitor(make_probe(seed=3), MonitorConfig(every=1, jsonl=False)).load(tmp_path / "monitor.pt")


def test_unclosed_monitor_is_flushed_at_exit(tmp_path) -> None:
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[2]);"
        "from moe_models import tiny_model; from grokmon import GrokkingMonitor, MonitorConfig, ProbeSet;"
        "p = ProbeSet.from_token_ids(torch.randint(2, 128, (6, 10), generator=torch.Generator().manual_seed(0)));"
        "m = GrokkingMonitor(p, MonitorConfig(every=1, output_dir=sys.argv[1])); m.step(tiny_model('olmoe'), 1)"
    )
    env = child_env()
    subprocess.run([sys.executable, "-c", script, str(tmp_path), str(Path(__file__).parent)], check=True,
                   env=env, timeout=120)
    rows = [json.loads(line) for line in (tmp_path / "grokmon.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in rows] == [None, 1] and "config" in rows[0]


def test_config_is_the_one_way_in(tmp_path) -> None:
    """Settings come only through MonitorConfig; the monitor keeps a copy; a typo names the closest field."""
    import inspect

    from grokmon import GroupStageTracker

    assert list(inspect.signature(GrokkingMonitor).parameters) == [
        "probe", "config", "sinks", "alerts", "stage_tracker", "accelerator", "on_alert"]
    with pytest.raises(TypeError):
        GrokkingMonitor(make_probe(), every=2)  # no keyword settings beside the config
    with pytest.raises(ConfigError, match=r"MonitorConfig has no field 'output': did you mean output_dir\?"):
        MonitorConfig(output=str(tmp_path))
    with pytest.raises(ConfigError, match=r"MetricConfig has no field 'per_groups': did you mean per_group\?"):
        MetricConfig(per_groups=True)
    with pytest.raises(ConfigError, match="has no field 'output'"):
        MonitorConfig.from_dict({"output": "x"})
    for name in ("every", "batch_size", "output_dir", "baseline", "metric_config", "probe"):
        assert not hasattr(GrokkingMonitor, name), name  # read monitor.config.<field>
    config = MonitorConfig(every=3, jsonl=False, batch_size=8)
    tracker = GroupStageTracker(patience=7)
    monitor = GrokkingMonitor(make_probe(), config, stage_tracker=tracker)
    assert monitor.stage_tracker is tracker and monitor.config == config and monitor.config is not config
    monitor.config.batch_size = 4  # what an out-of-memory halving does: the user's config is untouched
    assert config.batch_size == 8
    monitor.close()
    assert GrokkingMonitor(make_probe(), MonitorConfig(jsonl=False, stages=False)).stage_tracker is None


def test_bad_configuration(tmp_path) -> None:
    with pytest.raises(ConfigError, match="every"):
        GrokkingMonitor(make_probe(), MonitorConfig(every=0))
    with pytest.raises(ConfigError, match="ProbeSet"):
        GrokkingMonitor(torch.zeros(3, 4), MonitorConfig(every=1))
    with pytest.raises(ConfigError, match="on_error"):
        GrokkingMonitor(make_probe(), MonitorConfig(every=1, on_error="ignore"))
    with pytest.raises(ConfigError, match="batch_size must be a positive number"):
        GrokkingMonitor(make_probe(), MonitorConfig(every=1, batch_size="32"))
    with pytest.raises(ConfigError, match="metrics must be a grokmon.MetricConfig"):
        GrokkingMonitor(make_probe(), MonitorConfig(every=1, metrics=["threshold"]))
    with pytest.raises(ConfigError, match=r"sinks\[0\] is a str, not a sink.*WandbSink"):
        GrokkingMonitor(make_probe(), MonitorConfig(every=1, jsonl=False), sinks=["wandb"])
    with pytest.raises(ConfigError, match="is a folder"):
        GrokkingMonitor(make_probe(), MonitorConfig(every=1, jsonl=tmp_path))
    with pytest.raises(ConfigError, match="stages must be True or False"):
        GrokkingMonitor(make_probe(), MonitorConfig(every=1, jsonl=False, stages="yes"))
    with pytest.raises(GrokmonError, match="cannot read a grokmon monitor state"):
        GrokkingMonitor(make_probe(), MonitorConfig(every=1, jsonl=False)).load(tmp_path / "missing.pt")
    one = CallbackSink(lambda m, s: None)  # a single sink and a dict of MetricConfig fields are accepted
    accepted = GrokkingMonitor(make_probe(), MonitorConfig(every=1, jsonl=False, metrics={"per_layer": True}),
                               sinks=one)
    assert accepted.sinks == [one] and accepted.config.metrics.per_layer
    accepted.close()
    model = tiny_model("olmoe", vocab_size=64)
    forwards = []
    model.register_forward_pre_hook(lambda m, a: forwards.append(1) and None)
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, jsonl=False, on_error="raise"))
    with pytest.raises(ProbeError, match="vocab"):
        monitor.step(model, 1)
    assert forwards == []  # refused before any forward


def test_probe_is_saved_with_the_run(tmp_path) -> None:
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path))
    assert ProbeSet.load(tmp_path / "probe.pt").fingerprint() == make_probe().fingerprint()
    monitor.close()
    with pytest.warns(RuntimeWarning, match="holds another probe"):
        other = GrokkingMonitor(make_probe(seed=5), MonitorConfig(every=1, output_dir=tmp_path))
    assert ProbeSet.load(tmp_path / "probe.pt").fingerprint() == make_probe().fingerprint()  # kept
    other.close()


def test_history_is_bounded_by_history_limit_and_the_jsonl_keeps_everything(make_monitor, olmoe) -> None:
    monitor = make_monitor(every=1, history_limit=3, async_metrics=False)
    for step in range(1, 8):
        monitor.step(olmoe, step)
    monitor.flush()
    assert [s for s, _ in monitor.history] == [5, 6, 7]
    assert monitor.last_metrics is monitor.history[-1][1]
    from grokmon.sinks import read_jsonl

    assert [r["step"] for r in read_jsonl(monitor.jsonl_path) if "metrics" in r] == list(range(1, 8))
