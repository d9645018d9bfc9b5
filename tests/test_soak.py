"""A seeded soak test: many probes with faults drawn at random, nothing lost, training never held.

Per probe step one fault (or none) is drawn: a sink that raises, blocks or is slow; a sink that
raises ``SystemExit`` / ``KeyboardInterrupt`` / ``GeneratorExit``; the JSONL record's disk full
(ENOSPC on its writes, for a few steps); the output folder deleted; out of memory in the capture and
in the metrics; NaN router logits. A second test sends SIGTERM to a run whose metric jobs are slow. The test checks what grokmon promises whatever happens: every probe
step is in the JSONL exactly once, in order (a failed probe as a NaN row); no ``monitor.step``
took longer than its probe forward plus a small bound; every record a sink did not get is counted.
"""

from __future__ import annotations

import errno
import math
import os
import random
import shutil
import threading
import time
import warnings

import pytest
import torch
from test_delivery import overhead_per_step

import grokmon.results as results_module
import grokmon.sinks.jsonl as jsonl_module
from grokmon import CallbackSink, GrokkingMonitor, MonitorConfig
from grokmon.sinks import read_jsonl

FAULTS = ("none", "sink-raises", "sink-blocks", "sink-slow", "enospc", "oom-capture", "oom-metrics", "nan-logits",
          "sink-exits", "deleted-dir")
FATAL = (SystemExit(1), KeyboardInterrupt(), GeneratorExit())
BOUND = 1.0  # seconds a probe step may take beyond its forward (a blocked sink here blocks for 4 s)


class FlakySink(CallbackSink):
    """A sink whose next call raises, blocks or is slow when told to."""

    def __init__(self, name: str) -> None:
        self.mode = "ok"
        self.received: list[int] = []
        super().__init__(self._log, name=name)

    def _log(self, metrics: dict, step: int) -> None:
        mode, self.mode = self.mode, "ok"
        if mode == "raise":
            raise RuntimeError(f"injected sink failure at step {step}")
        if mode == "block":
            threading.Event().wait(4.0)
        if mode == "slow":
            time.sleep(0.3)
        if mode == "exit":
            raise FATAL[step % len(FATAL)]
        self.received.append(step)


class DiskFull:
    """``os`` for the JSONL sink, whose ``write`` fails with ENOSPC while ``full`` is set."""

    def __init__(self) -> None:
        self.full = False

    def write(self, fd: int, data: bytes) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    def __getattr__(self, name: str):
        return getattr(os, name)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_random_faults_lose_nothing_and_never_hold_training(seed, probe, tmp_path, monkeypatch) -> None:
    from moe_models import tiny_model

    rng = random.Random(seed)
    model = tiny_model("olmoe", seed=seed)
    disk = DiskFull()
    monkeypatch.setattr(jsonl_module, "os", disk)
    real_compute = results_module.compute_metrics
    metric_oom = {"steps": set()}

    def compute(*args, **kwargs):
        if metric_oom["steps"]:
            metric_oom["steps"].pop()
            raise torch.OutOfMemoryError("injected: out of memory in the metrics")
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(results_module, "compute_metrics", compute)
    import grokmon.routing as routing

    real_capture = routing.capture_pathways
    capture_oom = {"left": 0}

    def capture(*args, **kwargs):
        if capture_oom["left"]:
            capture_oom["left"] -= 1
            raise torch.OutOfMemoryError("injected: out of memory in the probe forward")
        return real_capture(*args, **kwargs)

    monkeypatch.setattr(routing, "capture_pathways", capture)
    router = model.model.layers[0].mlp.gate
    nan_next = {"on": False}

    def poison(module, args, output):
        if nan_next["on"]:
            nan_next["on"] = False
            return tuple(torch.full_like(o, math.nan) if o.is_floating_point() else o for o in output)
        return output

    router.register_forward_hook(poison)
    flaky, steady, fatal = FlakySink("flaky"), FlakySink("steady"), FlakySink("fatal")
    out = tmp_path / "out"
    monitor = GrokkingMonitor(probe,
                              MonitorConfig(every=1, output_dir=out, sink_timeout=0.5, sink_detach_after=2.0, batch_size=8),
                              sinks=[flaky, steady, fatal])
    drawn: list[str] = []
    extra: list[float] = []
    cannot_halve: list[int] = []  # an OOM at batch size 1 has nothing left to halve: that probe fails
    steps = range(1, 41)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in steps:
            fault = rng.choice(FAULTS)
            drawn.append(fault)
            disk.full = fault == "enospc" or (disk.full and rng.random() < 0.5)  # a disk full for a few steps
            flaky.mode = {"sink-raises": "raise", "sink-blocks": "block", "sink-slow": "slow"}.get(fault, "ok")
            capture_oom["left"] = 1 if fault == "oom-capture" else 0
            metric_oom["steps"] = {step} if fault == "oom-metrics" else set()
            nan_next["on"] = fault == "nan-logits"
            if fault == "sink-exits":
                fatal.mode = "exit"   # SystemExit / KeyboardInterrupt / GeneratorExit: detached at once
            if fault == "deleted-dir":
                monitor.results.delivery.flush(timeout=5.0)
                shutil.rmtree(out, ignore_errors=True)  # the output folder deleted under the run
            if fault == "oom-capture" and monitor.config.batch_size == 1:
                cannot_halve.append(step)
            extra += overhead_per_step(monitor, model, [step])
        disk.full = False
        monitor.flush(timeout=30.0)
        deadline = time.monotonic() + 15.0  # a blocked call ends after 4 s: let the counts settle
        while any(s.state == "stalled" for s in monitor.sink_status()) and time.monotonic() < deadline:
            monitor.poll()
            time.sleep(0.05)
        monitor.flush(timeout=30.0)
        status = {s.name: s for s in monitor.sink_status()}
        monitor.close(timeout=30.0)
    assert len(set(drawn)) >= 6, f"seed {seed} drew too few kinds of fault: {sorted(set(drawn))}"
    assert {"sink-exits", "deleted-dir"} <= set(drawn), f"seed {seed} drew {sorted(set(drawn))}"
    slowest = max(extra)
    assert slowest < BOUND, f"a probe step took {slowest:.2f} s beyond its forward (faults {drawn})"
    records = [r for r in read_jsonl(out / "grokmon.jsonl") if "metrics" in r]
    assert [r["step"] for r in records] == list(steps), "every probe step exactly once, in order"
    failed = [r["step"] for r in records if r["metrics"]["grokmon/pathway_distance"] is None]
    nan_steps = [s for s, f in zip(steps, drawn) if f == "nan-logits"]
    why = {r["step"]: drawn[r["step"] - 1] for r in records if r["step"] in failed}
    # only NaN-logit probes fail: OOM is retried at half the batch (down to 1), a full disk is waited out
    assert failed == sorted(nan_steps + cannot_halve), why
    assert monitor.config.batch_size == 8 >> min(3, drawn.count("oom-capture"))
    for name, sink in (("flaky", flaky), ("steady", steady), ("fatal", fatal)):
        s = status[name]
        assert s.delivered == len(sink.received)
        # every record is delivered, held or counted as dropped, exactly once
        assert s.delivered + s.queued + s.dropped == len(steps), (name, s)
    assert steady.received == list(steps)
    assert status["jsonl"].dropped == 0
    assert monitor.results.delivery.dropped == status["flaky"].dropped + status["fatal"].dropped
    if "sink-exits" in drawn:
        first = drawn.index("sink-exits") + 1
        # detached at the record that met the fault (results arrive later than their step): a prefix before
        assert status["fatal"].state == "detached" and len(fatal.received) < first
        assert fatal.received == list(range(1, len(fatal.received) + 1))
    if "deleted-dir" in drawn:
        jsonl = next(c.sink for c in monitor.results.delivery.channels if c.name == "jsonl")
        assert jsonl.recreated >= 1 and jsonl.lost == 0
    assert records[-1]["metrics"]["grokmon/errors"] >= len(nan_steps) + 1  # the failed probes and sink faults


