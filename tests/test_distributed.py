"""Real torch.distributed processes (gloo, CPU): sharded probing gives the 1-process values exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("distributed_probe_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(world: int, out: Path, n: int) -> list[dict]:
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), str(n)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        output, _ = p.communicate(timeout=240)
        assert p.returncode == 0, output
    return [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(world)]


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_probe_equals_single_process(tmp_path, world: int) -> None:
    n = 7  # odd: shards need padding, and ranks run different numbers of real samples
    single = run_ranks(1, tmp_path / "single", n)[0]["values"]
    ranks = run_ranks(world, tmp_path / "multi", n)
    for rank, result in enumerate(ranks):
        values = result["values"]
        assert values.keys() == single.keys()
        for key, expected in single.items():
            assert values[key] == pytest.approx(expected, abs=1e-6), (rank, key)
    # a stop asked for by background metrics takes effect at the same step on every rank
    stops = {r["stop"] for r in ranks}
    assert len(stops) == 1 and stops.pop() == 2  # fired at probe 1, applied at probe 2
    # only world rank 0 writes: it alone holds the JSONL sink
    assert [r["sinks"] for r in ranks] == [1] + [0] * (world - 1)
