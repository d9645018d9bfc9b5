"""The one launcher of the multi-process tests: ``world`` rank processes on this host (gloo, CPU).

A test runs a script (often its own file, whose ``__main__`` block is one rank) as ``world``
processes with the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` on a free port); each rank writes its results
to ``OUT.<rank>`` as JSON, read back with ``rank_results``::

    ranks, single = run_ranks([__file__, str(out)], 2, meanwhile=reference)
    results = rank_results(out, 2)
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from child_env import child_env


def free_port() -> int:
    """A TCP port nobody listens on now (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(argv: Sequence[str], world: int, *, meanwhile: Callable[[], Any] = lambda: None,
              timeout: float = 300, **env: str) -> Any:
    """Run ``python *argv`` as ``world`` rank processes and wait for all of them.

    ``meanwhile()`` runs here while the ranks work (a one-process reference); its result is
    returned. ``env`` adds variables to every rank's environment. A rank that fails (or runs past
    ``timeout`` seconds) fails the test with the end of its output; the others are killed.
    """
    port = str(free_port())
    procs = []
    for rank in range(world):
        rank_env = child_env(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                             LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                             OMP_NUM_THREADS="1", **env)
        procs.append(subprocess.Popen([sys.executable, *map(str, argv)], env=rank_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        also = meanwhile()
        for p in procs:
            outputs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, output) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} exited with {p.returncode}:\n{output[-6000:]}"
    return also


def rank_results(out: Path | str, world: int) -> list[dict]:
    """The JSON each rank wrote to ``OUT.<rank>``, in rank order."""
    return [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(world)]


def assert_same_values(values: Mapping[str, float], expected: Mapping[str, float], *, tol: float,
                       where: Any = None) -> None:
    """A rank's ``values`` have exactly the keys of the one-process ``expected``, each within ``tol``
    (NaN equals NaN); ``where`` (rank, step, ...) goes into the failure message."""
    assert values.keys() == expected.keys(), where
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, abs=tol, nan_ok=True), (where, key)


class Ended(NamedTuple):
    """How a process that ``signal_when_ready`` signalled ended."""

    returncode: int
    seconds: float  # from the signal to its end
    stderr: str


def signal_when_ready(argv: Sequence[str], *, sig: int = signal.SIGTERM, ready: str = "probed", timeout: float = 60,
                      **env: str) -> Ended:
    """Run ``python *argv``, wait until it prints the line ``ready``, send it ``sig`` (SIGTERM unless
    told) and wait for it to end; returns its exit code, the seconds it took to end after the signal
    and its stderr. ``env`` adds variables to its environment."""
    # A runner started in the background (``cmd &`` without job control, nohup) hands its children
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the child would sleep
    # through the signal this test sends. Start it with SIGINT at its default, as in a terminal.
    proc = subprocess.Popen([sys.executable, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env(**env),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert line.strip() == ready, proc.stderr.read()
        start = time.perf_counter()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=timeout)
        return Ended(proc.returncode, time.perf_counter() - start, stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
