"""Reproduce docs/validation.md: the grokking demo over several seeds and task variants, one table.

    python examples/validate.py --seeds 0 1 2 --ops add mul --jobs 2 --out validation_runs

Each run is ``examples/grokking_demo.py --seed S --op OP`` in its own folder; the table gives, per
run, the memorization and grokking steps and the Spearman correlation with held-out accuracy (from
memorization on) of the main grokmon metrics and of the training loss, then the mean over runs.
Runs already finished (``summary.json`` present) are not run again.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ["pathway_distance", "pathway_distance/token", "pathway_cosine", "routing_entropy", "pathway_drift",
           "probe_loss", "train_loss"]


def run_one(out: Path, seed: int, op: str, extra: list[str]) -> dict:
    folder = out / f"{op}-seed{seed}"
    summary = folder / "summary.json"
    if not summary.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "stdout.txt", "w") as log:
            subprocess.run([sys.executable, str(HERE / "grokking_demo.py"), "--seed", str(seed), "--op", op,
                            "--threads", "1", "--out", str(folder), *extra], stdout=log, stderr=subprocess.STDOUT,
                           check=True)
    return json.loads(summary.read_text())


def fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.2f}"


def table(results: list[tuple[str, int, dict]]) -> str:
    head = "| task | seed | memorized | grokked | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (4 + len(COLUMNS))]
    sums: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for op, seed, s in results:
        rho = s["spearman_after_memorization"]
        cells = []
        for c in COLUMNS:
            value = rho.get(c)
            if isinstance(value, (int, float)) and not math.isnan(value):
                sums[c].append(value)
            cells.append(fmt(value))
        lines.append(f"| {op} | {seed} | {s['memorized_step']} | {s['grokked_step']} | " + " | ".join(cells) + " |")
    means = [fmt(sum(v) / len(v)) if v else "n/a" for v in sums.values()]
    lines.append("| **mean** | | | | " + " | ".join(means) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ops", nargs="+", default=["add", "mul"])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each uses one thread)")
    parser.add_argument("--out", default="validation_runs")
    args, extra = parser.parse_known_args()  # anything else goes to grokking_demo.py, e.g. --max-steps 4000
    out = Path(args.out)
    plan = [(op, seed) for op in args.ops for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        summaries = list(pool.map(lambda job: run_one(out, job[1], job[0], extra), plan))
    print("Spearman correlation with held-out accuracy, from memorization on (negative: falls as the model "
          "generalizes)\n")
    print(table([(op, seed, s) for (op, seed), s in zip(plan, summaries)]))


if __name__ == "__main__":
    main()
