"""Real torch.distributed processes (gloo, CPU): sharded probing gives the 1-process values exactly.

The test runs this file as WORLD_SIZE rank processes (``python tests/test_distributed.py OUT``);
each wraps the same seeded tiny MoE in DDP, runs several monitors and writes what it saw to
``OUT.<rank>``. The 1-process run of the same script is the reference.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from child_env import exit_rank_process
from launch import assert_same_values, rank_results, run_ranks

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

N = 7  # odd: shards need padding, and ranks hold different numbers of real samples


# ---------------------------------------------------------------------------------------- one rank
def _probe(n: int):
    from grokmon import ProbeSet

    ids = torch.randint(2, 128, (n, 12), generator=torch.Generator().manual_seed(0))
    return ProbeSet.from_token_ids(ids, groups=["a" if i % 3 else "b" for i in range(n)] if n > 3 else None)


def _values(monitor) -> dict[str, float]:
    return {k: v for k, v in monitor.history[-1][1].items() if not k.endswith("_seconds")}


def _rank_main(out_path: str) -> None:
    import torch.distributed as dist
    from moe_models import build_monitor, tiny_model

    import grokmon.routing
    from grokmon import GrokkingMonitor, MonitorConfig, MetricConfig, ThresholdRule

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    out_dir = os.path.join(os.path.dirname(out_path), f"rank{rank}")
    model = tiny_model("olmoe")
    if dist.is_initialized():
        model = torch.nn.parallel.DistributedDataParallel(model)
    result: dict = {}

    def run(name: str, n: int, **kwargs) -> None:
        monitor = build_monitor(_probe(n), every=1, output_dir=os.path.join(out_dir, name), async_metrics=False,
                                on_error="raise", batch_size=2, **kwargs)
        monitor.step(model, 1)
        monitor.close()
        result[name] = _values(monitor)
        result.setdefault("sinks", len(monitor.sinks))

    # per-expert load comes from summed expert counts: a padding duplicate counted twice shows here
    run("full", N, metrics=MetricConfig(per_group=True, per_layer=True, per_expert=True))
    run("token", N, metrics=MetricConfig(form="token"), keep_token_ids=True)
    run("tiny", 2)  # with 3 ranks, rank 2's shard holds no real sample

    # a stop asked for by background metrics must take effect at the same step on every rank
    rule = ThresholdRule("probe_loss", above=0.0, stop_training=True)
    monitor = GrokkingMonitor(_probe(N),
                              MonitorConfig(every=1, output_dir=os.path.join(out_dir, "stop"), batch_size=2),
                              alerts=[rule])
    result["stop"] = None
    for step in range(1, 6):
        monitor.step(model, step)
        if monitor.should_stop:
            result["stop"] = step
            break
    monitor.close()

    # a stop asked for by rank 1's rules alone (rank-local values, e.g. probe_seconds, can differ):
    # every rank stops at the same step, at once without background metrics, at the next probe with them
    import grokmon.results  # the metric job (compute_metrics) lives on the result path

    real_compute = grokmon.results.compute_metrics

    def rank_local(*args, **kwargs):
        return {**real_compute(*args, **kwargs), "rank_flag": float(rank == 1)}

    grokmon.results.compute_metrics = rank_local
    for mode in ("sync", "async"):
        monitor = GrokkingMonitor(_probe(N),
                                  MonitorConfig(every=1, output_dir=os.path.join(out_dir, f"local_stop_{mode}"), batch_size=2, async_metrics=mode == "async", stages=False),
                                  alerts=[ThresholdRule("rank_flag", above=0.5, stop_training=True)])
        result[f"local_stop_{mode}"] = None
        for step in range(1, 6):
            monitor.step(model, step)
            if monitor.should_stop:
                result[f"local_stop_{mode}"] = step
                break
        monitor.close()
    grokmon.results.compute_metrics = real_compute

    # a capture failing on rank 1 only: every rank skips that probe, nobody hangs, the next one works
    real_capture = grokmon.routing.capture_pathways
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if rank == 1 and len(calls) == 1:
            raise RuntimeError("rank 1 ran out of memory")
        return real_capture(*args, **kwargs)

    grokmon.routing.capture_pathways = flaky
    monitor = GrokkingMonitor(_probe(N),
                              MonitorConfig(every=1, output_dir=os.path.join(out_dir, "fail"), async_metrics=False, batch_size=2))
    import warnings

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        monitor.step(model, 1)
        monitor.step(model, 2)
    monitor.close()
    grokmon.routing.capture_pathways = real_capture
    result["fail"] = {"errors": monitor.errors, "steps": [s for s, _ in monitor.history],
                      "valid": [math.isfinite(m["grokmon/pathway_distance"]) for _, m in monitor.history]}

    with open(f"{out_path}.{rank}", "w") as handle:
        json.dump(result, handle)
    del model, monitor


# ---------------------------------------------------------------------------------------- the test
def _run_ranks(world: int, out: Path) -> list[dict]:
    run_ranks([__file__, out], world, timeout=240)
    return rank_results(out, world)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    return _run_ranks(1, tmp_path_factory.mktemp("single") / "out")[0]


# world 2 by default; 3 (a rank with no real sample) and 4 are slow (about 40 s each on 2 cores): CI runs them
@pytest.mark.parametrize("world", [2, pytest.param(3, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)])
def test_sharded_probe_equals_single_process(tmp_path, single: dict, world: int) -> None:
    ranks = _run_ranks(world, tmp_path / "multi")
    for name in ("full", "token", "tiny"):
        expected = single[name]
        assert any(k.startswith("grokmon/layer/") and k.endswith("/load") for k in expected) or name != "full"
        for rank, result in enumerate(ranks):
            assert_same_values(result[name], expected, tol=1e-6, where=(name, rank))
    # background stop: requested by probe 1 on every rank, applied at probe 2 on every rank
    assert single["stop"] is not None  # one process acts as soon as it has the result
    assert [r["stop"] for r in ranks] == [2] * world
    # a stop only rank 1's rules asked for: agreed, so no rank trains on while another has stopped
    assert single["local_stop_sync"] is None and single["local_stop_async"] is None
    assert [r["local_stop_sync"] for r in ranks] == [1] * world
    assert [r["local_stop_async"] for r in ranks] == [2] * world
    # a failure on one rank is agreed on: all skip probe 1 (one error each; its step logged with NaN
    # metrics) and all log probe 2
    assert [r["fail"] for r in ranks] == [{"errors": 1, "steps": [1, 2], "valid": [False, True]}] * world
    # only world rank 0 writes: it alone holds the JSONL sink
    assert [r["sinks"] for r in ranks] == [1] + [0] * (world - 1)


def test_helpers_without_a_process_group() -> None:
    from grokmon.distributed import all_agree, collective_device, is_main_process, rank_and_world, unwrap_for_probe

    inner = torch.nn.Linear(2, 2)
    assert rank_and_world() == (0, 1) and is_main_process()
    assert all_agree(True) and not all_agree(False)
    assert collective_device() == torch.device("cpu")
    assert unwrap_for_probe(inner) is inner
    assert unwrap_for_probe(torch.compile(inner)) is inner


if __name__ == "__main__":
    _rank_main(sys.argv[1])
    exit_rank_process()
