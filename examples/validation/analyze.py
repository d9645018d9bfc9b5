"""Summarise the validation matrix: every metric variant against held-out accuracy, per run and domain.

For each finished cell, :func:`unit_series` recomputes every metric variant from the raw pathways the
cell kept (``probes.pt``), per domain (a *unit*: one domain of one run; a single-task run is one
unit, the mixture three). :func:`unit_measures` then measures each variant against held-out
accuracy; :func:`summarize` writes one small ``series/<cell>.json`` per run, ``summary.json``, and
prints the tables of docs/validation.md.

What is measured (docs/validation.md explains each):

* ``rho_window``: Spearman with held-out accuracy from memorization (train accuracy >= :data:`MEMORIZED`) to
  the first probe at 95 % of the best held-out accuracy (grokked units only);
* ``rho_after``: the same over every probe from memorization on;
* ``partial_loss`` / ``partial_step``: partial Spearman given the training loss / the step;
* ``change``: relative change from memorization to the end of the run;
* ``lead``: steps by which the curve's half-way point comes before held-out accuracy's;
* stage and alert timing against held-out accuracy (live tracker, and the tracker of this
  checkout replayed over the live metrics).

Example:
    >>> classify({"max_held": 0.97, "final_held": 0.96, "task": "add", "memorized_step": 300})
    'grokked'
    >>> classify({"max_held": 0.05, "final_held": 0.02, "task": "rand", "memorized_step": 300})
    'control'
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from grokmon.alerts import GroupStageTracker, PlateauRule
from grokmon.metrics import MemorizationTracker, MetricConfig, compute_metrics
from grokmon.metrics.distance import cross_group_distance, pathway_distance
from grokmon.pathways import Pathways, pathway_sequences
from grokmon.curve_stats import partial_spearman, spearman
from grokmon.keys import stage_name

from . import preregister
from .ladder import PREREGISTERED_COMMIT, PREREGISTERED_LADDER, TOP
from .tasks import CONTROL_TASKS

#: variants, in table order: name -> what it is (docs/validation.md)
VARIANTS: dict[str, str] = {
    "distance": "threshold form (paper), normalised",
    "distance_raw": "threshold form, raw (the paper's unit)",
    "distance_topk": "top-k per-sample form",
    "distance_token": "per-token form, layer-major",
    "distance_token_tokenmajor": "per-token form, token-major",
    "distance_token_answer": "per-token form at the answer-predicting position only",
    "distance_layer_first": "threshold form, first MoE layer only",
    "distance_layer_last": "threshold form, last MoE layer only",
    "distance_memorized": "threshold form, paper's memorized selection",
    "distance_token_memorized": "per-token form, paper's memorized selection",
    "distance_prompt": "threshold form, probe without the answer token",
    "distance_token_prompt": "per-token form, probe without the answer token",
    "consistency": "paper's C_i (NaN where ill-conditioned)",
    "consistency_undefined": "share of samples with C_i undefined",
    "cosine": "mean consecutive-layer cosine (pathway_cosine)",
    "routing_cosine": "index-aligned routing cosine",
    "routing_entropy": "routing entropy",
    "drift": "pathway drift since the previous probe",
    "probe_loss": "probe loss (all next-token positions)",
    "train_loss": "training loss on the answer (baseline)",
    # only where a group has more than SMALL probe samples (the ladder's top rungs probe 256 a group)
    "distance_small": "threshold form, first 64 probe samples of the group",
    "distance_token_small": "per-token form, first 64 probe samples of the group",
    "distance_memorized_small": "threshold form, paper's memorized selection, first 64 samples",
}
SMALL = 64
#: distance variants that also get a cross-group series (``cross_<variant>``: pairs of one sample of
#: the unit's domain and one of another domain, canaries included: the paper's control)
CROSS: dict[str, tuple[str, bool, int | None]] = {   # variant -> (form, prompt only, position)
    "distance": ("threshold", False, None), "distance_topk": ("topk", False, None),
    "distance_token": ("token", False, None), "distance_token_answer": ("token", False, 3),
    "distance_prompt": ("threshold", True, None), "distance_token_prompt": ("token", True, None),
}
CANARY = "canary"
#: a unit has memorized at the first probe whose train accuracy is at least this. It was 0.99 until
#: 2026-12-05: at train fraction 0.5 with weight decay 1.0 the train accuracy stays at 0.96-0.98 for
#: thousands of steps and reaches 0.99 only as held-out accuracy rises (rung 1), and with 0.99 19 of
#: the 90 units then recorded had never memorized (2 with 0.95). Changed before any judged rung ran.
MEMORIZED = 0.95
DELAYED = 0.5  # grokked only if held-out at memorization was at most this share of its best
AFTER = 1000   # ... and the run went on at least this many steps after memorization
LEARNED = 0.3  # held-out accuracy rose at least this much over the run: the whole-run correlation means something
SPAN = preregister.SPAN  # steps after memorization for the fixed-span change (runs memorize at different times)
ANSWER_POSITION = 3  # [a, op, b, =, c]: the answer is predicted at '='


def _pathways(state: dict[str, Any]) -> Pathways:
    state = dict(state)
    state["mean_weights"] = state["mean_weights"].float()
    return Pathways.from_state_dict(state)


def _distance(p: Pathways, form: str, strata: torch.Tensor | None = None) -> float:
    seqs = pathway_sequences(p, form, threshold=0.7)  # type: ignore[arg-type]
    return pathway_distance(seqs, p.groups, group_names=p.group_names, strata=strata).normalized


def _one_layer(p: Pathways, layer: int) -> Pathways:
    return Pathways(mean_weights=p.mean_weights[:, layer:layer + 1], layers=(p.layers[layer],),
                    router_names=(p.router_names[layer],), num_experts=p.num_experts,
                    expert_counts=p.expert_counts[layer:layer + 1], groups=p.groups, group_names=p.group_names)


def _at_position(p: Pathways, position: int) -> Pathways:
    return Pathways(mean_weights=p.mean_weights, layers=p.layers, router_names=p.router_names,
                    num_experts=p.num_experts, expert_counts=p.expert_counts,
                    token_ids=p.token_ids[:, position:position + 1], groups=p.groups, group_names=p.group_names)


def _cross(full: Pathways, prompt: Pathways, member: torch.Tensor, variant: str) -> float:
    """Normalised distance over pairs (one sample in ``member``, one not) in ``variant``'s form."""
    form, use_prompt, position = CROSS[variant]
    p = prompt if use_prompt else full
    if position is not None:
        p = _at_position(p, position)
    seqs = pathway_sequences(p, form, threshold=0.7)  # type: ignore[arg-type]
    return cross_group_distance(seqs, (~member).long()).normalized


