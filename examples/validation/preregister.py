"""The ladder's pre-registered decision rules: fixed on the lower rungs, judged only on the top rungs.

Issue 24 asks whether a *control-referenced* curve (the unit's fall minus its canaries' or minus its
cross-group pairs') separates grokking from non-grokking better than the raw curve. Before a top-rung
cell runs, :func:`fit_rules` fixes one rule per metric on the units already finished (``seen``) and the
result is committed as :data:`examples.validation.ladder.PREREGISTERED_LADDER`; :func:`judge` then
applies those frozen rules to the top-rung units only and says, by the criterion written beside them
(:data:`SHIP_MARGIN`), whether a control-referenced metric ships, does not, or is ``unknown``.

A rule: "a unit has generalized if ``metric`` changed by at most ``threshold`` in the ``SPAN`` steps
after memorization" (a fall is negative). The threshold is the midpoint of the seen grokked units'
median change and the seen negative units' (random-label runs and runs that did not generalize); a
metric whose seen grokked units did not fall more than its negative units gets no rule (None).

Example:
    >>> units = [{"class": "grokked", "run": "a", "metrics": {"distance": {"change_span": -0.10}}},
    ...          {"class": "control", "run": "b", "metrics": {"distance": {"change_span": 0.02}}}]
    >>> fit_rules(units, metrics=("distance",))
    {'distance': -0.04}
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

SPAN = 1000  # steps after memorization (analyze.SPAN: the change every rule reads)
#: the metrics that get a rule: each raw form, then its two control-referenced contrasts
METRICS: tuple[str, ...] = ("distance", "distance_token", "distance|canary", "distance_token|canary",
                            "distance|cross", "distance_token|cross")
NEGATIVE = ("control", "not generalized")
#: a contrast ships only if, on the top rungs, its AUC beats its raw form's by at least this much
#: *and* its median partial Spearman given the step (after memorization) is more negative
SHIP_MARGIN = 0.1
#: fewer unseen grokked or negative units than this: the verdict is ``unknown``
MIN_UNITS = 2


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(vals)) if vals else None


def _values(units: list[dict[str, Any]], metric: str, key: str) -> list[float]:
    return [u["metrics"][metric][key] for u in units
            if metric in u.get("metrics", {}) and u["metrics"][metric].get(key) is not None]


def auc(positive: Iterable[float | None], negative: Iterable[float | None]) -> float | None:
    """P(a positive unit's value < a negative unit's), ties counted half, over the finite values:
    1.0 separates perfectly; None without a value on both sides."""
    pos = [x for x in positive if x is not None and math.isfinite(x)]
    neg = [x for x in negative if x is not None and math.isfinite(x)]
    if not pos or not neg:
        return None
    return sum((p < n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def table_cell(text: str) -> str:
    """``text`` safe inside a markdown table cell (the bar of ``distance|canary`` would split the column)."""
    return text.replace("|", "\\|")


def fit_rules(units: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS) -> dict[str, float | None]:
    """One threshold per metric from ``units`` (the seen ones): the midpoint of the grokked and the
    negative units' median change in ``SPAN`` steps, rounded to 4 digits; None where the grokked did
    not fall more."""
    grokked = [u for u in units if u["class"] == "grokked"]
    negative = [u for u in units if u["class"] in NEGATIVE]
    rules: dict[str, float | None] = {}
    for m in metrics:
        g, n = _median(_values(grokked, m, "change_span")), _median(_values(negative, m, "change_span"))
        rules[m] = None if g is None or n is None or g >= n else round((g + n) / 2, 4)
    return rules


def call(unit: dict[str, Any], metric: str, threshold: float | None) -> bool | None:
    """The rule's verdict on one unit: True (generalized), False, or None (no rule / no value)."""
    change = unit.get("metrics", {}).get(metric, {}).get("change_span")
    return None if threshold is None or change is None else change <= threshold


