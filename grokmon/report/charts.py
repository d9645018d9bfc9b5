"""The report's charts: matplotlib figures turned into inline SVG (and the overview PNG).

Each ``*_chart`` function takes a :class:`~grokmon.report.data.RunData` and returns the SVG text
of one chart, ready to paste into HTML (no XML prolog; ids salted per chart so several charts
can share one page), or ``None`` when the run has nothing to draw there. Figures are built with
``matplotlib.figure.Figure`` directly: no pyplot state, no backend switch in the caller's process.

Interactive parts of the SVG carry classes a browser (or a test) can find: alert markers are
``<g class="alert-marker" data-step=.. data-level=.. data-label=..>`` with a ``<title>`` tooltip
(and a text label beside them), group lines ``<g class="group-line" data-group=..>``, stage bars
``<g class="stage-bar" data-group=.. data-stage=..>``; the per-group charts also carry stage bands
``<g class="stage-band" data-stage=..>`` behind the lines and ``<g class="stage-change"
data-group=.. data-stage=.. data-step=..>`` where a group's own stage changed.

Example:
    >>> from grokmon.report.data import load_run
    >>> run = load_run([(0, {"grokmon/pathway_distance": 0.7}), (100, {"grokmon/pathway_distance": 0.6})])
    >>> headline_chart(run).startswith("<svg")   # doctest: +SKIP
    True
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..keys import stage_name, unprefixed
from .data import OVERALL, Points, RunData

__all__ = ["STAGE_COLORS", "LEVEL_COLORS", "HEADLINE", "band_group", "occurring_stages", "alert_label", "plain_text",
           "pick_evenly", "strip_rows", "group_note", "strip_note", "headline_figure", "headline_chart", "group_chart",
           "expert_load_chart", "save_png", "external_curves"]

STAGE_COLORS: dict[str, str] = {"loss_falling": "#f4a261", "grokking": "#2a9d8f", "saturated": "#264653",
                                "unknown": "#aab2bd"}
LEVEL_COLORS: dict[str, str] = {"INFO": "#3a86ff", "WARN": "#e76f00", "ERROR": "#c1121f"}
HEADLINE: dict[str, str] = {
    "pathway_distance": "pathway distance",
    "probe_loss": "probe loss",
    "routing_entropy": "routing entropy",
    "pathway_cosine": "pathway cosine",
}
MAX_EXTERNAL = 3   # held-out curves drawn in the headline chart


def direction_note(metric: str) -> str:
    """Which way is good for ``metric``, from its declared :class:`~grokmon.metrics.info.MetricInfo` ("" if unknown).

    Example:
        >>> direction_note("pathway_distance"), direction_note("pathway_cosine"), direction_note("eval/acc")
        ('lower is better', 'no fixed direction', '')
    """
    from ..metrics.info import metric_info

    info = metric_info(metric)
    if info is None:
        return ""
    return f"{info.better} is better" if info.better else "no fixed direction"


def _labelled(label: str, metric: str) -> str:
    note = direction_note(metric)
    return f"{label}\n({note})" if note else label


MAX_LAYERS = 8     # expert-load heatmaps drawn (evenly spaced when the model has more)
MAX_DOTS = 120     # curves with more probes are drawn as lines without a dot per probe
MAX_STRIP_ROWS = 24  # groups in the overview's stage strip (evenly spaced by name when there are more)
MAX_GROUP_LINES = 12  # group lines per per-group chart; with more groups, their median and 10-90 % range too
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#ff7f0e", "#7f7f7f")


def plain_text() -> Any:
    """A context in which matplotlib draws every label as written: a ``$`` in a group name, a title or
    an eval column is text, not mathtext (``$\\frac{`` would otherwise raise while drawing).

    Example:
        >>> with plain_text():                                  # doctest: +SKIP
        ...     svg = headline_chart(run, title="cost in $ (USD)")
    """
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("the report needs matplotlib: pip install 'grokmon[plot]'") from e
    return matplotlib.rc_context({"text.parse_math": False, "text.usetex": False})


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("the report needs matplotlib: pip install 'grokmon[plot]'") from e
    return Figure(figsize=(width, height), layout="constrained")


def _marker(points: Points) -> str:
    """Dots on the probes of short curves only: one SVG element per dot adds up on long runs."""
    return "o" if len(points) <= MAX_DOTS else ""


def group_color(i: int) -> str:
    """The colour of the ``i``-th group (the same in every chart of a report)."""
    return _PALETTE[i % len(_PALETTE)]


def group_style(i: int) -> str:
    """The line style of the ``i``-th group: solid for the first ten, then dash-dot, then dotted."""
    return ("-", "-.", ":")[(i // len(_PALETTE)) % 3]


def external_curves(run: RunData) -> list[str]:
    """The held-out curves the headline shows: accuracy-like names first, at most ``MAX_EXTERNAL``."""
    names = sorted(run.external, key=lambda n: ("acc" not in n.lower(), n))
    return names[:MAX_EXTERNAL]


def pick_evenly(names: list[str], limit: int) -> list[str]:
    """``names`` when there are at most ``limit``, else ``limit`` of them evenly spaced (first and last kept).

    Example:
        >>> pick_evenly([f"g{i}" for i in range(10)], 4)
        ['g0', 'g3', 'g6', 'g9']
    """
    if len(names) <= limit:
        return list(names)
    idx = sorted({round(i * (len(names) - 1) / (limit - 1)) for i in range(limit)})
    return [names[i] for i in idx]


def strip_rows(run: RunData) -> list[str]:
    """The stage strip's rows: ``overall`` first, then at most ``MAX_STRIP_ROWS`` groups."""
    groups = sorted(g for g in run.stages if g != OVERALL)
    return ([OVERALL] if OVERALL in run.stages else []) + pick_evenly(groups, MAX_STRIP_ROWS)


def _headline_metrics(run: RunData) -> list[str]:
    names = [m for m in HEADLINE if m in run.series]
    if not names:  # a record without the usual keys: show what it has
        names = sorted(run.series)[:4]
    return names


def band_group(run: RunData) -> str | None:
    """Whose stage is drawn behind the headline curves: the whole probe set, else the only group."""
    if OVERALL in run.stages:
        return OVERALL
    return next(iter(run.stages)) if len(run.stages) == 1 else None


MIN_STRETCH = 0.015  # narrowest stage stretch drawn, as a fraction of the x span (a late change stays visible)
#: most stretches drawn per group: a stage that flips at every probe is drawn as the stage held longest
#: in each of this many equal slices (thousands of bands made a 27 MB page and said no more)
MAX_STRETCHES = 60


def _x_range(run: RunData) -> tuple[float, float, float]:
    """``(x0, x1, gap)``: the axes fit the probed steps, with a 1 % margin on each side."""
    gap = float(run.probe_every or 1)
    first, last = float(run.steps[0]), float(run.steps[-1])
    pad = 0.01 * (last - first) if last > first else gap / 2
    return first - pad, last + pad, gap


def _intervals(points: list[tuple[int, float]], end: float, start: float | None = None
               ) -> list[tuple[float, float, str, int, int]]:
    """``(start, width, stage, step, changes)`` runs (``step``: the probe that saw the stage first) of one group's stage codes, drawn between probes.

    A stage changed somewhere between the probe before the change and the probe that saw it, so a
    stretch starts halfway between them (the first at ``start``) and ends halfway to the next
    change (the last at ``end``). A stretch narrower than :data:`MIN_STRETCH` of the span is drawn
    that wide (the last one leftwards from ``end``), so a change at the last probes is not a sliver.
    ``changes`` is 0, except where more than :data:`MAX_STRETCHES` stretches are coalesced
    (:func:`_coalesce`): then it counts the stage changes inside the drawn stretch.
    """
    if not points:
        return []
    lo = float(points[0][0]) if start is None else start
    out: list[list[Any]] = []
    for i, (step, code) in enumerate(points):
        stage = stage_name(code)
        if out and out[-1][2] == stage:
            continue
        begin = lo if i == 0 else (float(points[i - 1][0]) + float(step)) / 2
        if out:
            out[-1][1] = begin
        out.append([begin, end, stage, int(step)])
    if len(out) > MAX_STRETCHES:
        return _coalesce(out, lo, end)
    least = MIN_STRETCH * (end - lo)
    if len(out) > 1 and out[-1][1] - out[-1][0] < least:
        out[-1][0] = end - least
        out[-2][1] = min(out[-2][1], out[-1][0])
    result = []
    for a, b, stage, step in out:
        if b - a < least:
            mid = (a + b) / 2
            a, b = mid - least / 2, mid + least / 2
        result.append((a, b - a, stage, step, 0))
    return result


def _coalesce(stretches: list[list[Any]], lo: float, end: float) -> list[tuple[float, float, str, int, int]]:
    """:data:`MAX_STRETCHES` equal slices of ``[lo, end]``, each drawn as the stage that held longest in
    it, neighbours of one stage merged; ``changes`` counts the stage changes inside."""
    width = (end - lo) / MAX_STRETCHES
    slices: list[list[Any]] = []   # [start, end, stage, first step, changes]
    i = 0
    for k in range(MAX_STRETCHES):
        a, b = lo + k * width, lo + (k + 1) * width
        held: dict[str, float] = {}
        began, first = 0, None
        while i < len(stretches) and stretches[i][1] <= a:
            i += 1
        j = i
        while j < len(stretches) and stretches[j][0] < b:
            s0, s1, stage, step = stretches[j]
            held[stage] = held.get(stage, 0.0) + min(s1, b) - max(s0, a)
            began += j > 0 and a <= s0 < b   # a stage change inside this slice
            first = step if first is None else first
            j += 1
        stage = max(held, key=held.get)
        if slices and slices[-1][2] == stage:
            slices[-1][1], slices[-1][4] = b, slices[-1][4] + began
        else:
            slices.append([a, b, stage, first, began])
    return [(a, b - a, stage, step, changes) for a, b, stage, step, changes in slices]


def _stretch_title(group: str, stage: str, seen: int, changes: int, start: float, width: float) -> str:
    if not changes:
        return f"{group}: {stage} from the probe of step {seen}"
    return (f"{group}: mostly {stage} from step {start:.0f} to {start + width:.0f} ({changes} stage changes here, "
            f"too many to draw one by one: read the stage series in the record)")


def occurring_stages(run: RunData) -> list[str]:
    """The stages some group is in at some probe, in :data:`STAGE_COLORS` order (for legends)."""
    seen = {stage_name(code) for points in run.stages.values() for _, code in points}
    return [s for s in STAGE_COLORS if s in seen]


def alert_label(alert: Mapping[str, Any]) -> str:
    """The short label drawn beside an alert marker: the rule's name, else the title without ``grokmon:``."""
    name = str(alert.get("rule") or alert.get("title") or "alert")
    return name[len("grokmon: "):] if name.startswith("grokmon: ") else name


def _alert_marks(ax: Any, run: RunData, salt: str, values: Mapping[str, Points] | None = None,
                 *, lines: Any = (), label: bool = True) -> dict[str, dict[str, str]]:
    """Draw each alert as a dotted line on ``lines`` axes and a labelled ▼ on ``ax``; returns the marks."""
    marks: dict[str, dict[str, str]] = {}
    for i, alert in enumerate(a for a in run.alerts if a.get("step") is not None):
        step = int(alert["step"])
        level = str(alert.get("level") or "WARN")
        color = LEVEL_COLORS.get(level, LEVEL_COLORS["WARN"])
        for other in lines or (ax,):
            other.axvline(step, color=color, lw=0.8, ls=":", alpha=0.8, zorder=1)
        metric = str(alert.get("metric") or "")
        metric = unprefixed(metric)
        gid = f"{salt}-{i}"
        y = _value_at(values[metric], step) if values and metric in values else None
        if y is not None:
            ax.plot([step], [y], ls="none", marker="v", ms=10, color=color, mec="black", mew=0.6, zorder=6, gid=gid)
            at, coords = (step, y), "data"
        else:
            y_axes = 0.9 - 0.12 * (i % 3)   # staggered, so neighbouring markers' labels do not overlap
            ax.plot([step], [y_axes], ls="none", marker="v", ms=10, color=color, mec="black", mew=0.6, zorder=6,
                    transform=ax.get_xaxis_transform(), gid=gid)
            at, coords = (step, y_axes), ax.get_xaxis_transform()
        if label:
            ax.annotate(alert_label(alert), at, xycoords=coords, xytext=(4, 6 + 9 * (i % 2)),
                        textcoords="offset points", fontsize=7, color=color, zorder=7,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
        marks[gid] = {"class": "alert-marker", "data-step": str(step), "data-level": level,
                      "data-kind": str(alert.get("kind") or ""), "data-label": alert_label(alert),
                      "title": f"step {step} · {level} · {alert.get('title', '')}\n{alert.get('text', '')}".strip()}
    return marks


def _stage_bands(ax: Any, run: RunData, x0: float, x1: float, salt: str | None = None) -> dict[str, dict[str, str]]:
    """The stage of :func:`band_group` as background bands on ``ax`` (annotated when ``salt`` is given)."""
    marks: dict[str, dict[str, str]] = {}
    band = band_group(run)
    if band is None:
        return marks
    for j, (start, width, stage, seen, changes) in enumerate(_intervals(run.stages[band], x1, x0)):
        gid = None if salt is None else f"{salt}-{j}"
        ax.axvspan(start, start + width, color=STAGE_COLORS[stage], alpha=0.2, lw=0, zorder=0, gid=gid)
        if gid is not None:
            marks[gid] = {"class": "stage-band", "data-group": band, "data-stage": stage, "data-step": str(seen),
                          "title": _stretch_title(band, stage, seen, changes, start, width)}
    return marks


def _value_at(points: Points, step: int) -> float | None:
    """The finite value of the probe nearest to ``step`` (the earlier one on a tie)."""
    finite = [p for p in points if math.isfinite(p[1])]
    if not finite:
        return None
    return min(finite, key=lambda p: (abs(p[0] - step), p[0] > step))[1]


def headline_figure(run: RunData) -> tuple[Any, dict[str, dict[str, str]]]:
    """The headline curves (and held-out curves) over a stage strip, with alert markers.

    Returns the figure and ``{gid: attributes}`` of the SVG groups to annotate (alert markers,
    stage bars). The stage of the whole probe set (or of the only group) is drawn as background
    bands behind every curve; the strip below has one row of stage bars per group.
    """
    metrics = _headline_metrics(run)
    external = external_curves(run)
    rows = strip_rows(run)
    panels = [("external", n) for n in external] + [("metric", m) for m in metrics]
    n = len(panels)
    strip_h = 0.35 + 0.26 * len(rows) if rows else 0.0
    fig = _figure(10.5, max(2.2, 1.75 * n + strip_h + 0.5))
    ratios = [1.0] * n + ([strip_h / 1.75] if rows else [])
    axes = fig.subplots(max(1, len(ratios)), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": ratios or [1.0]})[:, 0]
    x0, x1, gap = _x_range(run)
    marks: dict[str, dict[str, str]] = {}
    by_metric: dict[str, Any] = {}
    for ax, (kind, name) in zip(axes, panels):
        points = run.external[name] if kind == "external" else run.series[name]
        color = "#7b2cbf" if kind == "external" else "black"
        steps, values = zip(*points) if points else ((), ())
        ax.plot(steps, values, color=color, lw=1.4, marker=_marker(points), ms=2.5)
        label = f"held-out: {name}" if kind == "external" else _labelled(HEADLINE.get(name, name), name)
        ax.set_ylabel(label, fontsize=8.5)
        ax.grid(alpha=0.25)
        ax.tick_params(labelsize=8)
        _stage_bands(ax, run, x0, x1)
        if kind == "metric":
            by_metric[name] = ax
    if n == 0:
        axes[0].text(0.5, 0.5, "no scalar grokmon curves in this record", ha="center", va="center",
                     transform=axes[0].transAxes)
    metric_axes = [ax for ax, (kind, _) in zip(axes, panels) if kind == "metric"] or list(axes[:max(1, n)])
    marks.update(_headline_alerts(run, by_metric, metric_axes[0], list(axes[:max(1, n)])))
    if rows:
        strip = axes[-1]
        for r, group in enumerate(rows):
            for j, (start, width, stage, seen, changes) in enumerate(_intervals(run.stages[group], x1, x0)):
                gid = f"stage-bar-{r}-{j}"
                strip.barh(r, width, left=start, height=0.78, color=STAGE_COLORS[stage], lw=0, gid=gid)
                marks[gid] = {"class": "stage-bar", "data-group": group, "data-stage": stage, "data-step": str(seen),
                              "title": _stretch_title(group, stage, seen, changes, start, width)}
        strip.set_yticks(range(len(rows)), rows, fontsize=8)
        strip.set_ylim(len(rows) - 0.5, -0.5)
        strip.set_ylabel("stage", fontsize=8.5)
        strip.tick_params(labelsize=8)
        strip.grid(False)
    axes[-1].set_xlim(x0, x1)
    axes[-1].set_xlabel("step", fontsize=9)
    return fig, marks


def _headline_alerts(run: RunData, by_metric: Mapping[str, Any], fallback: Any, lines: list[Any]
                     ) -> dict[str, dict[str, str]]:
    """Alert markers of the headline: on the panel of the alert's metric (at its value), else the first."""
    marks: dict[str, dict[str, str]] = {}
    for i, alert in enumerate(a for a in run.alerts if a.get("step") is not None):
        metric = str(alert.get("metric") or "")
        metric = unprefixed(metric)
        ax = by_metric.get(metric, fallback)
        one = RunData(source=run.source, alerts=[alert])
        marks.update(_alert_marks(ax, one, f"alert-marker-{i}", run.series if metric in by_metric else None,
                                  lines=lines))
    return marks


def _png_legend(fig: Any, run: RunData, title: str) -> list[Any]:
    """A title and a stage / alert legend, so the PNG reads on its own (the page has its own legend)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=STAGE_COLORS[s], label=s) for s in occurring_stages(run)]
    levels = sorted({str(a.get("level") or "WARN") for a in run.alerts})
    handles += [Line2D([], [], ls="none", marker="v", ms=8, color=LEVEL_COLORS.get(lv, LEVEL_COLORS["WARN"]),
                       mec="black", mew=0.6, label=f"{lv} alert") for lv in levels]
    out = [fig.suptitle(title, x=0.01, ha="left", fontsize=11)]
    if handles:
        out.append(fig.legend(handles=handles, loc="outside upper right", ncol=len(handles), fontsize=8,
                              frameon=False))
    return out


def headline_chart(run: RunData, png: str | Path | None = None, *, title: str = "grokmon") -> str:
    """SVG of :func:`headline_figure`; also saves it, with ``title`` and a legend, as a PNG at ``png``."""
    fig, marks = headline_figure(run)
    if png is not None:
        extra = _png_legend(fig, run, title)
        save_png(fig, png)
        for artist in extra:
            artist.remove()
    return to_svg(fig, "headline", marks, "Headline curves against the step, with stage bands and alert markers")


def group_chart(run: RunData, metric: str, *, label: str | None = None) -> str | None:
    """One line per group of ``group/<g>/<metric>`` (the whole probe set dashed), or None without groups."""
    per_group = run.grouped.get(metric)
    if not per_group:
        return None
    fig = _figure(5.6, 3.4)
    ax = fig.subplots()
    marks: dict[str, dict[str, str]] = {}
    if metric in run.series:
        steps, values = zip(*run.series[metric])
        ax.plot(steps, values, color="black", ls="--", lw=1.2, label="all samples")
    groups = run.groups
    drawn = set(pick_evenly([g for g in groups if g in per_group], MAX_GROUP_LINES))
    if len(drawn) < len(per_group):  # many groups: their spread, then a readable few of them
        _group_spread(ax, per_group)
    for i, group in enumerate(groups):
        if group not in drawn:
            continue
        steps, values = zip(*per_group[group])
        gid = f"group-line-{i}"
        ax.plot(steps, values, color=group_color(i), ls=group_style(i), lw=1.4, marker=_marker(per_group[group]),
                ms=2, label=group, gid=gid)
        marks[gid] = {"class": "group-line", "data-group": group, "title": f"{group}: {metric}"}
    x0, x1, _ = _x_range(run)
    marks.update(_stage_bands(ax, run, x0, x1, salt="stage-band"))
    marks.update(_alert_marks(ax, run, "alert-marker", label=True))
    for t in run.transitions:  # each group's own stage changes, on its line
        if t.group not in per_group:
            continue
        y = _value_at(per_group[t.group], t.step)
        if y is None:
            continue
        i = groups.index(t.group)
        gid = f"stage-change-{i}-{t.step}"
        ax.plot([t.step], [y], ls="none", marker="D", ms=6, color=STAGE_COLORS.get(t.stage, "#aab2bd"),
                mec=group_color(i), mew=1.4, zorder=5, gid=gid)
        marks[gid] = {"class": "stage-change", "data-group": t.group, "data-stage": t.stage,
                      "data-step": str(t.step), "title": f"{t.group}: {t.previous} → {t.stage} at step {t.step}"}
    ax.set_xlim(x0, x1)
    ax.set_xlabel("step", fontsize=9)
    ax.set_ylabel(_labelled(label or metric, metric), fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25)
    if len(drawn) <= 8:
        ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
    else:  # many groups: beside the plot, not over the lines
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + len(drawn) // 16,
                  frameon=False)
    return to_svg(fig, f"group-{metric}", marks, f"{label or metric} per group against the step")


def _group_spread(ax: Any, per_group: Mapping[str, Points]) -> None:
    """The median and the 10-90 % range of all groups at each step (grey), under the lines drawn."""
    import numpy as np

    at: dict[int, list[float]] = {}
    for points in per_group.values():
        for step, value in points:
            if math.isfinite(value):
                at.setdefault(step, []).append(value)
    if not at:
        return
    steps = sorted(at)
    low, mid, high = (np.array([np.percentile(at[s], q) for s in steps]) for q in (10, 50, 90))
    ax.fill_between(steps, low, high, color="#bbbbbb", alpha=0.45, lw=0, label=f"10-90 % of {len(per_group)} groups")
    ax.plot(steps, mid, color="#555555", lw=1.6, label=f"median of {len(per_group)} groups")


def group_note(run: RunData, metric: str) -> str:
    """The caption's note when a per-group chart draws only some groups ("" when it draws them all)."""
    per_group = run.grouped.get(metric) or {}
    if len(per_group) <= MAX_GROUP_LINES:
        return ""
    return (f"Showing {MAX_GROUP_LINES} of {len(per_group)} groups (evenly spaced by name) over the median and "
            "10–90 % range of all groups; every group's values are in the record.")


def strip_note(run: RunData) -> str:
    """The caption's note when the stage strip shows only some groups ("" when it shows them all)."""
    groups = [g for g in run.stages if g != OVERALL]
    if len(groups) <= MAX_STRIP_ROWS:
        return ""
    return (f"The strip shows {MAX_STRIP_ROWS} of {len(groups)} groups (evenly spaced by name); the stage table "
            "below lists every change.")


def _pick_layers(layers: list[int]) -> list[int]:
    if len(layers) <= MAX_LAYERS:
        return layers
    idx = sorted({round(i * (len(layers) - 1) / (MAX_LAYERS - 1)) for i in range(MAX_LAYERS)})
    return [layers[i] for i in idx]


def expert_load_chart(run: RunData) -> tuple[str, list[int]] | None:
    """Heatmaps of expert load (expert x probe) per MoE layer, and the layers drawn; None without load keys."""
    if not run.expert_load:
        return None
    import numpy as np

    layers = _pick_layers(sorted(run.expert_load))
    steps = sorted({s for layer in layers for pts in run.expert_load[layer].values() for s, _ in pts})
    col = {s: i for i, s in enumerate(steps)}
    experts = max(e for layer in layers for e in run.expert_load[layer]) + 1
    grids = []
    for layer in layers:
        grid = np.full((experts, len(steps)), np.nan)
        for e, pts in run.expert_load[layer].items():
            for s, v in pts:
                grid[e, col[s]] = v
        grids.append(grid)
    vmax = float(np.nanmax([np.nanmax(g) for g in grids])) or 1.0
    height = 0.6 + sum(0.35 + min(2.2, 0.05 * experts + 0.5) for _ in layers)
    fig = _figure(10.5, height)
    axes = fig.subplots(len(layers), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    for ax, layer, grid in zip(axes, layers, grids):
        image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=vmax,
                          origin="upper")
        ax.set_ylabel(f"layer {layer}\nexpert", fontsize=8)
        ax.tick_params(labelsize=7)
    ticks = sorted({round(i * (len(steps) - 1) / 7) for i in range(8)}) if len(steps) > 1 else [0]
    axes[-1].set_xticks(ticks, [str(steps[i]) for i in ticks])
    axes[-1].set_xlabel("step (one column per probe)", fontsize=9)
    fig.colorbar(image, ax=list(axes), label="load (fraction of routed tokens)", shrink=0.9)
    return to_svg(fig, "expert-load", {}, "Expert load per MoE layer over the probes"), layers


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG (white background)."""
    p = Path(path)
    fig.savefig(p, format="png", dpi=dpi, facecolor="white")
    return p


def to_svg(fig: Any, salt: str, marks: Mapping[str, Mapping[str, str]], label: str) -> str:
    """``fig`` as inline SVG: text kept as text, ids prefixed with ``salt-``, ``marks`` gids annotated.

    ``marks`` maps an artist's gid to the attributes its ``<g>`` gets (``title`` becomes a
    ``<title>`` child: the browser's tooltip).
    """
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"grokmon-{salt}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, facecolor="white")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(label)}" ', 1)
    # matplotlib numbers its groups per figure (figure_1, axes_1, ...): namespace every id and
    # every reference to one, so that several charts on one page never share an id
    ns = f"{salt}-"
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{ns}{m[1]}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{ns}{m[1]})", svg)
    svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{ns}{m[1]}"', svg)

    def annotate(m: re.Match[str]) -> str:
        attrs = dict(marks[m["gid"]])
        title = attrs.pop("title", "")
        extra = "".join(f' {k}="{html.escape(v)}"' for k, v in attrs.items())
        return f'<g id="{ns}{m["gid"]}"{extra}>' + (f"<title>{html.escape(title)}</title>" if title else "")

    if marks:
        pattern = re.compile(rf'<g id="{re.escape(ns)}(?P<gid>' + "|".join(map(re.escape, marks)) + r')">')
        svg = pattern.sub(annotate, svg)
    return svg
