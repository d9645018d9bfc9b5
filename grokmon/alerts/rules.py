"""Alert rules on grokmon metrics: plateau, threshold, divergence; and :class:`RuleSet` to run many.

A rule watches one metric key (unprefixed, as :func:`grokmon.metrics.compute_metrics` returns it:
``"pathway_distance"``, ``"group/math/pathway_distance"``). ``update(step, metrics)`` is called once
per probe and returns the :class:`~grokmon.alerts.events.AlertEvent` s it fires. ``rule.active`` is
the 0/1 state the monitor logs as ``grokmon/alert/<name>``. Decisions depend only on the sequence
of values seen, so every rank reaches the same ones, and ``state_dict()`` (JSON-able) carries them
across a resume. ``docs/alerts.md`` is the cookbook.

Common handling (all rules):

* a probe whose metrics lack the key is skipped (it counts toward nothing);
* a NaN / inf value is skipped and counted in ``num_nonfinite``; it never fires, never improves.
  With ``check_finite=True`` the first of a run of non-finite values fires a ``"nonfinite"`` event
  (level ERROR; like Lightning's ``EarlyStopping(check_finite=True)``);
* finite values go through the smoother (``smooth=None | "mean" | "median" | "ema"``), and the
  first ``warmup`` of them are only fed to the smoother, never judged.

Example:
    >>> rule = PlateauRule("pathway_distance", patience=2, min_delta=0.0)
    >>> fired = [bool(rule.update(200 * i, {"pathway_distance": v}))
    ...          for i, v in enumerate([0.9, 0.8, 0.8, 0.8, 0.8])]
    >>> fired, rule.active       # 2 probes without improvement after 0.8: fires once, at probe 3
    ([False, False, False, True, False], True)
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any, ClassVar, NamedTuple

from ..errors import ConfigError
from ._series import Mode, PlateauCounter, SmoothKind, Smoother, ThresholdMode, check_choice, check_int, check_number
from .events import AlertEvent, check_level, check_name, check_wait, make_title, strip_prefix, to_float


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.6g}"


class Rule:
    """Base class: metric lookup, non-finite handling, smoothing, warmup, state, events.

    Subclasses set ``kind`` and implement ``_judge(value) -> str | None`` (the event text when the
    rule fires) plus ``_state()`` / ``_load(state)`` / ``_reset()`` for their own bookkeeping.
    """

    kind: ClassVar[str] = "rule"

    def __init__(
        self,
        metric: str,
        *,
        name: str | None = None,
        level: str = "WARN",
        wait_duration: float | timedelta | None = None,
        stop_training: bool = False,
        check_finite: bool = False,
        warmup: int = 0,
        smooth: SmoothKind | None = None,
        smooth_window: int = 3,
        ema_alpha: float = 0.3,
    ) -> None:
        self.metric = strip_prefix(metric)
        self.name = check_name(name if name is not None else f"{self.kind}_{self.metric.replace('/', '_')}")
        self.level = check_level(level)
        self.wait_duration = check_wait(wait_duration)
        self.stop_training = bool(stop_training)
        self.check_finite = bool(check_finite)
        self.warmup = check_int("warmup", warmup, 0)
        self._smoother = Smoother(smooth, smooth_window, ema_alpha)
        self.reset()

    # ---- public API -------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything seen (the configuration stays)."""
        self.probes = 0  # update() calls so far; the next event's probe index
        self.num_values = 0  # finite values seen
        self.num_nonfinite = 0
        self.active = False
        self.last_value: float | None = None  # last smoothed value
        self._nonfinite_latched = False
        self._smoother.reset()
        self._reset()

    def update(self, step: int, metrics: Mapping[str, Any]) -> list[AlertEvent]:
        """Feed one probe's metrics; return the events this probe fires (usually none)."""
        probe = self.probes
        self.probes += 1
        if self.metric not in metrics:
            return []
        raw = to_float(metrics[self.metric], self.metric)
        if not math.isfinite(raw):
            self.num_nonfinite += 1
            if self.check_finite and not self._nonfinite_latched:
                self._nonfinite_latched = True
                text = f"{self.metric} is {raw} at step {step} (probe {probe}); check the run for divergence"
                return [self._event(step, probe, "nonfinite", "ERROR", raw, text, "non-finite")]
            return []
        self._nonfinite_latched = False
        value = self._smoother.push(raw)
        self.num_values += 1
        self.last_value = value
        if self.num_values <= self.warmup:
            return []
        text = self._judge(value)
        if text is None:
            return []
        return [self._event(step, probe, self.kind, self.level, value, text, self.kind)]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; ``load_state_dict`` on an equally configured rule resumes it."""
        return {
            "type": type(self).__name__,
            "metric": self.metric,
            "probes": self.probes,
            "num_values": self.num_values,
            "num_nonfinite": self.num_nonfinite,
            "active": self.active,
            "last_value": self.last_value,
            "nonfinite_latched": self._nonfinite_latched,
            "smoother": self._smoother.state_dict(),
            "rule": self._state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (raises ConfigError if it is another rule's)."""
        if state.get("type") != type(self).__name__ or state.get("metric") != self.metric:
            raise ConfigError(
                f"rule {self.name!r} ({type(self).__name__} on {self.metric!r}) cannot load the state of a "
                f"{state.get('type')} on {state.get('metric')!r}; give each rule its own name or drop the old state"
            )
        self.probes = int(state["probes"])
        self.num_values = int(state["num_values"])
        self.num_nonfinite = int(state["num_nonfinite"])
        self.active = bool(state["active"])
        lv = state.get("last_value")
        self.last_value = None if lv is None else float(lv)
        self._nonfinite_latched = bool(state.get("nonfinite_latched", False))
        self._smoother.load_state_dict(state.get("smoother", {}))
        self._load(state.get("rule", {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.metric!r}, name={self.name!r}, level={self.level!r})"

    # ---- subclass hooks ---------------------------------------------------------------------
    def _judge(self, value: float) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _reset(self) -> None:
        pass

    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, state: Mapping[str, Any]) -> None:
        pass

    def _event(self, step: int, probe: int, kind: str, level: str, value: float, text: str, what: str) -> AlertEvent:
        return AlertEvent(
            rule=self.name, metric=self.metric, step=int(step), probe=probe, kind=kind,  # type: ignore[arg-type]
            level=level, title=make_title(f"grokmon: {self.name} {what}"), text=text,  # type: ignore[arg-type]
            value=float(value), stop=self.stop_training, wait_duration=self.wait_duration,
        )


