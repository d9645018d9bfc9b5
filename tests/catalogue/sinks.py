"""The error catalogue's cases: sinks (see tests/test_error_catalogue.py)."""

from __future__ import annotations

import struct
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

from grokmon.errors import SinkError

from catalogue.registry import case


@case("sinks-read-jsonl-missing", SinkError, "no JSONL file at")
def _(tmp, mp):
    from grokmon.sinks.jsonl import read_jsonl

    read_jsonl(tmp / "missing.jsonl")


@case("sinks-jsonl-in-use", SinkError, "is already being written by another grokmon monitor or sink (process ...): "
      "two runs would mix their steps in one record. Give each run its own output_dir (or jsonl= path)")
def _(tmp, mp):
    from grokmon.sinks import JsonlSink

    first = JsonlSink(tmp / "g.jsonl")
    try:
        JsonlSink(tmp / "g.jsonl")
    finally:
        first.close()


def _stalled_sink(detach_after: float) -> None:
    import threading
    import time

    from grokmon.delivery import Delivery
    from grokmon.results import Faults
    from grokmon.sinks import CallbackSink

    release = threading.Event()
    delivery = Delivery(Faults("warn"), timeout=0.05, detach_after=detach_after)
    delivery.add(CallbackSink(lambda metrics, step: release.wait(), name="hung"))
    delivery.log({"grokmon/x": 1.0}, 1)
    time.sleep(0.3)
    delivery.check()
    release.set()


@case("sinks-stalled", RuntimeWarning, "grokmon: sink hung delivery failed, training goes on (counted in "
      "grokmon/errors): SinkError('sink hung: a call has taken more than 0.05 s; training goes on, its records are "
      "held (up to 10000) and detached after 60 s')")
def _(tmp, mp):
    _stalled_sink(60.0)


@case("sinks-stalled-detached", RuntimeWarning, "grokmon: sink hung stalled for 0 s and is detached: 1 "
      "record(s) dropped (counted in grokmon/sink_drops); the JSONL record keeps every result")
def _(tmp, mp):
    _stalled_sink(0.1)


@case("sinks-jsonl-deleted", RuntimeWarning, "JsonlSink(...): the file (or its folder) was deleted while the run "
      "wrote it; made again with the 1 line(s) it held, and the run goes on writing it (counted in .recreated)")
def _(tmp, mp):
    import shutil

    from grokmon.sinks import JsonlSink

    sink = JsonlSink(tmp / "run" / "grokmon.jsonl")
    sink.log({"grokmon/x": 1.0}, 1)
    shutil.rmtree(tmp / "run")
    try:
        sink.log({"grokmon/x": 2.0}, 2)
    finally:
        sink.close()


@case("sinks-jsonl-pending-full", RuntimeWarning, "JsonlSink(...): more than 100000 lines or 10 bytes could not be "
      "written; the oldest are given up (counted in .lost)")
def _(tmp, mp):
    import errno

    from grokmon.sinks import JsonlSink

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    sink = JsonlSink(tmp / "grokmon.jsonl", max_pending_bytes=10)
    mp.setattr("grokmon.sinks.jsonl.os.write", full)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*write failed")
        sink.log({"grokmon/x": 1.0}, 1)
        sink.log({"grokmon/x": 2.0}, 2)
    mp.undo()
    sink.close()


def _fatal_sink() -> None:
    from grokmon.delivery import Delivery
    from grokmon.results import Faults
    from grokmon.sinks import CallbackSink

    def exits(metrics, step):
        raise SystemExit(1)

    delivery = Delivery(Faults("warn"))
    delivery.add(CallbackSink(exits, name="exits"))
    delivery.log({"grokmon/x": 1.0}, 1)
    delivery.flush(timeout=5.0)


@case("sinks-base-exception", RuntimeWarning, "grokmon: sink exits raised SystemExit(1) and is detached: 0 "
      "record(s) dropped (counted in grokmon/sink_drops)")
