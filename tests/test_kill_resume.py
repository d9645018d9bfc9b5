"""Kill a Trainer run mid-way (SIGKILL, no clean-up) and resume it from its checkpoint.

The first run is a subprocess that reports to W&B (offline), saves a checkpoint at step 4 and is
killed at step 6 before it can write anything more. The resumed run must probe the same samples,
keep the alert state, and never write a duplicate or backwards step in the JSONL or in W&B.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from child_env import child_env

from grokmon.sinks import read_jsonl
from grokmon.sinks.wandb_file import read_wandb_run

ROOT = Path(__file__).resolve().parents[1]
KEY = "grokmon/pathway_distance"

RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from transformers import Trainer, TrainerCallback
    from moe_models import tiny_model
    from test_hf_trainer import VOCAB, make_args, make_dataset, make_probe
    from grokmon import GrokkingHFCallback, GrokkingMonitor, MonitorConfig, ThresholdRule

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)   # no atexit, no flush, no W&B finish

    out = {out!r}
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=2, output_dir=out, on_error="raise"),
                              alerts=[ThresholdRule("pathway_distance", above=-1.0, name="seen")])
    args = make_args(out + "/trainer", max_steps=10, save_strategy="steps", save_steps=4, report_to="wandb",
                     run_name="kill-resume")
    trainer = Trainer(model=tiny_model("olmoe", vocab_size=VOCAB).train(), args=args, train_dataset=make_dataset(),
                      callbacks=[GrokkingHFCallback(monitor), KillAt()])
    trainer.train(resume_from_checkpoint={resume!r})
    records = __import__("grokmon.sinks", fromlist=["read_jsonl"]).read_jsonl(out + "/grokmon.jsonl")
    print("fired at", [r["step"] for r in records if "alert" in r and "seen" in r["alert"]["title"]])
""")


def _run(tmp_path: Path, name: str, kill_at: int, resume: str | None) -> subprocess.CompletedProcess:
    script = tmp_path / f"{name}.py"
    script.write_text(RUN.format(tests=str(ROOT / "tests"), out=str(tmp_path / "run"), kill_at=kill_at, resume=resume))
    env = child_env(WANDB_DIR=str(tmp_path / name), WANDB_PROJECT="grokmon-tests")
    (tmp_path / name).mkdir()
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_killed_trainer_run_resumes_without_duplicate_or_backwards_steps(tmp_path) -> None:
    first = _run(tmp_path, "first", kill_at=6, resume=None)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    checkpoint = tmp_path / "run" / "trainer" / "checkpoint-4"
    assert (checkpoint / "grokmon_state.json").exists()
    before = [r["step"] for r in read_jsonl(tmp_path / "run" / "grokmon.jsonl") if "metrics" in r]
    assert before[:3] == [0, 2, 4]  # step 6 may or may not have been written before the kill

    second = _run(tmp_path, "second", kill_at=-1, resume=str(checkpoint))
    assert second.returncode == 0, second.stderr[-3000:]
    records = read_jsonl(tmp_path / "run" / "grokmon.jsonl")
    steps = [r["step"] for r in records if "metrics" in r]
    assert steps == [0, 2, 4, 6, 8, 10]  # the killed run's step 6 replaced, nothing twice, nothing backwards
    # the alert fired once, in the first run, and its state came back: it did not fire again
    assert [r["step"] for r in records if "alert" in r and "seen" in r["alert"]["title"]] == [0]
    assert "fired at [0]" in second.stdout
    # the resumed W&B run: grokmon rows from step 6 on (no baseline repeated at 4), strictly increasing,
    # with the previous probe's pathways restored (drift at its first probe)
    resumed = read_wandb_run(next((tmp_path / "second" / "wandb").glob("offline-run-*")), wait=10)
    rows = [r for r in resumed.history if KEY in r]
    assert [r["train/global_step"] for r in rows] == [6, 8, 10]
    assert all(r.get("grokmon/pathway_drift") is not None for r in rows)
    assert [r["_step"] for r in rows] == sorted({r["_step"] for r in rows})
    killed = read_wandb_run(next((tmp_path / "first" / "wandb").glob("offline-run-*")), wait=0)
    first_steps = [r["train/global_step"] for r in killed.history if KEY in r]
    # what W&B had flushed before SIGKILL (often nothing: its service dies with the run) never goes backwards
    assert first_steps == sorted(set(first_steps))
