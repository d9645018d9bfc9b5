"""grokmon.curve_stats against scipy, and the grokking demo end to end at a tiny size."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from child_env import child_env
from hypothesis import given, settings
from hypothesis import strategies as st
from optional import need

from grokmon.curve_stats import (
    correlation_table, first_step_at_or_above, grokking_window, partial_spearman, rank, spearman,
)

stats = need("scipy.stats")  # the reference the validation statistics are checked against

ROOT = Path(__file__).resolve().parents[1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.integers(-5, 5)), min_size=3, max_size=30))
def test_spearman_and_ranks_match_scipy(pairs: list[tuple[int, int]]) -> None:
    x, y = (np.array(v, dtype=float) for v in zip(*pairs))
    assert rank(x).tolist() == stats.rankdata(x).tolist()
    ours = spearman(x, y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-9)


def test_spearman_drops_non_finite_pairs_and_needs_three() -> None:
    assert spearman([1, 2, math.nan, 3], [3, 2, 1, 1]) == pytest.approx(stats.spearmanr([1, 2, 3], [3, 2, 1]).statistic)
    assert math.isnan(spearman([1, 2], [2, 1]))
    with pytest.raises(ValueError, match="paired"):
        spearman([1, 2, 3], [1, 2])


def test_correlation_table_uses_common_steps_from_a_step_on() -> None:
    reference = {0: 0.0, 10: 0.2, 20: 0.5, 30: 0.9, 40: 1.0}
    series = {"down": {0: 5.0, 10: 1.0, 20: 0.8, 30: 0.5, 40: 0.1, 50: 9.0}, "up": {10: 1.0, 20: 2.0, 30: 4.0}}
    table = correlation_table(series, reference, from_step=10)
    assert table["down"].points == 4 and table["down"].spearman == -1.0
    assert table["down"].pearson == pytest.approx(stats.pearsonr([1.0, 0.8, 0.5, 0.1], [0.2, 0.5, 0.9, 1.0]).statistic)
    assert table["up"].points == 3 and table["up"].spearman == 1.0
    assert first_step_at_or_above(reference, 0.9) == 30 and first_step_at_or_above(reference, 2.0) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5), st.floats(-5, 5)), min_size=4, max_size=25))
def test_partial_spearman_is_the_residual_correlation_of_ranks(triples) -> None:
    """Reference: regress the ranks of x and y on the ranks of z, correlate the residuals."""
    x, y, z = (np.array(v) for v in zip(*triples))
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    design = np.vstack([rz, np.ones_like(rz)]).T

    def residual(v):
        return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]

    ex, ey = residual(rx), residual(ry)
    ours = partial_spearman(x, y, z)
    if np.linalg.norm(ex) < 1e-9 or np.linalg.norm(ey) < 1e-9 or np.ptp(rz) == 0:
        return  # undefined there; NaN is what we return, and the reference divides by zero
    assert ours == pytest.approx(float(ex @ ey / np.linalg.norm(ex) / np.linalg.norm(ey)), abs=1e-6)


def test_grokking_window() -> None:
    train = {0: 0.2, 50: 0.99, 100: 1.0, 150: 1.0, 200: 1.0}
    held = {0: 0.0, 50: 0.1, 100: 0.2, 150: 0.995, 200: 1.0}
    assert grokking_window(train, held) == (100, 150)
    assert grokking_window(train, {s: 0.5 for s in held}) == (100, 200)  # never generalizes: to the end
    assert grokking_window({0: 0.5}, {0: 0.5}) is None


@pytest.mark.slow
def test_grokking_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The README's demo through a real Trainer, W&B offline, at a size that takes seconds."""
    env = child_env()
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "grokking_demo.py"), "--p", "11", "--max-steps", "40",
         "--every", "10", "--probe", "32", "--threads", "1", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Spearman correlation with held-out accuracy" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["spearman_whole_run"]) >= {"pathway_distance", "pathway_distance/token",
                                                   "pathway_cosine", "train_loss"}
    assert summary["memorized_step"] in (None, 0, 10, 20, 30, 40)
    probes = [json.loads(line) for line in (out / "grokmon.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in probes if "grokmon/pathway_distance" in r.get("metrics", {})]
    assert steps == [0, 10, 20, 30, 40]
    # each progress line shows its own step's probe values, not the previous probe's
    distance = {r["step"]: r["metrics"]["grokmon/pathway_distance"] for r in probes if "metrics" in r}
    printed = {int(line.split()[1].split("/")[0]): float(line.split("distance ")[1].split()[0])
               for line in proc.stdout.splitlines() if line.startswith("step ")}
    assert printed == {s: round(distance[s], 4) for s in steps}
    assert proc.stdout.count("(stage 'unknown':") <= 1
    assert (out / "grokking_demo.png").stat().st_size > 10_000
    assert len(list((out / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