def loss_spikes(train_loss: list[float], train_acc: list[float], memorized_step: float | None,
                steps: list[float]) -> list[float]:
    """1.0 at probes taken during a training-loss spike, else 0.0.

    A spike: the training loss is above twice its lowest value so far plus 0.1, or (after
    memorization) train accuracy fell below 0.9. A collapsed model has "shared" pathways too, so
    a distance read then means nothing.

    Example:
        >>> loss_spikes([3.0, 1.0, 0.1, 0.2, 2.0, 0.1], [0, .5, 1, 1, .2, 1], 200, [0, 100, 200, 300, 400, 500])
        [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    """
    out, low = [], math.inf
    for step, loss, acc in zip(steps, train_loss, train_acc):
        low = min(low, loss)
        spike = loss > 2 * low + 0.1 or (memorized_step is not None and step >= memorized_step and acc < 0.9)
        out.append(float(spike))
    return out


def unit_series(records: list[dict[str, Any]], domains: list[str]) -> dict[str, dict[str, list[float]]]:
    """``{domain: {"step": [...], "held": [...], "train_acc": [...], <variant>: [...], "cross_<v>": [...]}}``.

    The cross-group series (:data:`CROSS`) exist when the run has more than one domain (canaries
    count); the canary domain gets none."""
    config = MetricConfig(extra_forms=("topk", "token"), per_group=False)
    memorization = MemorizationTracker(0.2, 0.05)
    out: dict[str, dict[str, list[float]]] = {d: {} for d in domains}
    previous: dict[str, Pathways] = {}
    for rec in records:
        full, prompt = _pathways(rec["full"]["pathways"]), _pathways(rec["prompt"]["pathways"])
        loss = rec["full"]["loss"]
        since_all = memorization.update(rec["step"], loss, full.groups)
        for g, d in enumerate(domains):
            idx = (full.groups == g).nonzero().flatten()
            sub, sub_prompt, since = full.select(idx), prompt.select(idx), since_all[idx]
            m = compute_metrics(sub, previous.get(d), config, loss_per_sample=loss[idx])
            previous[d] = sub
            row = {
                "step": rec["step"], "held": rec["held_acc"][d], "train_acc": rec["train_acc"][d],
                "distance": m["pathway_distance"], "distance_raw": m["pathway_distance_raw"],
                "distance_topk": m["pathway_distance/topk"], "distance_token": m["pathway_distance/token"],
                "distance_token_tokenmajor": pathway_distance(pathway_sequences(sub, "token", order="token")).normalized,
                "distance_token_answer": _distance(_at_position(sub, ANSWER_POSITION), "token"),
                "distance_layer_first": _distance(_one_layer(sub, 0), "threshold"),
                "distance_layer_last": _distance(_one_layer(sub, sub.num_routers - 1), "threshold"),
                "distance_memorized": _distance(sub, "threshold", since),
                "distance_token_memorized": _distance(sub, "token", since),
                "distance_prompt": _distance(sub_prompt, "threshold"),
                "distance_token_prompt": _distance(sub_prompt, "token"),
                "consistency": m.get("pathway_consistency", math.nan),
                "consistency_undefined": m.get("pathway_consistency_undefined", math.nan),
                "cosine": m.get("pathway_cosine", math.nan), "routing_cosine": m.get("routing_cosine", math.nan),
                "routing_entropy": m["routing_entropy"], "drift": m.get("pathway_drift", math.nan),
                "probe_loss": m["probe_loss"], "train_loss": rec["train_loss"][d],
            }
            if len(idx) > SMALL:   # the same group at the matrix's probe size
                few = torch.arange(SMALL)
                row["distance_small"] = _distance(sub.select(few), "threshold")
                row["distance_token_small"] = _distance(sub.select(few), "token")
                row["distance_memorized_small"] = _distance(sub.select(few), "threshold", since[:SMALL])
            if len(domains) > 1 and d != CANARY:
                member = full.groups == g
                for variant in CROSS:
                    row[f"cross_{variant}"] = _cross(full, prompt, member, variant)
            for key, value in row.items():
                out[d].setdefault(key, []).append(float(value))
    return out


def _first(steps: list[float], values: list[float], level: float, after: float = -math.inf) -> float | None:
    return next((s for s, v in zip(steps, values) if s >= after and v >= level), None)


def classify(unit: dict[str, Any]) -> str:
    """``canary`` (the within-run random-label group), ``control`` (a random-label run), ``grokked``,
    ``early`` (generalized, but held-out was already above :data:`DELAYED` of its best at memorization:
    no delayed generalization to track), ``short`` (generalized, fewer than :data:`AFTER` steps after
    memorization), ``not generalized``, ``partial`` or ``never memorized``."""
    if unit.get("domain") == CANARY:
        return "canary"
    if unit["task"] in CONTROL_TASKS:
        return "control"
    if unit["memorized_step"] is None:
        return "never memorized"
    if unit["max_held"] >= 0.5 and unit["final_held"] >= 0.9 * unit["max_held"]:
        held_then, last = unit.get("held_at_memorization"), unit.get("last_step")
        if held_then is not None and held_then > DELAYED * unit["max_held"]:
            return "early"
        if last is not None and last - unit["memorized_step"] < AFTER:
            return "short"
        return "grokked"
    if unit["max_held"] < 0.1:
        return "not generalized"
    return "partial"


