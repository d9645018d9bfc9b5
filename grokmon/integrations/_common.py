"""What every framework adapter does with a monitor, written once: buffer, baseline, step, finish.

An adapter (:mod:`~grokmon.integrations.hf`, :mod:`~grokmon.integrations.lightning`,
:mod:`~grokmon.integrations.olmo_core`) mixes in
:class:`MonitorAdapter` and only translates its framework's events and logging:

* ``_attach(monitor)``: checks it is a monitor and adds a :class:`~grokmon.sinks.BufferSink` that
  holds every result until the adapter forwards it to the framework's own logging;
* ``_baseline(model, step)``: one probe before the first training step (``config.baseline``),
  unless the monitor's state came back from a checkpoint;
* ``_step(model, step)``: ``monitor.step`` on every rank; returns whether training should stop;
* ``_finish(forward)`` / ``_abort(forward)``: flush, forward what is left, close the monitor.

Adapters depend on the core, never the reverse: the monitor is known here by what it does, not
imported (``grokmon.monitor`` only for type checkers).

Example:
    >>> class PrintAdapter(MonitorAdapter):
    ...     def __init__(self, monitor):
    ...         self._attach(monitor, who="PrintAdapter")
    ...     def on_end(self):
    ...         self._finish(lambda items: print(items))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..sinks import BufferSink

if TYPE_CHECKING:  # pragma: no cover
    from ..monitor import GrokkingMonitor

__all__ = ["MonitorAdapter", "is_monitor"]

logger = logging.getLogger("grokmon.integrations")

Results = list[tuple[int, dict[str, float]]]
_MONITOR_API = ("step", "probe_now", "flush", "close", "add_sink", "state_dict", "load_state_dict", "config")


def is_monitor(obj: Any) -> bool:
    """True for a :class:`~grokmon.monitor.GrokkingMonitor` (or anything with its interface)."""
    return all(hasattr(obj, name) for name in _MONITOR_API)


class MonitorAdapter:
    """The framework-independent half of a grokmon callback (see the module doc)."""

    monitor: GrokkingMonitor
    close_on_train_end: bool
    _pending: BufferSink
    _restored: Any  # truthy once the monitor's state came back from a checkpoint

    def _attach(self, monitor: Any, *, who: str, close_on_train_end: bool = True) -> None:
        if not is_monitor(monitor):
            raise ConfigError(f"{who} needs a GrokkingMonitor, got {type(monitor).__name__}: "
                              f"pass {who}(monitor)")
        self.monitor = monitor
        self.close_on_train_end = close_on_train_end
        self._pending = BufferSink(name="host")
        self._restored = None
        monitor.add_sink(self._pending)

    def _drain(self) -> Results:
        """The results delivered since the last call, for the framework's own logging."""
        return self._pending.drain()

    def _baseline(self, model: Any, step: int, optimizer: Any = None) -> None:
        if self.monitor.config.baseline and not self._restored:
            self.monitor.probe_now(model, step, optimizer=optimizer)

    def _step(self, model: Any, step: int, optimizer: Any = None) -> bool:
        self.monitor.step(model, step, optimizer=optimizer)
        return bool(self.monitor.should_stop)

    def _finish(self, forward: Callable[[Results], None]) -> None:
        """Training ended: deliver every pending result, forward it, close the monitor (if asked to)."""
        self.monitor.flush()
        forward(self._drain())
        if self.close_on_train_end:
            self.monitor.close()

    def _abort(self, forward: Callable[[Results], None], exception: BaseException) -> None:
        """Training failed: keep what was measured, never mask the training error."""
        try:
            self.monitor.flush()
            forward(self._drain())
            self.monitor.close()
        except Exception as e:  # pragma: no cover - best effort
            logger.warning("grokmon: could not flush the monitor after %r: %r", exception, e)

