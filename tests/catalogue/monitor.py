"""The error catalogue's cases: monitor (see tests/test_error_catalogue.py)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch import nn

from grokmon.config import MonitorConfig
from grokmon.errors import ConfigError, GrokmonError, SinkError, UnsafeFileError
from grokmon.probe import ProbeSet

from catalogue.inputs import ids, moe, monitor, tiny_probe
from catalogue.registry import case
from optional import need


@case("monitor-batch-size", ConfigError, "batch_size must be a positive number of probe samples per forward")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    GrokkingMonitor(tiny_probe(), MonitorConfig(every=1, jsonl=False, batch_size=0))


@case("monitor-load-not-a-state-file", GrokmonError, "is not a grokmon monitor state file")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    torch.save({"x": 1}, tmp / "state.pt")
    monitor = GrokkingMonitor(tiny_probe(), MonitorConfig(every=1, jsonl=False))
    try:
        monitor.load(tmp / "state.pt")
    finally:
        monitor.close()


@case("monitor-hf-callback-without-monitor", ConfigError, "GrokkingHFCallback needs a GrokkingMonitor, got NoneType: "
      "pass GrokkingHFCallback(monitor)")
def _(tmp, mp):
    from grokmon.integrations import hf

    hf.GrokkingHFCallback(None)


@case("monitor-hf-callback-not-a-monitor", ConfigError, "GrokkingHFCallback needs a GrokkingMonitor, got str")
def _(tmp, mp):
    from grokmon.integrations import hf

    hf.GrokkingHFCallback("x")


@case("monitor-hf-state-not-grokmon", ConfigError, "is not a grokmon callback state file")
def _(tmp, mp):
    from grokmon.integrations.hf import STATE_FILE, read_callback_state

    (tmp / STATE_FILE).write_text(json.dumps({"format": "something else"}))
    read_callback_state(tmp)


@case("monitor-hf-state-newer", ConfigError, "was written by a newer grokmon")
def _(tmp, mp):
    from grokmon.integrations.hf import _FORMAT, STATE_FILE, read_callback_state

    (tmp / STATE_FILE).write_text(json.dumps({"format": _FORMAT, "version": 99, "monitor_state": {}}))
    read_callback_state(tmp)


@case("monitor-lightning-missing", GrokmonError, "GrokkingLightningCallback needs Lightning")
def _(tmp, mp):
    from grokmon.integrations.lightning import lightning_module

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        mp.setitem(sys.modules, name, None)  # a None entry makes the import fail
    lightning_module()


@case("monitor-step-not-integer", ConfigError, "step must be an integer optimizer step, got '10' (str): pass int(step)")
def _(tmp, mp):
    m = monitor()
    try:
        m.step(moe(), "10")
    finally:
        m.close()


def step_backwards(on_error: str) -> None:
    m = monitor(async_metrics=False, on_error=on_error)
    model = moe()
    try:
        for step in (0, 4, 0):  # a counter that restarts
            m.step(model, step)
        assert m.history[-1][0] == 5, "grokmon's own count goes on after the last probed step"
    finally:
        m.close()


@case("monitor-step-backwards-warns", RuntimeWarning, "the step went backwards, from 4 to 0 (a counter that restarts "
      "each epoch?) ... this step is logged as 5")
def _(tmp, mp):
    step_backwards("warn")


@case("monitor-step-negative", ConfigError, "step must be >= 0, got -1: pass the optimizer step (0 before the first "
      "update)")
def _(tmp, mp):
    m = monitor()
    try:
        m.step(moe(), -1)
    finally:
        m.close()


@case("monitor-step-after-close", RuntimeWarning, "grokmon: step after close failed, training goes on (counted in "
      "grokmon/errors): GrokmonError('monitor.step() was called after monitor.close(): nothing is probed or "
      "recorded; make a new GrokkingMonitor for a new run')")
def _(tmp, mp):
    m = monitor()
    m.close()
    m.step(moe(), 1)


@case("monitor-run-folder-unwritable", RuntimeWarning, "grokmon: record failed, training goes on (counted in "
      "grokmon/errors)")
def _(tmp, mp):
    (tmp / "file").write_text("")
    m = monitor(jsonl=True)
    try:
        m.set_run_root(tmp / "file" / "grokmon")  # a folder cannot be made under a file
        m.step(moe(), 1)
    finally:
        m.close()


@case("monitor-step-backwards-raise", ConfigError, "the step went backwards, from 4 to 0 (a counter that restarts "
      "each epoch?)")
def _(tmp, mp):
    step_backwards("raise")


@case("monitor-jsonl-under-a-file", SinkError, "cannot create the folder of the JSONL record ... pass a path in a "
      "writable folder (jsonl=... / output_dir=...), or jsonl=False")
def _(tmp, mp):
    (tmp / "file").write_text("x")
    monitor(jsonl=str(tmp / "file" / "g.jsonl"))


@case("monitor-sink-timeout", ConfigError, "sink_timeout must be a positive number of seconds, got 0")
def _(tmp, mp):
    monitor(sink_timeout=0)


@case("monitor-sink-buffer", ConfigError, "sink_buffer must be a positive number of records, got 0")
def _(tmp, mp):
    monitor(sink_buffer=0)


@case("monitor-sink-buffer-bytes", ConfigError, "sink_buffer_bytes must be a positive number of bytes, got 0")
def _(tmp, mp):
    monitor(sink_buffer_bytes=0)


@case("monitor-wandb-charts-every", ConfigError, "wandb_charts_every must be a positive number of probes, or None "
      "(charts only at close), got 0")
def _(tmp, mp):
    MonitorConfig(wandb_charts_every=0)


@case("monitor-wandb-alert-level", ConfigError, "wandb_alert_level must be 'INFO', 'WARN' or 'ERROR', got 'warning'")
def _(tmp, mp):
    MonitorConfig(wandb_alert_level="warning")

@case("monitor-probe-not-probeset", ConfigError, "probe must be a grokmon.ProbeSet, got Tensor: build one with "
      "ProbeSet.from_*")
def _(tmp, mp):
    monitor(probe=ids())


@case("monitor-every-zero", ConfigError, "every must be a positive number of optimizer steps, got 0")
def _(tmp, mp):
    monitor(every=0)


@case("monitor-history-limit", ConfigError, "history_limit must be a positive number of results, got 0")
def _(tmp, mp):
    MonitorConfig(history_limit=0)


@case("monitor-every-bool", ConfigError, "every must be a positive number of optimizer steps, got True")
def _(tmp, mp):
    monitor(every=True)


@case("monitor-on-error", ConfigError, "on_error must be 'warn' or 'raise', got 'ignore'")
def _(tmp, mp):
    monitor(on_error="ignore")


@case("monitor-metrics-type", ConfigError, "metrics must be a grokmon.MetricConfig (or a dict of its fields), got list")
def _(tmp, mp):
    monitor(metrics=["threshold"])


@case("monitor-sinks-string", ConfigError, "sinks[0] is a str, not a sink: pass objects with a log(metrics, step) "
      "method (grokmon.WandbSink() for W&B)")
def _(tmp, mp):
    monitor(sinks=["wandb"])


@case("monitor-jsonl-folder", ConfigError, "is a folder: pass a file path (e.g. ... /grokmon.jsonl), True for "
      "output_dir/grokmon.jsonl, or False")
def _(tmp, mp):
    monitor(jsonl=tmp)


@case("monitor-stages-type", ConfigError, "stages must be True or False, got 'yes'")
def _(tmp, mp):
    monitor(stages="yes")


@case("monitor-stages-tracker-in-config", ConfigError, "MonitorConfig.stages is True or False: pass a configured "
      "GroupStageTracker as GrokkingMonitor(probe, config, stage_tracker=tracker)")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    monitor(stages=GroupStageTracker())


@case("monitor-stage-tracker-type", ConfigError, "stage_tracker must be a grokmon.GroupStageTracker, got bool")
def _(tmp, mp):
    monitor(stage_tracker=True)


@case("monitor-stage-tracker-stages-off", ConfigError, "stage_tracker was given but MonitorConfig(stages=False) turns "
      "stage tracking off: drop one of the two")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    monitor(stages=False, stage_tracker=GroupStageTracker())


@case("monitor-config-unknown-field", ConfigError, "MonitorConfig has no field 'output': did you mean output_dir? "
      "(fields: every, metrics, ")
def _(tmp, mp):
    MonitorConfig(output="run")


@case("monitor-config-not-a-config", ConfigError, "config must be a grokmon.MonitorConfig, got int: the cadence is a "
      "setting, MonitorConfig(every=200)")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    GrokkingMonitor(tiny_probe(), 200)


@case("monitor-load-missing", GrokmonError, "cannot read a grokmon monitor state from ... pass a file written by GrokkingMonitor.save")
def _(tmp, mp):
    m = monitor()
    try:
        m.load(tmp / "missing.pt")
    finally:
        m.close()


@case("monitor-output-dir-other-probe", RuntimeWarning, "holds another probe than this monitor's; it is kept. A "
      "resumed run must probe the same samples")
def _(tmp, mp):
    monitor(output_dir=tmp, jsonl=True).close()
    try:
        monitor(probe=tiny_probe(n=6), output_dir=tmp, jsonl=True).close()
    finally:
        assert ProbeSet.load(tmp / "probe.pt").fingerprint() == tiny_probe().fingerprint(), "the first probe is kept"


@case("monitor-alerts-not-rules", ConfigError, "alerts must be grokmon.alerts rules (PlateauRule, ThresholdRule, ...), "
      "got")
def _(tmp, mp):
    monitor(alerts=[lambda step, metrics: []])


@case("monitor-state-other-probe", GrokmonError, "probe changed since the checkpoint: load the saved probe with "
      "ProbeSet.load so the same samples are probed before and after the restart")
def _(tmp, mp):
    first, other = monitor(), monitor(probe=tiny_probe(n=6))
    try:
        other.load_state_dict(first.state_dict())
    finally:
        first.close()
        other.close()


class _RunsCode:
    """Unpickling this would call ``print``: a stand-in for code in a crafted file."""

    def __reduce__(self):
        return (print, ("code ran",))


@case("monitor-load-code", UnsafeFileError, "is not a grokmon monitor state: it holds objects other than tensors "
      "and plain data, which grokmon never loads (nothing in it was run); pass a file written by GrokkingMonitor.save")
def _(tmp, mp):
    torch.save({"format": "grokmon.monitor", "state": _RunsCode()}, tmp / "state.pt")
    m = monitor()
    try:
        m.load(tmp / "state.pt")
    finally:
        m.close()


@case("pathways-load-code", UnsafeFileError, "is not grokmon pathways: it holds objects other than tensors and "
      "plain data, which grokmon never loads (nothing in it was run); pass a file written by Pathways.save")
def _(tmp, mp):
    from grokmon.pathways import Pathways

    torch.save(_RunsCode(), tmp / "pathways.pt")
    Pathways.load(tmp / "pathways.pt")


@case("pathways-load-not-pathways", GrokmonError, "is not a grokmon pathways file: write one with Pathways.save")
def _(tmp, mp):
    from grokmon.pathways import Pathways

    torch.save({"x": 1}, tmp / "pathways.pt")
    Pathways.load(tmp / "pathways.pt")


@case("probe-load-code", UnsafeFileError, "is not a grokmon probe file: it holds objects other than tensors and "
      "plain data, which grokmon never loads (nothing in it was run); rebuild the probe")
def _(tmp, mp):
    torch.save({"format": "grokmon.probe", "input_ids": _RunsCode()}, tmp / "probe.pt")
    ProbeSet.load(tmp / "probe.pt")


@case("monitor-load-other-probe", GrokmonError, "probe changed since the checkpoint")
def _(tmp, mp):
    first, other = monitor(), monitor(probe=tiny_probe(n=6))
    try:
        first.save(tmp / "monitor.pt")
        other.load(tmp / "monitor.pt")
    finally:
        first.close()
        other.close()


@case("monitor-hf-resume-other-probe", GrokmonError, "probe changed since the checkpoint")
def _(tmp, mp):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from grokmon.integrations.hf import GrokkingHFCallback

    args = TrainingArguments(output_dir=str(tmp), report_to=[])
    state = TrainerState(global_step=4)
    (tmp / "checkpoint-4").mkdir()
    first, other = monitor(), monitor(probe=tiny_probe(n=6))
    try:
        GrokkingHFCallback(first).on_save(args, state, TrainerControl())  # the state saved beside checkpoint-4
        resumed = TrainingArguments(output_dir=str(tmp / "new"), report_to=[],
                                    resume_from_checkpoint=str(tmp / "checkpoint-4"))
        GrokkingHFCallback(other).on_train_begin(resumed, state, TrainerControl())
    finally:
        first.close()
        other.close()


@case("monitor-hf-state-not-json", ConfigError, "is not valid JSON (...): delete it to resume without the grokmon "
      "state")
def _(tmp, mp):
    from grokmon.integrations.hf import STATE_FILE, read_callback_state

    (tmp / STATE_FILE).write_text("{not json")
    read_callback_state(tmp)


@case("monitor-lightning-model-attribute", GrokmonError, "has no attribute 'backbone': pass model= the attribute that "
      "holds the Hugging Face model, or a function of the LightningModule")
def _(tmp, mp):
    need("lightning")
    from grokmon.integrations.lightning import GrokkingLightningCallback

    m = monitor()
    try:
        GrokkingLightningCallback(m, model="backbone").probe_model(nn.Module())
    finally:
        m.close()


@case("monitor-close-unfinished", RuntimeWarning, "grokmon: 2 probe(s) were still computing their metrics when the "
      "monitor closed (steps [2, 3]; shutdown deadline 0.5 s): they are not written (counted in grokmon/errors)")
def _(tmp, mp):
    import threading

    from grokmon.results import ResultPath

    release = threading.Event()
    path = ResultPath(MonitorConfig(jsonl=False))
    path.submit(1, lambda: {"x": 1.0})
    path.flush(timeout=5.0)
    path.submit(2, lambda: (release.wait(30), {"x": 2.0})[1])
    path.submit(3, lambda: {"x": 3.0})
    try:
        path.close(timeout=0.5)
    finally:
        release.set()
