"""Injected faults: the training run goes on, the record shows the fault, on_error="raise" raises."""

from __future__ import annotations

import json
import math
import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest
from launch import signal_when_ready
import torch
from moe_models import tiny_model
from moe_models import random_probe as make_probe
from test_monitor import train

import grokmon.results as results_module  # the metric job (compute_metrics) lives on the result path
import grokmon.routing
from grokmon import GrokkingMonitor, MonitorConfig, WandbSink
from grokmon.errors import GrokmonError, RoutingError
from grokmon.sinks import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def rows(path: Path) -> dict[int, dict]:
    return {r["step"]: r["metrics"] for r in read_jsonl(path) if "metrics" in r}


def grokmon_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("grokmon")]


# ------------------------------------------------------------------------------------ sinks


def test_wandb_backend_raising_warns_once_drops_it_and_training_goes_on(tmp_path, monkeypatch) -> None:
    wandb = pytest.importorskip("wandb")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="grokmon-faults")
    try:
        def unreachable(*args, **kwargs):
            raise ConnectionError("api.wandb.ai unreachable")

        monkeypatch.setattr(run, "log", unreachable)
        monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False),
                                  sinks=[WandbSink(run=run, step_key="step")])
        reference = train(tiny_model("olmoe"), 5)
        with pytest.warns(RuntimeWarning) as caught:
            losses = train(tiny_model("olmoe"), 5, monitor)
        monitor.close()
    finally:
        monkeypatch.undo()
        run.finish()
    messages = [str(w.message) for w in caught]
    assert sum("unreachable" in m and "dropped" not in m for m in messages) == 1  # warned once
    assert sum("sink wandb failed 3 times" in m and "dropped" in m for m in messages) == 1
    assert not any(isinstance(s, WandbSink) for s in monitor.sinks)
    assert losses == reference  # the training run is untouched
    assert sorted(rows(tmp_path / "grokmon.jsonl")) == [1, 2, 3, 4, 5]  # the JSONL record is whole
    assert monitor.errors == 3


def test_a_sole_failing_sink_is_dropped_too(tmp_path) -> None:
    from grokmon.sinks import CallbackSink

    def broken(metrics, step):
        raise OSError("disk full")

    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, jsonl=False, async_metrics=False),
                              sinks=[CallbackSink(broken)])
    with pytest.warns(RuntimeWarning, match="disk full"):
        train(tiny_model("olmoe"), 5, monitor)
    assert monitor.sinks == [] and monitor.errors == 3 and [s for s, _ in monitor.history] == [1, 2, 3, 4, 5]
    monitor.close()


# ------------------------------------------------------------------------------------ routing


def test_nan_router_logits_log_a_nan_row_and_count(tmp_path) -> None:
    model = tiny_model("olmoe")
    gate = model.model.layers[1].mlp.gate
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False))
    monitor.step(model, 1)
    saved = gate.weight.detach().clone()
    with torch.no_grad():
        gate.weight.fill_(float("nan"))
    with pytest.warns(RuntimeWarning, match="NaN"):
        monitor.step(model, 2)
    with torch.no_grad():
        gate.weight.copy_(saved)
    monitor.step(model, 3)
    monitor.close()
    record = rows(tmp_path / "grokmon.jsonl")
    assert sorted(record) == [1, 2, 3]
    assert record[2]["grokmon/pathway_distance"] is None and record[2]["grokmon/probe_loss"] is None  # NaN
    assert record[2]["grokmon/errors"] == 1 and record[3]["grokmon/errors"] == 1
    assert record[1]["grokmon/pathway_distance"] == record[3]["grokmon/pathway_distance"]


@pytest.mark.parametrize("on_error", ["warn", "raise"])
def test_a_router_returning_nothing(tmp_path, on_error) -> None:
    model = tiny_model("olmoe").train()
    model.model.layers[0].mlp.gate.forward = lambda *args, **kwargs: None
    monitor = GrokkingMonitor(make_probe(),
                              MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False, on_error=on_error))
    if on_error == "raise":
        with pytest.raises(GrokmonError):
            monitor.step(model, 1)
    else:
        with pytest.warns(RuntimeWarning, match="probe failed"):
            monitor.step(model, 1)
        monitor.flush()  # the JSONL is written from its own thread
        assert rows(tmp_path / "grokmon.jsonl")[1]["grokmon/errors"] == 1
    assert monitor.errors == 1
    assert model.training  # mode restored after the failure
    monitor.close()


@pytest.mark.parametrize("on_error", ["warn", "raise"])
def test_expert_count_changing_between_probes_makes_drift_invalid(tmp_path, on_error) -> None:
    monitor = GrokkingMonitor(make_probe(),
                              MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False, on_error=on_error))
    monitor.step(tiny_model("olmoe", num_experts=8), 1)
    monitor.step(tiny_model("olmoe", num_experts=8, seed=1), 2)
    assert math.isfinite(monitor.history[-1][1]["grokmon/pathway_drift"])
    if on_error == "raise":
        with pytest.raises(GrokmonError, match="layout changed"):
            monitor.step(tiny_model("olmoe", num_experts=4), 3)
    else:
        with pytest.warns(RuntimeWarning, match="8 experts.*-> 2 routers x 4 experts"):
            monitor.step(tiny_model("olmoe", num_experts=4), 3)
        last = monitor.history[-1][1]
        assert math.isnan(last["grokmon/pathway_drift"]) and last["grokmon/errors"] == 1
        assert math.isfinite(last["grokmon/pathway_distance"])  # the rest of the probe is valid
        monitor.step(tiny_model("olmoe", num_experts=4, seed=2), 4)  # same layout again: drift is back
        assert math.isfinite(monitor.history[-1][1]["grokmon/pathway_drift"])
    monitor.close()