def default_mode(metric: str) -> Mode:
    """The mode a metric's declared direction implies (:class:`grokmon.metrics.info.MetricInfo`); ``"min"`` for others.

    Example:
        >>> default_mode("probe_loss"), default_mode("pathway_consistency"), default_mode("eval/loss")
        ('min', 'any', 'min')
    """
    from ..metrics.info import metric_info

    info = metric_info(strip_prefix(metric))
    return "min" if info is None else info.mode


class PlateauRule(Rule):
    """Fires when a metric stops improving: ``patience`` probes in a row without an improvement.

    Improvement follows ``ReduceLROnPlateau`` / Lightning ``EarlyStopping``: for ``mode="min"``
    a (smoothed) value ``v`` improves when ``v < best - delta``, ``delta = min_delta * |best|``
    (``threshold_mode="rel"``) or ``min_delta`` (``"abs"``); ``"max"`` mirrors it. ``mode="any"``
    counts a move in either direction as an improvement, i.e. it fires when the curve *stops
    moving*. Without ``mode`` the metric's declared direction decides (:mod:`grokmon.metrics.info`):
    ``"min"`` for lower-is-better metrics (``pathway_distance``, ``probe_loss``), ``"max"`` for
    higher-is-better ones, ``"any"`` for a metric without a fixed direction (``pathway_consistency``),
    and ``"min"`` for a key grokmon does not compute.

    Firing (counted like Lightning's ``EarlyStopping``: after ``patience`` bad probes, where
    ``ReduceLROnPlateau`` needs ``patience + 1``):

    * the rule fires once when the count of probes without improvement reaches ``patience``;
      ``active`` becomes True and stays True while the plateau lasts, without firing again
      (``repeat=True`` fires again after every further ``patience`` bad probes, which is exactly
      ``ReduceLROnPlateau(patience=patience - 1)``'s schedule of LR reductions);
    * an improvement ends the plateau: ``active`` goes back to False and the rule re-arms;
    * ``cooldown``: for this many probes after firing, the count of bad probes is held at 0, so the
      next alert needs at least ``cooldown + patience`` probes.

    Pathway distance rises while a group is being memorized: use ``warmup`` (in finite values) to
    skip that phase, or the stage tracker, which starts judging distance only after the loss converged.

    Example:
        >>> r = PlateauRule("pathway_distance", patience=3, min_delta=0.01, smooth="median")
        >>> r.name, r.patience
        ('plateau_pathway_distance', 3)
    """

    kind: ClassVar[str] = "plateau"

    def __init__(
        self,
        metric: str,
        *,
        mode: Mode | None = None,
        patience: int = 5,
        min_delta: float = 0.01,
        threshold_mode: ThresholdMode = "rel",
        cooldown: int = 0,
        repeat: bool = False,
        **common: Any,
    ) -> None:
        if mode is None:
            mode = default_mode(metric)
        self._counter = PlateauCounter(mode, min_delta, threshold_mode)
        self.mode, self.min_delta, self.threshold_mode = mode, self._counter.min_delta, threshold_mode
        self.patience = check_int("patience", patience, 1)
        self.cooldown = check_int("cooldown", cooldown, 0)
        self.repeat = bool(repeat)
        super().__init__(metric, **common)

    @property
    def best(self) -> float | None:
        return self._counter.best

    @property
    def num_bad(self) -> int:
        """Probes since the last improvement (held at 0 during cooldown, reset when firing)."""
        return self._counter.num_bad

    def _reset(self) -> None:
        self._counter.reset()
        self.cooldown_counter = 0

    def _judge(self, value: float) -> str | None:
        c = self._counter
        if c.update(value):
            self.active = False
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            c.num_bad = 0
        if c.num_bad >= self.patience and (self.repeat or not self.active):
            self.active = True
            self.cooldown_counter = self.cooldown
            c.num_bad = 0
            how = {"min": "fallen", "max": "risen", "any": "moved"}[self.mode]
            by = f"{self.min_delta:g}" if self.threshold_mode == "abs" else f"{self.min_delta * 100:g}%"
            unit = "" if self.threshold_mode == "abs" else " of its best value"
            return (
                f"{self.metric} has not {how} by more than {by}{unit} in {self.patience} probes "
                f"(best {_fmt(c.best)}, now {_fmt(value)})"
            )
        return None

    def _state(self) -> dict[str, Any]:
        return {**self._counter.state_dict(), "cooldown_counter": self.cooldown_counter}

    def _load(self, state: Mapping[str, Any]) -> None:
        self._counter.load_state_dict(dict(state))
        self.cooldown_counter = int(state.get("cooldown_counter", 0))

    def __repr__(self) -> str:
        return (
            f"PlateauRule({self.metric!r}, name={self.name!r}, mode={self.mode!r}, patience={self.patience}, "
            f"min_delta={self.min_delta:g}, threshold_mode={self.threshold_mode!r}, cooldown={self.cooldown})"
        )


