"""Sink delivery off the training thread (grokmon/delivery.py): a blocked, slow or failing sink
never stalls training, is buffered, then detached, and never loses a record without counting it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest
from child_env import child_env
from launch import signal_when_ready

from grokmon import GrokkingMonitor, MonitorConfig
from grokmon.delivery import Delivery
from grokmon.errors import SinkError
from grokmon.sinks import CallbackSink, JsonlSink, read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def overhead_per_step(monitor, model, steps) -> list[float]:
    """Seconds each ``monitor.step`` took beyond its probe forward (the part a sink could add)."""
    capture, forward = monitor.runner.capture, []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return capture(*args, **kwargs)
        finally:
            forward.append(time.perf_counter() - start)

    monitor.runner.capture = timed
    extra = []
    try:
        for step in steps:
            forward.clear()
            start = time.perf_counter()
            monitor.step(model, step)
            extra.append(time.perf_counter() - start - sum(forward))
    finally:
        monitor.runner.capture = capture
    return extra


def metric_steps(path: Path) -> list[int]:
    return [r["step"] for r in read_jsonl(path) if "metrics" in r]


class Blocking(CallbackSink):
    """A sink whose every call waits for ``release`` (forever, unless the test sets it)."""

    def __init__(self, name: str = "blocked", block_close: bool = False) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.block_close = block_close
        self.calls: list[int] = []
        super().__init__(self._log, name=name)

    def _log(self, metrics: dict, step: int) -> None:
        self.started.set()
        self.release.wait()
        self.calls.append(step)

    def close(self) -> None:
        if self.block_close:
            self.release.wait()


def test_a_blocked_sink_costs_the_training_thread_nothing_then_is_detached(make_monitor, olmoe, tmp_path) -> None:
    blocked = Blocking()
    monitor = make_monitor(every=1, sinks=[blocked], sink_timeout=0.3, sink_detach_after=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.step(olmoe, 1)
        monitor.flush(timeout=5.0)          # the healthy JSONL takes step 1; the blocked sink is not waited for
        assert blocked.started.wait(5.0)
        slowest = 0.0
        for step in range(2, 8):
            slowest = max(slowest, *overhead_per_step(monitor, olmoe, [step]))
            time.sleep(0.25)
        start = time.perf_counter()
        monitor.flush(timeout=30.0)
        flush_seconds = time.perf_counter() - start
    assert slowest < 1.0, f"a probe step took {slowest:.2f} s more than its forward with a blocked sink"
    assert flush_seconds < 2.0, "flush waited for a stalled sink"
    texts = [str(w.message) for w in caught]
    assert any("a call has taken more than 0.3 s" in t for t in texts), texts
    assert any("sink blocked stalled for" in t and "is detached" in t for t in texts), texts
    status = {s.name: s for s in monitor.sink_status()}
    assert status["blocked"].state == "detached" and status["blocked"].delivered == 0
    assert status["blocked"].dropped >= 6   # the record in flight, the queued ones and the later ones: counted
    assert status["jsonl"].state == "ok" and status["jsonl"].dropped == 0
    assert blocked not in monitor.sinks
    monitor.close(timeout=5.0)
    record = {r["step"]: r["metrics"] for r in read_jsonl(tmp_path / "grokmon.jsonl") if "metrics" in r}
    assert sorted(record) == list(range(1, 8))   # the JSONL record has every probe step, once, in order
    assert record[7]["grokmon/sink_drops"] >= 5 and record[1]["grokmon/sink_drops"] == 0
    assert record[7]["grokmon/errors"] >= 1      # the stall is counted
    blocked.release.set()


def test_close_and_flush_are_bounded_by_their_timeout(make_monitor, olmoe) -> None:
    stuck = Blocking(block_close=True)
    monitor = make_monitor(every=1, sinks=[stuck], sink_timeout=0.2, sink_detach_after=100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monitor.step(olmoe, 1)
        start = time.perf_counter()
        monitor.flush(timeout=1.0)   # the metrics are computed and queued; the sink blocks in log
        assert stuck.started.wait(5.0)
        monitor.close(timeout=1.0)
        elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"flush + close took {elapsed:.1f} s with a sink blocked in log and close"
    assert stuck.calls == []
    stuck.release.set()


class HangingClose(CallbackSink):
    def __init__(self) -> None:
        self.calls: list[int] = []
        self.release = threading.Event()
        super().__init__(lambda metrics, step: self.calls.append(step), name="slow-close")

    def close(self) -> None:
        self.release.wait()


def test_a_sink_whose_close_hangs_is_left_behind() -> None:
    sink = HangingClose()
    reported = []
    delivery = Delivery(lambda where, error: reported.append((where, error)), timeout=5.0)
    delivery.add(sink)
    delivery.log({"grokmon/x": 1.0}, 10)
    start = time.perf_counter()
    delivery.close(timeout=0.5)
    assert time.perf_counter() - start < 2.0
    assert sink.calls == [10]
    assert [w for w, _ in reported] == ["sink slow-close close"] and isinstance(reported[0][1], SinkError)
    sink.release.set()


def test_a_slow_sink_gets_every_record_in_order_with_alerts_after_their_metrics(make_monitor, olmoe) -> None:
    seen: list = []

    def slow(metrics: dict, step: int) -> None:
        time.sleep(0.05)
        seen.append(("log", step))

    sink = CallbackSink(slow, alert_fn=lambda alert: seen.append(("alert", alert.step)), name="slow")
    from grokmon.alerts import ThresholdRule

    monitor = make_monitor(every=1, sinks=[sink], alerts=ThresholdRule("probe_tokens", above=0.0))
    for step in range(1, 9):
        monitor.step(olmoe, step)
    monitor.flush(timeout=30.0)
    logs = [s for kind, s in seen if kind == "log"]
    assert logs == list(range(1, 9))
    first_alert = seen.index(("alert", 1))
    assert seen[first_alert - 1] == ("log", 1)   # the alert follows the metrics of its step
    assert monitor.sink_status()[-1].dropped == 0


def test_a_stalled_jsonl_record_is_never_detached_and_catches_up_in_order(make_monitor, olmoe, tmp_path,
                                                                          monkeypatch) -> None:
    gate = threading.Event()
    real = JsonlSink.log

    def hung(self, metrics, step, **kwargs):     # a JSONL on a hung network filesystem
        gate.wait()
        return real(self, metrics, step, **kwargs)

    monkeypatch.setattr(JsonlSink, "log", hung)
    monitor = make_monitor(every=1, sink_timeout=0.2, sink_detach_after=0.4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, 6):
            assert overhead_per_step(monitor, olmoe, [step])[0] < 1.0
            time.sleep(0.2)
        monitor.poll()
        status = monitor.sink_status()[0]
        assert status.name == "jsonl" and status.state == "stalled"
        assert any("never detached (the record)" in str(w.message) for w in caught)
        gate.set()
        deadline = time.monotonic() + 20.0
        while monitor.sink_status()[0].state != "ok" and time.monotonic() < deadline:
            monitor.poll()            # the record answers again: no longer stalled
            time.sleep(0.05)
        assert any("sink jsonl answered again" in str(w.message) for w in caught)
        monitor.flush(timeout=10.0)
    monitor.close(timeout=10.0)
    assert metric_steps(tmp_path / "grokmon.jsonl") == [1, 2, 3, 4, 5]


def test_sink_errors_raise_on_the_training_thread_with_on_error_raise(make_monitor, olmoe) -> None:
    def boom(metrics, step):
        raise RuntimeError("sink exploded")

    monitor = make_monitor(every=1, on_error="raise", jsonl=False, sinks=[CallbackSink(boom, name="boom")])
    monitor.step(olmoe, 1)
    with pytest.raises(RuntimeError, match="sink exploded"):
        monitor.flush(timeout=5.0)


def test_sink_settings_are_checked() -> None:
    from grokmon.config import MonitorConfig
    from grokmon.errors import ConfigError

    with pytest.raises(ConfigError, match="sink_timeout must be a positive number of seconds"):
        MonitorConfig(sink_timeout=0)
    with pytest.raises(ConfigError, match="sink_buffer must be a positive number of records"):
        MonitorConfig(sink_buffer=0)
    with pytest.raises(ConfigError, match="sink_buffer_bytes must be a positive number of bytes"):
        MonitorConfig(sink_buffer_bytes=0)


def test_a_full_sink_buffer_drops_the_oldest_and_counts_them() -> None:
    blocked = Blocking()
    delivery = Delivery(lambda where, error: None, timeout=60.0, capacity=3)
    delivery.add(blocked)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, 8):
            delivery.log({"grokmon/x": float(step)}, step)
            if step == 1:
                assert blocked.started.wait(5.0)   # step 1 is in flight, 2.. wait in the buffer
    assert any("is 3 records (about 0 MiB) behind" in str(w.message) for w in caught)
    blocked.release.set()
    assert delivery.flush(timeout=5.0)
    assert blocked.calls == [1, 5, 6, 7] and delivery.dropped == 3
    delivery.close(timeout=5.0)


def test_a_sink_buffer_is_bounded_in_bytes_as_well_as_records() -> None:
    """Large records (per-expert load keys) fill the byte budget long before the count: the oldest
    go, counted, and what waits stays under the budget."""
    from grokmon.delivery import record_bytes

    blocked = Blocking()
    big = {f"grokmon/layer/{i // 64}/expert/{i % 64}/load": 0.1 for i in range(400)}   # ~51 KB a record
    size = record_bytes("log", (big, 0))
    delivery = Delivery(lambda where, error: None, timeout=60.0, capacity=10_000, max_bytes=10 * size)
    delivery.add(blocked)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, 31):
            delivery.log({**big, "grokmon/x": float(step)}, step)
            if step == 1:
                assert blocked.started.wait(5.0)   # step 1 is in flight, the rest wait
    channel = delivery.channels[0]
    assert channel._bytes <= 10 * size and len(channel._items) == 9     # 9 whole records fit, not 29
    assert any("records (about" in str(w.message) and "behind" in str(w.message) for w in caught)
    blocked.release.set()
    assert delivery.flush(timeout=5.0)
    assert blocked.calls == [1, *range(22, 31)] and delivery.dropped == 20
    delivery.close(timeout=5.0)


SIGTERM_BLOCKED = textwrap.dedent("""
    import sys, threading, time, torch
    sys.path.insert(0, {tests!r})
    from moe_models import tiny_model
    from grokmon import CallbackSink, GrokkingMonitor, MonitorConfig, ProbeSet
    started = threading.Event()
    def never_returns(metrics, step):
        started.set()
        threading.Event().wait()
    ids = torch.randint(2, 128, (8, 12), generator=torch.Generator().manual_seed(0))
    monitor = GrokkingMonitor(ProbeSet.from_token_ids(ids), MonitorConfig(every=1, output_dir={out!r}, sink_timeout=0.5),
                              sinks=[CallbackSink(never_returns, name="hung")])
    model = tiny_model("olmoe")
    monitor.step(model, 1)
    monitor.flush(timeout=30)
    started.wait(30)
    monitor.step(model, 2)                      # computed in the background, not yet delivered
    while monitor.results._worker.pending and not monitor.results._worker._results.qsize():
        time.sleep(0.01)
    print("probed", flush=True)
    time.sleep(120)                             # a long training step, preempted
