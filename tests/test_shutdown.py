"""One shutdown deadline (grokmon/shutdown.py, ResultPath.close): SIGTERM, Ctrl-C or close while
metric jobs are slow end the process within ``SHUTDOWN_TIMEOUT`` (10 s) for the jobs and sinks
together; the probes that finished are written, the ones still computing are counted and warned.

Issue 20 measured, before: a 20 s metric job and SIGTERM took 35 s to exit with 0 of 6 probes in the
JSONL; SIGINT 80 s, 2 of 6 (each result waited for in turn, then the worker joined for up to 30 s).
"""

from __future__ import annotations

import json
import signal
import textwrap
import time
import warnings
from pathlib import Path

import pytest
from launch import signal_when_ready

ROOT = Path(__file__).resolve().parents[1]

SLOW_JOB = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from moe_models import tiny_model
    import grokmon.results as results
    from grokmon import GrokkingMonitor, MonitorConfig, ProbeSet
    real, calls = results.compute_metrics, []
    def compute(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:          # the 4th probe's metrics take 20 s; the 5th and 6th wait behind it
            time.sleep(20)
        return real(*args, **kwargs)
    results.compute_metrics = compute
    ids = torch.randint(2, 128, (8, 12), generator=torch.Generator().manual_seed(0))
    monitor = GrokkingMonitor(ProbeSet.from_token_ids(ids), MonitorConfig(every=1, output_dir={out!r}))
    model = tiny_model("olmoe")
    for step in range(1, 7):
        monitor.step(model, step)
    while len(calls) < 4:
        time.sleep(0.01)
    print("probed", flush=True)
    time.sleep(120)                  # a long training step, preempted
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_slow_metric_job_under_a_signal_ends_within_the_deadline_and_writes_what_finished(tmp_path, sig) -> None:
    script = tmp_path / "job.py"
    script.write_text(SLOW_JOB.format(tests=str(ROOT / "tests"), out=str(tmp_path / "out")))
    returncode, elapsed, stderr = signal_when_ready([script], sig=sig, PYTHONPATH=str(ROOT))
    assert returncode == -sig, stderr
    assert elapsed < 12.0, f"the process took {elapsed:.1f} s to end after {sig.name}"
    record = [json.loads(x) for x in (tmp_path / "out" / "grokmon.jsonl").read_text().splitlines()]
    assert [r["step"] for r in record if "metrics" in r] == [1, 2, 3]
    assert "3 probe(s) were still computing their metrics when the monitor closed (steps [4, 5, 6]" in stderr


def test_close_is_one_deadline_for_jobs_and_sinks(make_monitor, olmoe) -> None:
    import grokmon.results as results

    real = results.compute_metrics
    monitor = make_monitor(every=1)
    try:
        results.compute_metrics = lambda *a, **k: (time.sleep(3), real(*a, **k))[1]
        for step in (1, 2, 3):
            monitor.step(olmoe, step)
        start = time.perf_counter()
        with pytest.warns(RuntimeWarning, match=r"probe\(s\) were still computing"):
            monitor.close(timeout=2.0)
        assert time.perf_counter() - start < 2.5
    finally:
        results.compute_metrics = real
    assert monitor.results.unfinished >= 2 and monitor.errors == monitor.results.unfinished