class ThresholdRule(Rule):
    """Fires when the (smoothed) value goes above ``above`` or below ``below`` (give exactly one).

    It fires on the first judged probe beyond the threshold (also the very first probe, if the
    metric starts there), stays ``active`` while beyond it, and re-arms once the value is back by
    at least ``hysteresis`` (absolute): ``v <= above - hysteresis`` / ``v >= below + hysteresis``.

    Example:
        >>> r = ThresholdRule("group/math/pathway_distance", below=0.3)
        >>> [bool(r.update(i, {"group/math/pathway_distance": v})) for i, v in enumerate([0.5, 0.29, 0.28, 0.31, 0.2])]
        [False, True, False, False, True]
    """

    kind: ClassVar[str] = "threshold"

    def __init__(
        self,
        metric: str,
        *,
        above: float | None = None,
        below: float | None = None,
        hysteresis: float = 0.0,
        **common: Any,
    ) -> None:
        if (above is None) == (below is None):
            raise ConfigError("ThresholdRule needs exactly one of above=... or below=...; use two rules for a band")
        self.above = None if above is None else check_number("above", above, -math.inf)
        self.below = None if below is None else check_number("below", below, -math.inf)
        self.hysteresis = check_number("hysteresis", hysteresis)
        super().__init__(metric, **common)

    def _judge(self, value: float) -> str | None:
        if self.above is not None:
            beyond, back = value > self.above, value <= self.above - self.hysteresis
            where = f"above {self.above:g}"
        else:
            assert self.below is not None
            beyond, back = value < self.below, value >= self.below + self.hysteresis
            where = f"below {self.below:g}"
        if self.active:
            if back:
                self.active = False
            return None
        if beyond:
            self.active = True
            return f"{self.metric} is {where} ({_fmt(value)})"
        return None


