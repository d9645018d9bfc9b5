"""Sink delivery off the training thread: one queue and one thread per sink, calls timed.

The training thread only appends a record to each sink's queue (microseconds) and looks at the
sinks' health; the calls into a sink (``log``, ``alert``, ``close``) run on that sink's own daemon
thread, in order. So a W&B service that stalls or a JSONL file on a hung filesystem costs the
training loop nothing:

* a call that takes longer than ``timeout`` seconds marks its sink **stalled**: warned about once,
  counted in ``grokmon/errors``; its further records wait in its queue (at most ``capacity`` records
  and about ``max_bytes`` bytes: past either the oldest are dropped and counted);
* a sink still stalled ``detach_after`` seconds after its call began is **detached**: its queued
  records and every later one are counted as dropped (``grokmon/sink_drops``). A
  :class:`~grokmon.sinks.JsonlSink` (the record) is never detached;
* a sink whose calls raise ``max_failures`` times in a row is detached too (not the JSONL record,
  which keeps lines it cannot write and never raises for it);
* a sink that raises a ``BaseException`` that is not an ``Exception`` (``SystemExit``,
  ``KeyboardInterrupt``, ``GeneratorExit``) is detached at once: counted, warned, its thread goes on
  (a sink thread never dies with records left in its queue);
* each sink gets its own copy of a record's metrics (a sink that edits the dict changes neither
  the JSONL line nor ``monitor.history``); ``alert`` is optional (a sink without it gets no alerts);
* a record a sink takes but declines (its ``log`` returns ``False``: the JSONL record refusing a
  step that is not after its last one, on a restart) is counted as ``refused``, not delivered;
* :meth:`Delivery.flush` and :meth:`Delivery.close` wait at most their ``timeout`` and never wait
  for, or call, a stalled sink; a sink whose ``close`` does not return in time is left behind.

Sinks marked ``inline = True`` (in-memory buffers an adapter drains on the training thread, such
as :class:`~grokmon.sinks.BufferSink`) are called directly: they cannot block, and their host
expects the values right after ``poll``. Errors raised on a sink thread are handed to the training
thread, which reports them (``on_error="raise"`` raises them there).

Example:
    >>> from grokmon.sinks import CallbackSink
    >>> seen = []
    >>> delivery = Delivery(report=lambda where, error: print(where, error))
    >>> delivery.add(CallbackSink(lambda metrics, step: seen.append(step)))
    >>> delivery.log({"grokmon/pathway_distance": 3.5}, 200)
    >>> delivery.flush(timeout=5.0), seen
    (True, [200])
    >>> delivery.close(timeout=5.0)
"""

from __future__ import annotations

import collections
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SinkError

__all__ = ["Delivery", "SinkChannel", "SinkStatus", "MAX_SINK_FAILURES"]

#: A sink whose calls raise this many times in a row is detached (the JSONL record never is).
MAX_SINK_FAILURES = 3

Report = Callable[[str, BaseException], None]
#: about this many bytes of records wait per sink (a record with per-expert load is ~50 KB: 10,000 of
#: them, the count limit, would hold 500 MB while a W&B service is down)
MAX_QUEUE_BYTES = 64 * 2**20


def record_bytes(kind: str, payload: tuple) -> int:
    """The approximate memory of one queued call: a metrics dict costs about 100 bytes a key (the key
    string, a float, the dict slot) plus the key's length; an alert about 1 KB.

    Example:
        >>> record_bytes("log", ({"grokmon/pathway_distance": 0.5}, 100))
        325
    """
    if kind == "log" and payload and isinstance(payload[0], dict):
        return 200 + sum(100 + len(key) for key in payload[0])
    return 1024


_IDLE_EXIT = 2.0  # seconds a sink thread waits for work before it ends


@dataclass(frozen=True)
class SinkStatus:
    """One sink's delivery state, as :meth:`Delivery.status` reports it."""

    name: str
    state: str  # "ok", "stalled", "detached" or "closed"
    delivered: int  # records the sink took
    queued: int  # records waiting for it, or in a call that has not returned
    dropped: int  # records it will never get (overflow, errors, detached, closed before it took them)
    refused: int = 0  # records it took and declined (its log returned False: a step the JSONL already has)


def _sink_name(sink: Any) -> str:
    return str(getattr(sink, "name", type(sink).__name__))


def _is_record(sink: Any) -> bool:
    from .sinks import JsonlSink  # the record is never detached

    return isinstance(sink, JsonlSink)


