"""The parts of README.md and docs/validation.md that are written from ``summary.json``.

Every claim with a number from the matrix lives in a *generated block*: text between
``<!-- gen:NAME -->`` and ``<!-- /gen:NAME -->``. ``python -m examples.validation docs`` rewrites the
blocks from the committed summary, and a test fails when one is stale, so a claim cannot drift from
its data. A block can sit inside a paragraph (the markers are inline HTML, invisible on GitHub) or
hold a whole table (markers on their own lines).

Example:
    >>> refresh("a <!-- gen:x -->old<!-- /gen:x --> b", {"x": "new"})
    'a <!-- gen:x -->new<!-- /gen:x --> b'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from . import analyze, preregister
from .ladder import (FIRST_RECIPE_RAN, FIRST_RECIPES, PREREGISTERED_COMMIT, PREREGISTERED_LADDER, RECIPES, RUNGS, TOP,
                     ladder_cells)

ROOT = Path(__file__).resolve().parents[2]
#: the files that hold generated blocks
FILES = (ROOT / "README.md", ROOT / "docs" / "validation.md")
_BLOCK = re.compile(r"<!-- gen:(?P<name>[\w-]+) -->(?P<body>.*?)<!-- /gen:(?P=name) -->", re.S)


def millions(parameters: float) -> str:
    """A parameter count as the docs write it: ``0.24 M``, ``1.1 M``, ``26 M``."""
    m = parameters / 1e6
    return f"{m:.0f} M" if m >= 10 else f"{m:.1f} M" if m >= 1 else f"{m:.2f} M"


def _num(x: float | None, spec: str = "+.2f") -> str:
    """``x`` formatted by ``spec``, or ``n/a`` where the summary has no value (None, or NaN for an AUC
    without units)."""
    return "n/a" if analyze.nan_to_none(x) is None else format(x, spec)


def _frac(pair: list[int]) -> str:
    """``3/4`` for 3 of 4 units called; ``–`` without a unit."""
    return f"{pair[0]}/{pair[1]}" if pair[1] else "–"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else _num(100 * x, "+.1f") + " %"


def _span(values: list[float | None]) -> str:
    """``0.20 to 0.44``, or one number where all are equal."""
    vals = sorted(v for v in map(analyze.nan_to_none, values) if v is not None)
    if not vals:
        return "n/a"
    return f"{vals[0]:.2f}" if f"{vals[0]:.2f}" == f"{vals[-1]:.2f}" else f"{vals[0]:.2f} to {vals[-1]:.2f}"


def _rung_sizes(summary: dict[str, Any]) -> dict[int, float]:
    """Rung -> its smallest model's parameter count, for the rungs with a finished cell."""
    return {r["rung"]: min(r["parameters"]) for r in summary["rungs"] if r["parameters"]}


def ladder_claim(summary: dict[str, Any]) -> str:
    """What the canaries and the ladder say about specificity and scale, with their numbers."""
    thr, tok = summary["specificity"]["distance"], summary["specificity"]["distance_token"]
    judgement = summary["ladder_judgement"]
    raw = judgement["metrics"]["distance"]
    sizes = _rung_sizes(summary)
    judged = sorted(r for r in sizes if r in TOP)
    if not judged:
        return ""
    auc_token = {r["rung"]: r["auc_span"] for r in summary["rungs"] if r["metric"] == "distance_token"}
    per_rung = ", ".join(f"{auc_token[r]:.2f} at {millions(sizes[r])}" for r in sorted(sizes)
                         if analyze.nan_to_none(auc_token.get(r)) is not None)
    verdicts = judgement["verdicts"]
    shipped = [m for m, v in verdicts.items() if v == "ships"]
    contrasts = [judgement["metrics"][m]["auc_span"] for m in verdicts]
    raws = [judgement["metrics"][m.split("|")[0]]["auc_span"] for m in verdicts]
    if shipped:
        verdict = (f"By the pre-registered criterion, {', '.join(shipped)} separated better than the raw curve "
                   "on the judged rungs.")
    elif all(v == "unknown" for v in verdicts.values()):
        verdict = "Whether a control-referenced curve separates better is unknown: too few judged units."
    else:
        verdict = (f"No canary- or cross-group-referenced curve separated better than the raw one there (AUC "
                   f"{_span(contrasts)}, against {_span(raws)} for the raw forms).")
    n = judgement["units"]
    return (f"Nor is the fall specific to what generalizes. In the {thr['units']} grokked units trained beside "
            f"random-label canaries (which never generalize), the threshold distance fell {_pct(thr['median_group'])} "
            f"in the {analyze.SPAN} steps after memorization and the canaries' {_pct(thr['median_canary'])} (medians; "
            f"the grokking group fell more in {thr['group_fell_more_than_canary']} of {thr['canary_units']}), the "
            f"per-token distance {_pct(tok['median_group'])} against {_pct(tok['median_canary'])} "
            f"({tok['group_fell_more_than_canary']} of {tok['canary_units']}). Rules fixed on the lower rungs and "
            f"committed ({PREREGISTERED_COMMIT}) before the judged rungs ran "
            f"({', '.join(millions(sizes[r]) for r in judged)} parameters: {len(judgement['runs'])} runs) called "
            f"{raw['negative_called'][0]} of their {raw['negative_called'][1]} never-generalizing units, "
            f"{raw['canary_called'][0]} of their {raw['canary_called'][1]} canary groups and "
            f"{raw['grokked_called'][0]} of their {n['grokked']} grokked units \"generalized\" (threshold form). "
            f"{verdict} Per rung, the per-token form separated grokked from never-generalizing units with an AUC of "
            f"{per_rung}.")


