"""A seeded soak test: many probes with faults drawn at random, nothing lost, training never held.

Per probe step one fault (or none) is drawn: a sink that raises, blocks or is slow; the JSONL
record's disk full (ENOSPC on its writes, for a few steps); out of memory in the capture and in the
metrics; NaN router logits. The test checks what grokmon promises whatever happens: every probe
step is in the JSONL exactly once, in order (a failed probe as a NaN row); no ``monitor.step``
took longer than its probe forward plus a small bound; every record a sink did not get is counted.
"""

from __future__ import annotations

import errno
import math
import os
import random
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

FAULTS = ("none", "sink-raises", "sink-blocks", "sink-slow", "enospc", "oom-capture", "oom-metrics", "nan-logits")
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
    flaky, steady = FlakySink("flaky"), FlakySink("steady")
    monitor = GrokkingMonitor(probe,
                              MonitorConfig(every=1, output_dir=tmp_path, sink_timeout=0.5, sink_detach_after=2.0, batch_size=8),
                              sinks=[flaky, steady])
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
    slowest = max(extra)
    assert slowest < BOUND, f"a probe step took {slowest:.2f} s beyond its forward (faults {drawn})"
    records = [r for r in read_jsonl(tmp_path / "grokmon.jsonl") if "metrics" in r]
    assert [r["step"] for r in records] == list(steps), "every probe step exactly once, in order"
    failed = [r["step"] for r in records if r["metrics"]["grokmon/pathway_distance"] is None]
    nan_steps = [s for s, f in zip(steps, drawn) if f == "nan-logits"]
    why = {r["step"]: drawn[r["step"] - 1] for r in records if r["step"] in failed}
    # only NaN-logit probes fail: OOM is retried at half the batch (down to 1), a full disk is waited out
    assert failed == sorted(nan_steps + cannot_halve), why
    assert monitor.config.batch_size == 8 >> min(3, drawn.count("oom-capture"))
    for name, sink in (("flaky", flaky), ("steady", steady)):
        s = status[name]
        assert s.delivered == len(sink.received)
        # every record is delivered, held or counted as dropped, exactly once
        assert s.delivered + s.queued + s.dropped == len(steps), (name, s)
    assert steady.received == list(steps)
    assert status["jsonl"].dropped == 0 and monitor.results.delivery.dropped == status["flaky"].dropped
    assert records[-1]["metrics"]["grokmon/errors"] >= len(nan_steps) + 1  # the failed probes and sink faults
