"""TensorBoardSink: scalars through ``torch.utils.tensorboard.SummaryWriter``.

Each metric becomes ``add_scalar(key, value, step)``; alerts become ``add_text("grokmon/alerts", ...)``.
The writer is flushed after every probe (probes are rare, and a live dashboard should see them).
A writer passed in is flushed on :meth:`close` but not closed: it belongs to the caller.

Example:
    >>> import tempfile
    >>> sink = TensorBoardSink(tempfile.mkdtemp())
    >>> sink.log({"grokmon/pathway_distance": 3.5}, step=200)
    >>> sink.close()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import SinkError
from .base import AlertInfo, Sink, to_float

__all__ = ["TensorBoardSink"]


class TensorBoardSink(Sink):
    """Write probe scalars to a TensorBoard event file (``log_dir``) or an existing ``writer``."""

    name = "tensorboard"

    def __init__(self, log_dir: str | os.PathLike | None = None, *, writer: Any = None,
                 alert_tag: str = "grokmon/alerts") -> None:
        if (log_dir is None) == (writer is None):
            raise SinkError("TensorBoardSink needs exactly one of log_dir= or writer=")
        if writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # tensorboard is an optional dependency
                msg = "TensorBoardSink needs the tensorboard package: pip install 'grokmon[tensorboard]'"
                raise SinkError(msg) from e
            writer = SummaryWriter(log_dir=str(log_dir))
            self._owns_writer = True
        else:
            self._owns_writer = False
        self.writer = writer
        self.alert_tag = alert_tag

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(str(k), to_float(v, k), global_step=int(step))
        self.writer.flush()

    def _alert(self, alert: AlertInfo) -> None:
        body = f"**{alert.level}: {alert.title}**\n\n{alert.text}"
        self.writer.add_text(self.alert_tag, body, global_step=alert.step)
        self.writer.flush()

    def close(self) -> None:
        if self._owns_writer:
            self.writer.close()
        else:
            self.writer.flush()
