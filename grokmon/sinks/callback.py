"""CallbackSink: hand each probe's metrics to a user function.

Example:
    >>> seen = []
    >>> sink = CallbackSink(lambda metrics, step: seen.append((step, metrics)))
    >>> sink.log({"grokmon/pathway_distance": 3.5}, step=200)
    >>> seen
    [(200, {'grokmon/pathway_distance': 3.5})]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import SinkError
from .base import AlertInfo, Sink

__all__ = ["CallbackSink"]


class CallbackSink(Sink):
    """Call ``fn(metrics, step)`` for every probe and ``alert_fn(alert_info)`` for every alert.

    ``fn`` receives a fresh ``dict`` it may keep or change. Exceptions from ``fn`` propagate
    (the monitor decides what to do with a failing sink).
    """

    name = "callback"

    def __init__(self, fn: Callable[[dict[str, float], int], Any],
                 alert_fn: Callable[[AlertInfo], Any] | None = None, *, name: str | None = None) -> None:
        if not callable(fn):
            raise SinkError(f"CallbackSink needs a function fn(metrics, step), got {type(fn).__name__}")
        if alert_fn is not None and not callable(alert_fn):
            raise SinkError(f"alert_fn must be a function alert_fn(alert), got {type(alert_fn).__name__}")
        self.fn = fn
        self.alert_fn = alert_fn
        if name is not None:
            self.name = name

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.fn(dict(metrics), int(step))

    def _alert(self, alert: AlertInfo) -> None:
        if self.alert_fn is not None:
            self.alert_fn(alert)
