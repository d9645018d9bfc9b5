"""The validation matrix harness end to end (quick mode), its measures against scipy, and the
claims of README.md and docs/validation.md against the committed summary (so a claim and its data
cannot drift)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import pytest
from child_env import child_env
from optional import need

stats = need("scipy.stats")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.validation import docs  # noqa: E402
from examples.validation.analyze import (  # noqa: E402
    _auc, _cross, _lead, classify, contrast, loss_spikes, specificity_table, unit_measures,
)
from examples.validation.tasks import canary_token, make_task, vocab_size  # noqa: E402
from grokmon.metrics.distance import pathway_distance  # noqa: E402
from grokmon.pathways import Pathways, PathwaySequences, pathway_sequences  # noqa: E402
from grokmon.curve_stats import partial_spearman  # noqa: E402

SUMMARY = ROOT / "docs" / "validation" / "summary.json"


def test_quick_matrix_runs_end_to_end_and_is_cached(tmp_path) -> None:
    out, series, summary = tmp_path / "runs", tmp_path / "series", tmp_path / "summary.json"
    cmd = [sys.executable, "-m", "examples.validation"]
    run = subprocess.run([*cmd, "run", "--quick", "--out", str(out)], cwd=ROOT, env=child_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 cells, 0 cached, 1 to run" in run.stdout and "[1/1] olmoe-mix-L2-s0-c done" in run.stdout
    assert run.stdout.count("olmoe-mix-L2-s0-c step ") == 5   # progress: a line per probe on the console
    log = (out / "olmoe-mix-L2-s0-c.log").read_text().splitlines()
    assert len(log) == 5 and log[0].startswith("olmoe-mix-L2-s0-c step     0  held-out add")  # a line per probe
    assert "canary" in log[0]
    again = subprocess.run([*cmd, "run", "--quick", "--out", str(out)], cwd=ROOT, env=child_env(),
                           capture_output=True, text=True, timeout=600)
    assert "1 cells, 1 cached, 0 to run" in again.stdout
    summ = subprocess.run([*cmd, "summary", "--out", str(out), "--series", str(series), "--summary", str(summary)],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600)
    assert summ.returncode == 0, summ.stdout + summ.stderr
    data = json.loads(summary.read_text())
    assert [u["domain"] for u in data["units"]] == ["add", "sub", "div", "canary"]
    assert [u["class"] for u in data["units"]][-1] == "canary"
    s = json.loads((series / "olmoe-mix-L2-s0-c.json").read_text())["series"]
    assert s["add"]["step"] == [0.0, 50.0, 100.0, 150.0, 200.0]
    # both within-run baselines: canaries probed as their own group, and cross-group pairs per domain
    assert "cross_distance" in s["add"] and "cross_distance" not in s["canary"] and len(s["add"]["spike"]) == 5
    assert all(0.0 < x <= 1.0 for x in s["add"]["cross_distance"])
    names = set(data["metrics"])
    assert {"distance|canary", "distance|cross", "distance_token|canary", "probe_loss|canary"} <= names
    # what summary needs is recorded beside the summary, so it runs again without the run folder
    assert (tmp_path / "cells" / "olmoe-mix-L2-s0-c.json.gz").exists()
    import shutil
    shutil.rmtree(out)
    again = subprocess.run([*cmd, "summary", "--out", str(out), "--series", str(series), "--summary", str(summary)],
                           cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(summary.read_text())["units"] == data["units"]
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
    steps = [0, 100, 200, 300, 400, 500, 600, 1100]   # >= 1000 steps after memorization: a grokked unit
    held = [0.0, 0.1, 0.1, 0.3, 0.8, 1.0, 1.0, 1.0]
    train_acc = [0.1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    dist = [0.5, 0.6, 0.58, 0.5, 0.4, 0.35, 0.35, 0.35]
    series = {"step": steps, "held": held, "train_acc": train_acc, "train_loss": [3, 1, .5, .4, .3, .2, .1, .1]}
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
def test_generated_claims_and_tables_match_the_committed_summary() -> None:
    """README.md and docs/validation.md say what the summary says: every generated block is current,
    and the blocks that carry the project's claims are there."""
    summary = json.loads(SUMMARY.read_text())
    generated = docs.blocks(summary)
    assert docs.stale(generated) == [], "regenerate with `python -m examples.validation docs`"
    readme, page = (p.read_text() for p in docs.FILES)
    for name in ("headline", "ladder-claim"):
        assert f"<!-- gen:{name} -->" in readme and f"<!-- gen:{name} -->" in page
    for name in ("ladder-judgement", "ladder-rungs", "ladder-cost", "probe-size", "specificity", "matrix-aucs",
                 "stage-loss-falling"):
        assert f"<!-- gen:{name} -->" in page
    # the claim's numbers, read back from the units themselves (not from the summary's tables)
    claim = generated["ladder-claim"]
    grokked = [u for u in summary["units"] if u["class"] == "grokked" and u.get("fall_span", {}).get("distance")]
    fell = [u["fall_span"]["distance"] for u in grokked if u["fall_span"]["distance"].get("canary") is not None]
    more = sum(1 for f in fell if f["group"] < f["canary"])
    assert f"fell more in {more} of {len(fell)})" in claim
    assert f"{100 * float(np.median([f['canary'] for f in fell])):+.1f} %" in claim
    judged = [u for u in summary["units"] if u.get("rung") in docs.TOP and u["class"] in ("control", "not generalized")]
    called = [u for u in judged if u["metrics"]["distance"].get("change_span") is not None
              and u["metrics"]["distance"]["change_span"] <= docs.PREREGISTERED_LADDER["rules"]["distance"]]
    with_change = [u for u in judged if u["metrics"]["distance"].get("change_span") is not None]
    assert f"called {len(called)} of their {len(with_change)} never-generalizing units" in claim
    # the stage caveat, re-counted probe by probe (every 100 steps) from each grokked unit's stage changes
    def stage_at(transitions: list, step: float) -> str:
        return [stage for at, stage in transitions if at <= step][-1]
    grokked = [u for u in summary["units"] if u["class"] == "grokked" and u.get("held_50") is not None]
    late = sum(1 for u in grokked if any(
        stage_at(u["stages_replayed"]["transitions"], s) == "loss_falling"
        for s in np.arange(u["held_50"], u["last_step"] + 1, 100)))
    assert f"passed 0.5 in {late} of the {len(grokked)} grokked units" in generated["stage-loss-falling"]


