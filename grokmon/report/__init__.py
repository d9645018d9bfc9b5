"""One-page HTML report of a grokmon run: the whole run at a glance, from its JSONL record.

:func:`write_report` writes ``report.html`` (self-contained: inline CSS and SVG charts, no script,
nothing fetched; open it from disk or attach it to a ticket) and ``overview.png`` (the headline
chart, for a chat message or a slide) into ``out_dir``. The page shows:

* the headline curves (pathway distance, probe loss, routing entropy, pathway cosine, where
  logged) against the step, with the stage as background bands, a strip of every group's stage,
  and alerts as markers; held-out curves above them when known (``eval_file``, or keys of the
  JSONL without the ``grokmon/`` prefix such as ``eval/accuracy``);
* pathway distance and probe loss per group, one line per group;
* an expert-load heatmap per MoE layer over time (with ``MetricConfig(per_expert=True)``);
* a table of stage transitions and alerts;
* what is known of the run: probes, steps, groups, layers, the probe file's fingerprint (a
  ``probe.pt`` beside the JSONL, as the monitor saves it, else the one the configuration line
  names) and the ``{"config": {...}}`` line the monitor and ``grokmon scan`` write first
  (:mod:`grokmon.runinfo`).

The ``eval_file`` format (CSV / JSONL / JSON of steps and values) is in
:mod:`grokmon.report.evalfile`; the page's DOM ids in :mod:`grokmon.report.page`.

Example:
    >>> from grokmon.report import write_report
    >>> path = write_report("grokmon_out/grokmon.jsonl", "grokmon_report")      # doctest: +SKIP
    >>> path.name, (path.parent / "overview.png").exists()                      # doctest: +SKIP
    ('report.html', True)
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .charts import expert_load_chart, external_curves, group_chart, headline_chart, plain_text
from .data import RunData, Transition, load_run
from .evalfile import read_eval_file
from .page import render_page

__all__ = ["write_report", "load_run", "read_eval_file", "RunData", "Transition", "REPORT_FILE", "OVERVIEW_FILE"]

REPORT_FILE = "report.html"
OVERVIEW_FILE = "overview.png"


def write_report(
    records_or_jsonl_path: Any,
    out_dir: str | os.PathLike,
    *,
    eval_file: str | os.PathLike | None = None,
    title: str | None = None,
    probe_file: str | os.PathLike | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/overview.png``; return the HTML path.

    Args:
        records_or_jsonl_path: a grokmon JSONL file (or the folder holding ``grokmon.jsonl``), the
            records :func:`grokmon.sinks.read_jsonl` returns, or ``monitor.history``.
        out_dir: folder for the two files (created; existing files of these names are replaced).
        eval_file: held-out curves to draw beside the pathway curves: CSV with a ``step`` column,
            JSONL of ``{"step": ..., "<name>": value}``, or JSON ``{"<name>": [[step, value], ...]}``
            (:mod:`grokmon.report.evalfile`).
        title: the page title (default: ``grokmon report: <model> · <folder of the JSONL>``, the model's
            name or class from the record's configuration line where it has one).
        probe_file: the run's saved probe, for its fingerprint and size (default: ``probe.pt``
            beside the JSONL when there is one).

    Raises:
        ConfigError: a missing or empty JSONL (no metric record yet), a bad ``eval_file``, or
            matplotlib not installed (``pip install 'grokmon[plot]'``).
        SinkError: a JSONL line in the middle of the file is not JSON (the file is corrupted).

    Example:
        >>> records = [(0, {"grokmon/pathway_distance": 0.71, "grokmon/stage": 0.0}),
        ...            (100, {"grokmon/pathway_distance": 0.64, "grokmon/stage": 3.0})]
        >>> write_report(records, "report_out").name                    # doctest: +SKIP
        'report.html'
    """
    series = read_eval_file(eval_file) if eval_file is not None else None
    run = load_run(records_or_jsonl_path, series)
    source_path = None if run.source == "records" else Path(run.source)
    if probe_file is None and source_path is not None and (source_path.parent / "probe.pt").is_file():
        probe_file = source_path.parent / "probe.pt"
    elif probe_file is not None and not Path(probe_file).is_file():
        raise ConfigError(f"probe_file {str(probe_file)!r} does not exist: pass the probe.pt the monitor saved "
                          "beside grokmon.jsonl, or leave probe_file out")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir {str(out)!r} is a file: pass a folder for report.html and overview.png")
    out.mkdir(parents=True, exist_ok=True)
    if title is None:
        title = default_title(run, source_path)
    with plain_text():
        charts, load = _charts(run, out, title)
    if load is not None:
        charts["chart-expert-load"], drawn = load
        all_layers = sorted(run.expert_load)
        if len(drawn) < len(all_layers):
            charts["expert-load-note"] = f"Showing {len(drawn)} of {len(all_layers)} layers, evenly spaced."
    facts = _facts(run, eval_file, probe_file)
    page = render_page(run, charts, title=title, facts=facts)
    path = out / REPORT_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def default_title(run: RunData, source: Path | None) -> str:
    """``grokmon report: <model> · <run folder>``, each part where known.

    Example:
        >>> from grokmon.report.data import load_run
        >>> run = load_run([{"config": {"model": {"class": "MixtralForCausalLM", "name_or_path": "mix-8x"}}},
        ...                 (0, {"grokmon/pathway_distance": 0.7})])
        >>> default_title(run, Path("out/grokmon/run-2/grokmon.jsonl"))
        'grokmon report: mix-8x · out/grokmon/run-2'
    """
    model = run.config.get("model") if isinstance(run.config.get("model"), dict) else {}
    parts = [str(model.get("name_or_path") or model.get("class") or "")]
    if source is not None:   # resolved: a bare "grokmon.jsonl" names its folder, not "."
        parts.append("/".join(source.resolve().parent.parts[-3:]))
    parts = [p for p in parts if p]
    return "grokmon report" + (": " + " · ".join(parts) if parts else "")