def _lead(steps: np.ndarray, metric: np.ndarray, held: np.ndarray) -> float | None:
    """Steps by which the metric completes half its change (from memorization) before held-out does."""
    if len(steps) < 3 or not np.all(np.isfinite(metric)):
        return None

    def half_step(x: np.ndarray) -> float | None:
        total = x[-1] - x[0]
        if abs(total) < 1e-12:
            return None
        done = (x - x[0]) / total
        hit = np.nonzero(done >= 0.5)[0]
        return float(steps[hit[0]]) if len(hit) else None

    h, m = half_step(held), half_step(metric)
    return None if h is None or m is None else h - m


def nan_to_none(v: Any) -> Any:
    """``v``, or None where it is NaN (a measure without units)."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _relative(first: float, last: float) -> float:
    if not (np.isfinite(first) and np.isfinite(last)) or abs(first) < 1e-12:
        return math.nan
    return float((last - first) / abs(first))


def contrast_names(series: dict[str, list[float]], canary: dict[str, list[float]] | None) -> dict[str, tuple[str, str]]:
    """The contrast series a unit gets: ``"<variant>|canary"`` (every variant, when the run has
    canaries) and ``"<variant>|cross"`` (the :data:`CROSS` variants, when the series has them) ->
    (variant, reference series key: ``"canary:<variant>"`` or ``"cross_<variant>"``)."""
    out = {}
    if canary is not None:
        out.update({f"{v}|canary": (v, f"canary:{v}") for v in VARIANTS if v in series and v in canary})
    out.update({f"{v}|cross": (v, f"cross_{v}") for v in CROSS if f"cross_{v}" in series})
    return out


def contrast(x: np.ndarray, ref: np.ndarray, at: int) -> np.ndarray:
    """``x / x[at] - ref / ref[at]``: the unit's relative change since probe ``at`` minus the
    reference's over the same steps (0 at ``at``; negative where the unit fell more).

    Example:
        >>> contrast(np.array([1.0, 0.8]), np.array([2.0, 1.9]), 0).round(3).tolist()
        [0.0, -0.15]
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        a = x / x[at] if abs(x[at]) > 1e-12 else np.full_like(x, math.nan)
        b = ref / ref[at] if abs(ref[at]) > 1e-12 else np.full_like(ref, math.nan)
    return a - b


def _measure(x: np.ndarray, held: np.ndarray, steps: np.ndarray, loss: np.ndarray, after: np.ndarray,
             span: np.ndarray, window: np.ndarray | None, lead: bool, absolute: bool) -> dict[str, Any]:
    finite = x[after][np.isfinite(x[after])]
    first = finite[0] if len(finite) else math.nan
    in_span = x[span][np.isfinite(x[span])]
    last_span = in_span[-1] if len(in_span) else math.nan
    change = (lambda a, b: float(b - a)) if absolute else _relative
    in_window = window is not None and window.sum() >= 3
    return {
        "rho_after": spearman(x[after], held[after]),
        "partial_loss": partial_spearman(x[after], held[after], loss[after]),
        "partial_step": partial_spearman(x[after], held[after], steps[after]),
        "partial_step_window": partial_spearman(x[window], held[window], steps[window]) if in_window else math.nan,
        "change": change(first, x[after][-1]),
        "change_span": change(first, last_span),
        "rho_window": spearman(x[window], held[window]) if in_window else math.nan,
        "lead": _lead(steps[after], x[after], held[after]) if lead else None,
    }


