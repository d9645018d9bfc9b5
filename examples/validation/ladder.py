"""The scale ladder of the validation matrix (issue 24, docs/validation.md "Does it sharpen with scale?").

Five rungs from 0.24 M to 26 M parameters: MoE layers, hidden size (= each expert's size) and the
number of experts grow together, top-k from 2 to 4. Two families: Mixtral (softmax router) and
DeepSeek-V3 (sigmoid router with a selection bias and a shared expert). Every cell trains ``div``
(the task that grokked in the pilot at 0.24 M and 3.4 M) with 3 % random-label canaries under their
own token, two seeds; a ``rand`` cell per family (seed 0, also with canaries) is the across-run control.

The recipe per rung (steps, learning rate, train fraction) is tuned on the *lower* rungs only
(:data:`LOWER`: 0 and 1); the judged rungs (:data:`TOP`: 2, 3 and 4) run only after a decision rule
fixed on the lower rungs has been committed (:data:`PREREGISTERED_LADDER`), and are judged on it.
Rung 2 was planned as a lower rung; it moved to the judged side before any of its cells ran, so
that the rules meet unseen runs at three sizes instead of two. How each rung's recipe was chosen is
in :data:`RECIPE_NOTES`.

Example:
    >>> [c.name for c in ladder_cells(rungs=(0,))][:2]
    ['mixtral-div-R0-s0', 'deepseek_v3-div-R0-s0']
"""

from __future__ import annotations

from typing import Any

from .run import Cell

#: rung -> model shape (layers, hidden = expert size, experts, top-k)
RUNGS: dict[int, dict[str, int]] = {
    0: dict(layers=2, hidden=64, experts=8, top_k=2),     # 0.24 M (the matrix's size)
    1: dict(layers=3, hidden=96, experts=12, top_k=2),    # about 1 M
    2: dict(layers=4, hidden=128, experts=16, top_k=2),   # 3.4 M (the pilot's rung up)
    3: dict(layers=4, hidden=192, experts=24, top_k=3),   # about 11 M
    4: dict(layers=4, hidden=256, experts=32, top_k=4),   # 26 M
}
#: rung -> training recipe (how each was chosen: RECIPE_NOTES).
#: ``tag`` names a retuned recipe's cells (``mixtral-div-R1-s0-f50``) apart from the first recipe's.
RECIPES: dict[int, dict[str, Any]] = {
    0: dict(steps=4000, lr=3e-3, train_fraction=0.4, probe_per_domain=64),
    1: dict(steps=6000, lr=3e-3, train_fraction=0.5, probe_per_domain=64, tag="f50"),
    2: dict(steps=8000, lr=3e-3, train_fraction=0.5, probe_per_domain=64, tag="f50"),
    3: dict(steps=5000, lr=3e-3, train_fraction=0.5, probe_per_domain=256, tag="f50"),
    4: dict(steps=10000, lr=3e-3, train_fraction=0.6, probe_per_domain=256, tag="f60"),
}
#: recipes a rung ran with before it was retuned; their cells stay in the matrix (a run that did not
#: generalize in its budget is a negative unit) and ``run --plan ladder`` finishes any cut one last
FIRST_RECIPES: dict[int, dict[str, Any]] = {
    1: dict(steps=6000, lr=3e-3, train_fraction=0.4, probe_per_domain=64),
    4: dict(steps=5000, lr=3e-3, train_fraction=0.5, probe_per_domain=256, tag="f50"),
}
#: how many of a rung's cells ran with its first recipe before the retune: the first N in
#: :func:`ladder_cells` order (rung 1: div seeds 0 and 1 of both families; rung 4: div seed 0)
FIRST_RECIPE_RAN: dict[int, int] = {1: 4, 4: 2}
RECIPE_NOTES = {
    0: "the matrix recipe (div grokked at 0.24 M in 3000 steps with seed 0 on Mixtral, Qwen3-MoE and "
       "DeepSeek-V3); 4000 steps so that a unit memorizing late still has >= 1000 steps after memorization",
    1: "first recipe (train fraction 0.4, 6000 steps): of 4 div cells only DeepSeek-V3 seed 0 grokked (0.87 at "
       "3000); Mixtral seed 0 reached 0.28 at 6000, seed 1 0.05, DeepSeek-V3 seed 1 0.03 at 3000. Retuned: train "
       "fraction 0.5 (a larger train fraction is the knob that shortens the time to grok most in modular "
       "arithmetic), same steps",
    2: "fixed before any rung-2 cell ran: the pilot at 3.4 M (Mixtral 4/128/16, train fraction 0.4, 3 % "
       "canaries) reached div 0.32 at 6000 and 1.00 at 8000 steps; with rung 1's retune (train fraction 0.5) "
       "8000 steps",
    3: "set from held-out accuracy only (never the pathway metrics) before any rung-3 cell ran: with train "
       "fraction 0.5, div reached held-out 0.5 at about 2500-3500 steps at rung 1 (Mixtral seeds 0 and 1, "
       "DeepSeek-V3 seed 0 earlier) and by 2000 at rung 2 (both families, seed 0): larger models grokked "
       "sooner, so 5000 steps leave >= 2000 after a late generalization and keep a cell under 3 hours",
    4: "first recipe as rung 3 (5000 steps, train fraction 0.5; ~0.55 s a step with two cells on the 2 cores, "
       "about 50 min a cell): neither div seed-0 cell generalized (held-out 0.14 Mixtral, 0.05 DeepSeek-V3 at step "
       "4500), and at rung 3 the same recipe grokked 1 of 4. Retuned from held-out accuracy only, before any "
       "other rung-4 cell ran: train fraction 0.6 (the knob that made rung 1 grok, 0.4 -> 0.5) and 10000 steps "
       "(about 90 min a cell, under the 3-hour cap); the first recipe's 2 cells stay in the matrix as units",
}
FAMILIES = ("mixtral", "deepseek_v3")
LOWER = (0, 1)
TOP = (2, 3, 4)
CANARY = 0.03
#: the decision rules fixed on the lower rungs (``python -m examples.validation preregister`` on the summary
#: of every cell with canaries then finished), committed before any judged-rung cell ran; judged by
#: :func:`examples.validation.preregister.judge` on rungs 2-4 only. ``None`` for a metric: its grokked
#: units did not fall more than its negative units on the lower rungs, so it has no rule.
#: the commit that holds PREREGISTERED_LADDER as first written (docs/validation.md "Pre-registration")
PREREGISTERED_COMMIT = "adec741"
PREREGISTERED_LADDER: dict[str, Any] | None = {
    "written": "2026-12-05 10:16 UTC",
    "rungs": [
        2,
        3,
        4
    ],
    "span": 1000,
    "fitted_on": [
        "deepseek_v3-div-L4-s0-c",
        "deepseek_v3-div-R0-s0",
        "deepseek_v3-div-R0-s1",
        "deepseek_v3-div-R1-s0",
        "deepseek_v3-div-R1-s0-f50",
        "deepseek_v3-div-R1-s1",
        "deepseek_v3-div-R1-s1-f50",
        "deepseek_v3-rand-L4-s0-c",
        "deepseek_v3-rand-R0-s0",
        "deepseek_v3-rand-R1-s0-f50",
        "mixtral-div-R0-s0",
        "mixtral-div-R0-s1",
        "mixtral-div-R1-s0",
        "mixtral-div-R1-s0-f50",
        "mixtral-div-R1-s1",
        "mixtral-div-R1-s1-f50",
        "mixtral-rand-R0-s0",
        "mixtral-rand-R1-s0-f50",
        "olmoe-mix-L2-s1-c",
        "qwen3_moe-div-L4-s0-c",
        "qwen3_moe-mix-L2-s1-c",
        "qwen3_moe-rand-L4-s0-c"
    ],
    "definitions": {
        "memorized": 0.95,
        "delayed": 0.5,
        "after": 1000
    },
    "rules": {
        "distance": -0.0081,
        "distance_token": -0.0258,
        "distance|canary": None,
        "distance_token|canary": None,
        "distance|cross": 0.0027,
        "distance_token|cross": -0.0045
    },
    "ship": {
        "auc_margin": 0.1,
        "min_units": 2
    }
}


