"""A Trainer run killed mid-training: its offline W&B run already holds the per-group charts.

The per-group charts and the stage table are static W&B tables, so a run that never reaches
``monitor.close()`` (killed, preempted without SIGTERM, crashed hard) shows only what the sink
refreshed while training: every ``MonitorConfig.wandb_charts_every`` probes. The training script
runs in a subprocess that SIGKILLs itself after its eleventh probe, so nothing at exit runs. The
W&B service writes its run file in whole 32 KiB blocks and exits with its client, so a killed
offline run loses its last few rows: the test reads the last refresh that reached the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("wandb")
pytest.importorskip("transformers")

from child_env import child_env  # noqa: E402

from grokmon.sinks.wandb_file import read_wandb_run  # noqa: E402

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    sys.path.insert(0, {tests!r})
    from moe_models import random_probe, tiny_model
    from grokmon import GrokkingHFCallback, GrokkingMonitor, MonitorConfig

    probe = random_probe(seed=1, n=12, seq_len=12, vocab_size=128, groups="alternate")
    monitor = GrokkingMonitor(probe, MonitorConfig(every=1, wandb_charts_every=2, async_metrics=False,
                                                          output_dir={out!r}, on_error="raise"))

    class KillAfterElevenProbes(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 10:         # probes at 0 (baseline), 1, ..., 10
                monitor.flush()
                deadline = time.time() + 30
                while time.time() < deadline and any(s.queued for s in monitor.sink_status()):
                    time.sleep(0.05)
                time.sleep(3)                       # let the W&B service write what it was sent
                print("KILLING", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    ids = torch.randint(2, 128, (64, 12), generator=torch.Generator().manual_seed(0))
    data = [dict(input_ids=r, labels=r.clone()) for r in ids]
    args = TrainingArguments({out!r} + "/trainer", per_device_train_batch_size=4, max_steps=20,
                             learning_rate=5e-3, logging_steps=1, save_strategy="no", report_to="wandb",
                             use_cpu=True, disable_tqdm=True, seed=0)
    Trainer(model=tiny_model("olmoe", vocab_size=128).train(), args=args, train_dataset=data,
            callbacks=[GrokkingHFCallback(monitor), KillAfterElevenProbes()]).train()
""")


def test_killed_trainer_run_holds_the_charts_of_its_last_refresh(tmp_path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), out=str(tmp_path)))
    env = child_env(WANDB_DIR=str(tmp_path), WANDB_PROJECT="grokmon-kill",
                    PYTHONPATH=os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9 and "KILLING" in done.stdout, done.stderr[-3000:]

    rec = read_wandb_run(tmp_path / "wandb", wait=10)
    assert rec.exit_code is None                                   # the run never finished
    rows = [r for r in rec.history if "grokmon/pathway_distance" in r]
    steps = [r["train/global_step"] for r in rows]
    assert steps == list(range(len(steps))) and len(steps) >= 4
    # refreshed every 2 probes (steps 1, 3, 5, ...) while training ran
    refresh = [r["train/global_step"] for r in rec.history if "grokmon/by_group/pathway_distance_table" in r]
    assert refresh and refresh == [1, 3, 5, 7, 9][:len(refresh)]
    last = refresh[-1]
    assert "grokmon/by_group/pathway_distance" in rec.visualize
    chart = rec.table("grokmon/by_group/pathway_distance_table")   # the last refresh in the file
    lines: dict[str, list[int]] = {}
    for step, key, _ in chart["data"]:
        lines.setdefault(key, []).append(step)
    assert lines == {k: list(range(last + 1)) for k in ("a", "b", "all samples")}
    # the values in the chart are the scalar values logged at the same steps
    by_step = {step: value for step, key, value in chart["data"] if key == "all samples"}
    assert by_step == pytest.approx({r["train/global_step"]: r["grokmon/pathway_distance"] for r in rows[:last + 1]})
    timeline = rec.table("grokmon/stage_timeline")
    assert {row[0] for row in timeline["data"]} == {"overall", "a", "b"}
    assert max(row[4] for row in timeline["data"]) == last