def test_generated_blocks_are_rewritten_in_place_and_unknown_ones_refused(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text("a <!-- gen:x -->old<!-- /gen:x --> b\n\n<!-- gen:t -->\n| 1 |\n<!-- /gen:t -->\n")
    root, docs.ROOT = docs.ROOT, tmp_path
    try:
        assert docs.stale({"x": "new", "t": "\n| 1 |\n"}, (page,)) == ["page.md: x"]
        assert docs.write({"x": "new", "t": "\n| 1 |\n"}, (page,)) == [page]
        assert page.read_text() == "a <!-- gen:x -->new<!-- /gen:x --> b\n\n<!-- gen:t -->\n| 1 |\n<!-- /gen:t -->\n"
        assert docs.write({"x": "new", "t": "\n| 1 |\n"}, (page,)) == []   # nothing stale: untouched
        with pytest.raises(SystemExit, match="no generator for the block 't'"):
            docs.refresh(page.read_text(), {"x": "new"})
    finally:
        docs.ROOT = root


def test_canaries_are_random_labels_under_their_own_token() -> None:
    t = make_task("div", p=11, seed=0, canary=0.1)
    assert t.domains == ("div", "canary")
    main = (t.train.domain == 0).sum().item()
    canary = t.train.domain == 1
    assert canary.sum().item() == round(0.1 * main) and (t.held.domain == 1).sum().item() == canary.sum().item()
    assert (t.train.ids[canary, 1] == canary_token(11)).all() and canary_token(11) == vocab_size(11, True) - 1
    assert (t.train.ids[~canary, 1] != canary_token(11)).all()
    # the main domain is what it was without canaries (same pairs, same split)
    plain = make_task("div", p=11, seed=0)
    assert torch.equal(plain.train.ids, t.train.ids[~canary]) and vocab_size(11) == canary_token(11)
    with pytest.raises(ValueError, match="share of the training set"):
        make_task("div", p=11, canary=0.7)


def test_classes_need_delayed_generalization_and_time_after_memorization() -> None:
    base = {"task": "div", "memorized_step": 1000, "max_held": 1.0, "final_held": 1.0, "last_step": 3000}
    assert classify({**base, "held_at_memorization": 0.04}) == "grokked"
    assert classify({**base, "held_at_memorization": 0.9}) == "early"        # no delayed generalization
    assert classify({**base, "held_at_memorization": 0.04, "last_step": 1500}) == "short"  # < 1000 steps after
    assert classify({**base, "held_at_memorization": 0.04, "domain": "canary"}) == "canary"


def test_loss_spikes_flag_probes_of_a_collapsed_model() -> None:
    steps = [0, 100, 200, 300, 400, 500]
    assert loss_spikes([3.0, 1.0, 0.1, 0.2, 2.0, 0.1], [0, .5, 1, 1, .2, 1], 200, steps) == [0, 0, 0, 0, 1, 0]
    # train accuracy collapsing after memorization is a spike even while the loss stays low-ish
    assert loss_spikes([3.0, 1.0, 0.1, 0.15, 0.15, 0.1], [0, .5, 1, .5, 1, 1], 200, steps) == [0, 0, 0, 1, 0, 0]


def _reference_partial(x, y, z) -> float:
    """Partial Spearman by hand: residuals of the ranks of x and y on the ranks of z, correlated."""
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    design = np.vstack([rz, np.ones_like(rz)]).T
    ex = rx - design @ np.linalg.lstsq(design, rx, rcond=None)[0]
    ey = ry - design @ np.linalg.lstsq(design, ry, rcond=None)[0]
    return float(ex @ ey / np.linalg.norm(ex) / np.linalg.norm(ey))


def test_canary_and_cross_group_contrasts_by_hand() -> None:
    from examples.validation.analyze import VARIANTS
    steps = [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200]
    held = [0.0, 0.02, 0.05, 0.03, 0.1, 0.2, 0.15, 0.7, 0.6, 0.97, 1.0, 1.0, 1.0]  # not monotone in the step:
    # with held-out rising strictly with the step the partial given the step is undefined (NaN)
    train_acc = [0.1, 1.0] + [1.0] * 11
    dist = [0.5, 0.6, 0.59, 0.6, 0.57, 0.55, 0.5, 0.45, 0.42, 0.4, 0.39, 0.39, 0.38]
    cross = [0.7, 0.72, 0.71, 0.72, 0.71, 0.72, 0.7, 0.71, 0.7, 0.69, 0.7, 0.7, 0.69]
    canary_dist = [0.5, 0.62, 0.6, 0.6, 0.58, 0.6, 0.57, 0.58, 0.55, 0.56, 0.55, 0.54, 0.55]
    series = {"step": steps, "held": held, "train_acc": train_acc, "train_loss": [3, 1] + [0.1] * 11}
    canary = {"step": steps, "held": [0.02] * 13, "train_acc": [0.0] + [1.0] * 12, "train_loss": [3] + [0.1] * 12}
    for name in VARIANTS:
        series.setdefault(name, dist)
        canary.setdefault(name, canary_dist)
    series["cross_distance"] = cross
    unit = unit_measures(series, "div", "div", canary)
    assert unit["class"] == "grokked" and unit["memorized_step"] == 100 and unit["window"] == [100, 900]
    at = 1   # memorization
    c = np.array(dist) / dist[at] - np.array(canary_dist) / canary_dist[at]
    assert np.allclose(contrast(np.array(dist), np.array(canary_dist), at), c)
    m = unit["metrics"]["distance|canary"]
    win = slice(1, 10)   # memorization (100) to the first probe at 95 % of the best held-out (900)
    assert m["rho_window"] == pytest.approx(stats.spearmanr(c[win], held[win])[0])
    assert m["rho_after"] == pytest.approx(stats.spearmanr(c[1:], held[1:])[0])
    assert m["partial_step_window"] == pytest.approx(_reference_partial(c[win], held[win], steps[win]))
    assert m["partial_step"] == pytest.approx(_reference_partial(c[1:], held[1:], steps[1:]))
    # the change of a contrast is the unit's relative change minus the canaries' over the same steps
    span_end = 11   # memorization + 1000 steps
    assert m["change_span"] == pytest.approx((dist[span_end] / dist[at] - 1) - (canary_dist[span_end] / canary_dist[at] - 1))
    k = unit["metrics"]["distance|cross"]
    cc = np.array(dist) / dist[at] - np.array(cross) / cross[at]
    assert k["rho_window"] == pytest.approx(stats.spearmanr(cc[win], held[win])[0])
    fall = unit["fall_span"]["distance"]
    assert fall["group"] == pytest.approx(dist[span_end] / dist[at] - 1)
    assert fall["canary"] == pytest.approx(canary_dist[span_end] / canary_dist[at] - 1)
    assert fall["cross"] == pytest.approx(cross[span_end] / cross[at] - 1)
    assert partial_spearman(c[win], np.array(held)[win], np.array(steps)[win]) == pytest.approx(m["partial_step_window"])
    spec = specificity_table([{**unit, "class": "grokked"}])["distance"]
    assert spec["group_fell_more_than_canary"] == 1 and spec["group_fell_more_than_cross"] == 1
    # the AUC of a contrast: grokked units' change against negative units', ties half
    assert _auc([m["change_span"]], [0.0, m["change_span"]]) == 0.75


def test_cross_group_distance_pairs_one_member_with_one_non_member() -> None:
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(6, 2, 4) * 3, dim=-1)
    p = Pathways(mean_weights=w, layers=(0, 1), router_names=("a", "b"), num_experts=4,
                 expert_counts=torch.ones(2, 4), groups=torch.tensor([0, 0, 1, 1, 2, 2]), group_names=("x", "y", "z"))
    member = p.groups == 0
    seqs = pathway_sequences(p, "threshold", threshold=0.7)
    by_hand = []
    for i in (0, 1):
        for j in (2, 3, 4, 5):
            pair = PathwaySequences(seqs.ids[[i, j]], seqs.lengths[[i, j]], seqs.alphabet_size)
            by_hand.append(pathway_distance(pair).normalized)
    assert _cross(p, p, member, "distance") == pytest.approx(float(np.mean(by_hand)))