def ladder_cells(rungs: tuple[int, ...] = LOWER, recipes: dict[int, dict[str, Any]] = RECIPES) -> list[Cell]:
    """The ladder's cells for ``rungs``, rung by rung: div seed 0 and 1 per family, then rand seed 0
    (``recipes``: :data:`FIRST_RECIPES` for the cells a rung ran before it was retuned)."""
    cells = []
    for r in rungs:
        shape, recipe = RUNGS[r], recipes[r]
        kw = dict(**shape, **recipe, canary=CANARY, rung=r)
        cells += [Cell(f, "div", seed=s, **kw) for s in (0, 1) for f in FAMILIES]
        cells += [Cell(f, "rand", seed=0, **kw) for f in FAMILIES]
    return cells


def first_recipe_cells(rungs: tuple[int, ...] = tuple(FIRST_RECIPE_RAN)) -> list[Cell]:
    """The cells ``rungs`` ran with their first recipe, before each was retuned."""
    return [c for r in rungs if r in FIRST_RECIPE_RAN for c in ladder_cells((r,), FIRST_RECIPES)[:FIRST_RECIPE_RAN[r]]]


def top_cells() -> list[Cell]:
    """The judged rungs, rung by rung, each in the order that can be judged soonest: div seed 0, the
    random-label runs, then div seed 1 (a verdict needs 2 grokked and 2 negative units). Refuses
    until the lower rungs' decision rule is pre-registered."""
    if PREREGISTERED_LADDER is None:
        raise SystemExit("the top rungs run only after a decision rule fixed on the lower rungs is committed: "
                         "set PREREGISTERED_LADDER in examples/validation/ladder.py (with its commit hash in "
                         "docs/validation.md) first")
    cells = []
    for rung in TOP:
        at = ladder_cells((rung,))
        cells += sorted(at, key=lambda c: (c.task == "div" and c.seed == 1, c.task == "rand"))
    return cells
