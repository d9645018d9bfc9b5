"""The Accelerate text example runs end to end at a tiny size; its committed corpus is what its generator writes.

(``examples/grokking_demo.py`` is tested in ``test_validation.py``.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from child_env import child_env

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "accelerate_text_moe.py"
DOMAINS = ("code", "prose", "numbers")


def _load_example():
    spec = importlib.util.spec_from_file_location("accelerate_text_moe", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_corpus_is_the_generated_one() -> None:
    example = _load_example()
    committed = [json.loads(line) for line in example.CORPUS.read_text(encoding="utf-8").splitlines()]
    assert committed == example.generate_corpus()
    assert {row["domain"] for row in committed} == set(DOMAINS)
    assert example.CORPUS.stat().st_size < 300_000
    assert example.decode(example.encode(committed[0]["text"])) == committed[0]["text"]


@pytest.mark.slow
def test_accelerate_text_example_runs_end_to_end(tmp_path: Path) -> None:
    """12 optimizer updates, a probe every 4: JSONL rows at 0/4/8/12 with per-domain keys, an offline W&B run."""
    from grokmon.sinks import read_jsonl
    from grokmon.sinks.wandb_file import read_wandb_run

    env = child_env()
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "12", "--every", "4", "--out", str(out), "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "last probe at step 12" in proc.stdout

    probes = [r for r in read_jsonl(out / "grokmon.jsonl") if "metrics" in r]
    assert [r["step"] for r in probes] == [0, 4, 8, 12]
    for record in probes:
        metrics = record["metrics"]
        for domain in DOMAINS:
            for key in ("pathway_distance", "probe_loss", "stage"):
                assert metrics[f"grokmon/group/{domain}/{key}"] is not None, (record["step"], domain, key)
        assert "grokmon/alert/plateau_pathway_distance" in metrics
        assert metrics["grokmon/errors"] == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["probes"] == [0, 4, 8, 12] and set(summary["groups"]) == set(DOMAINS)

    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    history = read_wandb_run(runs[0], wait=10).history
    assert sorted(row["grokmon_step"] for row in history if "grokmon/pathway_distance" in row) == [0, 4, 8, 12]
    assert len([row for row in history if "train/loss" in row]) == 12
    assert (out / "checkpoint" / "custom_checkpoint_0.pkl").exists()  # the monitor, via register_for_checkpointing
