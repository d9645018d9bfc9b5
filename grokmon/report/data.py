"""What the report shows, taken from a grokmon JSONL record: curves, stages, alerts, run facts.

:func:`load_run` turns the records that :func:`grokmon.sinks.read_jsonl` returns (or a
``monitor.history`` list of ``(step, metrics)`` pairs) into a :class:`RunData`. Nothing here
draws; :mod:`grokmon.report.charts` and :mod:`grokmon.report.page` do.

Record kinds read (see :mod:`grokmon.sinks.jsonl`):

* metric lines ``{"step", "time", "metrics": {...}}``: ``grokmon/``-prefixed keys are grokmon's
  (``group/<g>/<metric>`` per group, ``layer/<i>/expert/<e>/load`` per expert, ``stage`` and
  ``group/<g>/stage`` as stage codes); any other key (``eval/accuracy``) is an external curve;
* alert lines ``{"step", "alert": {...}}``; ``kind == "stage"`` ones carry ``extra`` =
  ``{"group", "previous", "stage"}`` and become stage transitions;
* config lines ``{"config": {...}}`` (optional; shown as the run's configuration).

Example:
    >>> run = load_run([(0, {"grokmon/pathway_distance": 0.7, "grokmon/group/a/stage": 0.0}),
    ...                 (100, {"grokmon/pathway_distance": 0.6, "grokmon/group/a/stage": 3.0})])
    >>> run.series["pathway_distance"], [(t.step, t.group, t.stage) for t in run.transitions]
    ([(0, 0.7), (100, 0.6)], [(100, 'a', 'unknown')])
"""

from __future__ import annotations

import math
import os
import re
import statistics
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..keys import PREFIX, stage_name

__all__ = ["Curve", "RunData", "Transition", "load_run", "OVERALL"]

OVERALL = "overall"  # the label of the whole probe set's stage (group None in stage events)
_GROUP = re.compile(r"^group/(?P<group>[^/]+)/(?P<metric>.+)$")
_LOAD = re.compile(r"^layer/(?P<layer>\d+)/expert/(?P<expert>\d+)/load$")
_LAYER = re.compile(r"^layer/(?P<layer>\d+)/")

Points = list[tuple[int, float]]
_STEP_LIMIT = 2**63  # steps are kept as 64-bit integers


