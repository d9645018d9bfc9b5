"""grokmon.sinks.wandb_file against real offline W&B runs (wandb's own writer, no mocks)."""

from __future__ import annotations

import math
import os
import struct

import pytest

wandb = pytest.importorskip("wandb")

from grokmon.errors import SinkError  # noqa: E402
from grokmon.sinks.wandb_file import find_wandb_file, iter_wandb_records, read_wandb_run  # noqa: E402

os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def offline_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="grokmon-test",
                     config={"lr": 0.001, "model": {"experts": 8}, "big": "x" * 70_000})
    yield run, tmp_path
    if wandb.run is not None:
        wandb.finish()


def test_reads_back_history_metrics_alerts_summary_config(offline_run):
    run, tmp_path = offline_run
    run.define_metric("train/global_step")
    run.define_metric("grokmon/*", step_metric="train/global_step", summary="min")
    rows = [
        {"grokmon/pathway_distance": 3.5, "train/global_step": 200},
        {"grokmon/pathway_distance": float("nan"), "train/global_step": 400, "nested": {"a": 1, "b": "t"}},
        {"grokmon/pathway_distance": 2.25, "train/global_step": 600, "flag": True},
    ]
    for r in rows:
        run.log(r)
    run.alert(title="grokmon: plateau", text="flat for 5 probes", level="WARN", wait_duration=300)
    run.summary["final_note"] = "done"
    run_id = run.id
    run.finish()

    rec = read_wandb_run(tmp_path / "wandb", wait=10)
    assert rec.path.name == f"run-{run_id}.wandb"
    assert rec.run["run_id"] == run_id and rec.run["project"] == "grokmon-test"
    assert rec.exit_code == 0
    assert [row["_step"] for row in rec.history] == [0, 1, 2]
    assert rec.column("train/global_step") == [200, 400, 600]
    got = rec.column("grokmon/pathway_distance")
    assert got[0] == 3.5 and math.isnan(got[1]) and got[2] == 2.25
    assert rec.history[1]["nested"] == {"a": 1, "b": "t"}
    assert rec.history[2]["flag"] is True
    assert rec.metrics[0]["name"] == "train/global_step" and rec.metrics[0]["step_metric"] is None
    glob = rec.metrics[1]
    assert glob["glob_name"] == "grokmon/*" and glob["step_metric"] == "train/global_step"
    assert glob["step_sync"] is True and glob["summary"] == ["min"]
    assert rec.alerts == [{"title": "grokmon: plateau", "text": "flat for 5 probes", "level": "WARN",
                           "wait_duration": 300.0}]
    assert rec.summary["final_note"] == "done"
    assert rec.summary["train/global_step"] == 600
    # a 70 kB config value spans chunks of three 32 KiB blocks (first / middle / last framing)
    assert rec.config == {"lr": 0.001, "model": {"experts": 8}, "big": "x" * 70_000}


def test_step_below_wandb_counter_is_dropped_by_wandb(offline_run):
    """The fact WandbSink is built around: W&B ignores step= below its own counter."""
    run, tmp_path = offline_run
    for i in range(4):
        run.log({"train/loss": 1.0 / (i + 1)})
    run.log({"grokmon/x": 1.0}, step=1)
    run.finish()
    rec = read_wandb_run(tmp_path / "wandb", wait=10)
    assert rec.column("grokmon/x") == []
    assert len(rec.column("train/loss")) == 4


def test_many_rows_cross_block_boundaries(offline_run):
    run, tmp_path = offline_run
    for i in range(400):
        run.log({"grokmon/a": i, "train/global_step": 10 * i})
    run.finish()
    rec = read_wandb_run(tmp_path, wait=10)
    assert rec.path.stat().st_size > 3 * 32 * 1024
    assert rec.column("grokmon/a") == list(range(400))
    assert rec.column("train/global_step") == [10 * i for i in range(400)]


def test_truncated_file_reads_prefix_and_corruption_raises(offline_run, tmp_path_factory):
    run, tmp_path = offline_run
    for i in range(50):
        run.log({"grokmon/a": i})
    run.finish()
    data = read_wandb_run(tmp_path, wait=10).path.read_bytes()
    out = tmp_path_factory.mktemp("cut")

    cut = out / "run-cut.wandb"
    cut.write_bytes(data[: len(data) - 5])  # a run killed mid-write
    n_full = len(read_wandb_run(data_path(out, "full", data)).history)
    prefix = read_wandb_run(cut).column("grokmon/a")
    assert prefix == list(range(len(prefix))) and len(prefix) <= n_full == 50

    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    broken = out / "run-bad.wandb"
    broken.write_bytes(bytes(bad))
    with pytest.raises(SinkError, match="checksum mismatch|corrupted"):
        list(iter_wandb_records(broken))

    notwandb = out / "run-x.wandb"
    notwandb.write_bytes(b"hello world, not a run")
    with pytest.raises(SinkError, match="not a W&B run file"):
        read_wandb_run(notwandb)


def data_path(folder, name, data):
    p = folder / f"run-{name}.wandb"
    p.write_bytes(data)
    return p


def test_header_is_as_documented(offline_run):
    run, tmp_path = offline_run
    run.finish()
    head = find_wandb_file(tmp_path).read_bytes()[:7]
    assert head[:4] == b":W&B" and struct.unpack("<H", head[4:6])[0] == 0xBEE1


def test_find_errors(tmp_path):
    with pytest.raises(SinkError, match="no W&B run file"):
        find_wandb_file(tmp_path / "missing")
    with pytest.raises(SinkError, match="no run-\\*.wandb"):
        find_wandb_file(tmp_path)
