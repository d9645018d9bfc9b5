"""The metric-key prefix, owned here: every writer and reader of grokmon keys uses these.

Metrics are computed unprefixed (``pathway_distance``); the monitor logs them as
``grokmon/pathway_distance``; readers (``read_metrics``, the report, alert rules, the plots) strip
the prefix again. The prefix is not configurable, so a record always reads back the same way.

Example:
    >>> prefixed({"pathway_distance": 0.5})
    {'grokmon/pathway_distance': 0.5}
    >>> unprefixed("grokmon/group/a/probe_loss"), unprefixed("eval/accuracy")
    ('group/a/probe_loss', 'eval/accuracy')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

__all__ = ["PREFIX", "METRIC_GLOB", "GROUP_SECTION", "DIAG_SECTION", "prefixed", "unprefixed"]

#: Put before every metric key the monitor logs (``grokmon/pathway_distance``).
PREFIX = "grokmon/"

#: The W&B ``define_metric`` glob that covers every :data:`PREFIX` key.
METRIC_GLOB = PREFIX + "*"

#: The W&B sections beside the headline's (``grokmon/``) where :class:`~grokmon.sinks.WandbSink` files
#: each group's scalars (``grokmon_group/<g>/<metric>``) and the diagnostics (``grokmon_diag/...``).
#: Only W&B sees these keys; every other sink and reader sees :data:`PREFIX` keys.
GROUP_SECTION = PREFIX.rstrip("/") + "_group/"
DIAG_SECTION = PREFIX.rstrip("/") + "_diag/"

V = TypeVar("V")


def prefixed(metrics: Mapping[str, V]) -> dict[str, V]:
    """``metrics`` with :data:`PREFIX` before every key."""
    return {PREFIX + key: value for key, value in metrics.items()}


def unprefixed(key: str) -> str:
    """``key`` without :data:`PREFIX` (keys without it, e.g. ``eval/accuracy``, come back as they are)."""
    return key[len(PREFIX):] if key.startswith(PREFIX) else key
