"""Command line of the validation matrix.

    python -m examples.validation run --jobs 2 --out validation_runs      # the whole matrix, resumable
    python -m examples.validation run --quick --out /tmp/quick            # one tiny cell, about a minute
    python -m examples.validation summary --out validation_runs           # tables from the cached runs

``run`` skips cells whose ``result.json`` exists; each cell uses one thread and prints one line per
probe (step, held-out accuracy per domain, the live distance and stage, seconds so far). ``summary`` computes
every metric variant from each run's raw pathways, writes ``series/<cell>.json`` (small, committed
under ``docs/validation/``) and ``summary.json``, and prints the tables of docs/validation.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from .families import FAMILIES
from .run import Cell, run_cell


def full_plan() -> list[Cell]:
    """The matrix, most informative cells first (a partial run still covers every family, task,
    depth and a second seed): 30 two-layer cells, 6 four-layer cells, 4 second-seed cells."""
    two_layer = [Cell(f, t) for t in ("add", "div", "rand", "mix") for f in FAMILIES]
    deep = [Cell(f, t, layers=4) for f in ("olmoe", "deepseek_v3", "qwen3_moe") for t in ("div", "rand")]
    seed1 = [Cell(f, t, seed=1) for t in ("div", "mix") for f in ("olmoe", "qwen3_moe")]
    late = [Cell(f, t) for f in FAMILIES for t in ("sub", "quad")]
    return two_layer + deep[:2] + seed1[:2] + late + deep[2:] + seed1[2:]


def quick_plan() -> list[Cell]:
    return [Cell("olmoe", "mix", steps=200, every=50, probe_per_domain=16)]


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
    run.add_argument("--only", nargs="*", default=None, help="run only cells whose name contains one of these")
    summ = sub.add_parser("summary", help="compute every metric variant and print the tables")
    summ.add_argument("--out", default="validation_runs", help="folder of the cached runs")
    summ.add_argument("--series", default="docs/validation/series", help="where the per-run series JSON go")
    summ.add_argument("--summary", default="docs/validation/summary.json", help="the summary file")
    args = parser.parse_args(argv)
    if args.command == "summary":
        from .analyze import summarize
        summarize(Path(args.out), Path(args.series), Path(args.summary))
        return 0
    plan = quick_plan() if args.quick else full_plan()
    if args.only:
        plan = [c for c in plan if any(s in c.name for s in args.only)]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    todo = [c for c in plan if not (Path(args.out) / c.name / "result.json").exists()]
    print(f"{len(plan)} cells, {len(plan) - len(todo)} cached, {len(todo)} to run with {args.jobs} jobs; "
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
