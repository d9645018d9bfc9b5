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
import socket
import subprocess
import sys
from pathlib import Path

from child_env import child_env, exit_rank_process
from typing import Any, Callable

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
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(world: int, out: Path, meanwhile: Callable[[], Any] = lambda: None) -> tuple[list[dict], Any]:
    """Run ``world`` rank processes of this file; ``meanwhile()`` runs here while they work."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = child_env(**{"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"})
        procs.append(subprocess.Popen([sys.executable, __file__, str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        also = meanwhile()
        for p in procs:
            outputs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output
    return [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(world)], also


@pytest.mark.skipif(_fully_shard() is None, reason="torch.distributed.fsdp.fully_shard is not available")
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_fsdp2_probe_equals_single_process(tmp_path) -> None:
    def reference() -> dict:
        with torch.random.fork_rng():  # tiny_model seeds the global generator
            return _rank_main(str(tmp_path / "single"), distributed=False)

    ranks, single = _run_ranks(2, tmp_path / "fsdp", meanwhile=reference)
    expected = single["values"]
    assert not single["sharded"]
    assert any("consistency" in k for k in expected), sorted(expected)  # the metric that read DTensors
    for rank, result in enumerate(ranks):
        assert result["sharded"], rank
        values = result["values"]
        assert values.keys() == expected.keys(), rank
        for key, value in expected.items():
            assert values[key] == pytest.approx(value, abs=1e-5, nan_ok=True), (rank, key)


if __name__ == "__main__":
    _rank_main(sys.argv[1], distributed=True)
    exit_rank_process()