def test_a_cut_cell_resumes_from_its_checkpoint_bit_for_bit(tmp_path) -> None:
    """A cell stopped after a probe (a session that ends) continues from checkpoint.pt to the same records."""
    from examples.validation.run import Cell, run_cell
    cell = Cell("mixtral", "div", p=11, steps=40, every=10, probe_per_domain=8, canary=0.1, checkpoint_s=0)
    whole = run_cell(cell, tmp_path / "a", log=lambda *_: None)
    assert run_cell(cell, tmp_path / "b", log=lambda *_: None, stop_at=20) is None
    assert (tmp_path / "b" / cell.name / "checkpoint.pt").exists()
    assert not (tmp_path / "b" / cell.name / "result.json").exists()
    lines: list[str] = []
    resumed = run_cell(cell, tmp_path / "b", log=lines.append)
    assert lines[0].startswith(f"{cell.name} resumed at step 20") and len(lines) == 3   # probes 30 and 40 only
    assert not (tmp_path / "b" / cell.name / "checkpoint.pt").exists()   # a finished cell keeps no checkpoint
    a, b = (torch.load(tmp_path / x / cell.name / "probes.pt", weights_only=True) for x in "ab")
    assert [r["step"] for r in b] == [0, 10, 20, 30, 40]
    assert [(r["held_acc"], r["train_loss"]) for r in a] == [(r["held_acc"], r["train_loss"]) for r in b]
    assert torch.equal(a[-1]["full"]["pathways"]["mean_weights"], b[-1]["full"]["pathways"]["mean_weights"])
    rows = lambda x: [json.loads(s)["step"] for s in (tmp_path / x / cell.name / "live" / "grokmon.jsonl")  # noqa: E731
                      .read_text().splitlines() if "metrics" in json.loads(s)]
    assert rows("a") == rows("b") == [0, 10, 20, 30, 40]   # the live record is not doubled
    assert whole["final_held_acc"] == resumed["final_held_acc"] and whole["parameters"] == resumed["parameters"]