class SinkChannel:
    """A sink, its queue and its thread (see the module doc). The training thread calls :meth:`put`,
    :meth:`check`, :meth:`wait_idle` and :meth:`close`; the sink is only ever called from the
    channel's own thread (or directly, for an ``inline`` sink)."""

    def __init__(self, sink: Any, *, timeout: float, capacity: int, detach_after: float,
                 max_bytes: int = MAX_QUEUE_BYTES, max_failures: int = MAX_SINK_FAILURES) -> None:
        self.sink = sink
        self.name = _sink_name(sink)
        self.inline = bool(getattr(sink, "inline", False))
        self.keep = _is_record(sink)
        self.timeout = timeout
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._bytes = 0   # approximate size of the queued records (record_bytes)
        self.detach_after = max(detach_after, timeout)
        self.max_failures = max_failures
        self.delivered = 0
        self.dropped = 0
        self.refused = 0
        self.alerts = callable(getattr(sink, "alert", None))  # optional (SinkLike): no alert, no alerts sent
        self.stalled = False
        self.detached = False
        self.closed = False
        self._items: collections.deque[tuple[str, tuple, int]] = collections.deque()
        self._cond = threading.Condition(threading.RLock())  # re-entrant: a SIGTERM handler may close mid-put
        self._busy_since: float | None = None
        self._inflight_kind = ""
        self._errors: collections.deque[tuple[str, BaseException]] = collections.deque()
        self._notes: collections.deque[str] = collections.deque()  # warnings from the sink thread
        self._failures_in_row = 0
        self._thread: threading.Thread | None = None
        self._overflow_warned = False
        self._inflight_dropped = False  # the call in flight was counted as dropped (detach / close)

    # ------------------------------------------------------------------ training thread
    def put(self, kind: str, *payload: Any) -> None:
        """Queue one call (``"log"``, ``"alert"``); never blocks on the sink."""
        if kind == "alert" and not self.alerts:
            return
        if kind == "log":  # its own copy: a sink that edits the dict changes nothing elsewhere
            payload = (dict(payload[0]), *payload[1:])
        if self.inline:
            if self.closed or self.detached:
                self.dropped += kind == "log"
            else:
                self._call(kind, payload)
            return
        with self._cond:  # checked under the lock the sink thread detaches under: no record slips in after
            if self.closed or self.detached:
                self.dropped += kind == "log"
                return
            size = record_bytes(kind, payload)
            while self._items and (len(self._items) >= self.capacity or self._bytes + size > self.max_bytes):
                if not self._overflow_warned:
                    self._overflow_warned = True
                    warnings.warn(f"grokmon: sink {self.name} is {len(self._items)} records (about "
                                  f"{self._bytes / 2**20:.0f} MiB) behind; the oldest are dropped (counted in "
                                  "grokmon/sink_drops)", RuntimeWarning, stacklevel=4)
                old_kind, _ = self._pop()
                self.dropped += old_kind == "log"
            self._items.append((kind, payload, size))
            self._bytes += size
            self._cond.notify()
            self._start()

    def check(self, report: Report, now: float | None = None) -> None:
        """Report errors from the sink thread, and mark the sink stalled or detached when it is."""
        self._report_pending(report)
        if self.detached or self.closed:
            return
        now = time.monotonic() if now is None else now
        busy = self._busy_since
        if busy is None:
            if self.stalled:
                self.stalled = False
                warnings.warn(f"grokmon: sink {self.name} answered again; its held records are being delivered",
                              RuntimeWarning, stacklevel=4)
            return
        waited = now - busy
        if waited > self.timeout and not self.stalled:
            self.stalled = True
            what = "it is never detached (the record)" if self.keep else f"detached after {self.detach_after:g} s"
            report(f"sink {self.name} delivery", SinkError(
                f"sink {self.name}: a call has taken more than {self.timeout:g} s; training goes on, its records are "
                f"held (up to {self.capacity}) and {what}"))
        if self.stalled and not self.keep and waited > self.detach_after:
            self._detach(f"stalled for {waited:.0f} s")
            self._report_pending(report)

    def wait_idle(self, deadline: float) -> bool:
        """Wait (until ``deadline``, ``time.monotonic()``) for the queue to empty; False if it did not,
        at once for a stalled or detached sink, or one whose thread is gone with records left."""
        with self._cond:
            while self._items or self._busy_since is not None:
                if self.detached or self.closed:
                    return False
                thread = self._thread
                if self._items and self._busy_since is None and (thread is None or not thread.is_alive()):
                    self._thread = None  # ended (idle exit, or died): start another for the records left
                    self._start()
                    if self.inline:
                        continue
                busy = self._busy_since
                if busy is not None and time.monotonic() - busy > self.timeout:  # stalled now
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, deadline: float, report: Report) -> None:
        """Close the sink on its thread if it is healthy and idle by ``deadline``; never waits past it."""
        if self.closed:
            return
        idle = self.inline or self.wait_idle(deadline)
        with self._cond:  # counted under the lock the sink thread counts under
            lost = self._queued_logs() + self._count_inflight_dropped()
            self._clear()
            self.closed = True
            self.dropped += lost
            self._cond.notify_all()
        if lost:
            warnings.warn(f"grokmon: sink {self.name} did not take {lost} record(s) before close (counted in "
                          "grokmon/sink_drops; the JSONL record has them)", RuntimeWarning, stacklevel=3)
        if self.detached or not idle:
            return  # never call into a sink that is stalled or gone
        thread = self._thread
        if thread is not None:  # idle: it ends at once
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.inline:
            self._safe_close(report)
            return
        done = threading.Event()
        closer = threading.Thread(target=lambda: (self._safe_close(report), done.set()),
                                  name=f"grokmon-close-{self.name}", daemon=True)
        closer.start()
        if not done.wait(max(0.0, deadline - time.monotonic())):
            report(f"sink {self.name} close", SinkError(
                f"sink {self.name}: close() did not return in time; left behind so the process can end"))
        self._report_pending(report)

    def _report_pending(self, report: Report) -> None:
        while self._notes:
            warnings.warn(self._notes.popleft(), RuntimeWarning, stacklevel=5)
        while self._errors:
            report(*self._errors.popleft())

    def status(self) -> SinkStatus:
        state = "closed" if self.closed else "detached" if self.detached else "stalled" if self.stalled else "ok"
        with self._cond:  # waiting records plus a log call in flight that is not yet counted as dropped
            in_flight = self._busy_since is not None and self._inflight_kind == "log" and not self._inflight_dropped
            queued = self._queued_logs() + in_flight
            return SinkStatus(self.name, state, self.delivered, queued, self.dropped, self.refused)

    # ------------------------------------------------------------------ the queue (under self._cond)
    def _pop(self) -> tuple[str, tuple]:
        kind, payload, size = self._items.popleft()
        self._bytes -= size
        return kind, payload

    def _clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def _queued_logs(self) -> int:
        return sum(kind == "log" for kind, *_ in self._items)

    # ------------------------------------------------------------------ sink thread
    def _start(self) -> None:
        if self._thread is not None:
            return
        thread = threading.Thread(target=self._run, name=f"grokmon-sink-{self.name}", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: no new threads; deliver here instead
            self.inline = True
            self._drain_here()
            return
        self._thread = thread

    def _drain_here(self) -> None:
        while self._items:
            kind, payload = self._pop()
            self._call(kind, payload)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._items and not self.closed and not self.detached:
                    self._cond.wait(_IDLE_EXIT)
                if self.closed or self.detached:
                    return
                if not self._items:
                    # idle: the thread ends (the next put starts another), so a monitor that is dropped
                    # without close() is not kept alive, with its JSONL lock, by its sink threads
                    self._thread = None
                    return
                kind, payload = self._pop()
                self._busy_since, self._inflight_kind = time.monotonic(), kind
            try:
                self._call(kind, payload)
            except BaseException:  # noqa: BLE001 - _call catches everything; never let the thread die busy
                with self._cond:
                    self._thread = None
                raise
            finally:
                with self._cond:
                    self._busy_since, self._inflight_dropped = None, False
                    self._cond.notify_all()

    def _call(self, kind: str, payload: tuple) -> None:
        error: BaseException | None = None
        fatal = False
        answer: Any = None
        try:
            if kind == "log":
                answer = self.sink.log(*payload)
            else:
                self.sink.alert(*payload)
        except Exception as raised:  # noqa: BLE001 - reported on the training thread
            error = raised
        except BaseException as raised:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, GeneratorExit from a sink
            # never raised on the training thread as what it is (it would end the process or the loop)
            error, fatal = SinkError(f"sink {self.name} raised {raised!r}, which a sink must never raise"), True
            error.__cause__ = raised
        with self._cond:  # counted and marked idle together: status() never counts a record twice
            if kind == "log":
                if error is None:
                    if answer is False:
                        self.refused += 1
                    else:
                        self.delivered += 1
                    self.dropped -= self._inflight_dropped  # counted dropped while stalled; it arrived after all
                elif not self._inflight_dropped:
                    self.dropped += 1
            self._busy_since, self._inflight_dropped = None, False
            self._cond.notify_all()
        if error is None:
            self._failures_in_row = 0
            return
        self._failures_in_row += 1
        self._errors.append((f"sink {self.name}", error))
        if fatal and not self.keep:
            self._detach(f"raised {error.__cause__!r}", inflight=False)
        elif self._failures_in_row >= self.max_failures and not self.keep:
            self._detach(f"failed {self._failures_in_row} times in a row (last: {error!r})", inflight=False)

    def _count_inflight_dropped(self) -> int:
        """1 if a log call is in flight (stalled), counted as dropped until it returns; else 0."""
        if self._busy_since is None or self._inflight_dropped or self._inflight_kind != "log":
            return 0
        self._inflight_dropped = True
        return 1

    def _safe_close(self, report: Report) -> None:
        try:
            self.sink.close()
        except Exception as error:  # noqa: BLE001
            self._errors.append((f"sink {self.name} close", error))
        except BaseException as raised:  # noqa: BLE001 - as in _call: never ends the closing thread's caller
            error = SinkError(f"sink {self.name} close() raised {raised!r}, which a sink must never raise")
            error.__cause__ = raised
            self._errors.append((f"sink {self.name} close", error))

    def _detach(self, why: str, *, inflight: bool = True) -> None:
        with self._cond:
            if self.detached:
                return
            queued = self._queued_logs() + (self._count_inflight_dropped() if inflight else 0)
            self._clear()
            self.dropped += queued
            self.detached = True
            self._cond.notify_all()
        # warned from the training thread (at its next check), never from the sink's
        self._notes.append(f"grokmon: sink {self.name} {why} and is detached: {queued} record(s) dropped "
                           "(counted in grokmon/sink_drops); the JSONL record keeps every result")


class Delivery:
    """The sinks of one monitor, each behind a :class:`SinkChannel` (see the module doc).

    Args:
        report: ``report(where, error)``, called on the training thread for every sink problem
            (the monitor's fault counter: warn once per place, or raise with ``on_error="raise"``).
        timeout: seconds a sink call may take before the sink is marked stalled.
        capacity: records held per sink while it is slow or stalled.
        detach_after: seconds a stalled call may last before its sink is detached.
        max_bytes: about this many bytes of records held per sink (:func:`record_bytes`).
    """

    def __init__(self, report: Report, *, timeout: float = 5.0, capacity: int = 10_000,
                 detach_after: float = 60.0, max_bytes: int = MAX_QUEUE_BYTES) -> None:
        self.report = report
        self.timeout, self.capacity, self.detach_after = timeout, capacity, detach_after
        self.max_bytes = max_bytes
        self.channels: list[SinkChannel] = []

    @property
    def sinks(self) -> list[Any]:
        """The sinks not detached, in the order they were added."""
        return [c.sink for c in self.channels if not c.detached]

    @property
    def dropped(self) -> int:
        """Records some sink never got (overflow, errors, detached, closed with records left)."""
        return sum(c.dropped for c in self.channels)

    def add(self, sink: Any) -> None:
        if any(c.sink is sink for c in self.channels):
            return
        self.channels.append(SinkChannel(sink, timeout=self.timeout, capacity=self.capacity,
                                         detach_after=self.detach_after, max_bytes=self.max_bytes))

    def replace(self, old: Any, new: Any) -> None:
        """Put ``new`` where ``old`` was (a reopened JSONL record); ``old`` is closed by the caller."""
        for i, c in enumerate(self.channels):
            if c.sink is old:
                self.channels[i] = SinkChannel(new, timeout=self.timeout, capacity=self.capacity,
                                               detach_after=self.detach_after, max_bytes=self.max_bytes)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for c in self.channels:
            c.put("log", metrics, step)

    def alert(self, event: Any) -> None:
        for c in self.channels:
            c.put("alert", event)

    def check(self) -> None:
        """Report sink errors and stalls (the training thread, at every ``poll``)."""
        now = time.monotonic()
        for c in list(self.channels):
            c.check(self.report, now)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait at most ``timeout`` s in all for the healthy sinks to take their records; True if all did."""
        deadline = time.monotonic() + (1e9 if timeout is None else timeout)
        done = all([c.wait_idle(deadline) for c in self.channels if not c.inline])
        self.check()
        return done

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what the healthy sinks take by ``timeout``, close them, leave stalled ones behind."""
        deadline = time.monotonic() + (1e9 if timeout is None else timeout)
        for c in self.channels:
            c.close(deadline, self.report)
        self.check()

    def status(self) -> list[SinkStatus]:
        """Each sink's state (``ok`` / ``stalled`` / ``detached`` / ``closed``) and record counts."""
        return [c.status() for c in self.channels]
