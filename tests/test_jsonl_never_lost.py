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


# ---------------------------------------------------------------------------- issue 20: links, fork, deleted folder, bytes


def test_two_links_to_one_record_share_one_lock(tmp_path) -> None:
    from grokmon.errors import SinkError

    target = tmp_path / "real" / "grokmon.jsonl"
    target.parent.mkdir()
    target.write_text("")
    (tmp_path / "a.jsonl").symlink_to(target)
    (tmp_path / "b.jsonl").symlink_to(target)
    first = JsonlSink(tmp_path / "a.jsonl")
    with pytest.raises(SinkError, match="already being written by another grokmon monitor"):
        JsonlSink(tmp_path / "b.jsonl")
    with pytest.raises(SinkError, match="already being written"):
        JsonlSink(target)
    first.log({"grokmon/x": 1.0}, 1)
    first.close()
    assert [r["step"] for r in read_jsonl(target)] == [1]


def test_repairing_a_torn_line_through_a_link_keeps_the_link(tmp_path) -> None:
    target = tmp_path / "grokmon.jsonl"
    target.write_text('{"step": 1, "time": 0, "metrics": {"grokmon/x": 1.0}}\n{"step": 2, "time": 0, "metr')
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    sink = JsonlSink(link)
    sink.log({"grokmon/x": 3.0}, 3)
    sink.close()
    assert link.is_symlink() and link.resolve() == target
    assert [r["step"] for r in _lines(target)] == [1, 3]


def test_the_lock_and_file_descriptors_are_close_on_exec(tmp_path) -> None:
    import fcntl

    sink = JsonlSink(tmp_path / "g.jsonl")
    for fd in (sink._fd, sink._lock.fd):
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    sink.close()


FORK_THEN_DIE = """
import os, signal, sys, time
from grokmon.sinks import JsonlSink
sink = JsonlSink(sys.argv[1])
sink.log({"grokmon/x": 1.0}, 1)
child = os.fork()
if child == 0:                       # a DataLoader worker: lives on after the parent is killed
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_forked_child_never_keeps_the_lock_after_the_parent_is_killed(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from child_env import child_env

    from grokmon.errors import SinkError

    root = Path(__file__).resolve().parents[1]
    path = tmp_path / "grokmon.jsonl"
    parent = subprocess.Popen([sys.executable, "-c", FORK_THEN_DIE, str(path)], stdout=subprocess.PIPE, text=True,
                              env=child_env(PYTHONPATH=str(root)))
    child = int(parent.stdout.readline())
    try:
        assert parent.wait(timeout=30) == -signal.SIGKILL
        os.kill(child, 0)                      # the child still lives
        deadline = time.monotonic() + 5.0      # (its fork hook may not have run yet on a busy machine)
        while True:
            try:
                sink = JsonlSink(path)         # and the record is free: the lock went with the parent
                break
            except SinkError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert sink.last_step == 1
        sink.close()
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_deleted_folder_is_made_again_with_what_the_file_held(tmp_path) -> None:
    import shutil

    folder = tmp_path / "run"
    sink = JsonlSink(folder / "grokmon.jsonl")
    sink.log({"grokmon/x": 1.0}, 1)
    sink.log({"grokmon/x": 2.0}, 2)
    shutil.rmtree(folder)
    with pytest.warns(RuntimeWarning, match=r"was deleted while the run wrote it; made again with the 2 line\(s\)"):
        sink.log({"grokmon/x": 3.0}, 3)
    sink.log({"grokmon/x": 4.0}, 4)
    assert sink.recreated == 1 and sink.lost == 0
    sink.close()
    assert [r["step"] for r in _lines(folder / "grokmon.jsonl")] == [1, 2, 3, 4]
    JsonlSink(folder / "grokmon.jsonl").close()   # the lock was taken again, and released


def test_a_deleted_folder_under_a_running_monitor_keeps_every_probe(tmp_path) -> None:
    import shutil

    model = tiny_model("mixtral")
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=1, output_dir=tmp_path / "out", async_metrics=False,
                                                          save_probe=False))
    monitor.step(model, 1)
    monitor.flush()
    shutil.rmtree(tmp_path / "out")
    with pytest.warns(RuntimeWarning, match="was deleted while the run wrote it"):
        monitor.step(model, 2)
        monitor.flush()
    monitor.step(model, 3)
    monitor.close()
    config, *probes = _lines(tmp_path / "out" / "grokmon.jsonl")
    assert "config" in config                          # the record made again starts with its configuration line
    assert [r["step"] for r in probes] == [1, 2, 3]


def test_lines_held_on_a_full_disk_are_bounded_by_bytes(tmp_path, monkeypatch):
    disk = Disk(monkeypatch)
    sink = JsonlSink(tmp_path / "g.jsonl")
    disk.full = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sink.log({"grokmon/x": 1.0}, step=1)
        sink.max_pending_bytes = 3 * len(sink._pending[0]) + 5   # room for 3 lines, not 4
        for step in range(2, 8):
            sink.log({"grokmon/x": 1.0}, step=step)
    assert sink.pending == 3 and sink.lost == 4
    assert any("bytes could not be written; the oldest are given up" in str(w.message) for w in caught)
    disk.full = False
    sink.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "g.jsonl")] == [5, 6, 7]
