"""A background thread that turns captured pathways into metrics while training goes on.

Jobs run in submission order; results and exceptions are queued for the main thread to collect,
so a failing job never raises inside the training loop's thread and never hangs it.

Example:
    >>> w = MetricWorker()
    >>> w.submit(1, lambda: {"x": 1.0})
    >>> w.drain(wait=True)
    [(1, {'x': 1.0}, None)]
    >>> w.close()
"""

from __future__ import annotations

import atexit
import queue
import threading
from typing import Any, Callable

import torch

_STOP = object()


class MetricWorker:
    """Runs ``fn()`` jobs on one daemon thread (on a side CUDA stream when CUDA is in use)."""

    def __init__(self, name: str = "grokmon-metrics"):
        self._jobs: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._stream = torch.cuda.Stream() if torch.cuda.is_available() else None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            step, fn = job
            try:
                if self._stream is not None:
                    with torch.cuda.stream(self._stream):
                        value = fn()
                    self._stream.synchronize()
                else:
                    value = fn()
                self._results.put((step, value, None))
            except BaseException as error:  # reported to the main thread, never raised here
                self._results.put((step, None, error))

    def submit(self, step: int, fn: Callable[[], Any]) -> None:
        """Queue ``fn`` (its CUDA inputs must be ready: the caller records an event or syncs)."""
        with self._lock:
            self._pending += 1
        self._jobs.put((step, fn))

    @property
    def pending(self) -> int:
        return self._pending

    def drain(self, wait: bool = False, timeout: float | None = None) -> list[tuple[int, Any, BaseException | None]]:
        """Finished ``(step, value, error)`` triples; with ``wait``, first wait for every queued job."""
        out = []
        while True:
            block = wait and self._pending > 0
            try:
                item = self._results.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                break
            with self._lock:
                self._pending -= 1
            out.append(item)
        return out

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread after the queued jobs (bounded wait; the thread is a daemon anyway)."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join(timeout)
