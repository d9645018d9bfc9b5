"""What each metric means, declared once beside the metric: which way is good, its unit, what it needs.

Each metric module declares its keys' :class:`MetricInfo` next to the code that computes them
(``distance.py``, ``consistency.py``, ``usage.py``, ``selection.py``, ``compute.py``);
:func:`metric_info` looks one up by key. The alert rules take their default ``mode`` from
``better``, the report labels each curve with it, and the monitor leaves out a metric the model
has too few MoE layers for (``min_moe_layers``) and warns once.

Example:
    >>> info = metric_info("grokmon/group/code/pathway_distance")
    >>> info.name, info.better, info.mode
    ('pathway_distance', 'lower', 'min')
    >>> metric_info("pathway_consistency").min_moe_layers, metric_info("eval/accuracy") is None
    (3, True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["MetricInfo", "metric_info", "all_metric_info", "needs_more_layers", "drop_meaningless"]

_SCOPE = re.compile(r"^(?:(?:group|layer|expert)/[^/]+/)+")


@dataclass(frozen=True)
class MetricInfo:
    """One metric's meaning.

    Example:
        >>> MetricInfo("probe_loss", better="lower", unit="nats").mode
        'min'
    """

    name: str
    """The unprefixed key (``pathway_distance``); group and layer keys share their metric's info."""
    better: Literal["lower", "higher"] | None = None
    """Which way is good; None: no fixed direction (a diagnostic, or a metric whose direction the paper leaves open)."""
    unit: str = ""
    """What the value counts (``"fraction"``, ``"nats"``, ``"s"``, ...)."""
    min_moe_layers: int = 1
    """The fewest MoE layers (routers) for which the value can mean anything."""
    description: str = ""
    """One line for readers of the report."""

    @property
    def mode(self) -> Literal["min", "max", "any"]:
        """The alert-rule mode this direction implies (``"any"`` without a direction)."""
        return {"lower": "min", "higher": "max"}.get(self.better or "", "any")  # type: ignore[return-value]


def all_metric_info() -> dict[str, MetricInfo]:
    """Every declared metric by name (collected from the metric modules)."""
    from . import compute, consistency, distance, selection, usage

    table: dict[str, MetricInfo] = {}
    for module in (distance, consistency, usage, selection, compute):
        for info in module.INFO:
            assert info.name not in table, f"{info.name} declared twice"
            table[info.name] = info
    return table


def metric_info(key: str) -> MetricInfo | None:
    """The :class:`MetricInfo` of a key (prefixed or not, per group or layer), or None for a key grokmon does not compute."""
    from ..keys import unprefixed

    name = _SCOPE.sub("", unprefixed(key))
    table = all_metric_info()
    return table.get(name) or table.get(name.split("/", 1)[0])  # pathway_distance/<form>


def needs_more_layers(num_routers: int) -> list[MetricInfo]:
    """The metrics that cannot mean anything with ``num_routers`` MoE layers."""
    return [info for info in all_metric_info().values() if info.min_moe_layers > num_routers]


def drop_meaningless(metrics: dict[str, float], num_routers: int) -> list[str]:
    """Remove (in place) the keys of metrics that need more MoE layers than ``num_routers``; their names.

    Example:
        >>> m = {"pathway_consistency": 3e-8, "group/a/pathway_consistency": 0.0, "pathway_cosine": 0.9}
        >>> drop_meaningless(m, 2), m
        (['pathway_consistency'], {'pathway_cosine': 0.9})
    """
    dropped: list[str] = []
    for key in list(metrics):
        info = metric_info(key)
        if info is not None and info.min_moe_layers > num_routers:
            del metrics[key]
            if info.name not in dropped:
                dropped.append(info.name)
    return dropped