def judge(units: list[dict[str, Any]], prereg: dict[str, Any]) -> dict[str, Any]:
    """Apply the frozen rules to the unseen top-rung units (``prereg["rungs"]``, runs not in ``fitted_on``).

    Per metric: calls on grokked / negative / canary units, balanced accuracy, AUC of the change in
    ``SPAN`` steps, median partial given the step; per contrast: ``ships``, ``does not ship`` or
    ``unknown`` by the criterion fixed in ``prereg["ship"]``."""
    seen = set(prereg["fitted_on"])
    unseen = [u for u in units if u["run"] not in seen and u.get("rung") in prereg["rungs"]]
    grokked = [u for u in unseen if u["class"] == "grokked"]
    negative = [u for u in unseen if u["class"] in NEGATIVE]
    canary = [u for u in unseen if u["class"] == "canary"]
    rows: dict[str, dict[str, Any]] = {}
    for m, threshold in prereg["rules"].items():
        def hits(group: list[dict[str, Any]]) -> tuple[int, int]:
            calls = [call(u, m, threshold) for u in group]
            return sum(1 for c in calls if c), sum(1 for c in calls if c is not None)

        (tp, np_), (fp, nn), (cp, cn) = hits(grokked), hits(negative), hits(canary)
        balanced = (tp / np_ + (nn - fp) / nn) / 2 if np_ and nn else None
        rows[m] = {"threshold": threshold, "grokked_called": [tp, np_], "negative_called": [fp, nn],
                   "canary_called": [cp, cn], "balanced_accuracy": balanced,
                   "auc_span": auc(_values(grokked, m, "change_span"), _values(negative, m, "change_span")),
                   "median_partial_step": _median(_values(grokked, m, "partial_step")),
                   "median_partial_step_window": _median(_values(grokked, m, "partial_step_window"))}
    margin = prereg["ship"]["auc_margin"]
    verdicts: dict[str, str] = {}
    for m in rows:
        if "|" not in m:
            continue
        raw, ref = rows[m.split("|")[0]], rows[m]
        if len(grokked) < prereg["ship"]["min_units"] or len(negative) < prereg["ship"]["min_units"] \
                or None in (raw["auc_span"], ref["auc_span"], raw["median_partial_step"], ref["median_partial_step"]):
            verdicts[m] = "unknown"
        elif ref["auc_span"] >= raw["auc_span"] + margin and ref["median_partial_step"] < raw["median_partial_step"]:
            verdicts[m] = "ships"
        else:
            verdicts[m] = "does not ship"
    return {"units": {"grokked": len(grokked), "negative": len(negative), "canary": len(canary)},
            "runs": sorted({u["run"] for u in unseen}), "metrics": rows, "verdicts": verdicts}


def render(judgement: dict[str, Any], prereg: dict[str, Any], commit: str = "n/a") -> list[str]:
    """Markdown lines: the frozen rules (committed in ``commit``) and their calls on the unseen top rungs."""
    n = judgement["units"]
    lines = [f"Pre-registered ladder rules (written {prereg['written']}, committed in {commit}), "
             f"judged on the unseen rungs {', '.join(map(str, prereg['rungs']))}: {len(judgement['runs'])} runs, "
             f"{n['grokked']} grokked, {n['negative']} negative and {n['canary']} canary units", "",
             f"| metric | threshold (change in {prereg['span']} steps) | grokked called | negative called | "
             "canaries called | balanced accuracy | AUC | partial given step, after mem. | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]

    def f(x: float | None, fmt: str = "+.2f", missing: str = "n/a") -> str:
        return missing if x is None else format(x, fmt)

    for m, r in judgement["metrics"].items():
        t = r["threshold"]
        threshold = "none" if t is None else f"{100 * t:+.2f} {'pts' if '|' in m else '%'}"
        calls = [r[k] for k in ("grokked_called", "negative_called", "canary_called")]
        called = " | ".join(f"{hit}/{of}" if t is not None and of else "–" for hit, of in calls)
        lines.append(f"| {table_cell(m)} | {threshold} | {called} | {f(r['balanced_accuracy'], '.2f', '–')} | "
                     f"{f(r['auc_span'], '.2f')} | {f(r['median_partial_step'])} | "
                     f"{judgement['verdicts'].get(m, 'raw form')} |")
    return lines
