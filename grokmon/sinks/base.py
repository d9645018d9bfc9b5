"""The sink interface: where a probe's metrics and alerts go.

A sink has a ``name`` and three methods:

* ``log(metrics, step)`` – one probe's scalars (already prefixed, e.g. ``grokmon/pathway_distance``)
  at the host's training step; the dict is the sink's own copy. Returning ``False`` declines the
  record (counted as ``refused`` in ``monitor.sink_status()``); anything else counts as delivered;
* ``alert(title, text="", level="WARN", wait_duration=None, *, step=None)`` – a detector fired.
  ``title`` may also be an ``AlertEvent``-like object (attributes ``title``, ``text``/``message``,
  ``level``, ``wait_duration``, ``step``), which is how the monitor passes events
  (``sink.alert(event)``). Optional: :class:`SinkLike` has no ``alert``, and a sink without one is
  simply sent no alerts. The default of :class:`Sink` does nothing;
* ``close()`` – flush and release what the sink opened (never what it was handed).

Sinks do not swallow their own exceptions: the monitor wraps every call, warns once, counts the
error and drops a sink that keeps failing. Misconfiguration raises :class:`~grokmon.errors.SinkError`
with the fix.

Example:
    >>> class PrintSink(Sink):
    ...     name = "print"
    ...     def log(self, metrics, step):
    ...         print(step, dict(metrics))
    >>> PrintSink().log({"grokmon/pathway_distance": 3.5}, step=200)
    200 {'grokmon/pathway_distance': 3.5}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError, SinkError
from ..scalars import to_float as _to_float

__all__ = ["Sink", "SinkLike", "AlertInfo", "as_alert", "check_sinks", "to_float", "ALERT_LEVELS"]

ALERT_LEVELS = ("INFO", "WARN", "ERROR")
_MAIN_FIELDS = ("title", "text", "message", "level", "wait_duration", "step")


@dataclass(frozen=True)
class AlertInfo:
    """An alert as every sink sees it. ``wait_duration`` is in seconds (``None``: the sink's default)."""

    title: str
    text: str = ""
    level: str = "WARN"
    wait_duration: float | None = None
    step: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``extra`` merged in, without overriding the main fields)."""
        d = {**_jsonable(self.extra), "title": self.title, "text": self.text, "level": self.level,
             "wait_duration": self.wait_duration}
        if self.step is not None:
            d["step"] = self.step
        return d


def as_alert(title: Any, text: str | None = None, level: Any = None, wait_duration: Any = None,
             step: int | None = None) -> AlertInfo:
    """Normalise ``alert(...)`` arguments (strings or an ``AlertEvent``-like object) to :class:`AlertInfo`.

    Example:
        >>> as_alert("grokmon: plateau", "distance flat for 5 probes", "warn", 300).level
        'WARN'
    """
    extra: dict = {}
    if not isinstance(title, str):
        event = title
        if dataclasses.is_dataclass(event) and not isinstance(event, type):
            extra = dataclasses.asdict(event)
        elif isinstance(event, Mapping):
            extra = dict(event)
        get = (lambda k: event.get(k)) if isinstance(event, Mapping) else (lambda k: getattr(event, k, None))
        if get("title") is None:
            raise SinkError(f"alert() needs a title string or an event with a .title, got {type(event).__name__}")
        title = get("title")
        text = text if text is not None else (get("text") if get("text") is not None else get("message"))
        level = level if level is not None else get("level")
        wait_duration = wait_duration if wait_duration is not None else get("wait_duration")
        step = step if step is not None else get("step")
    lvl = getattr(level, "value", level)  # wandb.AlertLevel / enums
    lvl = "WARN" if lvl is None else str(lvl).upper()
    if lvl == "WARNING":
        lvl = "WARN"
    if lvl not in ALERT_LEVELS:
        raise SinkError(f"alert level {level!r} is not one of {ALERT_LEVELS}")
    if isinstance(wait_duration, timedelta):
        wait_duration = wait_duration.total_seconds()
    return AlertInfo(
        title=str(title), text="" if text is None else str(text), level=lvl,
        wait_duration=None if wait_duration is None else float(wait_duration),
        step=None if step is None else int(step),
        extra={k: v for k, v in extra.items() if k not in _MAIN_FIELDS},
    )


@runtime_checkable
class SinkLike(Protocol):
    """What the monitor needs of a sink (any object with these methods works; ``alert`` is optional)."""

    name: str

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class Sink:
    """Base class: implement :meth:`log`; override :meth:`_alert` / :meth:`close` when needed."""

    name: str = "sink"

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        raise NotImplementedError

    def alert(self, title: Any, text: str | None = None, level: Any = None, wait_duration: Any = None, *,
              step: int | None = None) -> None:
        """Send an alert; ``title`` is a string or an ``AlertEvent``-like object (see module doc)."""
        self._alert(as_alert(title, text, level, wait_duration, step))

    def _alert(self, alert: AlertInfo) -> None:
        """Deliver a normalised alert. Default: nothing (a sink without an alert channel)."""

    def close(self) -> None:
        """Flush and release what this sink opened. Default: nothing."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def to_float(value: Any, key: str) -> float:
    """A metric value as a Python float (0-d tensors and numpy scalars included); SinkError otherwise."""
    return _to_float(value, key, error=SinkError, fix="log scalars only")


def check_sinks(sinks: Any) -> list[Any]:
    """A list of sink objects (one sink alone is accepted), or a ConfigError naming the bad entry.

    Example:
        >>> check_sinks(["wandb"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        grokmon.errors.ConfigError: sinks[0] is a str, not a sink: ... (grokmon.WandbSink() for W&B), ...
    """
    if hasattr(sinks, "log") and callable(sinks.log):
        return [sinks]
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, Sequence):
        raise ConfigError(f"sinks must be a list of sink objects (e.g. [WandbSink()]), got {type(sinks).__name__}")
    for i, sink in enumerate(sinks):
        if not (hasattr(sink, "log") and callable(sink.log)):
            hint = " (grokmon.WandbSink() for W&B)" if isinstance(sink, str) else ""
            raise ConfigError(f"sinks[{i}] is a {type(sink).__name__}, not a sink: pass objects with a "
                              f"log(metrics, step) method{hint}, or wrap a function in grokmon.CallbackSink")
    return list(sinks)


def _jsonable(x: Any) -> Any:
    """Nested data with non-finite floats as ``None`` and unknown objects as ``str``."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return _jsonable(x.item())
    if isinstance(x, timedelta):
        return x.total_seconds()
    return str(x)
