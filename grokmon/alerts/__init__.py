"""Alerts: plateau / threshold / divergence rules, and the per-group grokking-stage tracker.

Plain objects with JSON-able state; no W&B here — the monitor turns their :class:`AlertEvent` s
into ``run.alert`` calls, ``grokmon/alert/<name>`` 0/1 metrics, log lines, user callbacks and an
optional stop. See ``docs/alerts.md``.

Example:
    >>> from grokmon.alerts import PlateauRule, RuleSet
    >>> rules = RuleSet([PlateauRule("pathway_distance", patience=5, min_delta=0.01)])
    >>> rules.update(200, {"pathway_distance": 0.52}), rules.active_metrics()
    ([], {'alert/plateau_pathway_distance': 0.0})
"""

from __future__ import annotations

from ._series import PlateauCounter, Smoother
from .events import LEVELS, AlertEvent
from .rules import DivergenceRule, PlateauRule, Rule, RuleLoadReport, RuleSet, ThresholdRule
from .stages import STAGE_CODES, STAGES, GroupStageTracker

__all__ = [
    "AlertEvent", "Rule", "PlateauRule", "ThresholdRule", "DivergenceRule", "RuleSet", "RuleLoadReport",
    "GroupStageTracker", "STAGES", "STAGE_CODES", "LEVELS", "Smoother", "PlateauCounter",
]
