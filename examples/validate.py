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
sys.path.insert(0, str(HERE))
from grokking_demo import analyze_run  # noqa: E402

COLUMNS = ["pathway_distance", "pathway_distance/token", "pathway_cosine", "routing_entropy", "pathway_drift",
           "probe_loss", "train_loss"]
TABLES = {
    "spearman_window": "Spearman correlation with held-out accuracy in the grokking window (from memorization to "
                       "held-out accuracy 0.99)",
    "spearman_after_memorization": "Spearman correlation with held-out accuracy, every probe from memorization on "
                                   "(the window plus the plateau after it)",
    "partial_spearman_given_train_loss": "Partial Spearman correlation with held-out accuracy given the training "
                                         "loss, every probe from memorization on (what a metric adds to the loss)",
}


def run_one(out: Path, seed: int, op: str, extra: list[str]) -> dict:
    folder = out / f"{op}-seed{seed}"
    if not (folder / "summary.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "stdout.txt", "w") as log:
            subprocess.run([sys.executable, str(HERE / "grokking_demo.py"), "--seed", str(seed), "--op", op,
                            "--threads", "1", "--out", str(folder), *extra], stdout=log, stderr=subprocess.STDOUT,
                           check=True)
    return analyze_run(folder)  # recomputed from the run's files, so every table uses the same code


def fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.2f}"


def table(results: list[tuple[str, int, dict]], key: str) -> str:
    lines = ["| task | seed | memorized | held-out 0.9 | window | " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * (5 + len(COLUMNS))]
    sums: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for op, seed, s in results:
        cells = []
        for c in COLUMNS:
            value = s[key].get(c)
            if isinstance(value, (int, float)) and not math.isnan(value):
                sums[c].append(value)
            cells.append(fmt(value))
        window = "-".join(map(str, s["window"])) if s["window"] else "n/a"
        lines.append(f"| {op} | {seed} | {s['memorized_step']} | {s['grokked_step']} | {window} | "
                     + " | ".join(cells) + " |")
    means = [fmt(sum(v) / len(v)) if v else "n/a" for v in sums.values()]
    lines.append("| **mean** | | | | | " + " | ".join(means) + " |")
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
    results = [(op, seed, s) for (op, seed), s in zip(plan, summaries)]
    for key, title in TABLES.items():
        print(f"{title} (negative: falls as the model generalizes)\n")
        print(table(results, key) + "\n")


if __name__ == "__main__":
    main()
