"""The ladder's pre-registered rules (examples/validation/preregister.py): fitted by hand-checkable
arithmetic on seen units, judged only on unseen top-rung units, with the shipping criterion applied
as written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.validation import preregister
from examples.validation.ladder import PREREGISTERED_LADDER, TOP

SUMMARY = Path(__file__).resolve().parents[1] / "docs" / "validation" / "summary.json"


def unit(run: str, cls: str, rung: int | None = 3, **changes: float) -> dict:
    metrics = {m.replace("__", "|"): {"change_span": c, "partial_step": c * 10} for m, c in changes.items()}
    return {"run": run, "class": cls, "rung": rung, "metrics": metrics}


def test_rules_are_the_midpoint_of_the_grokked_and_negative_medians() -> None:
    units = [unit("a", "grokked", distance=-0.10), unit("b", "grokked", distance=-0.06),
             unit("c", "grokked", distance=-0.02), unit("d", "control", distance=0.01),
             unit("e", "not generalized", distance=-0.01), unit("f", "canary", distance=-0.5),
             unit("g", "partial", distance=-0.5)]
    # grokked median -0.06, negative median (0.01 - 0.01) / 2 = 0; canary and partial units are not fitted on
    assert preregister.fit_rules(units, metrics=("distance",)) == {"distance": -0.03}
    # a metric whose grokked units fell less than the negatives gets no rule
    wrong = [unit("a", "grokked", distance=0.02), unit("d", "control", distance=-0.01)]
    assert preregister.fit_rules(wrong, metrics=("distance", "distance_token")) == {"distance": None, "distance_token": None}


def prereg(**rules: float | None) -> dict:
    return {"written": "t", "rungs": [3, 4], "span": 1000, "fitted_on": ["seen"],
            "rules": {m.replace("__", "|"): v for m, v in rules.items()}, "ship": {"auc_margin": 0.1, "min_units": 2}}


def test_judge_counts_calls_on_unseen_top_rung_units_only() -> None:
    units = [unit("g1", "grokked", distance=-0.05, distance__canary=-0.05),
             unit("g2", "grokked", distance=-0.01, distance__canary=-0.04),
             unit("n1", "control", distance=-0.03, distance__canary=0.01),
             unit("n2", "not generalized", distance=0.00, distance__canary=0.00),
             unit("c1", "canary", distance=-0.04),
             unit("seen", "grokked", distance=-0.9, distance__canary=-0.9),     # fitted on: never judged
             unit("low", "control", rung=1, distance=-0.9, distance__canary=-0.9)]  # a lower rung: never judged
    j = preregister.judge(units, prereg(distance=-0.02, distance__canary=-0.02))
    assert j["units"] == {"grokked": 2, "negative": 2, "canary": 1}
    raw, ref = j["metrics"]["distance"], j["metrics"]["distance|canary"]
    assert raw["grokked_called"] == [1, 2] and raw["negative_called"] == [1, 2] and raw["canary_called"] == [1, 1]
    assert raw["balanced_accuracy"] == pytest.approx(0.5)
    assert ref["grokked_called"] == [2, 2] and ref["negative_called"] == [0, 2] and ref["balanced_accuracy"] == 1.0
    # AUC by hand: raw pairs (-0.05<-0.03, -0.05<0, -0.01<-0.03 no, -0.01<0) = 3/4; canary contrast 4/4
    assert raw["auc_span"] == pytest.approx(0.75) and ref["auc_span"] == 1.0
    # partial given the step (here 10 x the change): medians -0.3 raw, -0.45 contrast -> stronger, AUC +0.25
    assert j["verdicts"] == {"distance|canary": "ships"}


def test_judge_says_does_not_ship_or_unknown_by_the_written_criterion() -> None:
    base = [unit("g1", "grokked", distance=-0.05, distance__canary=-0.05),
            unit("g2", "grokked", distance=-0.04, distance__canary=-0.01),
            unit("n1", "control", distance=0.01, distance__canary=-0.02),
            unit("n2", "control", distance=0.02, distance__canary=0.00)]
    assert preregister.judge(base, prereg(distance=-0.02, distance__canary=-0.02))["verdicts"] == {
        "distance|canary": "does not ship"}                       # raw AUC 1.0, contrast 0.75
    assert preregister.judge(base[:3], prereg(distance=-0.02, distance__canary=-0.02))["verdicts"] == {
        "distance|canary": "unknown"}                             # one negative unit is too few


def test_the_rules_cannot_be_fitted_once_a_top_rung_has_run() -> None:
    from examples.validation.__main__ import preregistration
    summary = {"runs": [{"name": "mixtral-div-R3-s0-f50", "cell": {"rung": TOP[0], "canary": 0.03}}], "units": []}
    with pytest.raises(SystemExit, match="already holds top-rung cells"):
        preregistration(summary)


def test_the_committed_rules_refit_from_the_committed_cells() -> None:
    """Until the rules are committed the top rungs refuse to run; once they are, refitting them on the
    cells they name gives the same thresholds (nobody edited them after seeing a top rung)."""
    if PREREGISTERED_LADDER is None:
        from examples.validation.ladder import top_cells
        with pytest.raises(SystemExit, match="decision rule"):
            top_cells()
        return
    summary = json.loads(SUMMARY.read_text())
    fitted = [u for u in summary["units"] if u["run"] in set(PREREGISTERED_LADDER["fitted_on"])]
    assert {u["run"] for u in fitted} == set(PREREGISTERED_LADDER["fitted_on"])
    assert preregister.fit_rules(fitted) == PREREGISTERED_LADDER["rules"]
    from examples.validation import analyze       # the unit definitions the rules were fitted under
    assert PREREGISTERED_LADDER["definitions"] == {"memorized": analyze.MEMORIZED, "delayed": analyze.DELAYED,
                                                   "after": analyze.AFTER}
