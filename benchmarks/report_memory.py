"""Time and peak memory of ``grokmon report`` on a large record (200 MB by default).

Writes a synthetic grokmon JSONL of a long run with 403 keys a probe (4 MoE layers x 64 experts of
``layer/<i>/expert/<e>/load``, 8 groups x 16 per-group metrics, 19 scalars, a stage alert now and
then) until it reaches ``--mb`` megabytes, then runs ``python -m grokmon.cli report`` on it in a
child process and reports its wall time and peak resident memory (``ru_maxrss`` of the child).
``--code`` runs another checkout's grokmon (e.g. the code before the report streamed its input).

    python benchmarks/report_memory.py
    python benchmarks/report_memory.py --mb 50 --code /path/to/other/checkout
    python benchmarks/report_memory.py --pngs        # also a PNG per metric and the load heatmap
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_record(path: Path, megabytes: float) -> int:
    rng = random.Random(0)
    scalars = ["pathway_distance", "probe_loss", "routing_entropy", "pathway_cosine", "pathway_drift", "grad_norm",
               "errors", "sink_drops", "probe_seconds", "probe_tokens", "metric_seconds", "consistency",
               "pathway_distance/topk", "pathway_distance/token", "load_balance", "expert_overlap",
               "alert/distance_plateau", "mean_pathway_length", "active_experts"]
    per_group = ["pathway_distance", "probe_loss", "routing_entropy", "pathway_cosine", "stage", "consistency",
                 "pathway_distance/topk", "pathway_distance/token", "load_balance", "expert_overlap",
                 "mean_pathway_length", "active_experts", "memorized", "drift", "entropy_std", "loss_std"]
    probes = 0
    with open(path, "w") as f:
        while f.tell() < megabytes * 2**20:
            step = probes * 50
            m = {f"grokmon/{k}": rng.random() for k in scalars}
            m.update({f"grokmon/group/g{g}/{k}": rng.random() for g in range(8) for k in per_group})
            stage = float(min(2, step // 200_000))  # stages change rarely, as in a run
            m["grokmon/stage"] = stage
            m.update({f"grokmon/group/g{g}/stage": stage for g in range(8)})
            m.update({f"grokmon/layer/{layer}/expert/{e}/load": rng.random() / 64 for layer in range(4) for e in range(64)})
            f.write(json.dumps({"step": step, "time": 1.7e9 + step, "metrics": m}) + "\n")
            if probes % 500 == 0:
                f.write(json.dumps({"step": step, "time": 1.7e9, "alert": {"title": "plateau", "text": "flat",
                                                                          "level": "WARN", "kind": "plateau"}}) + "\n")
            probes += 1
    return probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=200.0)
    parser.add_argument("--code", default=str(ROOT), help="the checkout whose grokmon runs (default: this one)")
    parser.add_argument("--pngs", action="store_true", help="run `grokmon report --pngs`")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "grokmon.jsonl"
        probes = write_record(record, args.mb)
        size = record.stat().st_size / 2**20
        env = {**os.environ, "PYTHONPATH": args.code, "MPLBACKEND": "Agg"}
        start = time.perf_counter()
        command = [sys.executable, "-m", "grokmon.cli", "report", str(record), "--out", str(Path(tmp) / "r")]
        done = subprocess.run(command + (["--pngs"] if args.pngs else []),
                              env=env, capture_output=True, text=True, cwd=tmp)  # not this checkout's grokmon
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        print(f"record: {size:.0f} MB, {probes} probes x 403 keys; grokmon from {args.code}")
        print(f"grokmon report{' --pngs' if args.pngs else ''}: exit {done.returncode}, {seconds:.1f} s, peak RSS {peak:.0f} MB")
        if done.returncode:
            print(done.stderr[-2000:])


if __name__ == "__main__":
    main()
