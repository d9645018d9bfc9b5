"""WandbSink: log into the run the host already has (the Trainer's, Accelerate's, the user's).

Two step modes:

* ``step_key="train/global_step"`` (default; Lightning uses ``"trainer/global_step"``): on first use
  the sink calls ``run.define_metric(step_key)`` and ``run.define_metric(metric_glob,
  step_metric=step_key)``, then logs ``run.log({**metrics, step_key: step})`` **without** ``step=``.
  W&B's own ``_step`` has usually moved past the training step because of the host's log calls,
  and a ``step=`` below it is dropped by W&B ("Tried to log to step ... less than the current step").
* ``step_key=None``: ``run.log(metrics, step=step)`` for runs whose steps the user controls
  (Accelerate: same semantics as ``accelerator.log``). A step below the last one this sink logged,
  or below the run's current step, is dropped here with a warning instead of silently by W&B.

``alert`` calls ``run.alert(title=, text=, level=, wait_duration=)`` (seconds; titles are cut to
64 characters, W&B's limit) for events at ``alert_level`` or above (default ``"WARN"``: a rule's
plateau or threshold, not each group's stage change, which is an ``INFO`` event and goes to the
history and the summary only). Every event is counted in the summary. Offline runs keep the alert
in the ``.wandb`` file.

**Sections.** W&B puts a panel in the section named by its key's first ``/`` segment. With
``sections=True`` (default) the sink files keys so that the headline sits apart:

* ``grokmon/...``: the headline (``pathway_distance``, ``pathway_distance_raw``,
  ``pathway_consistency``, ``pathway_cosine``, ``pathway_drift``, ``probe_loss``,
  ``routing_entropy``, ``stage``), the alert flags ``alert/<rule>``, the per-group charts and the
  stage table;
* ``grokmon_group/<g>/<metric>``: each group's scalars (:data:`grokmon.keys.GROUP_SECTION`);
* ``grokmon_diag/...`` (:data:`grokmon.keys.DIAG_SECTION`): everything else (timings, error and drop counts, load statistics, lengths,
  per-layer keys, ``pathway_distance_stderr``, extra forms).

:meth:`WandbSink.wandb_key` gives the W&B key of a grokmon key. The JSONL record, the Trainer's
``log_history`` and every other sink keep the ``grokmon/`` keys.

**Uninformative keys** (``skip_uninformative=True``, default) are not sent to W&B:
``pathway_distance_stderr`` while it is 0 (every pair of the probe is used, so the mean is exact).
A metric the model has too few MoE layers for (the paper's consistency score with 2 layers) never
reaches a sink: the monitor and ``grokmon scan`` leave it out (:mod:`grokmon.metrics.info`).

What the sink adds beside the scalars (``<p>`` is the metric prefix, ``grokmon/``):

* **Per-group charts** (``group_charts=True``): for every metric with ``group/<g>/<metric>`` keys,
  a ``wandb.plot.line_series`` chart ``<p>by_group/<metric>`` with one line per group (and the
  whole probe set, ``all samples``). W&B charts are static tables, so they are logged every
  ``charts_every`` probes (the monitor passes ``MonitorConfig.wandb_charts_every``, default 10: a
  live or killed run shows the charts of its last refresh) and at :meth:`close` (each refresh
  writes one small table per metric; at most ``max_points`` points per line are kept, evenly
  spaced).
* **Summary** (``summary=True``), updated as things happen: ``<p>stages`` (each group's current
  stage name, ``overall`` for the whole probe set), ``<p>stage_transitions`` (the last 100
  ``{step, group, previous, stage}``) and ``<p>alerts`` (``count``, ``last``, and per rule
  ``count`` / ``first_step`` / ``last_step`` / ``level``).
* **Stage timeline table** (``stage_table=True``): ``<p>stage_timeline``, a ``wandb.Table`` with
  one row per stretch of a group in one stage (``group, stage, stage_code, start_step, end_step,
  probes``), logged with the charts.

These logs follow the same step rules: without ``step=`` in the first mode (the row carries the
last probe's ``step_key``); in the second, at ``step=max(last step, run.step)``, never lower.
Close the sink (``monitor.close()``) before ``run.finish()``: a finished run takes no more logs.

Example:
    >>> import wandb                                                   # doctest: +SKIP
    >>> run = wandb.init(project="moe", mode="offline")                # doctest: +SKIP
    >>> sink = WandbSink(run, charts_every=10)                         # doctest: +SKIP
    >>> sink.log({"grokmon/group/code/pathway_distance": 3.1}, step=200)  # doctest: +SKIP
    >>> sink.close()                  # logs grokmon/by_group/pathway_distance  # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import SinkError
from ..keys import DIAG_SECTION, GROUP_SECTION, METRIC_GLOB, PREFIX, STAGES, stage_name
from .base import ALERT_LEVELS, AlertInfo, Sink, to_float

__all__ = ["WandbSink"]

_MAX_TITLE = 64
_MAX_TRANSITIONS = 100
_GROUP = re.compile(r"^group/(?P<group>[^/]+)/(?P<metric>.+)$")
ALL_SAMPLES = "all samples"
HEADLINE = frozenset({"pathway_distance", "pathway_distance_raw", "pathway_consistency", "pathway_cosine",
                      "pathway_drift", "probe_loss", "routing_entropy", "stage"})


class WandbSink(Sink):
    """Log grokmon metrics and alerts into a W&B run (see module doc for the step modes and extras).

    Args:
        run: the W&B run (default: ``wandb.run`` at first use).
        step_key: the host's step metric, or None to log with ``step=``.
        metric_glob: suffix glob of grokmon's keys for ``define_metric``. The group, chart, table and
            summary keys always use :data:`grokmon.keys.PREFIX` (``grokmon/``).
        group_charts: log ``<prefix>by_group/<metric>`` line-series charts.
        charts_every: also refresh the charts and the stage table every this many probes
            (None: only at :meth:`close`).
        stage_table: log the ``<prefix>stage_timeline`` table.
        summary: keep stages, transitions and alert firings in ``run.summary``.
        max_points: most points per line of a chart.
        sections: file headline, per-group and diagnostic keys in three W&B sections (module doc).
        skip_uninformative: do not send keys that carry no information (module doc).
        alert_level: the lowest level that calls ``run.alert`` (``"INFO"``: every event, stage
            changes included); lower events still reach the summary.
    """

    name = "wandb"

    def __init__(self, run: Any = None, step_key: str | None = "train/global_step", *,
                 metric_glob: str | None = METRIC_GLOB, group_charts: bool = True, charts_every: int | None = None,
                 stage_table: bool = True, summary: bool = True, max_points: int = 1000,
                 sections: bool = True, skip_uninformative: bool = True, alert_level: str = "WARN") -> None:
        if metric_glob is not None and "*" in metric_glob[:-1]:
            raise SinkError(f"metric_glob={metric_glob!r}: W&B accepts only a suffix glob such as 'grokmon/*'")
        if charts_every is not None and (not isinstance(charts_every, int) or charts_every < 1):
            raise SinkError(f"charts_every={charts_every!r} must be a positive number of probes, or None "
                            "(charts only at close)")
        if not isinstance(max_points, int) or max_points < 2:
            raise SinkError(f"max_points={max_points!r} must be an int >= 2")
        if alert_level not in ALERT_LEVELS:
            raise SinkError(f"alert_level={alert_level!r} must be one of {ALERT_LEVELS}")
        self._run = run
        self.step_key = step_key
        self.metric_glob = metric_glob
        self.prefix = PREFIX  # grokmon.keys owns it; metric_glob only picks the keys put on grokmon's step axis
        self.group_charts = group_charts
        self.charts_every = charts_every
        self.stage_table = stage_table
        self.summary = summary
        self.max_points = max_points
        self.sections = sections
        self.skip_uninformative = skip_uninformative
        self.alert_level = alert_level
        self.last_step: int | None = None
        self.dropped = 0
        self.probes = 0
        self._defined = False
        self._series: dict[str, dict[str, list[tuple[int, float]]]] = {}  # metric -> line -> points
        self._stretches: list[list[Any]] = []         # [group, stage, start, end, probes], in order
        self._open: dict[str, list[Any]] = {}         # group -> its current stretch
        self._transitions: list[dict[str, Any]] = []
        self._alerts: dict[str, Any] = {"count": 0, "last": None, "by_rule": {}}

    @property
    def run(self) -> Any:
        """The W&B run: the one given, else ``wandb.run`` at first use."""
        if self._run is None:
            import wandb

            if wandb.run is None:
                raise SinkError("no active W&B run: call wandb.init() first or pass run=")
            self._run = wandb.run
        return self._run

    def wandb_key(self, key: str) -> str:
        """The W&B key of a grokmon key (its section, see the module doc).

        Example:
            >>> sink = WandbSink(run=object())
            >>> sink.wandb_key("grokmon/pathway_distance"), sink.wandb_key("grokmon/probe_seconds")
            ('grokmon/pathway_distance', 'grokmon_diag/probe_seconds')
            >>> sink.wandb_key("grokmon/group/code/probe_loss")
            'grokmon_group/code/probe_loss'
        """
        if not self.sections or not key.startswith(self.prefix):
            return key
        k = key[len(self.prefix):]
        if k in HEADLINE or k.startswith(("alert/", "by_group/")) or k == "stage_timeline":
            return key
        if _GROUP.match(k):
            return GROUP_SECTION + k[len("group/"):]
        return DIAG_SECTION + k

    def _globs(self) -> list[str]:
        if self.metric_glob is None:
            return []
        if not self.sections:
            return [self.metric_glob]
        return [self.metric_glob, GROUP_SECTION + "*", DIAG_SECTION + "*"]

    def _define(self, run: Any) -> None:
        if self._defined:
            return
        if self.step_key is not None:
            run.define_metric(self.step_key)
            for glob in self._globs():
                run.define_metric(glob, step_metric=self.step_key)
        self._defined = True

    def _informative(self, values: dict[str, float]) -> dict[str, float]:
        """``values`` without the keys that carry no information (module doc)."""
        if not self.skip_uninformative:
            return values
        stderr = self.prefix + "pathway_distance_stderr"
        return {k: v for k, v in values.items() if not (k == stderr and v == 0.0)}

    # ------------------------------------------------------------------ scalars
    def log(self, metrics: Mapping[str, float], step: int) -> None:
        run = self.run
        self._define(run)
        step = int(step)
        values = {str(k): to_float(v, k) for k, v in metrics.items()}
        if self.step_key is None:
            # W&B's run.step is the row it is filling: a lower step= is dropped by W&B, an equal one merges
            floor = max(self.last_step if self.last_step is not None else 0, _int(getattr(run, "step", 0)))
            if step < floor:
                self.dropped += 1
                warnings.warn(
                    f"WandbSink: step {step} is below the run's current step {floor}; W&B would drop it, so it is "
                    "not logged. Use step_key='train/global_step' (log against a step metric) when other code logs "
                    "too", RuntimeWarning, stacklevel=2,
                )
                return
        self.probes += 1
        values = self._informative(values)
        changed = self._track(values, step)
        values = {self.wandb_key(k): v for k, v in values.items()}
        if self.charts_every is not None and self.probes % self.charts_every == 0:
            values.update(self._media())
        if self.step_key is not None:
            run.log({**values, self.step_key: step})
        else:
            run.log(values, step=step)
        self.last_step = step
        if changed and self.summary:
            run.summary.update(self._stage_summary())

    def _track(self, values: Mapping[str, float], step: int) -> bool:
        """Remember group series and stage stretches; True when a stage changed."""
        changed = False
        for key, value in values.items():
            if not key.startswith(self.prefix):
                continue
            k = key[len(self.prefix):]
            m = _GROUP.match(k)
            group, metric = (m["group"], m["metric"]) if m else (None, k)
            if metric == "stage" and math.isfinite(value):
                changed |= self._stage(group or "overall", value, step)
            elif m and self.group_charts and math.isfinite(value):
                self._series.setdefault(metric, {}).setdefault(group, []).append((step, value))
        if self.group_charts:  # the whole probe set, for the metrics that have groups
            for metric, lines in self._series.items():
                v = values.get(self.prefix + metric)
                if v is not None and math.isfinite(v):
                    lines.setdefault(ALL_SAMPLES, []).append((step, v))
        return changed

    def _stage(self, group: str, code: float, step: int) -> bool:
        stage = stage_name(code)
        current = self._open.get(group)
        if current is not None and current[1] == stage:
            current[3] = step
            current[4] += 1
            return False
        previous = current[1] if current is not None else None
        stretch = [group, stage, step, step, 1]
        self._open[group] = stretch
        self._stretches.append(stretch)
        if previous is not None:  # a group's first stage is where it starts, not a change
            self._transitions.append({"step": step, "group": group, "previous": previous, "stage": stage})
            del self._transitions[:-_MAX_TRANSITIONS]
        return True

    def _stage_summary(self) -> dict[str, Any]:
        return {self.prefix + "stages": {g: s[1] for g, s in self._open.items()},
                self.prefix + "stage_transitions": list(self._transitions)}

    # ------------------------------------------------------------------ charts and table
    def _thin(self, points: list[tuple[int, float]]) -> list[tuple[int, float]]:
        if len(points) <= self.max_points:
            return points
        n = len(points)
        idx = sorted({round(i * (n - 1) / (self.max_points - 1)) for i in range(self.max_points)})
        return [points[i] for i in idx]

    def _media(self) -> dict[str, Any]:
        """The charts and the stage table as they stand now (empty when there is nothing to show)."""
        out: dict[str, Any] = {}
        if not ((self.group_charts and self._series) or (self.stage_table and self._stretches)):
            return out
        import wandb

        for metric, lines in sorted(self._series.items()):
            names = sorted(g for g in lines if g != ALL_SAMPLES) + ([ALL_SAMPLES] if ALL_SAMPLES in lines else [])
            xs, ys = [], []
            for name in names:
                pts = self._thin(lines[name])
                xs.append([s for s, _ in pts])
                ys.append([v for _, v in pts])
            out[f"{self.prefix}by_group/{metric}"] = wandb.plot.line_series(
                xs, ys, keys=names, title=f"{metric} by group", xname=self.step_key or "step")
        if self.stage_table and self._stretches:
            rows = [[g, s, STAGES.index(s), start, end, n] for g, s, start, end, n in self._stretches]
            out[f"{self.prefix}stage_timeline"] = wandb.Table(
                columns=["group", "stage", "stage_code", "start_step", "end_step", "probes"], data=rows)
        return out

    # ------------------------------------------------------------------ alerts, close
    def _alert(self, alert: AlertInfo) -> None:
        kwargs: dict[str, Any] = {"title": alert.title[:_MAX_TITLE], "text": alert.text or alert.title,
                                  "level": alert.level}
        if alert.wait_duration is not None:
            kwargs["wait_duration"] = alert.wait_duration
        run = self.run
        if ALERT_LEVELS.index(alert.level) >= ALERT_LEVELS.index(self.alert_level):
            run.alert(**kwargs)
        kind = alert.extra.get("kind")
        if not self.summary or kind == "stage":  # stage changes are <p>stage_transitions, not alerts
            return
        step = alert.step if alert.step is not None else self.last_step
        rule = str(alert.extra.get("rule") or alert.title)
        a = self._alerts
        a["count"] += 1
        a["last"] = {"step": step, "title": alert.title, "level": alert.level, "kind": kind, "text": alert.text}
        r = a["by_rule"].setdefault(rule, {"count": 0, "first_step": step, "last_step": step, "level": alert.level})
        r["count"] += 1
        r["last_step"], r["level"] = step, alert.level
        run.summary.update({self.prefix + "alerts": {"count": a["count"], "last": dict(a["last"]),
                                                     "by_rule": {k: dict(v) for k, v in a["by_rule"].items()}}})

    def close(self) -> None:
        """Log the final per-group charts and stage table (the run itself belongs to the host)."""
        media = self._media()
        if not media:
            return
        run = self.run
        if getattr(run, "_is_finished", False):
            raise SinkError("the W&B run finished before WandbSink.close(): the per-group charts and the stage "
                            "table were not logged. Close the monitor (monitor.close()) before run.finish()")
        if self.step_key is not None:
            run.log({**media, self.step_key: self.last_step if self.last_step is not None else 0})
        else:
            run.log(media, step=max(self.last_step if self.last_step is not None else 0,
                                    _int(getattr(run, "step", 0))))
        self._series.clear()
        self._stretches.clear()
        self._open.clear()


def _int(x: Any) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) else 0