def unit_measures(series: dict[str, list[float]], task: str, domain: str | None = None,
                  canary: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """Every measure of one unit against its held-out accuracy (see the module docstring).

    ``canary``: the run's canary series (same probe steps), for the ``<variant>|canary`` contrasts
    and the canaries' fall over the unit's own steps. Adds ``series["spike"]`` (:func:`loss_spikes`).
    """
    steps = np.array(series["step"])
    held = np.array(series["held"])
    mem = _first(series["step"], series["train_acc"], MEMORIZED)
    unit: dict[str, Any] = {"task": task, "domain": domain, "memorized_step": mem, "max_held": float(held.max()),
                            "final_held": float(held[-1]), "last_step": float(steps[-1]),
                            "held_at_memorization": None if mem is None else float(held[steps >= mem][0])}
    unit["class"] = classify(unit)
    series["spike"] = loss_spikes(series["train_loss"], series["train_acc"], mem, series["step"])
    pairs = contrast_names(series, canary)
    present = [name for name in VARIANTS if name in series]
    unit["metrics"] = {name: {"rho_whole": nan_to_none(spearman(np.array(series[name]), held))} for name in present}
    unit["learned"] = float(held.max() - held[0]) >= LEARNED
    at = 0 if mem is None else int(np.nonzero(steps >= mem)[0][0])   # contrasts start at memorization
    refs = {}
    for name, (variant, ref_key) in pairs.items():
        from_canary = ref_key.startswith("canary:")
        ref = np.array(canary[ref_key.split(":", 1)[1]] if from_canary else series[ref_key])  # type: ignore[index]
        refs[name] = (variant, from_canary, ref, contrast(np.array(series[variant]), ref, at))
        unit["metrics"][name] = {"rho_whole": nan_to_none(spearman(refs[name][3], held))}
    if mem is None:
        return unit
    after = steps >= mem
    spike = np.array(series["spike"]) > 0
    unit["spike_probes"] = int(spike[after].sum())
    best = held[after].max()
    end = _first(series["step"], series["held"], 0.95 * best, after=mem) if unit["class"] == "grokked" else None
    window = after & (steps <= end) if end is not None else None
    unit["window"] = None if end is None else [mem, end]
    unit["held_50"] = _first(series["step"], series["held"], 0.5, after=0)
    unit["held_90_of_final"] = _first(series["step"], series["held"], 0.9 * held[-1], after=mem)
    span = after & (steps <= mem + SPAN)
    loss = np.array(series["train_loss"])
    lead = unit["class"] == "grokked"
    for name in present:
        x = np.array(series[name])
        unit["metrics"][name].update({k: nan_to_none(v) for k, v in
                                      _measure(x, held, steps, loss, after, span, window, lead, False).items()})
        low = np.nanargmin(np.where(after, x, np.nan)) if np.isfinite(x[after]).any() else None
        unit["metrics"][name]["min_in_spike"] = None if low is None else bool(spike[low])
    fall: dict[str, dict[str, Any]] = {}
    for name, (variant, from_canary, ref, c) in refs.items():
        unit["metrics"][name].update({k: nan_to_none(v) for k, v in
                                      _measure(c, held, steps, loss, after, span, window, lead, True).items()})
        # the fall of the unit, its canaries and its cross-group pairs over the same steps
        entry = fall.setdefault(variant, {"group": unit["metrics"][variant]["change_span"]})
        ref_span = ref[span][np.isfinite(ref[span])]
        entry["canary" if from_canary else "cross"] = nan_to_none(
            _relative(ref_span[0], ref_span[-1]) if len(ref_span) else math.nan)
    unit["fall_span"] = fall
    return unit


def stage_timeline(rows: list[dict[str, Any]], domain: str, tracker: GroupStageTracker | None = None) -> dict[str, Any]:
    """Stage transitions and plateau-alert firings of one domain: live, or replayed through ``tracker``."""
    key = f"group/{domain}/stage"
    transitions, previous = [], None
    alert_steps = []
    for row in rows:
        metrics = {k.removeprefix("grokmon/"): v for k, v in row["metrics"].items()}
        if tracker is not None:
            tracker.update(row["step"], metrics)
            stage = tracker.stages().get(domain)
        else:
            code = metrics.get(key)
            stage = None if code is None or code != code else stage_name(code)
        if stage != previous:
            transitions.append([row["step"], stage])
            previous = stage
        if metrics.get("alert/plateau_pathway_distance") == 1.0:
            alert_steps.append(row["step"])
    return {"transitions": transitions, "alert_steps": alert_steps}


#: the rules the docs recommend, replayed over each run's live metrics (docs/alerts.md, README)
RULES: dict[str, Any] = {
    "readme": lambda g: PlateauRule("pathway_distance", mode="min", patience=5, min_delta=0.01),
    "median": lambda g: PlateauRule("pathway_distance", patience=5, min_delta=0.01, smooth="median"),
    "per_group": lambda g: PlateauRule(f"group/{g}/pathway_distance", patience=5, smooth="median", warmup=10),
    "consistency_any": lambda g: PlateauRule("pathway_consistency", mode="any", patience=5, min_delta=0.01,
                                             smooth="median"),
}


def rule_firings(rows: list[dict[str, Any]], domain: str) -> dict[str, list[int]]:
    """Steps at which each recommended rule fired (events, not the steps it stayed on)."""
    out = {}
    for name, make in RULES.items():
        rule = make(domain)
        fired = []
        for row in rows:
            metrics = {k.removeprefix("grokmon/"): v for k, v in row["metrics"].items()}
            if rule.update(row["step"], metrics):
                fired.append(row["step"])
        out[name] = fired
    return out


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The metric rows of a JSONL record (alert rows are left out: their effect is in the metrics)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "metrics" in r]


def record_cell(folder: Path, series_dir: Path, cells_dir: Path) -> None:
    """Turn a finished run folder into what ``summary`` needs, small enough to commit: its series
    (recomputed from the raw pathways, ``series_dir/<cell>.json``) and ``cells_dir/<cell>.json.gz``
    (its ``result.json`` and live JSONL rows). Raw pathways stay in the run folder (not committed)."""
    result = json.loads((folder / "result.json").read_text())
    records = torch.load(folder / "probes.pt", weights_only=True)
    series = unit_series(records, result["domains"])
    for one in series.values():
        mem = _first(one["step"], one["train_acc"], MEMORIZED)
        one["spike"] = loss_spikes(one["train_loss"], one["train_acc"], mem, one["step"])
    series_dir.mkdir(parents=True, exist_ok=True)
    cells_dir.mkdir(parents=True, exist_ok=True)
    (series_dir / f"{result['name']}.json").write_text(json.dumps(
        {"cell": result["cell"], "series": series}, separators=(",", ":")))
    rows = _read_jsonl(folder / "live" / "grokmon.jsonl")
    with gzip.open(cells_dir / f"{result['name']}.json.gz", "wt") as fh:
        json.dump({"result": result, "live": rows}, fh, separators=(",", ":"))


def analyze_record(name: str, series_dir: Path, cells_dir: Path) -> dict[str, Any]:
    """Units of one committed cell: measures from its series, stages and rules replayed over its live
    rows. The first matrix's 34 cells have no live rows committed (``<cell>.json``): their stage and
    rule timelines are the ones their summary recorded, replayed with the tracker of that time."""
    series = json.loads((series_dir / f"{name}.json").read_text())["series"]
    packed = cells_dir / f"{name}.json.gz"
    if packed.exists():
        with gzip.open(packed, "rt") as fh:
            record = json.load(fh)
        rows, frozen = record["live"], None
    else:
        record = json.loads((cells_dir / f"{name}.json").read_text())
        rows, frozen = None, record["timelines"]
    result = record["result"]
    units = {}
    for d in result["domains"]:
        unit = unit_measures(series[d], result["cell"]["task"], d, series.get(CANARY) if d != CANARY else None)
        if rows is not None:
            unit["stages_live"] = stage_timeline(rows, d)
            unit["stages_replayed"] = stage_timeline(rows, d, GroupStageTracker())
            unit["stages_distance_rule"] = stage_timeline(rows, d, GroupStageTracker(claims="distance"))
            unit["rules"] = rule_firings(rows, d)
        else:
            unit.update(frozen[d])
        units[d] = unit
    return {"name": name, "cell": result["cell"], "seconds": result["seconds"], "units": units,
            "series": series, "parameters": result.get("parameters")}


