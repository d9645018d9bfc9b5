"""A synthetic but realistic grokmon record for report tests: 3 groups, real stage and alert events.

The curves are made up (seeded numpy); everything else is grokmon's own machinery, as in
``GrokkingMonitor._deliver``: a ``GroupStageTracker`` and a ``PlateauRule`` judge each probe, their
0/1 and stage codes join the metrics, the metrics are ``grokmon/``-prefixed and written by a real
``JsonlSink``, and the events go through ``JsonlSink.alert``. So the file has the exact line format
a training run writes, with loss_falling -> unknown stage changes at different steps per group.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from grokmon.alerts import GroupStageTracker, PlateauRule, RuleSet
from grokmon.sinks import JsonlSink

GROUPS = ("arithmetic", "code", "prose")
STEPS = list(range(0, 3001, 100))
LAYERS, EXPERTS = 2, 8


def _curves(rng: np.random.Generator, step: int, g: int) -> dict[str, float]:
    tau = (150, 350, 700)[g]                    # each group memorizes at its own pace
    loss = 0.3 + 3.7 * math.exp(-step / tau) + 0.004 * rng.standard_normal()
    rise = 0.08 * (1 - math.exp(-step / tau))    # the distance rises while memorizing ...
    fall = 0.12 / (1 + math.exp(-(step - 4 * tau) / 250))   # ... and falls later
    dist = 0.62 + rise - fall + 0.006 * rng.standard_normal()
    return {"probe_loss": loss, "pathway_distance": dist}


def metric_rows(seed: int = 0, *, eval_key: bool = False) -> list[tuple[int, dict[str, float]]]:
    """``(step, unprefixed metrics)`` per probe, before the stage tracker and rules see them."""
    rng = np.random.default_rng(seed)
    rows = []
    for step in STEPS:
        m: dict[str, float] = {}
        per = [_curves(rng, step, g) for g in range(len(GROUPS))]
        for g, name in enumerate(GROUPS):
            m[f"group/{name}/probe_loss"] = per[g]["probe_loss"]
            m[f"group/{name}/pathway_distance"] = per[g]["pathway_distance"]
        m["probe_loss"] = float(np.mean([p["probe_loss"] for p in per]))
        m["pathway_distance"] = float(np.mean([p["pathway_distance"] for p in per]))
        m["routing_entropy"] = 0.9 - 0.25 * (1 - math.exp(-step / 800)) + 0.01 * rng.standard_normal()
        m["pathway_cosine"] = 0.1 + 0.6 * (1 - math.exp(-step / 1200)) + 0.02 * rng.standard_normal()
        m["pathway_distance_raw"] = 8.0 * m["pathway_distance"]
        for layer in range(LAYERS):
            sharp = min(1.0, step / 2500) * (1 + layer)
            w = np.exp(sharp * np.linspace(1.0, -1.0, EXPERTS) + 0.05 * rng.standard_normal(EXPERTS))
            for e, v in enumerate(w / w.sum()):
                m[f"layer/{layer}/expert/{e}/load"] = float(v)
        if step == 1200:
            m["pathway_cosine"] = float("nan")   # a failed metric: written as null, a gap in the curve
        if eval_key:
            m["eval/accuracy"] = eval_accuracy(step)
        rows.append((step, m))
    return rows


def eval_accuracy(step: int) -> float:
    """A held-out accuracy curve that climbs after memorization (grokking-like)."""
    return round(0.02 + 0.95 / (1 + math.exp(-(step - 1800) / 250)), 4)


def fixture_probe():
    """A small probe of the three groups (the configuration line's fingerprint and counts)."""
    from grokmon import ProbeSet

    ids = [[5 + i, 6, 7, 8 + i] for i in range(6)]
    return ProbeSet.from_token_ids(ids, groups=[GROUPS[i % 3] for i in range(6)], min_length=2)


def write_record(path: Path, seed: int = 0, *, eval_key: bool = False, config: bool = True) -> Path:
    """Write the record to ``path`` as a monitor would (configuration line first); returns ``path``."""
    from grokmon import MonitorConfig
    from grokmon.runinfo import config_line

    tracker = GroupStageTracker(patience=3, min_delta=0.05)
    rules = RuleSet([PlateauRule("pathway_distance", patience=4, min_delta=0.01, warmup=3)])
    with JsonlSink(path) as sink:
        if config:
            sink.write_config(config_line(fixture_probe(), monitor=MonitorConfig(every=100, jsonl=False)))
        for step, metrics in metric_rows(seed, eval_key=eval_key):
            events = rules.update(step, metrics)
            metrics.update(rules.active_metrics())
            events += tracker.update(step, metrics)
            metrics.update(tracker.stage_metrics())
            metrics["errors"] = 0.0
            prefixed = {(k if k.startswith("eval/") else "grokmon/" + k): v for k, v in metrics.items()}
            sink.log(prefixed, step)
            for event in events:
                sink.alert(event)
    return path


def write_eval_csv(path: Path) -> Path:
    path.write_text("step,eval/accuracy\n" + "".join(f"{s},{eval_accuracy(s)}\n" for s in STEPS[::2]))
    return path