SIGTERM_SOAK = """
import random, shutil, sys, threading, time, torch
sys.path.insert(0, {tests!r})
from moe_models import tiny_model
import grokmon.results as results
from grokmon import CallbackSink, GrokkingMonitor, MonitorConfig, ProbeSet
rng = random.Random({seed})
real, slow = results.compute_metrics, []
def compute(*args, **kwargs):    # the n-th metric job takes slow[n] seconds more
    time.sleep(slow.pop(0) if slow else 0.0)
    return real(*args, **kwargs)
results.compute_metrics = compute
mode = {{"m": "ok"}}
def sink(metrics, step):
    m, mode["m"] = mode["m"], "ok"
    if m == "exit":
        raise (SystemExit(1), KeyboardInterrupt(), GeneratorExit())[step % 3]
    if m == "raise":
        raise RuntimeError("injected")
ids = torch.randint(2, 128, (8, 12), generator=torch.Generator().manual_seed(0))
monitor = GrokkingMonitor(ProbeSet.from_token_ids(ids), MonitorConfig(every=1, output_dir={out!r}, sink_timeout=0.5),
                          sinks=[CallbackSink(sink, name="fatal")])
model = tiny_model("olmoe")
for step in range(1, 13):
    fault = rng.choice(["none", "slow", "slow", "sink-exits", "sink-raises", "deleted-dir"])
    slow.append(rng.uniform(0.5, 4.0) if fault == "slow" else 0.0)
    if fault == "sink-exits":
        mode["m"] = "exit"
    if fault == "sink-raises":
        mode["m"] = "raise"
    if fault == "deleted-dir":
        shutil.rmtree({out!r}, ignore_errors=True)
    monitor.step(model, step)
print("probed", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sigterm_with_slow_metric_jobs_and_faults_loses_nothing_uncounted(tmp_path, seed) -> None:
    import json
    import re
    import signal
    from pathlib import Path

    from launch import signal_when_ready

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "job.py"
    out = tmp_path / "out"
    script.write_text(SIGTERM_SOAK.format(tests=str(root / "tests"), out=str(out), seed=seed))
    returncode, elapsed, stderr = signal_when_ready([script], PYTHONPATH=str(root))
    assert returncode == -signal.SIGTERM, stderr
    assert elapsed < 12.0, f"{elapsed:.1f} s to end after SIGTERM"
    assert "Traceback" not in stderr, stderr
    lines = [json.loads(x) for x in (out / "grokmon.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if "metrics" in r]   # not the configuration line (its settings name metrics)
    assert steps == sorted(set(steps)) and set(steps) <= set(range(1, 13))
    found = re.search(r"(\d+) probe\(s\) were still computing", stderr)
    unfinished = int(found[1]) if found else 0
    assert len(steps) + unfinished == 12, (steps, unfinished, stderr[-3000:])   # written, or counted
    assert steps == list(range(1, len(steps) + 1)), "the finished probes are the first ones, in order"