def stage_verdict(unit: dict[str, Any], timeline: dict[str, Any]) -> dict[str, Any]:
    """Against the targets of docs/validation.md: no early ``saturated``, ``grokking`` before held-out 0.5,
    no claim of generalization in a control."""
    first = {}
    for step, stage in timeline["transitions"]:
        first.setdefault(stage, step)
    verdict: dict[str, Any] = {"first": first, "alerts": len(timeline["alert_steps"])}
    settled = first.get("unknown", first.get("grokking"))   # the step the loss counted as converged
    verdict["converged_before_memorized"] = settled is not None and (
        unit["memorized_step"] is None or settled < unit["memorized_step"])
    if unit["class"] == "grokked":
        sat, grok = first.get("saturated"), first.get("grokking")
        verdict["early_saturated"] = sat is not None and unit["held_90_of_final"] is not None and sat < unit["held_90_of_final"]
        verdict["grokking_in_time"] = grok is not None and unit["held_50"] is not None and grok <= unit["held_50"]
        verdict["said_unknown"] = "unknown" in first
    if unit["class"] in ("control", "not generalized"):
        verdict["false_claims"] = sum(1 for _, s in timeline["transitions"] if s in ("grokking", "saturated"))
        verdict["false_alerts"] = len(timeline["alert_steps"])
    return verdict


#: A rule fixed on the cells finished when it was written (``seen``) and judged on the cells that
#: finished later, which it never saw: "a unit has generalized if its ``metric`` fell by at least
#: ``fall`` (relative) within ``SPAN`` steps after memorization". The threshold is the midpoint of
#: the seen grokked units' median fall (-6.2 percent) and the seen random-label units' (-0.4 percent).
PREREGISTERED: dict[str, Any] = {
    "metric": "distance", "fall": 0.03, "span": SPAN,
    "written": "2026-11-29 16:10 UTC, before the other cells had run",
    "seen": ['deepseek_v3-add-L2-s0', 'deepseek_v3-div-L2-s0', 'deepseek_v3-rand-L2-s0', 'granitemoe-add-L2-s0', 'granitemoe-div-L2-s0', 'mixtral-add-L2-s0', 'mixtral-div-L2-s0', 'mixtral-rand-L2-s0', 'olmoe-add-L2-s0', 'olmoe-div-L2-s0', 'olmoe-rand-L2-s0', 'qwen3_moe-add-L2-s0', 'qwen3_moe-div-L2-s0', 'qwen3_moe-rand-L2-s0'],
}


def preregistered_call(unit: dict[str, Any]) -> bool | None:
    """The pre-registered rule's verdict on one unit (None when it cannot be applied)."""
    change = unit.get("metrics", {}).get(PREREGISTERED["metric"], {}).get("change_span")
    return None if change is None else change <= -PREREGISTERED["fall"]


def rule_verdict(unit: dict[str, Any], series: dict[str, list[float]]) -> dict[str, Any]:
    """For each recommended rule: its first firing, held-out accuracy then, and whether it misled."""
    out = {}
    for name, fired in unit["rules"].items():
        first = fired[0] if fired else None
        held = None if first is None else series["held"][series["step"].index(first)]
        entry: dict[str, Any] = {"first": first, "held_at_first": held, "firings": len(fired)}
        if unit["class"] == "grokked":
            ninety = unit.get("held_90_of_final")
            entry["before_90"] = first is not None and ninety is not None and first < ninety
        if unit["class"] in ("control", "not generalized"):
            entry["false"] = first is not None
        out[name] = entry
    return out


def _auc(positive: Iterable[float], negative: Iterable[float]) -> float:
    """:func:`preregister.auc`, NaN (as the summary has always stored it) without both groups."""
    value = preregister.auc(positive, negative)
    return math.nan if value is None else value


def metric_names(units: list[dict[str, Any]]) -> list[str]:
    """Every variant, then its canary and cross-group contrasts where some unit has them."""
    have = {n for u in units for n in u["metrics"]}
    return [n for v in VARIANTS for n in (v, f"{v}|canary", f"{v}|cross") if n in have]