# ------------------------------------------------------------------------------------ memory


def _oom_above(limit: int, sizes: list[int]):
    real = grokmon.routing.capture_pathways

    def capture(*args, batch_size, **kwargs):
        sizes.append(batch_size)
        if batch_size > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, batch_size=batch_size, **kwargs)

    return capture


def test_out_of_memory_retries_with_smaller_batches(tmp_path, monkeypatch) -> None:
    sizes: list[int] = []
    monkeypatch.setattr(grokmon.routing, "capture_pathways", _oom_above(2, sizes))
    monitor = GrokkingMonitor(make_probe(),
                              MonitorConfig(every=2, output_dir=tmp_path, async_metrics=False, batch_size=8))
    reference = train(tiny_model("olmoe"), 4)
    with pytest.warns(RuntimeWarning, match="out of memory probing with batch_size=8; retrying with 4"):
        losses = train(tiny_model("olmoe"), 4, monitor)
    assert sizes == [8, 4, 2, 2]  # the size that worked is kept for the next probe
    assert monitor.config.batch_size == 2 and monitor.errors == 0 and losses == reference
    monkeypatch.undo()
    exact = GrokkingMonitor(make_probe(), MonitorConfig(every=2, jsonl=False, async_metrics=False, batch_size=8))
    train(tiny_model("olmoe"), 4, exact)
    for (step, got), (_, want) in zip(monitor.history, exact.history):
        assert got["grokmon/pathway_distance"] == pytest.approx(want["grokmon/pathway_distance"], abs=1e-9), step
    monitor.close()
    exact.close()


def test_out_of_memory_at_batch_size_one_skips_the_probe(tmp_path, monkeypatch) -> None:
    sizes: list[int] = []
    monkeypatch.setattr(grokmon.routing, "capture_pathways", _oom_above(0, sizes))
    monitor = GrokkingMonitor(make_probe(),
                              MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False, batch_size=4))
    with pytest.warns(RuntimeWarning, match="even with batch_size=1"):
        monitor.step(tiny_model("olmoe"), 1)
    assert sizes == [4, 2, 1] and monitor.errors == 1
    monitor.flush()
    assert rows(tmp_path / "grokmon.jsonl")[1]["grokmon/pathway_distance"] is None
    monitor.close()


def test_out_of_memory_in_the_metrics_retries_on_the_cpu(tmp_path, monkeypatch) -> None:
    real, calls = results_module.compute_metrics, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(results_module, "compute_metrics", flaky)
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False))
    with pytest.warns(RuntimeWarning, match="computed on the CPU"):
        monitor.step(tiny_model("olmoe"), 1)
    assert monitor.errors == 0 and math.isfinite(monitor.history[-1][1]["grokmon/pathway_distance"])
    monitor.close()


# ------------------------------------------------------------------------------------ interrupts


def test_keyboard_interrupt_during_a_probe_leaves_no_hooks_and_no_threads(tmp_path) -> None:
    left_by_others = set(grokmon_threads())   # a stalled sink of an earlier test is never joined, by design
    model = tiny_model("olmoe").train()
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path))
    monitor.step(model, 1)
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    def interrupt(module, args, output):
        raise KeyboardInterrupt

    handle = model.model.layers[1].mlp.experts.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        monitor.step(model, 2)
    handle.remove()
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks_before
    assert model.training
    monitor.close()
    time.sleep(0.1)
    assert set(grokmon_threads()) - left_by_others == set()
    assert sorted(rows(tmp_path / "grokmon.jsonl")) == [1]  # what was computed before the interrupt is kept


SIGTERM_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from moe_models import tiny_model
    from grokmon import GrokkingMonitor, MonitorConfig, ProbeSet
    ids = torch.randint(2, 128, (8, 12), generator=torch.Generator().manual_seed(0))
    monitor = GrokkingMonitor(ProbeSet.from_token_ids(ids), MonitorConfig(every=1, output_dir={out!r}))
    monitor.step(tiny_model("olmoe"), 1)        # metrics computed in the background, not yet written
    while monitor.results._worker.pending and not monitor.results._worker._results.qsize():
        time.sleep(0.01)
    print("probed", flush=True)
    time.sleep(120)                             # a long training step, preempted
""")


def test_sigterm_writes_the_finished_results_before_the_process_ends(tmp_path) -> None:
    script = tmp_path / "job.py"
    script.write_text(SIGTERM_SCRIPT.format(tests=str(ROOT / "tests"), out=str(tmp_path / "out")))
    returncode, _, _ = signal_when_ready([script], timeout=60)
    assert returncode == -signal.SIGTERM  # the default action still ends the process
    record = [json.loads(x) for x in (tmp_path / "out" / "grokmon.jsonl").read_text().splitlines()]
    assert "config" in record.pop(0)  # the configuration line, written when the monitor opened the record
    assert [r["step"] for r in record] == [1] and record[0]["metrics"]["grokmon/pathway_distance"] > 0
