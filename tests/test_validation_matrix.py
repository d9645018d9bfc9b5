"""The validation matrix harness end to end (quick mode), its measures against scipy, and the
README's headline claim against the committed summary (so the claim and the data cannot drift)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from child_env import child_env
from optional import need

stats = need("scipy.stats")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.validation.analyze import _auc, _lead, classify, headline, unit_measures  # noqa: E402
from examples.validation.tasks import make_task  # noqa: E402

SUMMARY = ROOT / "docs" / "validation" / "summary.json"


def test_quick_matrix_runs_end_to_end_and_is_cached(tmp_path) -> None:
    out, series, summary = tmp_path / "runs", tmp_path / "series", tmp_path / "summary.json"
    cmd = [sys.executable, "-m", "examples.validation"]
    run = subprocess.run([*cmd, "run", "--quick", "--out", str(out)], cwd=ROOT, env=child_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 cells, 0 cached, 1 to run" in run.stdout and "[1/1] olmoe-mix-L2-s0 done" in run.stdout
    assert run.stdout.count("olmoe-mix-L2-s0 step ") == 5   # progress: a line per probe on the console
    cell = out / "olmoe-mix-L2-s0"
    log = (out / "olmoe-mix-L2-s0.log").read_text().splitlines()
    assert len(log) == 5 and log[0].startswith("olmoe-mix-L2-s0 step     0  held-out add")  # a line per probe
    again = subprocess.run([*cmd, "run", "--quick", "--out", str(out)], cwd=ROOT, env=child_env(),
                           capture_output=True, text=True, timeout=600)
    assert "1 cells, 1 cached, 0 to run" in again.stdout
    summ = subprocess.run([*cmd, "summary", "--out", str(out), "--series", str(series), "--summary", str(summary)],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600)
    assert summ.returncode == 0, summ.stdout + summ.stderr
    data = json.loads(summary.read_text())
    assert [u["domain"] for u in data["units"]] == ["add", "sub", "div"]
    s = json.loads((series / "olmoe-mix-L2-s0.json").read_text())["series"]
    assert s["add"]["step"] == [0.0, 50.0, 100.0, 150.0, 200.0]
    # the held-out accuracy recorded per probe is the model's: between 0 and 1, one per domain
    assert all(0.0 <= a <= 1.0 for d in s for a in s[d]["held"])
    # the live record holds the stage of every domain at every probe, and the replay reproduces it
    for unit in data["units"]:
        assert unit["stages_live"]["transitions"] == unit["stages_replayed"]["transitions"]
    assert "| metric | grokked units |" in summ.stdout


def test_tasks_are_what_they_say() -> None:
    t = make_task("mix", p=11, seed=0)
    assert t.domains == ("add", "sub", "div")
    for split in (t.train, t.held):
        a, op, b, c = split.ids[:, 0], split.ids[:, 1], split.ids[:, 2], split.ids[:, 4]
        for d, name in enumerate(t.domains):
            m = split.domain == d
            if name == "add":
                assert ((a[m] + b[m]) % 11 == c[m]).all()
            if name == "sub":
                assert ((a[m] - b[m]) % 11 == c[m]).all()
            if name == "div":
                assert (b[m] != 0).all() and ((c[m] * b[m]) % 11 == a[m]).all()
            assert len(set(op[m].tolist())) == 1
    # train and held-out never share a pair; the train fractions differ per domain
    pairs = lambda s: {tuple(r[:3].tolist()) for r in s.ids}  # noqa: E731
    assert not pairs(t.train) & pairs(t.held)
    frac = [(t.train.domain == d).sum().item() / ((t.train.domain == d).sum() + (t.held.domain == d).sum()).item()
            for d in range(3)]
    assert frac[0] > frac[1] > frac[2]
    r = make_task("rand", p=11, seed=0)
    agree = ((r.train.ids[:, 0] + r.train.ids[:, 2]) % 11 == r.train.answer).float().mean()
    assert agree < 0.3   # random labels: not the sum


def test_measures_against_scipy_and_by_hand() -> None:
    steps = [0, 100, 200, 300, 400, 500, 600]
    held = [0.0, 0.1, 0.1, 0.3, 0.8, 1.0, 1.0]
    train_acc = [0.1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    dist = [0.5, 0.6, 0.58, 0.5, 0.4, 0.35, 0.35]
    series = {"step": steps, "held": held, "train_acc": train_acc, "train_loss": [3, 1, .5, .4, .3, .2, .1]}
    from examples.validation.analyze import VARIANTS
    for name in VARIANTS:
        series.setdefault(name, dist)
    unit = unit_measures(series, "add")
    assert unit["class"] == "grokked" and unit["memorized_step"] == 100 and unit["window"] == [100, 500]
    m = unit["metrics"]["distance"]
    assert m["rho_window"] == pytest.approx(stats.spearmanr(dist[1:6], held[1:6])[0])
    assert m["rho_after"] == pytest.approx(stats.spearmanr(dist[1:], held[1:])[0])
    assert m["change"] == pytest.approx((0.35 - 0.6) / 0.6)
    # half of held-out's rise (0.1 -> 1.0) is reached at 400; half of the distance's fall at 400: no lead
    assert m["lead"] == 0.0
    assert _lead(np.array([0, 1, 2, 3.0]), np.array([1.0, 0.4, 0.3, 0.2]), np.array([0, 0, 1, 1.0])) == 1.0
    assert _auc([-0.3, -0.2], [-0.1, 0.0]) == 1.0 and _auc([-0.1], [-0.1]) == 0.5 and math.isnan(_auc([], [1.0]))
    assert classify({"task": "sub", "memorized_step": 100, "max_held": 0.04, "final_held": 0.02}) == "not generalized"
    assert classify({"task": "div", "memorized_step": 100, "max_held": 0.6, "final_held": 0.2}) == "partial"


@pytest.mark.skipif(not SUMMARY.exists(), reason="no committed validation summary")
def test_readme_headline_matches_the_committed_summary() -> None:
    summary = json.loads(SUMMARY.read_text())
    readme = " ".join((ROOT / "README.md").read_text().split())
    claim = " ".join(headline(summary).split())
    assert claim in readme, f"README's headline is stale; regenerate it from the summary:\n{claim}"
