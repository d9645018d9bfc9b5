"""Grokking stage per group: what the probe loss says for sure, and what the pathways cannot.

For every group (and the whole probe set) :class:`GroupStageTracker` reads the probe loss and,
when asked to, the pathway distance:

* ``loss_falling`` (code 0): the probe loss is falling — it has fallen below an earlier probe's
  value (by more than ``min_delta``) within the last ``patience`` probes and is not above its
  lowest value since. A loss that has not fallen yet (the first probe, or a loss that rises from
  the start) or that rises again is not falling: the stage is ``unknown`` then. The name says
  what is measured and nothing more: a group's loss keeps falling while it generalizes (on the
  validation matrix, after held-out accuracy had passed 0.5 in about half of the grokked
  groups), so this is not a "still memorizing, not generalizing" stage;
* ``unknown`` (code 3, the default once the loss has converged): the group's probe loss has stopped
  falling (in the paper's terms, it is memorized), and whether it generalizes **cannot be told**
  from the pathway signals. The probe loss averages every next-token position, some of which no
  model can learn, so it can settle before the model fits its training answers: read the stage
  as "the loss stopped falling", not as a verified memorization. On the
  validation matrix (docs/validation.md: 5 families, 6 tasks, random-label controls) the pathway
  distance fell after memorization in runs that never generalized about as much as in runs that
  grokked, so no rule on it separates the two; the tracker says so instead of guessing;
* ``grokking`` (code 1) and ``saturated`` (code 2) only with ``claims="distance"`` (opt-in, the
  rule of grokmon 0.1): after convergence, ``grokking`` while the distance is still falling,
  ``saturated`` once it stopped falling (``distance_patience`` probes without an improvement of
  ``distance_min_delta``; ``min_drop`` demands a relative fall from the peak first). On the matrix
  this rule declared ``saturated`` before held-out accuracy reached 90 % of its final value and
  ``grokking`` in random-label runs: read those stages as "the distance is moving / has settled",
  not as generalization.

Once converged, a group stays converged (memorization happens once); a loss that has never fallen
never counts as converged, so with ``claims="distance"`` it never gets ``grokking`` either. The distance's best value is
reset when the loss converges: during memorization the distance *rises* (the paper's observation).

Example:
    >>> t = GroupStageTracker(patience=2, min_delta=0.0)
    >>> for i, l in enumerate([3.0, 2.0, 1.0, 0.5, 0.5, 0.5]):
    ...     for e in t.update(100 * i, {"group/a/probe_loss": l, "group/a/pathway_distance": 0.5}):
    ...         print(i, e.extra["previous"], "->", e.extra["stage"])
    1 unknown -> loss_falling
    5 loss_falling -> unknown
    >>> t = GroupStageTracker(patience=2, min_delta=0.0, claims="distance")   # the unvalidated rule
    >>> loss = [3.0, 2.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]   # converged: 2 probes after 0.5
    >>> dist = [0.5, 0.55, 0.6, 0.6, 0.6, 0.6, 0.5, 0.4, 0.4, 0.4]  # rises, then falls after
    >>> for i, (l, d) in enumerate(zip(loss, dist)):
    ...     for e in t.update(100 * i, {"group/a/probe_loss": l, "group/a/pathway_distance": d}):
    ...         print(i, e.extra["previous"], "->", e.extra["stage"])
    1 unknown -> loss_falling
    5 loss_falling -> grokking
    9 grokking -> saturated
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from ..errors import ConfigError
from ..keys import STAGES
from ._series import PlateauCounter, SmoothKind, Smoother, ThresholdMode, check_int, check_number
from .events import AlertEvent, check_level, check_wait, make_title, strip_prefix, to_float

CLAIMS: tuple[str, ...] = ("none", "distance")
STAGE_CODES: dict[str, int] = {s: i for i, s in enumerate(STAGES)}


def _template_regex(template: str, what: str) -> re.Pattern[str]:
    if template.count("{g}") != 1:
        raise ConfigError(f"{what}={template!r} must contain '{{g}}' exactly once, e.g. 'group/{{g}}/probe_loss'")
    head, tail = template.split("{g}")
    return re.compile(re.escape(head) + r"(?P<g>.+)" + re.escape(tail) + r"\Z")


class _Track:
    """The two streams of one group and the decisions derived from them."""

    def __init__(self, owner: GroupStageTracker) -> None:
        o = owner
        self.loss_smoother = Smoother(o.smooth, o.smooth_window, o.ema_alpha)
        self.dist_smoother = Smoother(o.smooth, o.smooth_window, o.ema_alpha)
        self.loss = PlateauCounter("min", o.min_delta, o.threshold_mode)
        self.dist = PlateauCounter("min", o.distance_min_delta, o.threshold_mode)
        self.converged = False
        self.fell = False      # the loss has fallen below an earlier probe's value
        self.rising = False    # the latest loss is above the lowest one by more than min_delta
        self.peak: float | None = None  # highest smoothed distance since convergence
        self.stage = "unknown"  # nothing is known before a fall is seen
        self.last_loss: float | None = None
        self.last_distance: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_smoother": self.loss_smoother.state_dict(), "dist_smoother": self.dist_smoother.state_dict(),
            "loss": self.loss.state_dict(), "dist": self.dist.state_dict(), "converged": self.converged,
            "fell": self.fell, "rising": self.rising, "peak": self.peak, "stage": self.stage,
            "last_loss": self.last_loss, "last_distance": self.last_distance,
        }

    def load_state_dict(self, s: Mapping[str, Any]) -> None:
        self.loss_smoother.load_state_dict(s["loss_smoother"])
        self.dist_smoother.load_state_dict(s["dist_smoother"])
        self.loss.load_state_dict(s["loss"])
        self.dist.load_state_dict(s["dist"])
        self.converged = bool(s["converged"])
        self.fell = bool(s["fell"])
        self.rising = bool(s["rising"])
        self.peak = None if s.get("peak") is None else float(s["peak"])
        if s["stage"] not in STAGE_CODES:
            raise ConfigError(f"saved stage {s['stage']!r} is not one of {STAGES}; the state is corrupt or newer")
        self.stage = s["stage"]
        self.last_loss = None if s.get("last_loss") is None else float(s["last_loss"])
        self.last_distance = None if s.get("last_distance") is None else float(s["last_distance"])


class GroupStageTracker:
    """Classifies each group (and the whole probe set) as loss_falling / unknown (or, with
    ``claims="distance"``, loss_falling / grokking / saturated).

    Groups are discovered from the metric keys: every key matching ``loss_key_template`` (with
    ``{g}`` the group name) starts a group. ``loss_key`` / ``distance_key`` drive the overall stage;
    set ``loss_key=None`` to skip it, ``loss_key_template=None`` to skip the groups. Probes where a
    key is missing or non-finite leave that stream unchanged. See the module doc for the rules.

    Args:
        claims: ``"none"`` (default): after the loss converges the stage is ``unknown``, since no
            pathway signal separated grokking from non-generalizing runs on the validation matrix;
            ``"distance"``: the unvalidated rule (``grokking`` while the distance falls,
            ``saturated`` once it stops), for users who accept its measured false positives.
        patience: probes without a loss improvement before the loss counts as converged.
        min_delta, threshold_mode: what counts as a loss improvement (as in :class:`PlateauRule`).
        distance_patience, distance_min_delta: the same for the distance (default: the loss values).
        min_drop: relative fall of the distance from its peak since convergence that ``saturated``
            requires (0: none).
        smooth, smooth_window, ema_alpha: smoothing of both streams (as in the rules).
        level, wait_duration: of the ``"stage"`` events.

    Example:
        >>> t = GroupStageTracker()
        >>> t.update(0, {"probe_loss": 2.0, "pathway_distance": 0.5, "group/code/probe_loss": 2.5})
        []
        >>> t.overall_stage, t.stages(), t.stage_metrics()   # one probe: no fall seen yet
        ('unknown', {'code': 'unknown'}, {'stage': 3.0, 'group/code/stage': 3.0})
        >>> _ = t.update(100, {"probe_loss": 1.5, "group/code/probe_loss": 2.0})
        >>> t.overall_stage, t.stages()
        ('loss_falling', {'code': 'loss_falling'})
    """

    def __init__(
        self,
        *,
        claims: str = "none",
        loss_key_template: str | None = "group/{g}/probe_loss",
        distance_key_template: str | None = "group/{g}/pathway_distance",
        stage_key_template: str = "group/{g}/stage",
        loss_key: str | None = "probe_loss",
        distance_key: str = "pathway_distance",
        stage_key: str = "stage",
        patience: int = 5,
        min_delta: float = 0.01,
        threshold_mode: ThresholdMode = "rel",
        distance_patience: int | None = None,
        distance_min_delta: float | None = None,
        min_drop: float = 0.0,
        smooth: SmoothKind | None = None,
        smooth_window: int = 3,
        ema_alpha: float = 0.3,
        level: str = "INFO",
        wait_duration: float | timedelta | None = None,
    ) -> None:
        if claims not in CLAIMS:
            raise ConfigError(f"claims must be one of {CLAIMS} ('none': stages say 'unknown' after memorization; "
                              f"'distance': the unvalidated distance rule), got {claims!r}")
        self.claims = claims
        if loss_key_template is None and loss_key is None:
            raise ConfigError("GroupStageTracker has nothing to track: give loss_key or loss_key_template (or both)")
        self._loss_re = None
        if loss_key_template is not None:
            self._loss_re = _template_regex(strip_prefix(loss_key_template), "loss_key_template")
            if distance_key_template is None:
                raise ConfigError("distance_key_template is needed with loss_key_template, e.g. 'group/{g}/pathway_distance'")
            _template_regex(strip_prefix(distance_key_template), "distance_key_template")
            _template_regex(stage_key_template, "stage_key_template")
        self.loss_key_template = None if loss_key_template is None else strip_prefix(loss_key_template)
        self.distance_key_template = None if distance_key_template is None else strip_prefix(distance_key_template)
        self.stage_key_template = stage_key_template
        self.loss_key = None if loss_key is None else strip_prefix(loss_key)
        self.distance_key = strip_prefix(distance_key)
        self.stage_key = stage_key
        self.patience = check_int("patience", patience, 1)
        self.distance_patience = self.patience if distance_patience is None else check_int("distance_patience", distance_patience, 1)
        self.min_delta = check_number("min_delta", min_delta)
        self.distance_min_delta = self.min_delta if distance_min_delta is None else check_number("distance_min_delta", distance_min_delta)
        self.threshold_mode = threshold_mode
        self.min_drop = check_number("min_drop", min_drop)
        if self.min_drop >= 1.0:
            raise ConfigError(f"min_drop={min_drop!r} is a fraction of the peak distance and must be < 1")
        self.smooth, self.smooth_window, self.ema_alpha = smooth, smooth_window, ema_alpha
        self.level = check_level(level)
        self.wait_duration = check_wait(wait_duration)
        _Track(self)  # validates the smoother / counter arguments now, not at the first probe
        self.reset()

    # ---- public API -------------------------------------------------------------------------
    def reset(self) -> None:
        self.probes = 0
        self._overall: _Track | None = None
        self._groups: dict[str, _Track] = {}

    def update(self, step: int, metrics: Mapping[str, Any]) -> list[AlertEvent]:
        """Feed one probe's metrics; return a ``"stage"`` event for every group whose stage changed."""
        probe = self.probes
        self.probes += 1
        events: list[AlertEvent] = []
        if self.loss_key is not None and (self._overall is not None or self.loss_key in metrics):
            if self._overall is None:
                self._overall = _Track(self)
            ev = self._step(self._overall, None, step, probe, metrics.get(self.loss_key), metrics.get(self.distance_key))
            events += ev
        if self._loss_re is not None:
            assert self.loss_key_template is not None and self.distance_key_template is not None
            for key in metrics:
                m = self._loss_re.match(key)
                if m and m.group("g") not in self._groups:
                    self._groups[m.group("g")] = _Track(self)
            for g in sorted(self._groups):
                loss = metrics.get(self.loss_key_template.format(g=g))
                dist = metrics.get(self.distance_key_template.format(g=g))
                events += self._step(self._groups[g], g, step, probe, loss, dist)
        return events

    def stages(self) -> dict[str, str]:
        """Group name -> stage, for the groups seen so far."""
        return {g: t.stage for g, t in sorted(self._groups.items())}

    @property
    def overall_stage(self) -> str | None:
        """The stage of the whole probe set (None before its loss key was seen)."""
        return None if self._overall is None else self._overall.stage

    def stage_metrics(self) -> dict[str, float]:
        """``stage`` and ``group/<g>/stage`` -> 0.0 loss_falling, 1.0 grokking, 2.0 saturated, 3.0 unknown."""
        out: dict[str, float] = {}
        if self._overall is not None:
            out[self.stage_key] = float(STAGE_CODES[self._overall.stage])
        for g, t in sorted(self._groups.items()):
            out[self.stage_key_template.format(g=g)] = float(STAGE_CODES[t.stage])
        return out

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state of every group."""
        return {
            "type": "GroupStageTracker",
            "probes": self.probes,
            "overall": None if self._overall is None else self._overall.state_dict(),
            "groups": {g: t.state_dict() for g, t in self._groups.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("type") != "GroupStageTracker":
            raise ConfigError(f"not a GroupStageTracker state (type={state.get('type')!r})")
        self.reset()
        self.probes = int(state["probes"])
        if state.get("overall") is not None:
            self._overall = _Track(self)
            self._overall.load_state_dict(state["overall"])
        for g, s in state.get("groups", {}).items():
            self._groups[g] = t = _Track(self)
            t.load_state_dict(s)

    # ---- internals --------------------------------------------------------------------------
    def _step(self, t: _Track, group: str | None, step: int, probe: int, loss: Any, dist: Any) -> list[AlertEvent]:
        if loss is not None:
            lv = to_float(loss, "probe loss")
            if math.isfinite(lv):
                lv = t.loss_smoother.push(lv)
                t.last_loss = lv
                if not t.converged:
                    first = t.loss.best is None
                    t.fell |= t.loss.update(lv) and not first
                    assert t.loss.best is not None
                    t.rising = lv > t.loss.best + t.loss.delta(t.loss.best)
                    # once converged, a group stays converged (memorization happens once); a loss
                    # that never fell has memorized nothing and never counts as converged
                    t.converged = t.fell and t.loss.num_bad >= self.patience
        if dist is not None:
            dv = to_float(dist, "pathway distance")
            if math.isfinite(dv):
                dv = t.dist_smoother.push(dv)
                t.last_distance = dv
                if t.converged:  # the distance's fall counts only from convergence on
                    t.dist.update(dv)
                    t.peak = dv if t.peak is None else max(t.peak, dv)
        new = self._classify(t)
        if new == t.stage:
            return []
        old, t.stage = t.stage, new
        label = "overall" if group is None else f"group {group}"
        key = self.stage_key if group is None else self.stage_key_template.format(g=group)
        text = (f"{label}: {old} -> {new} at step {step} (probe {probe}; probe loss "
                f"{_fmt(t.last_loss)}, pathway distance {_fmt(t.last_distance)})")
        return [AlertEvent(
            rule="stage", metric=key, step=int(step), probe=probe, kind="stage", level=self.level,
            title=make_title(f"grokmon: {label} {_headline(new, t.converged)}"), text=text, value=float(STAGE_CODES[new]),
            wait_duration=self.wait_duration, extra={"group": group, "previous": old, "stage": new},
        )]

    def _classify(self, t: _Track) -> str:
        if not t.converged:
            return "loss_falling" if t.fell and not t.rising else "unknown"
        if self.claims == "none":
            return "unknown"
        if t.dist.best is None or t.dist.num_bad < self.distance_patience:
            return "grokking"
        if self.min_drop > 0.0:
            assert t.peak is not None
            if t.peak - t.dist.best < self.min_drop * abs(t.peak):
                return "grokking"
        return "saturated"


def _headline(stage: str, converged: bool) -> str:
    if stage == "loss_falling":
        return "probe loss falling"
    if stage != "unknown":
        return stage
    return "probe loss converged (generalization unknown)" if converged else "probe loss not falling (stage unknown)"


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.6g}"