class DivergenceRule(Rule):
    """Fires when the metric moves the wrong way by more than ``max_change`` over ``window`` probes.

    ``mode`` defaults to the metric's declared direction (:mod:`grokmon.metrics.info`).
    With ``mode="min"`` (lower is better, e.g. pathway distance) the change is
    ``v - min(previous window values)``; with ``"max"`` it is ``max(previous) - v``. In
    ``change_mode="rel"`` it is divided by ``|reference|`` (a rise from a reference of 0 counts as
    infinite). The rule fires when the change exceeds ``max_change``, stays ``active`` while it
    does, and re-arms when it no longer does. It needs one earlier value before it can fire.

    Example:
        >>> r = DivergenceRule("pathway_distance", max_change=0.1, window=3, change_mode="rel")
        >>> [bool(r.update(i, {"pathway_distance": v})) for i, v in enumerate([0.5, 0.45, 0.47, 0.6])]
        [False, False, False, True]
    """

    kind: ClassVar[str] = "divergence"

    def __init__(
        self,
        metric: str,
        *,
        max_change: float,
        mode: str | None = None,
        window: int = 5,
        change_mode: ThresholdMode = "rel",
        **common: Any,
    ) -> None:
        if mode is None:
            mode = default_mode(metric)
            if mode == "any":
                raise ConfigError(f"DivergenceRule({metric!r}): {strip_prefix(metric)} has no fixed good direction, so "
                                  "moving 'the wrong way' is undefined: pass mode='min' or mode='max'")
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.max_change = check_number("max_change", max_change)
        self.window = check_int("window", window, 1)
        self.change_mode = check_choice("change_mode", change_mode, ("rel", "abs"))
        super().__init__(metric, **common)

    def _reset(self) -> None:
        self._history: list[float] = []

    def change(self, value: float) -> float | None:
        """The wrong-way change of ``value`` against the previous window (None without history)."""
        if not self._history:
            return None
        ref = min(self._history) if self.mode == "min" else max(self._history)
        ch = value - ref if self.mode == "min" else ref - value
        if self.change_mode == "rel":
            if ref == 0.0:
                return math.inf if ch > 0 else 0.0
            ch /= abs(ref)
        return ch

    def _judge(self, value: float) -> str | None:
        ch = self.change(value)
        self._history.append(value)
        del self._history[: -self.window]
        if ch is None or ch <= self.max_change:
            self.active = False
            return None
        if self.active:
            return None
        self.active = True
        how = "risen" if self.mode == "min" else "fallen"
        unit = f"{ch:.1%}" if self.change_mode == "rel" and math.isfinite(ch) else f"{ch:.6g}"
        return f"{self.metric} has {how} by {unit} over the last {self.window} probes (now {_fmt(value)})"

    def _state(self) -> dict[str, Any]:
        return {"history": list(self._history)}

    def _load(self, state: Mapping[str, Any]) -> None:
        self._history = [float(v) for v in state.get("history", [])][-self.window:]


