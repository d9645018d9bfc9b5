"""Ctrl-C with W&B: grokmon delivers its last records before the W&B run's own exit hook tears it down.

A subprocess starts an offline W&B run (whose service registers its teardown with ``atexit``),
then a monitor with a :class:`~grokmon.WandbSink` on it, probes with slow background metrics and is
interrupted by ``KeyboardInterrupt``. Every probe must reach the W&B run file, and no "sink wandb
failed" warning may follow (before the fix: "ConnectionResetError('Connection lost')").
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from child_env import child_env

from grokmon.sinks.wandb_file import read_wandb_run

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import grokmon.results as results
    import wandb
    from moe_models import build_monitor, random_probe, tiny_model
    from grokmon import WandbSink

    job = results.metric_job
    def slow_job(*args, **kwargs):  # the last probes' metrics are still computing at Ctrl-C
        inner = job(*args, **kwargs)
        return lambda: (time.sleep(1.0), inner())[1]
    results.metric_job = slow_job
    monitor = build_monitor(random_probe(), every=1, jsonl=False)
    # as under the Trainer: the monitor exists first, the W&B run starts at on_train_begin
    run = wandb.init(mode="offline", dir={out!r}, project="grokmon-test")
    monitor.add_sink(WandbSink(run, step_key=None, group_charts=False, stage_table=False))
    model = tiny_model("olmoe", seed=4)
    for step in range(1, 4):
        monitor.step(model, step)
    raise KeyboardInterrupt
""")


def test_ctrl_c_delivers_to_wandb_before_its_run_closes(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), out=str(tmp_path)))
    done = subprocess.run([sys.executable, str(script)], env=child_env(), capture_output=True, text=True,
                          timeout=300)
    assert "KeyboardInterrupt" in done.stderr
    assert "sink wandb" not in done.stderr and "Connection lost" not in done.stderr, done.stderr[-2000:]
    records = read_wandb_run(tmp_path / "wandb", wait=10)
    logged = [row["_step"] for row in records.history if "grokmon/pathway_distance" in row]
    assert len(logged) == 3, (logged, done.stderr[-2000:])
