"""The JSONL record survives write errors: whole lines only, nothing lost, order kept, never detached."""

from __future__ import annotations

import errno
import json
import os
import warnings

import pytest
from moe_models import tiny_model
from moe_models import random_probe as make_probe
from test_monitor import train

import grokmon.sinks.jsonl as jsonl_module
from grokmon import GrokkingMonitor, MonitorConfig
from grokmon.sinks import JsonlSink, read_jsonl


class Disk:
    """os.write for the JSONL module that fails with ENOSPC while ``full`` (optionally after a partial write)."""

    def __init__(self, monkeypatch, partial: bool = False) -> None:
        self.full, self.partial, self.failures = False, partial, 0
        real = os.write

        def write(fd: int, data: bytes) -> int:
            if self.full:
                self.failures += 1
                if self.partial:
                    real(fd, data[: len(data) // 2])   # half a line reaches the file, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data)

        monkeypatch.setattr(jsonl_module.os, "write", write)


def _lines(path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]   # every line is whole JSON


@pytest.mark.parametrize("partial", [False, True])
def test_disk_full_keeps_the_lines_and_writes_them_in_order_when_space_returns(tmp_path, monkeypatch, partial):
    disk = Disk(monkeypatch, partial=partial)
    path = tmp_path / "grokmon.jsonl"
    sink = JsonlSink(path)
    sink.log({"grokmon/x": 0.0}, step=0)
    disk.full = True
    with pytest.warns(RuntimeWarning, match="write failed") as caught:
        for step in range(2, 10, 2):
            sink.log({"grokmon/x": float(step)}, step=step)
    assert len(caught) == 1 and disk.failures == 4
    assert [r["step"] for r in _lines(path)] == [0]        # no half line, whatever the disk did
    assert sink.pending == 4 and sink.lost == 0
    disk.full = False
    sink.log({"grokmon/x": 10.0}, step=10)
    assert [r["step"] for r in _lines(path)] == [0, 2, 4, 6, 8, 10]
    assert [r["metrics"]["grokmon/x"] for r in read_jsonl(path)] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    sink.close()
    assert sink.pending == 0 and sink.lost == 0


def test_close_on_a_full_disk_counts_what_it_could_not_write_and_releases_the_file(tmp_path, monkeypatch):
    disk = Disk(monkeypatch)
    sink = JsonlSink(tmp_path / "g.jsonl")
    disk.full = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sink.log({"grokmon/x": 1.0}, step=1)
    with pytest.warns(RuntimeWarning, match="closed with 1 lines"):
        sink.close()
    assert sink.lost == 1 and sink._fd is None
    sink.close()   # idempotent


def test_overflowing_the_buffer_gives_up_the_oldest_lines_and_counts_them(tmp_path, monkeypatch):
    disk = Disk(monkeypatch)
    sink = JsonlSink(tmp_path / "g.jsonl", max_pending=3)
    disk.full = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, 6):
            sink.log({"grokmon/x": float(step)}, step=step)
    assert sink.lost == 2 and sink.pending == 3
    assert any("oldest are given up" in str(w.message) for w in caught)
    disk.full = False
    sink.flush()
    assert [r["step"] for r in read_jsonl(tmp_path / "g.jsonl")] == [3, 4, 5]
    sink.close()


def test_the_monitor_never_detaches_its_only_sink_on_a_full_disk(tmp_path, monkeypatch):
    disk = Disk(monkeypatch)
    model = tiny_model("mixtral")
    monitor = GrokkingMonitor(make_probe(),
                              MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False, save_probe=False))
    disk.full = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(model, 4, monitor)
    assert len(monitor.sinks) == 1 and monitor.errors == 0
    disk.full = False
    train(model, 1)            # one more optimizer step, then its probe: the backlog is written first
    monitor.step(model, 5)
    monitor.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "grokmon.jsonl") if "metrics" in r] == [1, 2, 3, 4, 5]