def _charts(run: RunData, out: Path, title: str) -> tuple[dict[str, str | None], Any]:
    charts: dict[str, str | None] = {
        "chart-headline": headline_chart(run, png=out / OVERVIEW_FILE, title=title),
        "chart-groups": group_chart(run, "pathway_distance", label="pathway distance"),
        "chart-group-loss": group_chart(run, "probe_loss", label="probe loss"),
    }
    return charts, expert_load_chart(run)


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def _facts(run: RunData, eval_file: Any, probe_file: Any) -> list[tuple[str, str]]:
    facts = [("record", f"<code>{_e(run.source)}</code>"),
             ("probes", f"{len(run.steps)} at steps {run.steps[0]}–{run.steps[-1]}"
                        + (f", every {run.probe_every} steps" if run.probe_every else ""))]
    if run.times is not None and all(abs(t) < 1e11 for t in run.times):  # a time the clock can show
        start, end = run.times
        facts.append(("wall clock", f"{_e(time.strftime('%Y-%m-%d %H:%M', time.localtime(start)))} → "
                                    f"{_e(time.strftime('%Y-%m-%d %H:%M', time.localtime(end)))} "
                                    f"({_duration(end - start)})"))
    groups = run.groups
    facts.append(("groups", ", ".join(f"<code>{_e(g)}</code>" for g in groups) if groups
                  else "none (the whole probe set is one group)"))
    stages = run.current_stages()
    if stages:
        now = ", ".join(f"{_e(g)}: {_e(s)} (since step {since})" for g, (s, since) in stages.items())
        facts.append(("stage now", now))
    if run.layers:
        facts.append(("MoE layers with per-layer keys", ", ".join(map(str, run.layers))))
    if run.expert_load:
        experts = max(e for per in run.expert_load.values() for e in per) + 1
        facts.append(("experts per layer", str(experts)))
    if run.external:
        shown = external_curves(run)
        where = f"<code>{_e(eval_file)}</code>" if eval_file is not None else "keys of the JSONL"
        facts.append(("held-out curves", ", ".join(f"<code>{_e(n)}</code>" for n in sorted(run.external))
                      + f" (from {where}; drawn: {_e(', '.join(shown))})"))
    errors = run.series.get("errors")
    if errors:
        facts.append(("monitor errors", f"{int(errors[-1][1])} at the last probe (<code>grokmon/errors</code>)"))
    if run.non_finite:
        facts.append(("non-finite values", f"{run.non_finite} (written as null; a failed probe logs NaN)"))
    if probe_file is not None:
        facts.append(("probe", _probe_fact(Path(probe_file))))
    elif run.config.get("probe_fingerprint"):  # the configuration line names it (a scan's --probe)
        fp = str(run.config["probe_fingerprint"])
        where = run.config.get("probe_file")
        groups = run.config.get("probe_groups") or {}
        sizes = ", ".join(f"{_e(g)} {_e(n)}" for g, n in groups.items())
        facts.append(("probe", (f"<code>{_e(where)}</code>: " if where else "")
                      + f"{_e(run.config.get('probe_samples', '?'))} samples"
                      + (f" ({sizes})" if sizes else "")
                      + f', fingerprint <code title="{_e(fp)}">{_e(fp[:16])}</code> (from the configuration line)'))
    else:
        facts.append(("probe", "no <code>probe.pt</code> beside the record (the monitor saves one with "
                               "<code>save_probe=True</code>)"))
    return facts


def _probe_fact(path: Path) -> str:
    try:
        from ..probe import ProbeSet

        probe = ProbeSet.load(path)
    except Exception as e:  # noqa: BLE001 - the report still renders; the fact says what went wrong
        return f"<code>{_e(path)}</code>: unreadable ({_e(e)})"
    fp = probe.fingerprint()
    groups = probe.group_counts() if probe.groups is not None else {}
    sizes = ", ".join(f"{_e(g)} {n}" for g, n in groups.items())
    return (f'<code>{_e(path.name)}</code>: {len(probe)} samples × {probe.seq_len} tokens'
            + (f" ({sizes})" if sizes else "")
            + f', fingerprint <code title="{_e(fp)}">{_e(fp[:16])}</code>')