def metric_table(units: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    grokked = [u for u in units if u["class"] == "grokked"]
    negative = [u for u in units if u["class"] in ("control", "not generalized")]
    table = {}
    for name in metric_names(units):
        def values(group: list[dict[str, Any]], key: str) -> list[float]:
            return [u["metrics"][name][key] for u in group
                    if name in u["metrics"] and u["metrics"][name].get(key) is not None]

        window = values(grokked, "rho_window")
        signs = [np.sign(r) for r in window if r != 0]
        majority = float(np.sign(sum(signs))) if signs else 0.0
        leads = values(grokked, "lead")
        whole = [u["metrics"][name]["rho_whole"] for u in units if u.get("learned") and name in u["metrics"]
                 and u["metrics"][name]["rho_whole"] is not None]
        table[name] = {
            "median_rho_whole_learned": _median(whole), "learned_units": len(whole),
            "units": len(window),
            "median_rho_window": float(np.median(window)) if window else None,
            "abs_rho_ge_0.9": sum(1 for r in window if abs(r) >= 0.9),
            "sign_agrees": sum(1 for s in signs if s == majority), "majority_sign": majority,
            "median_rho_after": _median(values(grokked, "rho_after")),
            "median_partial_loss": _median(values(grokked, "partial_loss")),
            "median_partial_step": _median(values(grokked, "partial_step")),
            "median_partial_step_window": _median(values(grokked, "partial_step_window")),
            "median_change_grokked": _median(values(grokked, "change")),
            "median_change_negative": _median(values(negative, "change")),
            "auc_grokked_falls_more": _auc(values(grokked, "change"), values(negative, "change")),
            "median_span_grokked": _median(values(grokked, "change_span")),
            "median_span_negative": _median(values(negative, "change_span")),
            "auc_span": _auc(values(grokked, "change_span"), values(negative, "change_span")),
            "median_lead_steps": _median(leads), "leads": sum(1 for x in leads if x > 0), "lead_units": len(leads),
        }
    return table


def specificity_table(units: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant with a within-run control: the fall of the grokked units, of their canaries and of
    their cross-group pairs over the same steps (memorization to ``SPAN`` steps later), medians and
    how often the unit fell more than each control."""
    grokked = [u for u in units if u["class"] == "grokked" and u.get("fall_span")]
    out = {}
    for v in VARIANTS:
        rows = [u["fall_span"][v] for u in grokked if v in u["fall_span"]]
        if not rows:
            continue
        entry: dict[str, Any] = {"units": len(rows), "median_group": _median([r["group"] for r in rows
                                                                             if r["group"] is not None])}
        for ref in ("canary", "cross"):
            pairs = [(r["group"], r[ref]) for r in rows if r.get(ref) is not None and r["group"] is not None]
            entry[f"median_{ref}"] = _median([b for _, b in pairs])
            entry[f"group_fell_more_than_{ref}"] = sum(1 for a, b in pairs if a < b)
            entry[f"{ref}_units"] = len(pairs)
        out[v] = entry
    return out


def rung_table(units: list[dict[str, Any]], names: Iterable[str] = ("distance", "distance_token", "distance|canary",
               "distance_token|canary", "distance|cross", "distance_token|cross")) -> list[dict[str, Any]]:
    """The ladder per rung and metric: ρ window, partial given the step (window / after memorization),
    AUC of the fall in ``SPAN`` steps (grokked vs negative units of that rung) and the lead."""
    rows = []
    for rung in sorted({u["rung"] for u in units if u.get("rung") is not None}):
        at = [u for u in units if u.get("rung") == rung]
        table = metric_table(at)
        params = sorted({u["parameters"] for u in at if u.get("parameters")})
        for name in names:
            if name in table:
                rows.append({"rung": rung, "parameters": params, "metric": name,
                             "grokked": sum(1 for u in at if u["class"] == "grokked"),
                             "negative": sum(1 for u in at if u["class"] in ("control", "not generalized")),
                             **{k: table[name][k] for k in ("median_rho_window", "median_partial_step_window",
                                                            "median_partial_step", "auc_span", "median_lead_steps")}})
    return rows


def plot_ladder(summary: dict[str, Any], path: Path) -> Path | None:
    """Each ladder measure against the rung's parameter count (``docs/validation/images/ladder.png``);
    None (nothing written) before any ladder cell has finished."""
    rows = summary.get("rungs") or []
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    keys = (("median_rho_window", "median ρ window"), ("median_partial_step_window", "partial | step, window"),
            ("median_partial_step", "partial | step, after mem."), ("auc_span", "AUC (1000 steps)"))
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys) + 1.6, 3.6), constrained_layout=True)
    for ax, (key, label) in zip(axes, keys):
        for metric in sorted({r["metric"] for r in rows}):
            pts = [(float(np.mean(r["parameters"])), r[key]) for r in rows
                   if r["metric"] == metric and r["parameters"] and r[key] is not None]
            if pts:
                xs, ys = zip(*sorted(pts))
                ax.plot(xs, ys, marker="o", label=metric, linestyle="--" if "|" in metric else "-")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())   # 2x10^6, 3x10^6... overlapped
        ax.margins(x=0.12)
        ax.set_xlabel("parameters")
        ax.set_title(label)
        ax.axhline(0.5 if key == "auc_span" else 0.0, color="grey", linewidth=0.6)
        judged = [float(np.mean(r["parameters"])) for r in rows if r["rung"] in TOP and r["parameters"]]
        if judged:   # the rungs the pre-registered rules never saw
            ax.axvspan(min(judged) / 1.3, max(judged) * 1.3, color="tab:blue", alpha=0.07, lw=0)
    counts = {r["rung"]: (float(np.mean(r["parameters"])), r["grokked"], r["negative"]) for r in rows if r["parameters"]}
    axes[-1].set_ylim(-0.05, 1.2)   # headroom: the labels sit above AUC 1.0, not on its points
    for x, grokked, negative in counts.values():   # how few units each point rests on
        axes[-1].annotate(f"n={grokked}/{negative}", (x, 1.1), fontsize=7, ha="center", va="center", color="grey")
    fig.suptitle("shaded: judged rungs (unseen by the pre-registered rules); n = grokked / negative units of the rung",
                 fontsize=8, color="grey")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sign(row: dict[str, Any]) -> str:
    if row["majority_sign"] == 0:
        return f"split ({row['units']})"
    return f"{row['sign_agrees']}/{row['units']} ({'−' if row['majority_sign'] < 0 else '+'})"


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def committed_cells(cells_dir: Path) -> list[str]:
    """Names of the cells recorded under ``cells_dir`` (``<cell>.json.gz`` or, first matrix, ``<cell>.json``)."""
    return sorted({p.name.split(".json")[0] for p in cells_dir.glob("*.json*")})


def summarize(root: Path, series_dir: Path, summary_path: Path, cells_dir: Path | None = None) -> dict[str, Any]:
    """Record every finished cell under ``root`` (series + live rows, :func:`record_cell`), then analyse
    every recorded cell in ``cells_dir`` (default: ``cells/`` beside the summary), write the summary
    and print the tables. Cells recorded earlier (committed) need no run folder."""
    cells_dir = summary_path.parent / "cells" if cells_dir is None else cells_dir
    folders = sorted(p.parent for p in root.glob("*/result.json"))
    for folder in folders:
        if not (cells_dir / f"{folder.name}.json.gz").exists() or not (series_dir / f"{folder.name}.json").exists():
            print(f"recording {folder.name}", flush=True)
            record_cell(folder, series_dir, cells_dir)
    names = committed_cells(cells_dir)
    if not names:
        raise SystemExit(f"no finished cells under {root} or {cells_dir}: "
                         f"run `python -m examples.validation run --out {root}` first")
    units, runs = [], []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] analysing {name}", flush=True)
        cell = analyze_record(name, series_dir, cells_dir)
        runs.append({"name": cell["name"], "seconds": cell["seconds"], "cell": cell["cell"],
                     "parameters": cell["parameters"]})
        for d, unit in cell["units"].items():
            unit.update(run=cell["name"], domain=d, family=cell["cell"]["family"], layers=cell["cell"]["layers"],
                        seed=cell["cell"]["seed"], rung=cell["cell"].get("rung"), parameters=cell["parameters"])
            unit["verdict_live"] = stage_verdict(unit, unit["stages_live"])
            unit["verdict_replayed"] = stage_verdict(unit, unit["stages_replayed"])
            unit["verdict_distance_rule"] = stage_verdict(unit, unit["stages_distance_rule"])
            unit["rule_verdict"] = rule_verdict(unit, cell["series"][d])
            units.append(unit)
    summary = {"runs": runs, "units": units, "metrics": metric_table(units),
               "specificity": specificity_table(units), "rungs": rung_table(units),
               "cpu_seconds": round(sum(r["seconds"] for r in runs), 1)}
    if PREREGISTERED_LADDER is not None:
        summary["ladder_judgement"] = preregister.judge(units, PREREGISTERED_LADDER)
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=1, default=float))
    plot_ladder(summary, summary_path.parent / "images" / "ladder.png")
    tables = render(summary)
    (summary_path.parent / "tables.md").write_text(
        "# Validation matrix: the tables\n\nWritten by `python -m examples.validation summary` from "
        "`summary.json`; docs/validation.md explains them.\n\n" + tables + "\n")
    print(tables)
    return summary


def _f(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:+.{digits}f}"
    return str(x)


def render(summary: dict[str, Any]) -> str:
    """The markdown tables of docs/validation.md."""
    units = summary["units"]
    lines = [f"{len(summary['runs'])} runs, {len(units)} units, {summary['cpu_seconds'] / 3600:.1f} CPU-hours", "",
             "| run | domain | class | memorized | held-out at mem. | max | final | live stages | replayed stages | "
             "plateau alert | probes in a loss spike |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for u in units:
        def stages(t):
            return ", ".join(f"{s}@{st}" for st, s in t["transitions"][1:]) or "-"
        alert = u["stages_live"]["alert_steps"]
        lines.append(f"| {u['run']} | {u['domain']} | {u['class']} | {u['memorized_step']} | "
                     f"{_f(u['held_at_memorization'])} | {u['max_held']:.2f} | {u['final_held']:.2f} | "
                     f"{stages(u['stages_live'])} | {stages(u['stages_replayed'])} | "
                     f"{'first at ' + str(alert[0]) + f' ({len(alert)} probes on)' if alert else '-'} | "
                     f"{u.get('spike_probes', 'n/a')} |")
    lines += ["", "| metric | grokked units | median ρ window | \\|ρ\\|≥0.9 | sign agrees | median ρ after mem. | "
              "partial given loss | partial given step, window | partial given step, after mem. | "
              "change, grokked | change, negative | AUC | "
              f"change in {SPAN} steps, grokked / negative | AUC ({SPAN}) | lead (steps), leads/units | "
              f"median ρ whole run, units whose held-out rose ≥ {LEARNED} |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in summary["metrics"].items():
        if not (row["units"] or row["learned_units"] or row["lead_units"] or row["auc_span"] == row["auc_span"]):
            continue   # no unit has this contrast's measures
        lines.append(
            f"| {preregister.table_cell(name)} | {row['units']} | {_f(row['median_rho_window'])} | {row['abs_rho_ge_0.9']} | "
            f"{_sign(row)} | "
            f"{_f(row['median_rho_after'])} | {_f(row['median_partial_loss'])} | "
            f"{_f(row.get('median_partial_step_window'))} | {_f(row['median_partial_step'])} | "
            f"{_f(row['median_change_grokked'], 3)} | {_f(row['median_change_negative'], 3)} | "
            f"{_f(row['auc_grokked_falls_more'])} | {_f(row['median_span_grokked'], 3)} / "
            f"{_f(row['median_span_negative'], 3)} | {_f(row['auc_span'])} | "
            f"{_f(row['median_lead_steps'], 0)}, {row['leads']}/{row['lead_units']} | "
            f"{_f(row['median_rho_whole_learned'])} ({row['learned_units']}) |")
    lines += ["", "`<metric>|canary` is the unit's relative change since memorization minus its run's canaries' "
              "over the same steps, `<metric>|cross` minus its cross-group pairs' (pairs of one sample of the "
              "unit's domain and one of another): their changes are differences of relative changes."]
    spec = summary.get("specificity", {})
    if spec:
        lines += ["", f"Specificity: the fall in the {SPAN} steps after memorization, grokked units of runs with "
                  "canaries: the unit, its canaries, its cross-group pairs, over the same steps (medians)", "",
                  "| metric | grokked units | unit | canaries | cross-group | unit fell more than canaries | "
                  "unit fell more than cross-group |", "|---|---|---|---|---|---|---|"]
        for name, e in spec.items():
            lines.append(f"| {name} | {e['units']} | {_f(e['median_group'], 3)} | {_f(e['median_canary'], 3)} | "
                         f"{_f(e['median_cross'], 3)} | {e['group_fell_more_than_canary']}/{e['canary_units']} | "
                         f"{e['group_fell_more_than_cross']}/{e['cross_units']} |")
    if summary.get("rungs"):
        lines += ["", "Scale ladder, per rung (div with 3 % canaries; negative units: the rung's random-label "
                  "runs and its runs that did not generalize):", "",
                  "| rung | parameters | metric | grokked / negative units | median ρ window | "
                  "partial given step, window | partial given step, after mem. | AUC (1000) | lead (steps) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in summary["rungs"]:
            params = ", ".join(f"{p / 1e6:.2f} M" for p in r["parameters"]) or "n/a"
            lines.append(f"| {r['rung']} | {params} | {preregister.table_cell(r['metric'])} | {r['grokked']} / {r['negative']} | "
                         f"{_f(r['median_rho_window'])} | {_f(r['median_partial_step_window'])} | "
                         f"{_f(r['median_partial_step'])} | {_f(r['auc_span'])} | {_f(r['median_lead_steps'], 0)} |")
    if summary.get("ladder_judgement") and PREREGISTERED_LADDER is not None:
        lines += [""] + preregister.render(summary["ladder_judgement"], PREREGISTERED_LADDER, PREREGISTERED_COMMIT)
    lines += ["", f"Pre-registered rule ({PREREGISTERED['metric']} falls >= {PREREGISTERED['fall']:.0%} within "
              f"{PREREGISTERED['span']} steps of memorization), called 'generalized' / units:", "",
              "| units | grokked | partial | not generalized | control |", "|---|---|---|---|---|"]
    for label, pick in (("seen (rule fixed on these)", True), ("unseen (judged only)", False)):
        cells = []
        for cls in ("grokked", "partial", "not generalized", "control"):
            group = [u for u in units if u["class"] == cls and (u["run"] in PREREGISTERED["seen"]) == pick]
            calls = [preregistered_call(u) for u in group]
            cells.append(f"{sum(1 for c in calls if c)}/{sum(1 for c in calls if c is not None)}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| rule | fired in grokked units | of which before held-out reached 90 % of final | "
              "median held-out at first firing | fired in negative units |", "|---|---|---|---|---|"]
    for name in RULES:
        grok = [u["rule_verdict"][name] for u in units if u["class"] == "grokked" and "rule_verdict" in u]
        neg = [u["rule_verdict"][name] for u in units if u["class"] in ("control", "not generalized") and "rule_verdict" in u]
        held = [v["held_at_first"] for v in grok if v["held_at_first"] is not None]
        lines.append(f"| {name} | {sum(1 for v in grok if v['first'] is not None)}/{len(grok)} | "
                     f"{sum(1 for v in grok if v['before_90'])} | {_f(_median(held))} | "
                     f"{sum(1 for v in neg if v['false'])}/{len(neg)} |")
    labels = {"replayed": "default, claims='none'", "distance_rule": "opt-in claims='distance' (grokmon 0.1's rule)"}
    for which in ("replayed", "distance_rule"):
        v = [u[f"verdict_{which}"] for u in units]
        grok = [x for u, x in zip(units, v) if u["class"] == "grokked"]
        neg = [x for u, x in zip(units, v) if u["class"] in ("control", "not generalized")]
        lines += ["", f"Stage tracker ({labels[which]}), replayed over each run's live metrics: grokked units {len(grok)}: early `saturated` in "
                  f"{sum(x['early_saturated'] for x in grok)}, `grokking` before held-out 0.5 in "
                  f"{sum(x['grokking_in_time'] for x in grok)}, `unknown` in {sum(x['said_unknown'] for x in grok)}; "
                  f"negative units {len(neg)}: false stage claims {sum(x['false_claims'] for x in neg)} "
                  f"(in {sum(1 for x in neg if x['false_claims'])} units), plateau alerts fired in "
                  f"{sum(1 for x in neg if x['false_alerts'])} units; loss counted as converged before train "
                  f"accuracy reached {MEMORIZED} in {sum(x['converged_before_memorized'] for x in v)} of {len(v)} units"]
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> str:
    """The README's headline claim, rendered from the summary (a test keeps the two equal)."""
    units = summary["units"]
    metrics = summary["metrics"]
    families = sorted({u["family"] for u in units})
    tasks = sorted({u["run"].split("-")[1] for u in units})
    token, threshold = metrics["distance_token"], metrics["distance"]
    unseen = [u for u in units if u["run"] not in PREREGISTERED["seen"]]

    def called(classes: tuple[str, ...]) -> tuple[int, int]:
        calls = [preregistered_call(u) for u in unseen if u["class"] in classes]
        return sum(1 for c in calls if c), sum(1 for c in calls if c is not None)

    hit, grokked = called(("grokked",))
    false, negative = called(("control", "not generalized"))
    depths = sorted({int(u["layers"]) for u in units})
    depth = ", ".join(map(str, depths[:-1])) + f" and {depths[-1]}" if len(depths) > 1 else str(depths[0])
    return (f"On grokmon's validation matrix ({len(summary['runs'])} runs of small random-init models: "
            f"{len(families)} MoE families, {len(tasks)} tasks including random-label controls, {depth} MoE "
            f"layers), the per-token pathway distance fell as held-out accuracy rose in {token['sign_agrees']} of "
            f"the {token['units']} grokking units with a measurable window (median Spearman "
            f"{token['median_rho_window']:.2f}, at most -0.9 in {token['abs_rho_ge_0.9']}; the paper's threshold form "
            f"{threshold['median_rho_window']:.2f}). But much of that is training time (with the step held "
            f"fixed, from memorization on: {token['median_partial_step']:.2f} and "
            f"{threshold['median_partial_step']:.2f}; within the grokking window: "
            f"{token['median_partial_step_window']:.2f} and {threshold['median_partial_step_window']:.2f}), the "
            f"distance moved after held-out accuracy, not before (median {threshold['median_lead_steps']:.0f} "
            f"steps), and a rule on its fall, fixed before the later runs were trained, called {hit} of "
            f"{grokked} unseen grokking units and {false} of {negative} unseen never-generalizing units "
            f"generalized.")