""")


def test_sigterm_with_a_hung_sink_ends_the_process_and_writes_the_jsonl(tmp_path) -> None:
    script = tmp_path / "job.py"
    script.write_text(SIGTERM_BLOCKED.format(tests=str(ROOT / "tests"), out=str(tmp_path / "out")))
    returncode, elapsed, _ = signal_when_ready([script], timeout=30)
    assert returncode == -signal.SIGTERM
    assert elapsed < 10.0, f"the process took {elapsed:.1f} s to end after SIGTERM"
    record = [json.loads(x) for x in (tmp_path / "out" / "grokmon.jsonl").read_text().splitlines()]
    assert [r["step"] for r in record if "metrics" in r] == [1, 2]


def test_two_monitors_never_share_a_jsonl(probe, olmoe, tmp_path) -> None:
    first = GrokkingMonitor(probe, MonitorConfig(every=1, output_dir=tmp_path))
    with pytest.warns(RuntimeWarning, match=r"already being written by another grokmon monitor .* writes "
                                             r".*grokmon\.2\.jsonl instead"):
        second = GrokkingMonitor(probe, MonitorConfig(every=1, output_dir=tmp_path))   # the default path: moves aside
    assert second.jsonl_path == tmp_path / "grokmon.2.jsonl"
    with pytest.raises(SinkError, match="already being written by another grokmon monitor"):
        GrokkingMonitor(probe, MonitorConfig(every=1, jsonl=tmp_path / "grokmon.jsonl"))  # an explicit path: an error
    for monitor in (first, second):
        monitor.step(olmoe, 1)
        monitor.close()
    assert metric_steps(tmp_path / "grokmon.jsonl") == [1] and metric_steps(tmp_path / "grokmon.2.jsonl") == [1]
    third = GrokkingMonitor(probe, MonitorConfig(every=1, output_dir=tmp_path))   # closed ones free the file again
    assert third.jsonl_path == tmp_path / "grokmon.jsonl"
    third.close()


def test_a_jsonl_locked_by_another_process_is_named(tmp_path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from grokmon.sinks import JsonlSink
        sink = JsonlSink({str(tmp_path / 'run.jsonl')!r})
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, env=child_env(PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SinkError, match=rf"process {holder.pid}\)"):
            JsonlSink(tmp_path / "run.jsonl")
    finally:
        holder.kill()
        holder.wait()
    JsonlSink(tmp_path / "run.jsonl").close()   # the lock went with the process


def test_every_record_is_counted_once_even_when_a_detached_call_returns_late() -> None:
    blocked = Blocking()
    delivery = Delivery(lambda where, error: None, timeout=0.05, detach_after=0.1)
    delivery.add(blocked)
    for step in (1, 2, 3):
        delivery.log({"grokmon/x": float(step)}, step)
    assert blocked.started.wait(5.0)
    time.sleep(0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        delivery.check()
    assert any("is detached: 3 record(s) dropped" in str(w.message) for w in caught)
    status = delivery.status()[0]
    assert (status.state, status.delivered, status.queued, status.dropped) == ("detached", 0, 0, 3)
    blocked.release.set()                 # the call in flight returns after all: delivered, not dropped
    deadline = time.monotonic() + 5.0
    while delivery.status()[0].delivered == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    status = delivery.status()[0]
    assert blocked.calls == [1] and (status.delivered, status.queued, status.dropped) == (1, 0, 2)
    delivery.log({"grokmon/x": 4.0}, 4)   # a detached sink gets nothing more, and that is counted
    assert delivery.status()[0].dropped == 3 and blocked.calls == [1]


# ---------------------------------------------------------------------------- issue 20: BaseException, copies, alerts, refusals


class Raising(CallbackSink):
    """A sink whose ``log`` raises ``error`` at its ``at``-th call."""

    def __init__(self, error: BaseException, at: int = 2) -> None:
        self.error, self.at, self.calls = error, at, []
        super().__init__(self._log, name=f"raises-{type(error).__name__}")

    def _log(self, metrics: dict, step: int) -> None:
        self.calls.append(step)
        if len(self.calls) == self.at:
            raise self.error


@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()], ids=lambda e: type(e).__name__)
def test_a_sink_raising_a_base_exception_is_counted_warned_and_detached(error) -> None:
    reported: list[tuple[str, BaseException]] = []
    sink = Raising(error)
    delivery = Delivery(lambda where, e: reported.append((where, e)), timeout=5.0)
    delivery.add(sink)
    for step in range(1, 11):
        delivery.log({"grokmon/x": float(step)}, step)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        delivery.flush(timeout=20.0)
    assert time.perf_counter() - start < 2.0, "flush waited on a sink whose thread is gone"
    status = delivery.status()[0]
    assert status.state == "detached"
    assert (status.delivered, status.queued, status.dropped) == (1, 0, 9)   # every record counted once
    assert len(reported) == 1 and isinstance(reported[0][1], SinkError)
    assert type(error).__name__ in str(reported[0][1])
    assert any(f"raised {error!r} and is detached" in str(w.message) for w in caught)
    start = time.perf_counter()
    delivery.close(timeout=20.0)
    assert time.perf_counter() - start < 2.0


def test_a_dead_sink_thread_is_never_waited_on() -> None:
    """Even if a sink thread died some other way, flush starts another instead of waiting out its timeout."""
    seen = []
    delivery = Delivery(lambda where, e: None)
    delivery.add(CallbackSink(lambda m, s: seen.append(s)))
    channel = delivery.channels[0]
    channel._start = lambda: None          # the thread is not started: as if it died before the put
    delivery.log({"grokmon/x": 1.0}, 1)
    del channel._start
    start = time.perf_counter()
    assert delivery.flush(timeout=10.0) and seen == [1]
    assert time.perf_counter() - start < 2.0


class ProtocolSink:
    """A sink as ``SinkLike`` documents it: name, log and close, no alert."""

    name = "protocol"

    def __init__(self) -> None:
        self.steps: list[int] = []

    def log(self, metrics, step) -> None:
        self.steps.append(step)

    def close(self) -> None:
        pass


def test_a_sink_without_alert_is_sent_no_alerts_and_never_detached() -> None:
    from grokmon.alerts import AlertEvent
    from grokmon.sinks import SinkLike

    sink = ProtocolSink()
    assert isinstance(sink, SinkLike)
    reported = []
    delivery = Delivery(lambda where, e: reported.append(e))
    delivery.add(sink)
    for step in range(1, 31):
        delivery.log({"grokmon/x": 1.0}, step)
        delivery.alert(AlertEvent(rule="stage", metric="m", step=step, probe=step, kind="stage", level="INFO",
                                   title="t", text="x", value=1.0))
    assert delivery.flush(timeout=10.0)
    assert sink.steps == list(range(1, 31)) and reported == []
    assert delivery.status()[0].state == "ok" and delivery.status()[0].delivered == 30


def test_each_sink_gets_its_own_copy_of_the_record(make_monitor, olmoe, tmp_path) -> None:
    class Vandal(ProtocolSink):   # edits the dict it is handed (CallbackSink would hand its function a copy)
        def log(self, metrics, step):
            metrics["grokmon/pathway_distance"] = -1.0
            metrics["grokmon/vandal"] = 1.0

    monitor = make_monitor(every=1, sinks=[Vandal()])
    seen = []
    monitor.add_sink(CallbackSink(lambda m, s: seen.append(m), name="after"))
    for step in range(1, 4):
        monitor.step(olmoe, step)
    monitor.flush()
    lines = [r["metrics"] for r in read_jsonl(monitor.jsonl_path) if "metrics" in r]
    assert len(lines) == 3 and len(seen) == 3
    for metrics in [*lines, *seen, *(m for _, m in monitor.history)]:
        assert "grokmon/vandal" not in metrics and metrics["grokmon/pathway_distance"] >= 0


def test_steps_refused_on_restart_are_counted_as_refused(probe, olmoe, tmp_path) -> None:
    first = GrokkingMonitor(probe, MonitorConfig(every=1, output_dir=tmp_path))
    for step in (1, 2, 3):
        first.step(olmoe, step)
    first.close()
    again = GrokkingMonitor(probe, MonitorConfig(every=1, output_dir=tmp_path))    # a restart that did not say resume_step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in (1, 2, 3, 4):
            again.step(olmoe, step)
        again.flush()
    status = next(s for s in again.sink_status() if s.name == "jsonl")
    assert (status.delivered, status.refused, status.dropped) == (1, 3, 0)
    again.close()
    assert metric_steps(tmp_path / "grokmon.jsonl") == [1, 2, 3, 4]
