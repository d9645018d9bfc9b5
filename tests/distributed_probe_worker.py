"""One rank of the distributed probe test: DDP-wrapped tiny MoE, one monitor probe, metrics to JSON.

Run by tests/test_distributed.py as WORLD_SIZE processes (gloo, CPU).
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
from moe_models import tiny_model  # noqa: E402

from grokmon import GrokkingMonitor, ProbeSet, ThresholdRule  # noqa: E402


def stop_step(model, probe: ProbeSet, out_dir: str) -> int | None:
    """First step at which an async monitor's stop request is visible on this rank."""
    rule = ThresholdRule("probe_loss", above=0.0, stop_training=True)
    monitor = GrokkingMonitor(probe, every=1, output_dir=out_dir, alerts=[rule], batch_size=2)
    for step in range(1, 6):
        monitor.step(model, step)
        if monitor.should_stop:
            monitor.close()
            return step
    monitor.close()
    return None


def main(out_path: str, n: int) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    model = tiny_model("olmoe")
    if dist.is_initialized():
        model = torch.nn.parallel.DistributedDataParallel(model)
    ids = torch.randint(2, 128, (n, 12), generator=torch.Generator().manual_seed(0))
    groups = ["a" if i % 3 else "b" for i in range(n)]
    probe = ProbeSet.from_token_ids(ids, groups=groups)
    monitor = GrokkingMonitor(probe, every=1, output_dir=os.path.dirname(out_path), async_metrics=False,
                              on_error="raise", batch_size=2)
    monitor.step(model, 1)
    metrics = monitor.flush() or monitor.history
    values = {k: v for k, v in monitor.history[-1][1].items() if not k.endswith("_seconds")}
    rank = dist.get_rank() if dist.is_initialized() else 0
    stopped = stop_step(model, probe, os.path.join(os.path.dirname(out_path), f"stop{rank}"))
    with open(f"{out_path}.{rank}", "w") as handle:
        json.dump({"values": values, "sinks": len(monitor.sinks), "n": len(metrics), "stop": stopped}, handle)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
