"""Command line of the validation matrix.

    python -m examples.validation run --jobs 2 --out validation_runs      # the whole matrix, resumable
    python -m examples.validation run --plan ladder --jobs 1              # the scale ladder's lower rungs
    python -m examples.validation run --quick --out /tmp/quick            # one tiny cell, about a minute
    python -m examples.validation summary --out validation_runs           # tables from the cached runs
    python -m examples.validation preregister                             # the ladder's rules, to commit
    python -m examples.validation docs                                    # README/docs claims from the summary

``run`` skips finished cells (``result.json`` in ``--out``, or the cell's record committed under
``docs/validation/cells/``) and resumes a cut one from its checkpoint; each cell uses one thread and prints one line per
probe (step, held-out accuracy per domain, the live distance and stage, seconds so far). ``summary`` computes
every metric variant from each run's raw pathways, writes ``series/<cell>.json`` (small, committed
under ``docs/validation/``) and ``summary.json``, and prints the tables of docs/validation.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .families import FAMILIES
from .ladder import CANARY, LOWER, TOP, first_recipe_cells, ladder_cells, top_cells
from .run import Cell, run_cell

#: where each finished cell's record (what ``summary`` needs besides its series) is committed
COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "validation" / "cells"


def full_plan() -> list[Cell]:
    """The matrix, most informative cells first (a partial run still covers every family, task,
    depth and a second seed): 30 two-layer cells, 6 four-layer cells, 4 second-seed cells. The 34
    that ran first had no canaries; the 6 that ran later (4-layer DeepSeek-V3 and Qwen3-MoE, the
    second seed of the mixture) have 3 % canaries (named ``...-c``)."""
    two_layer = [Cell(f, t) for t in ("add", "div", "rand", "mix") for f in FAMILIES]
    deep = [Cell(f, t, layers=4) for f in ("olmoe",) for t in ("div", "rand")]
    seed1 = [Cell(f, "div", seed=1) for f in ("olmoe", "qwen3_moe")]
    late = [Cell(f, t) for f in FAMILIES for t in ("sub", "quad")]
    return two_layer + deep + seed1 + late + missing_cells()


def missing_cells() -> list[Cell]:
    """The 6 cells the first matrix lacked, with canaries."""
    deep = [Cell(f, t, layers=4, canary=CANARY) for f in ("deepseek_v3", "qwen3_moe") for t in ("div", "rand")]
    return deep + [Cell(f, "mix", seed=1, canary=CANARY) for f in ("olmoe", "qwen3_moe")]


def quick_plan() -> list[Cell]:
    return [Cell("olmoe", "mix", steps=200, every=50, probe_per_domain=16, canary=CANARY)]


def plan(name: str) -> list[Cell]:
    """``matrix``, ``ladder`` (rung 0, the matrix's missing cells, rung 1, then the div cells rung 1 ran
    with its first recipe), ``top`` (pre-registered rule required; the judged rungs, then the cells
    rung 4 ran with its first recipe) or ``quick``."""
    if name == "quick":
        return quick_plan()
    if name == "matrix":
        return full_plan()
    if name == "ladder":
        return (ladder_cells(rungs=(0,)) + missing_cells() + ladder_cells(rungs=tuple(r for r in LOWER if r))
                + first_recipe_cells(LOWER))
    if name == "top":
        return top_cells() + first_recipe_cells(TOP)
    raise SystemExit(f"unknown plan {name!r}: use matrix, ladder, top or quick")


def recipe_drift(cell: Cell, out: Path, committed: Path = COMMITTED) -> dict[str, tuple[Any, Any]]:
    """``{field: (recorded, planned)}`` where a finished cell ran with another recipe than the plan's
    (a cell's name does not hold its recipe, so ``run`` would take it as done)."""
    recorded = None
    if (out / cell.name / "result.json").exists():
        recorded = json.loads((out / cell.name / "result.json").read_text())["cell"]
    elif (committed / f"{cell.name}.json.gz").exists():
        with gzip.open(committed / f"{cell.name}.json.gz", "rt") as fh:
            recorded = json.load(fh)["result"]["cell"]
    elif (committed / f"{cell.name}.json").exists():
        recorded = json.loads((committed / f"{cell.name}.json").read_text())["result"]["cell"]
    if recorded is None:
        return {}
    planned = asdict(cell)
    return {k: (recorded.get(k), v) for k, v in planned.items()
            if k not in ("checkpoint_s",) and recorded.get(k, v) != v}


def finished(cell: Cell, out: Path, committed: Path = COMMITTED) -> bool:
    """A cell is done if its run folder has ``result.json`` or its record is committed."""
    return (out / cell.name / "result.json").exists() or any(
        (committed / f"{cell.name}{ext}").exists() for ext in (".json", ".json.gz"))


def preregistration(summary: dict[str, Any]) -> str:
    """``PREREGISTERED_LADDER`` as Python source: the rules fitted on every unit of the summary's runs
    with canaries (the lower rungs and the matrix's late cells), judged later on the top rungs only."""
    from . import analyze, preregister
    canary_runs = {r["name"] for r in summary["runs"] if r["cell"].get("canary")}
    top = {r["cell"].get("rung") for r in summary["runs"]} & set(TOP)
    if top:
        raise SystemExit(f"the summary already holds top-rung cells (rungs {sorted(top)}): rules fixed now would "
                         "have seen what they are judged on")
    units = [u for u in summary["units"] if u["run"] in canary_runs]
    rules = preregister.fit_rules(units)
    prereg = {"written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rungs": list(TOP),
              "span": preregister.SPAN, "fitted_on": sorted(canary_runs),
              "definitions": {"memorized": analyze.MEMORIZED, "delayed": analyze.DELAYED, "after": analyze.AFTER},
              "rules": rules, "ship": {"auc_margin": preregister.SHIP_MARGIN, "min_units": preregister.MIN_UNITS}}
    return "PREREGISTERED_LADDER: dict[str, Any] | None = " + json.dumps(prereg, indent=4).replace("null", "None")


def _work(cell: Cell, out: str) -> tuple[str, float]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    log = Path(out) / f"{cell.name}.log"
    def both(line: str) -> None:  # one line per probe, to the cell's log and to the console
        print(line, file=fh, flush=True)
        print(line, flush=True)

    with open(log, "a") as fh:
        result = run_cell(cell, Path(out), log=both)
    return cell.name, result["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.validation", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the matrix's cells (cached: finished cells are skipped)")
    run.add_argument("--out", default="validation_runs", help="folder of the cached runs")
    run.add_argument("--jobs", type=int, default=2, help="cells at once, one thread each")
    run.add_argument("--quick", action="store_true", help="one tiny cell (CI's end-to-end check)")
    run.add_argument("--plan", default="matrix", help="matrix (default), ladder (lower rungs + missing cells), top")
    run.add_argument("--only", nargs="*", default=None, help="run only cells whose name contains one of these")
    summ = sub.add_parser("summary", help="compute every metric variant and print the tables")
    summ.add_argument("--out", default="validation_runs", help="folder of the cached runs")
    summ.add_argument("--series", default="docs/validation/series", help="where the per-run series JSON go")
    summ.add_argument("--summary", default="docs/validation/summary.json", help="the summary file")
    pre = sub.add_parser("preregister", help="fix the ladder's rules on the finished cells with canaries "
                         "(prints PREREGISTERED_LADDER for examples/validation/ladder.py)")
    pre.add_argument("--summary", default="docs/validation/summary.json", help="the summary file")
    gen = sub.add_parser("docs", help="rewrite the generated blocks of README.md and docs/validation.md "
                         "(<!-- gen:NAME -->) from the summary")
    gen.add_argument("--summary", default="docs/validation/summary.json", help="the summary file")
    gen.add_argument("--check", action="store_true", help="only list the stale blocks (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.command == "docs":
        from . import docs
        generated = docs.blocks(json.loads(Path(args.summary).read_text()))
        if args.check:
            old = docs.stale(generated)
            print("\n".join(old) or "every generated block is current")
            return 1 if old else 0
        changed = docs.write(generated)
        print("rewrote " + ", ".join(str(p.relative_to(docs.ROOT)) for p in changed) if changed else "nothing to rewrite")
        return 0
    if args.command == "preregister":
        print(preregistration(json.loads(Path(args.summary).read_text())))
        return 0
    if args.command == "summary":
        from .analyze import summarize
        summarize(Path(args.out), Path(args.series), Path(args.summary))
        return 0
    cells = plan("quick" if args.quick else args.plan)
    if args.only:
        cells = [c for c in cells if any(s in c.name for s in args.only)]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    committed = COMMITTED if not args.quick else Path(args.out)
    todo = [c for c in cells if not finished(c, Path(args.out), committed)]
    for c in cells:
        drift = recipe_drift(c, Path(args.out), committed) if c not in todo else {}
        if drift:
            print(f"warning: {c.name} finished with another recipe than the plan's "
                  f"({', '.join(f'{k} {a} vs {b}' for k, (a, b) in drift.items())}): it is not run again; "
                  "rename the plan's cells or remove the old record to rerun it", flush=True)
    print(f"{len(cells)} cells, {len(cells) - len(todo)} cached, {len(todo)} to run with {args.jobs} jobs; "
          f"a line per probe here and in {args.out}/<cell>.log", flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(_work, c, args.out): c for c in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            name, seconds = fut.result()
            print(f"[{i}/{len(todo)}] {name} done in {seconds:.0f} s ({time.perf_counter() - started:.0f} s so far)",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