def _(tmp, mp):
    _fatal_sink()


@case("sinks-base-exception-counted", RuntimeWarning, "grokmon: sink exits failed, training goes on (counted in "
      "grokmon/errors): SinkError('sink exits raised SystemExit(1), which a sink must never raise')")
def _(tmp, mp):
    _fatal_sink()

@case("sinks-accelerate-not-accelerator", SinkError, "AccelerateSink needs an accelerate.Accelerator")
def _(tmp, mp):
    from grokmon.sinks import AccelerateSink

    AccelerateSink(object())


@case("sinks-callback-not-callable", SinkError, "CallbackSink needs a function fn(metrics, step)")
def _(tmp, mp):
    from grokmon.sinks import CallbackSink

    CallbackSink(42)


@case("sinks-callback-alert-fn-not-callable", SinkError, "alert_fn must be a function")
def _(tmp, mp):
    from grokmon.sinks import CallbackSink

    CallbackSink(print, alert_fn="log")


@case("sinks-tensorboard-missing", SinkError, "TensorBoardSink needs the tensorboard package")
def _(tmp, mp):
    from grokmon.sinks import TensorBoardSink

    mp.setitem(sys.modules, "torch.utils.tensorboard", None)
    TensorBoardSink(tmp / "tb")


@case("sinks-wandb-file-chunk-type", SinkError, "unexpected chunk type")
def _(tmp, mp):
    pytest.importorskip("wandb")
    from grokmon.sinks.wandb_file import _HEADER, iter_wandb_records

    kind, payload = 9, b"x"
    chunk = struct.pack("<IHB", zlib.crc32(bytes([kind]) + payload), len(payload), kind) + payload
    (tmp / "run-x.wandb").write_bytes(_HEADER + b"\x00" + chunk)
    list(iter_wandb_records(tmp / "run-x.wandb"))


@case("sinks-alert-level", SinkError, "alert level 'loud' is not one of ('INFO', 'WARN', 'ERROR')")
def _(tmp, mp):
    from grokmon.sinks import CallbackSink

    CallbackSink(print).alert("title", "text", "loud")


@case("sinks-alert-without-title", SinkError, "alert() needs a title string or an event with a .title, got object")
def _(tmp, mp):
    from grokmon.sinks import CallbackSink

    CallbackSink(print).alert(object())


def log_to_jsonl(tmp: Path, value: Any) -> None:
    from grokmon.sinks import JsonlSink

    with JsonlSink(tmp / "g.jsonl") as sink:
        sink.log({"m": value}, step=1)


@case("sinks-metric-list", SinkError, "metric 'm' is not a scalar: [1, 2] of type list is not a number; log scalars "
      "only")
def _(tmp, mp):
    log_to_jsonl(tmp, [1, 2])


@case("sinks-metric-tensor-of-values", SinkError, "metric 'm' is not a scalar: a tensor of 2 values (shape [2]); log "
      "scalars only")
def _(tmp, mp):
    log_to_jsonl(tmp, torch.tensor([0.5, 0.25]))


@case("sinks-jsonl-closed", SinkError, "JsonlSink( ... ) is closed: create a new sink to log again")
def _(tmp, mp):
    from grokmon.sinks import JsonlSink

    sink = JsonlSink(tmp / "g.jsonl")
    sink.close()
    sink.log({"m": 1.0}, step=1)


@case("sinks-jsonl-corrupt-middle-line", SinkError, "line 2 of ... is not JSON (...): the file is corrupted; move it "
      "away")
def _(tmp, mp):
    from grokmon.sinks import JsonlSink

    (tmp / "g.jsonl").write_text('{"step": 1, "metrics": {}}\nnot json\n{"step": 2, "metrics": {}}\n')
    JsonlSink(tmp / "g.jsonl")


@case("sinks-wandb-no-run", SinkError, "no active W&B run: call wandb.init() first or pass run=")
def _(tmp, mp):
    wandb = pytest.importorskip("wandb")
    from grokmon.sinks import WandbSink

    mp.setattr(wandb, "run", None)
    WandbSink().log({"grokmon/a": 1.0}, step=1)


