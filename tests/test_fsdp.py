"""FSDP2 (``fully_shard``, gloo, CPU): a sharded model's probe gives the 1-process values.

The test runs this file as 2 rank processes (``python tests/test_fsdp.py OUT``); each shards the
same seeded tiny OLMoE with ``fully_shard`` (every decoder layer, then the root), runs one probe
with the default metrics (pathway consistency included, which reads the router weight rows) and
writes its metrics to ``OUT.<rank>``. The reference is the same function run in the test process,
without a process group and without FSDP.
"""

from __future__ import annotations

import json
import os
import sys

from child_env import exit_rank_process
from launch import assert_same_values, rank_results, run_ranks

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

N = 7  # odd: the 2 shards are padded and hold different numbers of real samples


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        try:
            from torch.distributed._composable.fsdp import fully_shard
        except ImportError:
            return None
    return fully_shard


# ---------------------------------------------------------------------------------------- one rank
def _rank_main(out_path: str, distributed: bool) -> dict:
    import torch.distributed as dist
    from moe_models import tiny_model

    from grokmon import GrokkingMonitor, MonitorConfig, ProbeSet

    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    model = tiny_model("olmoe")
    sharded = False
    if distributed:
        fully_shard = _fully_shard()
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        # the router weights really are sharded DTensors outside the forward
        sharded = type(model.model.layers[0].mlp.gate.weight).__name__ == "DTensor"
    ids = torch.randint(2, 128, (N, 12), generator=torch.Generator().manual_seed(0))
    probe = ProbeSet.from_token_ids(ids, groups=["a" if i % 3 else "b" for i in range(N)])
    monitor = GrokkingMonitor(probe,
                              MonitorConfig(every=1, output_dir=f"{out_path}_rank{rank}", async_metrics=False, on_error="raise", batch_size=2))
    monitor.step(model, 1)
    monitor.close()
    values = {k: v for k, v in monitor.history[-1][1].items() if not k.endswith("_seconds")}
    result = {"values": values, "sharded": sharded}
    with open(f"{out_path}.{rank}", "w") as handle:
        json.dump(result, handle)
    return result  # the model goes with this frame; exit_rank_process then destroys the group


# ---------------------------------------------------------------------------------------- the test
@pytest.mark.skipif(_fully_shard() is None, reason="torch.distributed.fsdp.fully_shard is not available")
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_fsdp2_probe_equals_single_process(tmp_path) -> None:
    def reference() -> dict:
        with torch.random.fork_rng():  # tiny_model seeds the global generator
            return _rank_main(str(tmp_path / "single"), distributed=False)

    single = run_ranks([__file__, tmp_path / "fsdp"], 2, meanwhile=reference, timeout=240)
    ranks = rank_results(tmp_path / "fsdp", 2)
    expected = single["values"]
    assert not single["sharded"]
    assert any("consistency" in k for k in expected), sorted(expected)  # the metric that read DTensors
    for rank, result in enumerate(ranks):
        assert result["sharded"], rank
        assert_same_values(result["values"], expected, tol=1e-5, where=rank)


if __name__ == "__main__":
    _rank_main(sys.argv[1], distributed=True)
    exit_rank_process()
