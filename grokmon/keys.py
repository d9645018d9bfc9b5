"""The metric-key prefix and the stage codes, owned here: every writer and reader of grokmon keys uses these.

Metrics are computed unprefixed (``pathway_distance``); the monitor logs them as
``grokmon/pathway_distance``; readers (``read_metrics``, the report, alert rules, the plots) strip
the prefix again. The prefix is not configurable, so a record always reads back the same way.

Example:
    >>> prefixed({"pathway_distance": 0.5})
    {'grokmon/pathway_distance': 0.5}
    >>> unprefixed("grokmon/group/a/probe_loss"), unprefixed("eval/accuracy")
    ('group/a/probe_loss', 'eval/accuracy')
    >>> stage_name(0.0), stage_name(3.0), stage_name(7.0)
    ('loss_falling', 'unknown', 'unknown')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["PREFIX", "METRIC_GLOB", "GROUP_SECTION", "DIAG_SECTION", "STAGES", "prefixed", "unprefixed", "stage_name"]

#: Put before every metric key the monitor logs (``grokmon/pathway_distance``).
PREFIX = "grokmon/"

#: The W&B ``define_metric`` glob that covers every :data:`PREFIX` key.
METRIC_GLOB = PREFIX + "*"

#: The W&B sections beside the headline's (``grokmon/``) where :class:`~grokmon.sinks.WandbSink` files
#: each group's scalars (``grokmon_group/<g>/<metric>``) and the diagnostics (``grokmon_diag/...``).
#: Only W&B sees these keys; every other sink and reader sees :data:`PREFIX` keys.
GROUP_SECTION = PREFIX.rstrip("/") + "_group/"
DIAG_SECTION = PREFIX.rstrip("/") + "_diag/"

#: The stage names by the code logged as ``grokmon/stage`` and ``grokmon/group/<g>/stage`` (0..3), set by
#: :class:`~grokmon.alerts.GroupStageTracker`. ``loss_falling`` says only that the probe loss is falling:
#: on the validation matrix it held in about half of the grokked groups after held-out accuracy had
#: passed 0.5, so it is not "memorizing" (docs/alerts.md).
STAGES: tuple[str, ...] = ("loss_falling", "grokking", "saturated", "unknown")

V = TypeVar("V")


def prefixed(metrics: Mapping[str, V]) -> dict[str, V]:
    """``metrics`` with :data:`PREFIX` before every key."""
    return {PREFIX + key: value for key, value in metrics.items()}


def unprefixed(key: str) -> str:
    """``key`` without :data:`PREFIX` (keys without it, e.g. ``eval/accuracy``, come back as they are)."""
    return key[len(PREFIX):] if key.startswith(PREFIX) else key


def stage_name(code: float) -> str:
    """A logged stage code -> its name in :data:`STAGES` (a code outside ``0..3``, or NaN, reads ``unknown``)."""
    if not math.isfinite(code):
        return "unknown"
    i = int(round(code))
    return STAGES[i] if 0 <= i < len(STAGES) else "unknown"
