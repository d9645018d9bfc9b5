"""TensorBoardSink: scalars through ``torch.utils.tensorboard.SummaryWriter``.

Each metric becomes ``add_scalar(key, value, step)``; alerts become ``add_text("grokmon/alerts", ...)``.
The writer is flushed after every probe (probes are rare, and a live dashboard should see them).
A writer passed in is flushed on :meth:`close` but not closed: it belongs to the caller.

**Groups on one chart** (``group_layout=True``): at the first :meth:`log` that carries
``group/<g>/<metric>`` keys, the sink writes a ``custom_scalars`` layout (TensorBoard's "Custom
Scalars" tab): a category ``grokmon by group`` with one multi-line chart per such metric, holding
every group's line and the whole probe set's (``grokmon/pathway_distance`` beside
``grokmon/group/<g>/pathway_distance``). The charts select tags by regular expression, so groups
that appear only later still land on them; the metrics are those of that first probe (the monitor
logs the same keys at every probe). The layout is written once: TensorBoard reads the first
layout of a run, and ``SummaryWriter.add_custom_scalars`` may be called once per writer. If you
write your own layout to a writer you pass in, set ``group_layout=False``.

Example:
    >>> import tempfile
    >>> sink = TensorBoardSink(tempfile.mkdtemp())
    >>> sink.log({"grokmon/pathway_distance": 3.5, "grokmon/group/code/pathway_distance": 3.1}, step=200)
    >>> sink.layout
    {'grokmon by group': {'grokmon/pathway_distance': ['Multiline', ['^grokmon/(group/[^/]+/)?pathway_distance$']]}}
    >>> sink.close()
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import SinkError
from ..keys import PREFIX
from .base import AlertInfo, Sink, to_float

__all__ = ["TensorBoardSink", "LAYOUT_CATEGORY"]

LAYOUT_CATEGORY = "grokmon by group"
_GROUP_KEY = re.compile(r"^(?P<head>.*?)group/(?P<group>[^/]+)/(?P<metric>.+)$")


class TensorBoardSink(Sink):
    """Write probe scalars to a TensorBoard event file (``log_dir``) or an existing ``writer``."""

    name = "tensorboard"

    def __init__(self, log_dir: str | os.PathLike | None = None, *, writer: Any = None,
                 alert_tag: str = PREFIX + "alerts", group_layout: bool = True) -> None:
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
        self.group_layout = group_layout
        self.layout: dict[str, dict[str, list]] | None = None  # the custom_scalars layout, once written

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(str(k), to_float(v, k), global_step=int(step))
        if self.group_layout and self.layout is None:
            layout = group_layout(metrics)
            if layout:
                self.writer.add_custom_scalars(layout)
                self.layout = layout
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


def group_layout(keys: Iterable[str]) -> dict[str, dict[str, list]]:
    """A ``custom_scalars`` layout with one multi-line chart per metric that has group keys.

    Each chart's tag pattern (a regular expression, as TensorBoard expects) matches the metric of
    every group and of the whole probe set. Empty when no key is a ``group/<g>/<metric>`` key.

    Example:
        >>> group_layout(["grokmon/probe_loss", "grokmon/group/a/probe_loss"])
        {'grokmon by group': {'grokmon/probe_loss': ['Multiline', ['^grokmon/(group/[^/]+/)?probe_loss$']]}}
    """
    charts: dict[str, list] = {}
    for key in keys:
        m = _GROUP_KEY.match(str(key))
        if m:
            pattern = f"^{re.escape(m['head'])}(group/[^/]+/)?{re.escape(m['metric'])}$"
            charts.setdefault(m["head"] + m["metric"], ["Multiline", [pattern]])
    return {LAYOUT_CATEGORY: dict(sorted(charts.items()))} if charts else {}