def test_ladder_plan_grows_the_model_and_waits_for_the_preregistered_rule(tmp_path) -> None:
    from examples.validation import ladder
    from examples.validation.__main__ import finished, plan
    cells = plan("ladder")
    rungs = [c.rung for c in cells if c.rung is not None]
    assert sorted(set(rungs)) == list(ladder.LOWER) and all(c.canary == ladder.CANARY for c in cells)
    assert {c.family for c in cells if c.rung is not None} == set(ladder.FAMILIES)
    assert {(c.task, c.seed) for c in cells if c.rung == 0} == {("div", 0), ("div", 1), ("rand", 0)}
    shapes = [ladder.RUNGS[r] for r in sorted(ladder.RUNGS)]
    for key in ("layers", "hidden", "experts", "top_k"):
        assert [s[key] for s in shapes] == sorted(s[key] for s in shapes)    # all grow together
    assert shapes[0]["top_k"] == 2 and shapes[-1]["top_k"] == 4 and len(shapes) >= 4
    # the 6 cells the first matrix lacked come with the ladder, with canaries
    assert {c.name for c in cells if c.rung is None} == {
        "deepseek_v3-div-L4-s0-c", "deepseek_v3-rand-L4-s0-c", "qwen3_moe-div-L4-s0-c", "qwen3_moe-rand-L4-s0-c",
        "olmoe-mix-L2-s1-c", "qwen3_moe-mix-L2-s1-c"}
    if ladder.PREREGISTERED_LADDER is None:
        with pytest.raises(SystemExit, match="only after a decision rule"):
            plan("top")
    # a cell is finished when its run folder has result.json or its record is committed
    c = cells[0]
    assert not finished(c, tmp_path, tmp_path / "cells")
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / f"{c.name}.json.gz").write_bytes(b"")
    assert finished(c, tmp_path, tmp_path / "cells")
    # the first matrix's 34 cells are committed: `run` (the matrix plan) would not train them again
    assert sum(finished(c, tmp_path / "none") for c in plan("matrix")) >= 34


