"""Memory of a long run: what ``monitor.history`` and the sink queues hold after 10,000 probes.

Drives the monitor's result path (:class:`grokmon.results.ResultPath`, the code every probe result
goes through: rules, stages, every sink's queue and thread, ``history``) with 10,000 results of
``--keys`` metric keys each (403 by default: a run with per-group, per-layer and per-expert keys),
written to a real JSONL record (the loop lets the sinks catch up every 100 probes, as a run that
probes every few seconds does), and reports the process's resident memory growth and the bytes
Python allocated (tracemalloc) with the default ``history_limit`` and with history unbounded. The
probe forwards themselves are left out: their memory is in benchmarks/memory.py.

    python benchmarks/run_memory.py                      # 10,000 probes, 403 keys
    python benchmarks/run_memory.py --probes 2000 --keys 40
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grokmon.config import MonitorConfig
from grokmon.results import ResultPath
from grokmon.sinks import JsonlSink


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(probes: int, keys: int, history_limit: int) -> dict[str, float]:
    names = [f"group/g{i % 8}/layer/{i // 8}/expert/{i % 64}/load" for i in range(keys - 3)]
    names += ["pathway_distance", "probe_loss", "routing_entropy"]
    with tempfile.TemporaryDirectory() as tmp:
        gc.collect()
        before = rss_mb()
        tracemalloc.start()
        path = ResultPath(MonitorConfig(async_metrics=False, history_limit=history_limit),
                          sinks=[JsonlSink(Path(tmp) / "grokmon.jsonl")])
        start = time.perf_counter()
        for step in range(probes):
            path.submit(step, lambda s=step: {k: 0.001 * (s + i) for i, k in enumerate(names)})
            path.poll()
            if step % 100 == 99:  # a real run probes every few seconds, and its sinks keep up: so do they here
                path.delivery.flush(timeout=600)
        path.flush(timeout=600)
        seconds = time.perf_counter() - start
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        after = rss_mb()
        held = len(path.history)
        path.close(timeout=60)
        size = (Path(tmp) / "grokmon.jsonl").stat().st_size
    return {"history": held, "traced_mb": current / 2**20, "peak_mb": peak / 2**20, "rss_growth_mb": after - before,
            "seconds": seconds, "jsonl_mb": size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=403)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.probes} probes x {args.keys} keys")
    default = MonitorConfig().history_limit
    for label, limit in ((f"history_limit={default} (default)", default), ("unbounded", 10**9)):
        r = run(args.probes, args.keys, limit)
        print(f"{label:32s} history {r['history']:6d} results  Python heap {r['traced_mb']:7.1f} MB "
              f"(peak {r['peak_mb']:7.1f})  RSS +{r['rss_growth_mb']:7.1f} MB  {r['seconds']:6.1f} s  "
              f"JSONL {r['jsonl_mb']:.0f} MB")
    print(f"max RSS of the process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
