"""The report's HTML: one self-contained page (inline CSS and SVG, no script, no network).

Stable DOM for browsers and tests:

=========================  ===============================================================
``#report-header``         title, run summary, ``#stage-summary`` (one ``.stage-badge`` per group)
``#chart-headline``        headline curves, stage bands, ``.alert-marker`` s, ``.stage-bar`` s
``#chart-groups``          pathway distance, one ``.group-line`` per group
``#chart-group-loss``      probe loss, one ``.group-line`` per group
``#chart-expert-load``     expert-load heatmap per MoE layer (only with ``layer/<i>/expert/<e>/load``)
``#stage-table``           stage transitions (``tr.stage-row``) and alerts (``tr.alert-row``) by step
``#run-config``            what is known about the run (``dt``/``dd`` pairs)
``#config-record``         the record's configuration line (``#no-config-record`` without one)
``#legend``                only the stages (``.legend-stage``) and alert levels (``.legend-alert``) that occur
=========================  ===============================================================

A section with nothing to show keeps its ``<section>`` and says how to get the data
(``p.empty``).

Example:
    >>> from grokmon.report.data import load_run
    >>> run = load_run([(0, {"grokmon/pathway_distance": 0.7})])
    >>> "<table id=\\"stage-table\\"" in render_page(run, {}, title="t", facts=[])
    True
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence

from .charts import LEVEL_COLORS, STAGE_COLORS, band_group, group_note, occurring_stages, strip_note
from .data import RunData

__all__ = ["render_page"]

_CSS = """
:root { --ink:#1d2433; --muted:#5b6578; --line:#dde2ea; --card:#ffffff; --bg:#f5f7fa; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header, main, footer { max-width:1180px; margin:0 auto; padding:0 20px; }
header { padding-top:22px; }
h1 { font-size:22px; margin:0 0 4px; }
h2 { font-size:16px; margin:0 0 10px; }
.meta { color:var(--muted); margin:0 0 10px; }
.badges { display:flex; flex-wrap:wrap; gap:6px; margin:8px 0; }
.stage-badge { border-radius:12px; padding:2px 10px; font-size:12.5px; color:#fff; }
.stage-badge b { font-weight:600; }
.legend { display:flex; flex-wrap:wrap; gap:14px; color:var(--muted); font-size:12.5px; margin:6px 0 14px; }
.swatch { display:inline-block; width:12px; height:12px; border-radius:2px; vertical-align:-1px; margin-right:4px; }
.tri { display:inline-block; width:0; height:0; border-left:6px solid transparent; border-right:6px solid transparent;
       border-top:10px solid; vertical-align:0; margin-right:4px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 16px; margin:0 0 16px; }
figure { margin:0; }
figure svg { width:100%; height:auto; display:block; }
figcaption, .note { color:var(--muted); font-size:12.5px; margin-top:6px; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit, minmax(420px, 1fr)); gap:14px; }
.empty { color:var(--muted); font-style:italic; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; }
td.num { font-variant-numeric:tabular-nums; white-space:nowrap; }
.pill { border-radius:10px; padding:1px 8px; font-size:12px; color:#fff; white-space:nowrap; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 16px; margin:0; }
dt { color:var(--muted); }
dd { margin:0; word-break:break-word; }
code { font-size:12.5px; }
details { margin-top:10px; }
footer { color:var(--muted); font-size:12.5px; padding-bottom:24px; }
"""

_STAGE_MEANING = {
    "loss_falling": "probe loss still falling (not a sign that the group is not generalizing)",
    "grokking": "memorized, pathway distance still falling (opt-in claims='distance')",
    "saturated": "memorized, pathway distance settled (opt-in claims='distance')",
    "unknown": "probe loss not falling (not yet, rising, or converged); whether it generalizes cannot be told "
               "from the pathways",
}


_LEGEND = {"loss_falling": "loss falling", "grokking": "grokking*", "saturated": "saturated*",
           "unknown": "unknown: memorized, generalization not told"}


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _stage_style(stage: str) -> str:
    """The inline colours of a stage's pill or badge: its fill, and dark text on the light fills."""
    color = STAGE_COLORS.get(stage, STAGE_COLORS["unknown"])
    text_color = "#1d2433" if stage in ("loss_falling", "unknown") else "#fff"
    return f"background:{color};color:{text_color}"


def _stage_pill(stage: str, cls: str = "pill") -> str:
    return f'<span class="{cls} stage-{_e(stage)}" style="{_stage_style(stage)}">{_e(stage)}</span>'


def _header(run: RunData, title: str, facts_line: str) -> str:
    badges = []
    for group, (stage, since) in run.current_stages().items():
        badges.append(f'<span class="stage-badge stage-{_e(stage)}" data-group="{_e(group)}" '
                      f'style="{_stage_style(stage)}" title="{_e(_STAGE_MEANING.get(stage, ""))}">'
                      f"<b>{_e(group)}</b>: {_e(stage)} since step {since}</span>")
    stages = occurring_stages(run)  # the legend lists only what the record holds
    legend = "".join(f'<span class="legend-stage" data-stage="{_e(s)}" title="{_e(_STAGE_MEANING[s])}">'
                     f'<span class="swatch" style="background:{STAGE_COLORS[s]}"></span>{_e(_LEGEND[s])}</span>'
                     for s in stages)
    levels = {str(a.get("level") or "WARN") for a in run.alerts}
    legend += "".join(f'<span class="legend-alert" data-level="{_e(level)}"><span class="tri" '
                      f'style="border-top-color:{c}"></span>{_e(level)} alert</span>'
                      for level, c in LEVEL_COLORS.items() if level in levels)
    if any(s in ("grokking", "saturated") for s in stages):
        legend += "<span>* stages only with <code>claims=\"distance\"</code></span>"
    return (f'<header id="report-header"><h1>{_e(title)}</h1><p class="meta">{facts_line}</p>'
            f'<div id="stage-summary" class="badges">{"".join(badges)}</div>'
            f'<div class="legend" id="legend">{legend}</div></header>')


def _figure(chart_id: str, svg: str | None, caption: str, empty: str) -> str:
    if svg is None:
        return f'<figure class="chart chart-empty" id="{chart_id}"><p class="empty">{empty}</p></figure>'
    return f'<figure class="chart" id="{chart_id}">{svg}<figcaption>{caption}</figcaption></figure>'


#: rows the events table lists at most: the first and last half of them, and one row saying how many
#: stage changes and alerts between are left out (a stage flipping at every probe made 6000 rows)
MAX_EVENT_ROWS = 400


def _event_rows(run: RunData) -> list[tuple[int, str, str]]:
    """``(step, kind, row)`` for every stage change and alert, by step."""
    rows: list[tuple[int, str, str]] = []
    for t in run.transitions:
        rows.append((t.step, "stage changes", (
            f'<tr class="stage-row" data-step="{t.step}" data-group="{_e(t.group)}" data-stage="{_e(t.stage)}">'
            f'<td class="num">{t.step}</td><td>{_e(t.group)}</td>'
            f"<td>stage: {_stage_pill(t.previous) if t.previous else ''} &rarr; {_stage_pill(t.stage)}</td>"
            f"<td>{_e(t.text)}</td></tr>")))
    for a in run.alerts:
        level = str(a.get("level") or "WARN")
        color = LEVEL_COLORS.get(level, LEVEL_COLORS["WARN"])
        step = a.get("step")
        who = a.get("rule") or a.get("metric") or ""
        rows.append((step if isinstance(step, int) else -1, "alerts", (
            f'<tr class="alert-row" data-step="{_e(step)}" data-level="{_e(level)}">'
            f'<td class="num">{_e("" if step is None else step)}</td><td>{_e(who)}</td>'
            f'<td><span class="pill" style="background:{color}">{_e(level)}</span> {_e(a.get("title", ""))}</td>'
            f'<td>{_e(a.get("text", ""))}</td></tr>')))
    rows.sort(key=lambda r: r[0])
    return rows


def _events(run: RunData) -> str:
    events = _event_rows(run)
    rows = [r for *_, r in events]
    if len(events) > MAX_EVENT_ROWS:
        half = MAX_EVENT_ROWS // 2
        left = events[half:-half]
        counts = ", ".join(f"{sum(1 for e in left if e[1] == kind)} {kind}" for kind in ("stage changes", "alerts")
                           if any(e[1] == kind for e in left))
        rows = rows[:half] + [
            f'<tr class="rows-left-out" data-count="{len(left)}"><td colspan="4" class="empty">{counts} from step '
            f"{left[0][0]} to step {left[-1][0]} are not listed here (the record holds every one: "
            "<code>grokmon.sinks.read_jsonl</code>)</td></tr>"] + rows[-half:]
    if not rows:
        rows = ['<tr class="no-events"><td colspan="4" class="empty">'
                "no stage change and no alert in this record</td></tr>"]
    return ('<section id="events"><h2>Stage transitions and alerts</h2>'
            '<table id="stage-table"><thead><tr><th>step</th><th>group / rule</th><th>event</th><th>detail</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></section>')


def _config_value(value: object) -> str:
    """A configuration value as text: nested settings as compact JSON, ``key: value`` pairs."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in value.items())
    return value if isinstance(value, str) else json.dumps(value)


def _config(run: RunData, facts: Sequence[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in facts)
    keys = "".join(f"<li><code>{_e(k)}</code></li>" for k in run.keys)
    config = ""
    if run.config:
        cfg = "".join(f"<dt><code>{_e(k)}</code></dt><dd><code>{_e(_config_value(v))}</code></dd>"
                      for k, v in run.config.items())
        config = f'<h2 style="margin-top:14px">Configuration record</h2><dl id="config-record">{cfg}</dl>'
    else:
        config = ('<p class="note" id="no-config-record">The record holds no configuration line '
                  '(<code>{"config": {...}}</code>; the monitor and <code>grokmon scan</code> write one first); '
                  "above is what the metric lines tell.</p>")
    return (f'<section id="config"><h2>Run</h2><dl id="run-config">{items}</dl>{config}'
            f"<details><summary>{len(run.keys)} metric keys</summary><ul>{keys}</ul></details></section>")


def render_page(run: RunData, charts: Mapping[str, str | None], *, title: str,
                facts: Sequence[tuple[str, str]], generated: float | None = None) -> str:
    """The whole HTML page. ``charts``: SVG by chart id (missing or None: the section says why);
    ``facts``: ``(label, HTML value)`` pairs for ``#run-config`` (values must be escaped already)."""
    from .. import __version__

    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(generated if generated is not None else time.time()))
    n_groups = len(run.groups)
    facts_line = (f"{_e(run.source)} · {len(run.steps)} probes · steps {run.steps[0]}–{run.steps[-1]}"
                  f"{f' · every {run.probe_every}' if run.probe_every else ''}"
                  f" · {n_groups} group{'s' if n_groups != 1 else ''} · {len(run.transitions)} stage changes"
                  f" · {len(run.alerts)} alerts")
    band = band_group(run)
    caption = ("Curves against the training step. "
               + (f"Background: the stage of <b>{_e(band)}</b>. " if band else "")
               + ("The strip below has one row of stage bars per group. " if run.stages else "")
               + strip_note(run) + " "
               + ("A stage change is drawn from halfway between the probe before it and the probe that saw it. "
                  if run.stages else "")
               + ("▼ marks an alert, labelled with its rule (hover for its text). " if run.alerts else "")
               + ("Purple: held-out curves (not computed by grokmon). " if run.external else ""))
    headline = _figure("chart-headline", charts.get("chart-headline"), caption, "no curves to draw")
    stage_note = ((f"Background: the stage of <b>{_e(band)}</b>; ◆ where a group's own stage changed. "
                   if band else "") + ("▼ alerts. " if run.alerts else ""))
    no_groups = ("No per-group keys in this record: give the probe groups "
                 "(<code>ProbeSet.from_dataset(..., group_by=\"domain\")</code>); per-group metrics are logged "
                 "whenever the probe has groups.")
    groups = (
        '<section id="groups"><h2>Per group</h2><div class="grid2">'
        + _figure("chart-groups", charts.get("chart-groups"),
                  "Pathway distance, one line per group. " + stage_note + group_note(run, "pathway_distance"),
                  no_groups)
        + _figure("chart-group-loss", charts.get("chart-group-loss"),
                  "Probe loss, one line per group: it flattens once the group is memorized. " + stage_note
                  + group_note(run, "probe_loss"), no_groups)
        + "</div></section>")
    layers_note = charts.get("expert-load-note") or ""
    load = ('<section id="expert-load"><h2>Expert load</h2>'
            + _figure("chart-expert-load", charts.get("chart-expert-load"),
                      f"Fraction of routed tokens per expert, one column per probe. {layers_note}",
                      "No per-expert load keys in this record: <code>MetricConfig(per_expert=True)</code> logs "
                      "<code>layer/&lt;i&gt;/expert/&lt;e&gt;/load</code>.")
            + "</section>")
    footer = ("<footer>Stage codes: 0 loss_falling, 1 grokking, 2 saturated, 3 unknown. grokmon claims only what "
              "its validation supports: by default a memorized group is <i>unknown</i>, since no pathway signal "
              "told grokking from non-generalizing runs (docs/alerts.md, docs/validation.md). "
              f"Generated by grokmon {_e(__version__)} on {_e(when)}.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="grokmon {_e(__version__)}">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            + _header(run, title, facts_line)
            + f'<main><section id="headline"><h2>Headline curves</h2>{headline}</section>'
            + groups + load + _events(run) + _config(run, facts) + "</main>" + footer + "</body></html>\n")