def _falls(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grokked units trained beside canaries, in run order."""
    return sorted((u for u in units if u["class"] == "grokked" and u.get("fall_span", {}).get("distance", {})
                   .get("canary") is not None), key=lambda u: u["run"])


def specificity_tables(summary: dict[str, Any]) -> str:
    """The fall of each grokked unit, of its canaries and of its cross-group pairs in the ``SPAN``
    steps after memorization: medians for the units the rules were fitted on, the judged ones and
    all, then unit by unit."""
    units = _falls(summary["units"])
    seen = set(PREREGISTERED_LADDER["fitted_on"]) if PREREGISTERED_LADDER is not None else set()
    lines = ["| units | form | grokked units | grokking group | its canaries | its cross-group pairs | "
             "group fell more than its canaries |", "|---|---|---|---|---|---|---|"]
    for label, group in (("rules fitted on (rungs 0–1, late cells)", [u for u in units if u["run"] in seen]),
                         ("judged (rungs 2–4)", [u for u in units if u["run"] not in seen]), ("all", units)):
        for form, name in (("threshold (paper)", "distance"), ("per-token", "distance_token")):
            falls = [u["fall_span"][name] for u in group]

            def med(key: str) -> str:
                vals = [f[key] for f in falls if f.get(key) is not None]
                return _pct(float(np.median(vals))) if vals else "n/a"
            more = sum(1 for f in falls if f["group"] is not None and f["group"] < f["canary"])
            lines.append(f"| {label} | {form} | {len(falls)} | {med('group')} | {med('canary')} | {med('cross')} | "
                         f"{more} of {len(falls)} |")
    lines += ["", "| unit (memorized at, held-out then) | rules | threshold: group / canaries / cross | "
              "per-token: group / canaries / cross |", "|---|---|---|---|"]
    for u in units:
        cells = [" / ".join(_pct(u["fall_span"][n].get(k)).replace(" %", "") for k in ("group", "canary", "cross"))
                 for n in ("distance", "distance_token")]
        lines.append(f"| {u['run']} ({u['memorized_step']:.0f}, {u['held_at_memorization']:.2f}) | "
                     f"{'fitted on' if u['run'] in seen else 'judged'} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def matrix_aucs(summary: dict[str, Any]) -> str:
    """The AUC of the change in ``SPAN`` steps over every cell with canaries, raw and referenced (the
    referenced forms exist only there, so the raw forms are measured on the same units)."""
    canary_runs = {r["name"] for r in summary["runs"] if r["cell"].get("canary")}
    m = analyze.metric_table([u for u in summary["units"] if u["run"] in canary_runs])

    def auc(name: str) -> str:
        return _num(m.get(name, {}).get("auc_span"), ".2f")
    return (f"over every cell with canaries ({len(canary_runs)} runs) the AUC of the change in {analyze.SPAN} steps "
            f"is {auc('distance|canary')} (threshold form) and {auc('distance_token|canary')} (per-token) referenced "
            f"to the canaries, {auc('distance|cross')} and {auc('distance_token|cross')} referenced to the cross-group "
            f"pairs, against {auc('distance')} and {auc('distance_token')} for the raw forms on the same units")


def rung_table(summary: dict[str, Any]) -> str:
    """Per rung: units, ρ in the window, partial given the step, AUC of the raw and referenced forms,
    and on the judged rungs the pre-registered threshold rule's calls."""
    by = {(r["rung"], r["metric"]): r for r in summary["rungs"]}
    lines = ["| rung | grokked / negative units | ρ window, threshold / per-token | partial given step after "
             "mem., threshold / per-token | AUC, threshold / per-token / per-token\\|canary / per-token\\|cross | "
             "threshold rule called: grokked, negative, canary groups |", "|---|---|---|---|---|---|"]

    def f(r: dict[str, Any] | None, key: str) -> str:
        return _num(None if r is None else r[key], ".2f" if key == "auc_span" else "+.2f")

    for rung, size in sorted(_rung_sizes(summary).items()):
        d, t = by.get((rung, "distance")), by.get((rung, "distance_token"))
        c, x = by.get((rung, "distance_token|canary")), by.get((rung, "distance_token|cross"))
        calls = (preregister.judge(summary["units"], {**PREREGISTERED_LADDER, "rungs": [rung]})["metrics"]["distance"]
                 if PREREGISTERED_LADDER is not None and rung in PREREGISTERED_LADDER["rungs"] else None)
        called = (", ".join(_frac(calls[k]) for k in ("grokked_called", "negative_called", "canary_called"))
                  if calls else "(rules fitted here)")
        assert d is not None
        lines.append(f"| {rung} ({millions(size)}) | {d['grokked']} / {d['negative']} | {f(d, 'median_rho_window')} / "
                     f"{f(t, 'median_rho_window')} | {f(d, 'median_partial_step')} / {f(t, 'median_partial_step')} | "
                     f"{f(d, 'auc_span')} / {f(t, 'auc_span')} / {f(c, 'auc_span')} / {f(x, 'auc_span')} | {called} |")
    return "\n".join(lines)


#: the forms compared at 64 and 256 probe samples a group (rungs 3-4 probe 256; the 64-sample forms
#: are recomputed from the first 64 of the same probes)
PROBE_FORMS = ("distance", "distance_small", "distance_token", "distance_token_small", "distance_memorized",
               "distance_memorized_small")


def probe_size_table(summary: dict[str, Any]) -> str:
    """At the rungs that probe more than 64 samples a group: each form at 256 and at 64 samples, and
    with the paper's memorized selection."""
    probe = {r["name"]: r["cell"]["probe_per_domain"] for r in summary["runs"]}
    big = [u for u in summary["units"] if u.get("rung") is not None and probe[u["run"]] > analyze.SMALL]
    full = "/".join(map(str, sorted({probe[u["run"]] for u in big})))
    rows = analyze.rung_table(big, names=PROBE_FORMS)
    lines = ["| rung | form | probe samples a group | grokked / negative units | median ρ window | partial given step "
             "after mem. | AUC (1000) | lead (steps) |", "|---|---|---|---|---|---|---|---|"]

    for r in rows:
        form = r["metric"].removesuffix("_small")
        lines.append(f"| {r['rung']} | {form} | {analyze.SMALL if r['metric'].endswith('_small') else full} | "
                     f"{r['grokked']} / {r['negative']} | {_num(r['median_rho_window'])} | {_num(r['median_partial_step'])} | "
                     f"{_num(r['auc_span'], '.2f')} | {_num(r['median_lead_steps'], '+.0f')} |")
    return "\n".join(lines)


def cost_table(summary: dict[str, Any]) -> str:
    """Per rung: shape, recipe, finished cells of those planned, CPU-seconds a cell and in all."""
    lines = ["| rung | layers / hidden / experts / top-k | parameters | steps | train fraction | cells finished | "
             "CPU-seconds a cell, range (median) | CPU-hours |", "|---|---|---|---|---|---|---|---|"]
    ladder = [r for r in summary["runs"] if r["cell"].get("rung") is not None]
    for rung, shape in RUNGS.items():
        runs = [r for r in ladder if r["cell"]["rung"] == rung]
        secs = sorted(r["seconds"] for r in runs)
        recipes = [FIRST_RECIPES[rung], RECIPES[rung]] if rung in FIRST_RECIPES else [RECIPES[rung]]
        steps, fractions = (", then ".join(dict.fromkeys(str(r[k]) for r in recipes)) for k in ("steps", "train_fraction"))
        planned = len(ladder_cells((rung,))) + FIRST_RECIPE_RAN.get(rung, 0)   # and the first recipe's cells
        params = ", ".join(dict.fromkeys(millions(p) for p in sorted(r["parameters"] for r in runs))) or "–"
        spent = (f"{secs[0]:.0f}–{secs[-1]:.0f} ({float(np.median(secs)):.0f})" if secs else "–")
        lines.append(f"| {rung} | {shape['layers']} / {shape['hidden']} / {shape['experts']} / {shape['top_k']} | "
                     f"{params} | {steps} | {fractions} | "
                     f"{len(runs)} of {planned} | {spent} | {f'{sum(secs) / 3600:.1f}' if secs else '–'} |")
    total = sum(r["seconds"] for r in ladder)
    lines += ["", f"The {len(ladder)} ladder cells finished so far took {total:,.0f} CPU-seconds "
              f"({total / 3600:.1f} CPU-hours); the whole matrix, {len(summary['runs'])} runs, "
              f"{summary['cpu_seconds'] / 3600:.1f} CPU-hours."]
    return "\n".join(lines)


def _stages_from(transitions: list[list[Any]], start: float) -> set[str]:
    """The stages in force at some step from ``start`` on, given the ``[step, stage]`` changes."""
    before = [stage for step, stage in transitions if step <= start][-1:]
    return set(before) | {stage for step, stage in transitions if step > start}


def stage_loss_falling(summary: dict[str, Any]) -> str:
    """How often the default stage tracker, replayed, said ``loss_falling`` in a grokked unit after its
    held-out accuracy had passed 0.5: why that stage is not named "memorizing" (a reader would take it
    to mean "not generalizing")."""
    grokked = [u for u in summary["units"] if u["class"] == "grokked" and u.get("held_50") is not None]
    late = [u for u in grokked if "loss_falling" in _stages_from(u["stages_replayed"]["transitions"], u["held_50"])]
    return (f"Replayed over the matrix, the default tracker said `loss_falling` at or after the probe where held-out "
            f"accuracy passed 0.5 in {len(late)} of the {len(grokked)} grokked units")


def blocks(summary: dict[str, Any]) -> dict[str, str]:
    """Every generated block, by name."""
    out = {"headline": analyze.headline(summary), "ladder-claim": ladder_claim(summary),
           "ladder-rungs": "\n" + rung_table(summary) + "\n", "ladder-cost": "\n" + cost_table(summary) + "\n",
           "probe-size": "\n" + probe_size_table(summary) + "\n",
           "specificity": "\n" + specificity_tables(summary) + "\n", "matrix-aucs": matrix_aucs(summary),
           "stage-loss-falling": stage_loss_falling(summary)}
    if summary.get("ladder_judgement") and PREREGISTERED_LADDER is not None:
        out["ladder-judgement"] = "\n" + "\n".join(preregister.render(
            summary["ladder_judgement"], PREREGISTERED_LADDER, PREREGISTERED_COMMIT)) + "\n"
    return out


def refresh(text: str, generated: dict[str, str]) -> str:
    """``text`` with every block it holds rewritten; a block without a generator is an error."""
    def one(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in generated:
            raise SystemExit(f"no generator for the block {name!r}: one of {sorted(generated)}")
        return f"<!-- gen:{name} -->{generated[name]}<!-- /gen:{name} -->"
    return _BLOCK.sub(one, text)


def stale(generated: dict[str, str], files: tuple[Path, ...] = FILES) -> list[str]:
    """``file: block`` for every block whose text differs from what the summary says."""
    out = []
    for path in files:
        for m in _BLOCK.finditer(path.read_text()):
            if generated.get(m.group("name")) != m.group("body"):
                out.append(f"{path.relative_to(ROOT)}: {m.group('name')}")
    return out


def write(generated: dict[str, str], files: tuple[Path, ...] = FILES) -> list[Path]:
    """Rewrite the blocks of ``files``; the files that changed."""
    changed = []
    for path in files:
        old = path.read_text()
        new = refresh(old, generated)
        if new != old:
            path.write_text(new)
            changed.append(path)
    return changed