class Curve(Sequence):
    """``(step, value)`` points kept in two arrays (16 bytes a point, not a tuple's ~100): a long run
    with hundreds of keys fits in memory. Reads like a list of tuples: iterate, index, ``len``,
    ``==`` a list.

    Example:
        >>> curve = Curve([(0, 0.5), (100, 0.25)])
        >>> curve, curve[-1], list(zip(*curve))
        ([(0, 0.5), (100, 0.25)], (100, 0.25), [(0, 100), (0.5, 0.25)])
    """

    __slots__ = ("_steps", "_values")

    def __init__(self, points: Iterable[tuple[int, float]] = ()) -> None:
        self._steps, self._values = array("q"), array("d")
        for step, value in points:
            self.append(step, value)

    def append(self, step: int, value: float) -> None:
        self._steps.append(step)
        self._values.append(value)

    def __len__(self) -> int:
        return len(self._steps)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return list(zip(self._steps[i], self._values[i]))
        return self._steps[i], self._values[i]

    def __iter__(self) -> Iterator[tuple[int, float]]:
        return zip(self._steps, self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Curve, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return repr(list(self))

    def sort_by_step(self) -> None:
        """Order the points by step (stable: points of one step keep the order they came in)."""
        steps = self._steps
        if all(a <= b for a, b in zip(steps, steps[1:])):
            return
        order = sorted(range(len(steps)), key=steps.__getitem__)
        self._steps = array("q", (steps[i] for i in order))
        self._values = array("d", (self._values[i] for i in order))


@dataclass(frozen=True)
class Transition:
    """A group's stage change: at ``step`` it went from ``previous`` to ``stage``."""

    step: int
    group: str
    previous: str
    stage: str
    text: str = ""


@dataclass
class RunData:
    """Everything the report draws, by kind (metric names without the ``grokmon/`` prefix).

    * ``series``: scalar curves ``{"pathway_distance": [(step, value), ...]}``; a ``null`` (non-finite)
      value is kept as NaN, so the curve shows a gap at that probe;
    * ``grouped``: ``{"pathway_distance": {"code": [(step, value)], ...}}`` from ``group/<g>/...``
      (NaN likewise);
    * ``expert_load``: ``{layer: {expert: [(step, load)]}}`` from ``layer/<i>/expert/<e>/load``;
    * ``external``: curves of keys without the ``grokmon/`` prefix and of the ``eval_file``;
    * ``stages``: ``{"overall" or group: [(step, code)]}``; ``transitions``: their changes, with the
      text of the matching stage alert when the file has one;
    * ``alerts``: the other alert records (plateau, threshold, ...), as written;
    * ``config``: merged ``{"config": {...}}`` records (empty when the file has none).
    """

    source: str
    steps: list[int] = field(default_factory=list)
    series: dict[str, Points] = field(default_factory=dict)
    grouped: dict[str, dict[str, Points]] = field(default_factory=dict)
    expert_load: dict[int, dict[int, Points]] = field(default_factory=dict)
    external: dict[str, Points] = field(default_factory=dict)
    stages: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)
    times: tuple[float, float] | None = None
    non_finite: int = 0

    @property
    def groups(self) -> list[str]:
        """Group names seen in any ``group/<g>/...`` key, sorted."""
        names = {g for per_group in self.grouped.values() for g in per_group}
        names |= {g for g in self.stages if g != OVERALL}
        return sorted(names)

    @property
    def probe_every(self) -> int | None:
        """The most common distance between probed steps (None with fewer than two probes)."""
        gaps = [b - a for a, b in zip(self.steps, self.steps[1:]) if b > a]
        return statistics.mode(gaps) if gaps else None

    def current_stages(self) -> dict[str, tuple[str, int]]:
        """``{group: (stage, since_step)}`` at the last probe (``overall`` first)."""
        out = {}
        for g in sorted(self.stages, key=lambda g: (g != OVERALL, g)):
            points = self.stages[g]
            name = stage_name(points[-1][1])
            since = points[-1][0]
            for step, code in reversed(points):
                if stage_name(code) != name:
                    break
                since = step
            out[g] = (name, since)
        return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _as_records(source: Any) -> tuple[str, Iterable[Any]]:
    if isinstance(source, (str, os.PathLike)):
        from ..sinks.jsonl import iter_jsonl

        path = Path(source)
        if path.is_dir():
            if not (path / "grokmon.jsonl").is_file():
                raise ConfigError(f"{path} is a folder without a grokmon.jsonl: pass the JSONL file a run "
                                  "(GrokkingMonitor output_dir) or grokmon scan wrote")
            path = path / "grokmon.jsonl"
        if not path.exists():
            raise ConfigError(f"{path} does not exist: pass the grokmon.jsonl a run (GrokkingMonitor output_dir) "
                              "or grokmon scan wrote")
        return str(path), iter_jsonl(path)  # one line at a time: a 200 MB record is never held whole
    if not isinstance(source, Iterable) or isinstance(source, (bytes, Mapping)):
        raise ConfigError(f"write_report needs a JSONL path or a list of records, got {type(source).__name__}")
    records = []
    for i, r in enumerate(source):
        if isinstance(r, Mapping):
            records.append(dict(r))
        elif isinstance(r, Sequence) and len(r) == 2 and isinstance(r[1], Mapping):  # monitor.history
            records.append({"step": r[0], "metrics": dict(r[1])})
        else:
            raise ConfigError(f"record {i} is a {type(r).__name__}: pass read_jsonl(...) records or "
                              "monitor.history ((step, metrics) pairs)")
    return "records", records


def load_run(source: Any, eval_series: Mapping[str, Points] | None = None) -> RunData:
    """Read a JSONL path (or its folder), ``read_jsonl`` records or ``monitor.history`` into :class:`RunData`.

    Raises:
        ConfigError: the file is missing, or holds no metric record (an empty file, or a run that
            has not probed yet).
        SinkError: a line in the middle of the file is not JSON (from ``read_jsonl``).
    """
    name, records = _as_records(source)
    run = RunData(source=name)
    stage_alerts: dict[tuple[int, str], dict] = {}
    collector = _Collector(run)
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise ConfigError(f"line {i + 1} of {name} is a JSON {type(r).__name__}, not a grokmon record: "
                              "pass the grokmon.jsonl a run wrote")
        if isinstance(r.get("metrics"), Mapping):
            if not _finite(r.get("step")) or abs(r["step"]) >= _STEP_LIMIT:
                raise ConfigError(f"line {i + 1} of {name} has a metrics record without a numeric 'step': "
                                  "the file was not written by grokmon")
            collector.add(r)
        elif isinstance(r.get("alert"), Mapping):
            a = dict(r["alert"])
            a.setdefault("step", r.get("step"))
            a["step"] = int(a["step"]) if _finite(a["step"]) else None  # "abc", 1e400 (inf): an alert without a step
            extra = a.get("extra") if isinstance(a.get("extra"), Mapping) else {}
            if a.get("kind") == "stage" and extra.get("stage") and a["step"] is not None:
                group = extra.get("group") or OVERALL
                stage_alerts[(a["step"], str(group))] = {**extra, "group": group, "text": a.get("text", "")}
            else:
                run.alerts.append(a)
        elif isinstance(r.get("config"), Mapping):
            run.config.update(r["config"])
    if not collector.count:
        raise ConfigError(f"{name} has no metric records: the file is empty or the run has not probed yet "
                          "(the first probe is at step 0, then one each every= optimizer steps); wait for a probe, or pass "
                          "the grokmon.jsonl of a run that has one")
    collector.finish()
    for k, points in (eval_series or {}).items():
        run.external[k] = sorted(points)
    run.transitions = _transitions(run.stages, stage_alerts)
    run.alerts.sort(key=lambda a: (a.get("step") is None, a.get("step") or 0))
    return run