class RuleLoadReport(NamedTuple):
    """What :meth:`RuleSet.load_state_dict` matched: rules without saved state, and saved states without a rule."""

    missing: list[str]
    unexpected: list[str]




class RuleSet:
    """Runs several rules on each probe; rule names must be unique (they key state and metrics).

    Example:
        >>> rules = RuleSet([PlateauRule("pathway_distance", patience=2, name="dist")])
        >>> for i, v in enumerate([0.5, 0.5, 0.5]):
        ...     events = rules.update(200 * i, {"pathway_distance": v})
        >>> [e.probe for e in events], rules.active_metrics()
        ([2], {'alert/dist': 1.0})
    """

    def __init__(self, rules: Iterable[Rule] | Rule = ()) -> None:
        self._rules: dict[str, Rule] = {}
        self.stop_requested = False
        self._checked_keys = False
        for rule in [rules] if isinstance(rules, Rule) else rules:
            self.add(rule)

    def add(self, rule: Rule) -> None:
        """Add a rule (ConfigError if it is not a Rule or its name is taken)."""
        if not isinstance(rule, Rule):
            raise ConfigError(f"alerts must be grokmon.alerts rules (PlateauRule, ThresholdRule, ...), got {rule!r}")
        if rule.name in self._rules:
            raise ConfigError(
                f"two alert rules are named {rule.name!r}; names key the metric alert/<name> and the saved state, "
                "so pass a distinct name=... to each"
            )
        self._rules[rule.name] = rule

    def update(self, step: int, metrics: Mapping[str, Any]) -> list[AlertEvent]:
        """Feed one probe to every rule, in the order they were added; return all events.

        At the first probe, a rule whose metric is not among the probe's keys (a typo, or a key that
        needs an option such as per-group metrics) gets a warning naming the closest keys: such a
        rule would otherwise never fire and log 0 for ever.
        """
        if not self._checked_keys and self._rules:
            self._checked_keys = True
            self._warn_missing_metrics(metrics)
        events = [e for rule in self._rules.values() for e in rule.update(step, metrics)]
        if any(e.stop for e in events):
            self.stop_requested = True
        return events

    def _warn_missing_metrics(self, metrics: Mapping[str, Any]) -> None:
        keys = [strip_prefix(k) for k in metrics]
        for rule in self._rules.values():
            metric = strip_prefix(rule.metric)
            if metric not in keys:
                close = difflib.get_close_matches(metric, keys, n=3, cutoff=0.6)
                hint = f"closest: {', '.join(close)}" if close else f"the probe logs e.g. {', '.join(sorted(keys)[:5])}"
                warnings.warn(f"grokmon: alert rule {rule.name!r} watches {metric!r}, which the first probe did not "
                              f"log, so it cannot fire ({hint}); check the name, or turn on the option that "
                              "logs it (per-group keys need a probe with groups)", RuntimeWarning, stacklevel=4)

    def active_metrics(self) -> dict[str, float]:
        """``alert/<name>`` -> 1.0 while the rule is active, else 0.0 (the monitor adds ``grokmon/``)."""
        return {f"alert/{name}": float(rule.active) for name, rule in self._rules.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"rules": {name: rule.state_dict() for name, rule in self._rules.items()},
                "stop_requested": self.stop_requested}

    def load_state_dict(self, state: Mapping[str, Any]) -> RuleLoadReport:
        """Restore the rules that have saved state; the others start fresh (reported as missing)."""
        saved = state.get("rules", {})
        for name, rule in self._rules.items():
            if name in saved:
                rule.load_state_dict(saved[name])
        self.stop_requested = bool(state.get("stop_requested", False))
        return RuleLoadReport(missing=[n for n in self._rules if n not in saved],
                          unexpected=[n for n in saved if n not in self._rules])

    def reset(self) -> None:
        for rule in self._rules.values():
            rule.reset()
        self.stop_requested = False

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules.values())

    def __len__(self) -> int:
        return len(self._rules)

    def __getitem__(self, name: str) -> Rule:
        return self._rules[name]

    def __contains__(self, name: object) -> bool:
        return name in self._rules