@case("sinks-wandb-metric-glob", SinkError, "metric_glob='*/grokmon': W&B accepts only a suffix glob such as "
      "'grokmon/*'")
def _(tmp, mp):
    from grokmon.sinks import WandbSink

    WandbSink(metric_glob="*/grokmon")


@case("sinks-tensorboard-no-target", SinkError, "TensorBoardSink needs exactly one of log_dir= or writer=")
def _(tmp, mp):
    from grokmon.sinks import TensorBoardSink

    TensorBoardSink()


@case("sinks-wandb-file-missing", SinkError, "no W&B run file or directory at ... pass the offline-run-* directory or "
      "its .wandb file")
def _(tmp, mp):
    from grokmon.sinks.wandb_file import find_wandb_file

    find_wandb_file(tmp / "missing")


@case("sinks-wandb-folder-without-run-file", SinkError, "no run-*.wandb file under ... was wandb.init(dir=...) pointed "
      "elsewhere?")
def _(tmp, mp):
    from grokmon.sinks.wandb_file import find_wandb_file

    find_wandb_file(tmp)


@case("sinks-wandb-file-bad-header", SinkError, "is not a W&B run file (bad header")
def _(tmp, mp):
    from grokmon.sinks.wandb_file import read_wandb_run

    (tmp / "run-x.wandb").write_bytes(b"hello world, not a run")
    read_wandb_run(tmp / "run-x.wandb")


@case("sinks-wandb-file-checksum", SinkError, "checksum mismatch at byte ... the file is corrupted")
def _(tmp, mp):
    from grokmon.sinks.wandb_file import _HEADER, iter_wandb_records

    payload = b"x"
    chunk = struct.pack("<IHB", zlib.crc32(bytes([1]) + payload) ^ 1, len(payload), 1) + payload  # a wrong checksum
    (tmp / "run-x.wandb").write_bytes(_HEADER + b"\x00" + chunk)
    list(iter_wandb_records(tmp / "run-x.wandb"))


@case("sinks-wandb-charts-every", SinkError, "charts_every=0 must be a positive number of probes, or None (charts only "
      "at close)")
def _(tmp, mp):
    from grokmon.sinks import WandbSink

    WandbSink(charts_every=0)


@case("sinks-wandb-alert-level", SinkError, "alert_level='LOUD' must be one of ('INFO', 'WARN', 'ERROR')")
def _(tmp, mp):
    from grokmon.sinks import WandbSink

    WandbSink(alert_level="LOUD")


class FinishedRun:
    """A stand-in W&B run that takes logs until ``finish()``."""

    def __init__(self) -> None:
        self._is_finished, self.step, self.summary = False, 0, {}

    def define_metric(self, *args: Any, **kwargs: Any) -> None: ...

    def log(self, *args: Any, **kwargs: Any) -> None:
        assert not self._is_finished, "a finished run takes no logs"

    def finish(self) -> None:
        self._is_finished = True


@case("sinks-wandb-close-after-finish", SinkError, "the W&B run finished before WandbSink.close(): the per-group "
      "charts and the stage table were not logged. Close the monitor (monitor.close()) before run.finish()")
def _(tmp, mp):
    pytest.importorskip("wandb")
    from grokmon.sinks import WandbSink

    run = FinishedRun()
    sink = WandbSink(run)
    sink.log({"grokmon/group/a/pathway_distance": 0.3}, step=2)  # a chart to log at close
    run.finish()
    sink.close()


@case("sinks-wandb-records-table-missing", SinkError, "no history value 'nope' in ... was the table logged under "
      "another key?")
def _(tmp, mp):
    from grokmon.sinks.wandb_file import WandbRunRecords

    WandbRunRecords(tmp / "run-x.wandb", history=[{"_step": 0, "grokmon/a": 1.0}]).table("nope")
