"""A background thread that turns captured pathways into metrics while training goes on.

Jobs run in submission order; results and exceptions are queued for the main thread to collect,
so a failing job never raises inside the training loop's thread and never hangs it.

Example:
    >>> w = MetricWorker()
    >>> w.submit(1, lambda: {"x": 1.0})
    >>> w.drain(wait=True)
    [(1, {'x': 1.0}, None)]
    >>> w.close()   # the steps of jobs never collected
    []
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import torch

_STOP = object()


class MetricWorker:
    """Runs ``fn()`` jobs in order, one at a time, off the training thread (a daemon dispatcher
    thread; each job on a short-lived thread of its own, see ``_run``).

    With ``device`` a CUDA device, jobs run under a side stream of that device: each job first
    waits for the event recorded on the submitting thread's stream (so it reads finished capture
    tensors), and the side stream is synchronised before the job's tensors are released.
    """

    def __init__(self, name: str = "grokmon-metrics", device: torch.device | str | None = None):
        self._jobs: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._pending = 0
        self._unfinished: list[int] = []  # steps submitted and not yet collected, in submission order
        self._lock = threading.Lock()
        device = torch.device(device) if device is not None else None
        self._stream = torch.cuda.Stream(device=device) if device is not None and device.type == "cuda" else None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        # no atexit hook of its own: the monitor's close (grokmon.shutdown at exit) bounds the wait for
        # all its jobs and sinks together; the dispatcher is a daemon and never holds the process

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            # Each job runs on its own short-lived thread: a thread that ran CPU torch ops keeps an
            # OpenMP team that slowed the training thread's ops by 40-70% on a 2-core machine for
            # as long as it lived (benchmarks/overhead.py); the team goes away with the thread.
            outcome: list = []
            runner = threading.Thread(target=self._execute, args=(*job, outcome), name=f"{self._thread.name}-job",
                                      daemon=True)
            runner.start()
            runner.join()
            self._results.put(outcome[0] if outcome else (job[0], None, RuntimeError("metric job thread died")))
            del job, outcome

    def _execute(self, step: int, fn: Callable[[], Any], ready: Any, outcome: list) -> None:
        try:
            if self._stream is not None:
                with torch.cuda.stream(self._stream):
                    if ready is not None:
                        self._stream.wait_event(ready)
                    value = fn()
                self._stream.synchronize()  # before the job's tensors are released
            else:
                value = fn()
            outcome.append((step, value, None))
        except BaseException as error:  # reported to the main thread, never raised here
            outcome.append((step, None, error))

    def submit(self, step: int, fn: Callable[[], Any]) -> None:
        """Queue ``fn``; on CUDA, it runs after the work queued so far on the caller's stream."""
        ready = None
        if self._stream is not None:
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(self._stream.device))
        with self._lock:
            self._pending += 1
            self._unfinished.append(step)
        self._jobs.put((step, fn, ready))

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet collected by :meth:`drain`."""
        return self._pending

    @property
    def unfinished_steps(self) -> list[int]:
        """The steps of the jobs submitted and not yet collected (running, queued or finished unread)."""
        with self._lock:
            return list(self._unfinished)

    def drain(self, wait: bool = False, timeout: float | None = None) -> list[tuple[int, Any, BaseException | None]]:
        """Finished ``(step, value, error)`` triples; with ``wait``, first wait for every queued job.

        ``timeout`` bounds the whole wait (one deadline for all the jobs); what is still running then
        stays pending for a later call.
        """
        out = []
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            block = wait and self._pending > 0
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._results.get(block=block and left != 0.0, timeout=left if block else None)
            except queue.Empty:
                break
            with self._lock:
                self._pending -= 1
                if item[0] in self._unfinished:
                    self._unfinished.remove(item[0])
            out.append(item)
        return out

    def close(self, timeout: float = 0.0) -> list[int]:
        """Stop: the jobs not started yet are cancelled, the running one is not waited for past
        ``timeout`` (the dispatcher is a daemon). Returns the steps never collected (unfinished)."""
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join(timeout)
        return self.unfinished_steps
