"""BufferSink: keep what the monitor logs until its host (a training framework) forwards it.

The monitor calls an ``inline`` sink like this one from the training thread (at ``step`` / ``poll``
/ ``flush``; other sinks have threads of their own), so an adapter drains this sink right after each
of those calls and hands the values, with their probe
step, to the framework's own logging (``trainer.log``, ``log_history``, Lightning's loggers).

Example:
    >>> buffer = BufferSink()
    >>> buffer.log({"grokmon/pathway_distance": 3.5}, step=200)
    >>> buffer.drain(), buffer.drain()
    ([(200, {'grokmon/pathway_distance': 3.5})], [])
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import Sink, to_float

__all__ = ["BufferSink"]


class BufferSink(Sink):
    """Holds ``(step, metrics)`` pairs, values as floats, until :meth:`drain` takes them (oldest first)."""

    inline = True  # in memory, drained on the training thread: called there directly (grokmon.delivery)

    def __init__(self, name: str = "buffer") -> None:
        self.name = name
        self.items: list[tuple[int, dict[str, float]]] = []

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.items.append((int(step), {str(k): to_float(v, k) for k, v in metrics.items()}))

    def drain(self) -> list[tuple[int, dict[str, float]]]:
        """Everything logged since the last call, and forget it."""
        items, self.items = self.items, []
        return items
