"""Metric sinks: where probe metrics and alerts go (W&B, TensorBoard, JSONL, Accelerate, a function).

Every sink has ``name``, ``log(metrics, step)``, ``alert(title_or_event, ...)`` and ``close()``
(:mod:`grokmon.sinks.base`). Sinks import their backend (wandb, tensorboard) only when created.
:class:`BufferSink` holds results for a host framework to forward (the integrations use it);
:class:`JsonlSink` writes grokmon's one record format and :func:`read_metrics` reads it back.

Example:
    >>> from grokmon.sinks import CallbackSink
    >>> CallbackSink(lambda m, s: print(s, m)).log({"grokmon/x": 1.0}, step=3)
    3 {'grokmon/x': 1.0}
"""

from __future__ import annotations

from .accelerate import AccelerateSink
from .base import ALERT_LEVELS, AlertInfo, Sink, SinkLike, as_alert, check_sinks
from .buffer import BufferSink
from .callback import CallbackSink
from .jsonl import JsonlSink, iter_metrics, read_jsonl, read_metrics
from .tensorboard import TensorBoardSink
from .wandb import WandbSink

__all__ = [
    "ALERT_LEVELS", "AccelerateSink", "AlertInfo", "BufferSink", "CallbackSink", "JsonlSink", "Sink", "SinkLike",
    "TensorBoardSink", "WandbSink", "as_alert", "check_sinks", "iter_metrics", "read_jsonl", "read_metrics",
]