class _Collector:
    """Adds metric records to a :class:`RunData` one at a time, in any order; :meth:`finish` orders
    every curve by step (stable, as sorting the records by step first would)."""

    def __init__(self, run: RunData) -> None:
        self.run = run
        self.count = 0
        self.series: dict[str, Curve] = defaultdict(Curve)
        self.grouped: dict[str, dict[str, Curve]] = defaultdict(lambda: defaultdict(Curve))
        self.load: dict[int, dict[int, Curve]] = defaultdict(lambda: defaultdict(Curve))
        self.external: dict[str, Curve] = defaultdict(Curve)
        self.stages: dict[str, Curve] = defaultdict(Curve)
        self.keys: set[str] = set()
        self.layers: set[int] = set()
        self.steps: set[int] = set()
        self.times: tuple[float, float] | None = None

    def add(self, r: Mapping[str, Any]) -> None:
        run, series, grouped, stages = self.run, self.series, self.grouped, self.stages
        self.count += 1
        step = int(r["step"])
        self.steps.add(step)
        if _finite(r.get("time")):
            t = float(r["time"])
            self.times = (t, t) if self.times is None else (min(self.times[0], t), max(self.times[1], t))
        for key, value in r["metrics"].items():
            key = str(key)
            self.keys.add(key)
            if not _finite(value):
                run.non_finite += 1
                if key.startswith(PREFIX) and not isinstance(value, (str, bool)):  # a gap in the curve
                    k = key[len(PREFIX):]
                    m = _GROUP.match(k)
                    if m and m["metric"] != "stage":
                        grouped[m["metric"]][m["group"]].append(step, math.nan)
                    elif not m and not _LAYER.match(k) and k != "stage":
                        series[k].append(step, math.nan)
                continue
            v = float(value)
            if not key.startswith(PREFIX):
                self.external[key].append(step, v)
                continue
            k = key[len(PREFIX):]
            m = _GROUP.match(k)
            if m:
                if m["metric"] == "stage":
                    stages[m["group"]].append(step, v)
                else:
                    grouped[m["metric"]][m["group"]].append(step, v)
                continue
            if k == "stage":
                stages[OVERALL].append(step, v)
                continue
            m = _LOAD.match(k)
            if m:
                self.load[int(m["layer"])][int(m["expert"])].append(step, v)
            m = _LAYER.match(k)
            if m:
                self.layers.add(int(m["layer"]))
                continue
            series[k].append(step, v)

    def finish(self) -> None:
        run = self.run
        curves = [*self.series.values(), *self.external.values(), *self.stages.values(),
                  *(c for g in self.grouped.values() for c in g.values()),
                  *(c for e in self.load.values() for c in e.values())]
        for curve in curves:
            curve.sort_by_step()
        run.steps = sorted(self.steps)
        run.series = dict(self.series)
        run.grouped = {m: dict(g) for m, g in self.grouped.items()}
        run.expert_load = {layer: dict(e) for layer, e in sorted(self.load.items())}
        run.external = dict(self.external)
        run.stages = dict(self.stages)
        run.keys = sorted(self.keys)
        run.layers = sorted(self.layers)
        run.times = self.times


def _transitions(stages: Mapping[str, list[tuple[int, float]]],
                 alerts: dict[tuple[int, str], dict]) -> list[Transition]:
    """Stage changes read from the stage codes, with the stage alert's text where one matches.

    A stage alert with no matching code change (the file lacks the stage keys) is kept as it is.
    """
    found: dict[tuple[int, str], Transition] = {}
    for group, points in stages.items():
        previous = None  # a group's first stage is where it starts, not a change
        for step, code in points:
            name = stage_name(code)
            if previous is None:
                previous = name
            elif name != previous:
                text = alerts.get((step, group), {}).get("text", "")
                found[(step, group)] = Transition(step, group, previous, name, text)
                previous = name
    for (step, group), a in alerts.items():
        if (step, group) not in found:
            found[(step, group)] = Transition(step, group, str(a.get("previous", "")), str(a["stage"]),
                                              str(a.get("text", "")))
    return sorted(found.values(), key=lambda t: (t.step, t.group != OVERALL, t.group))