def test_small_probe_variants_use_the_first_samples_of_each_group(tmp_path, monkeypatch) -> None:
    """The top rungs probe 256 a group; ``*_small`` recomputes the matrix's size from the first samples."""
    from examples.validation import analyze
    from examples.validation.run import Cell, run_cell
    cell = Cell("olmoe", "div", p=11, steps=20, every=10, probe_per_domain=8, canary=0.05)
    result = run_cell(cell, tmp_path, log=lambda *_: None)
    records = torch.load(tmp_path / cell.name / "probes.pt", weights_only=True)
    monkeypatch.setattr(analyze, "SMALL", 4)
    series = analyze.unit_series(records, result["domains"])
    assert "distance_small" in series["div"] and "distance_small" not in series["canary"]   # canary: 2 samples
    full = analyze._pathways(records[-1]["full"]["pathways"])
    first = full.select((full.groups == 0).nonzero().flatten()[:4])
    seqs = pathway_sequences(first, "threshold", threshold=0.7)
    by_hand = np.mean([pathway_distance(PathwaySequences(seqs.ids[[i, j]], seqs.lengths[[i, j]], seqs.alphabet_size))
                       .normalized for i in range(4) for j in range(i + 1, 4)])
    assert series["div"]["distance_small"][-1] == pytest.approx(float(by_hand))


def test_a_cell_finished_with_another_recipe_is_reported(tmp_path) -> None:
    import dataclasses
    import gzip
    from examples.validation.__main__ import recipe_drift
    from examples.validation.ladder import ladder_cells
    cell = ladder_cells(rungs=(1,))[0]
    (tmp_path / "cells").mkdir()
    old = {**dataclasses.asdict(cell), "steps": 6000}
    with gzip.open(tmp_path / "cells" / f"{cell.name}.json.gz", "wt") as fh:
        json.dump({"result": {"cell": old}, "live": []}, fh)
    longer = dataclasses.replace(cell, steps=12000)
    assert recipe_drift(longer, tmp_path / "runs", tmp_path / "cells") == {"steps": (6000, 12000)}
    assert recipe_drift(dataclasses.replace(cell, steps=6000), tmp_path / "runs", tmp_path / "cells") == {}


def test_a_retuned_rung_gets_new_cells_and_keeps_the_first_recipes() -> None:
    """A recipe's tag goes into the cell name, so a retune never takes an old record as finished."""
    from examples.validation.ladder import FIRST_RECIPES, RECIPES, ladder_cells
    new = ladder_cells(rungs=(1,))
    old = ladder_cells(rungs=(1,), recipes=FIRST_RECIPES)
    assert [c.name for c in new][:2] == ["mixtral-div-R1-s0-f50", "deepseek_v3-div-R1-s0-f50"]
    assert [c.name for c in old][:2] == ["mixtral-div-R1-s0", "deepseek_v3-div-R1-s0"]
    assert {c.train_fraction for c in new} == {RECIPES[1]["train_fraction"]} != {c.train_fraction for c in old}
    # the cells each rung ran before its retune are planned (and summarised) beside the retuned ones
    from examples.validation.__main__ import plan
    from examples.validation.ladder import first_recipe_cells
    assert [c.name for c in first_recipe_cells((4,))] == ["mixtral-div-R4-s0-f50", "deepseek_v3-div-R4-s0-f50"]
    top = [c.name for c in plan("top")]
    assert top[-2:] == ["mixtral-div-R4-s0-f50", "deepseek_v3-div-R4-s0-f50"] and "mixtral-div-R4-s0-f60" in top
    assert [c.name for c in plan("ladder")][-4:] == [c.name for c in old][:4]
