"""A real short training run in which an alert rule fires: the W&B offline file holds the alert."""

from __future__ import annotations

import pytest
import torch
from moe_models import tiny_model

from grokmon import GrokkingMonitor, MonitorConfig, PlateauRule, ProbeSet, ThresholdRule
from grokmon.sinks import WandbSink
from grokmon.sinks.wandb_file import read_wandb_run


def test_rule_fires_once_and_reaches_wandb(tmp_path) -> None:
    wandb = pytest.importorskip("wandb")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="grokmon-test")
    probe = ProbeSet.from_token_ids(torch.randint(2, 128, (6, 12), generator=torch.Generator().manual_seed(0)))
    fired = []
    monitor = GrokkingMonitor(probe, MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False),
                              sinks=[WandbSink(run, step_key="step", alert_level="INFO")],  # asked for: INFO events alert too
                              alerts=[ThresholdRule("probe_loss", above=0.0, name="loss_seen", level="INFO", wait_duration=300),
                                      PlateauRule("pathway_distance", mode="min", patience=100, name="never")],
                              on_alert=fired.append)
    model = tiny_model("olmoe")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(2, 128, (4, 12))
    for step in range(1, 4):
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        monitor.step(model, step)
    monitor.close()
    run.finish()
    records = read_wandb_run(run.dir.rsplit("/files", 1)[0], wait=10)
    assert [e.rule for e in fired] == ["loss_seen"]  # crosses once, stays crossed: fires once
    assert len(records.alerts) == 1
    alert = records.alerts[0]
    assert "loss_seen" in alert["title"] and alert["level"] == "INFO" and alert["wait_duration"] == 300
    rows = [r for r in records.history if "grokmon/alert/loss_seen" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["grokmon/alert/loss_seen"] for r in rows] == [1.0, 1.0, 1.0]
    assert [r["grokmon/alert/never"] for r in rows] == [0.0, 0.0, 0.0]


def test_plateau_on_pathway_distance_fires_in_a_real_run(tmp_path) -> None:
    """Routing that stops changing (a learning rate too small to move it) is a distance plateau."""
    wandb = pytest.importorskip("wandb")
    run = wandb.init(mode="offline", dir=str(tmp_path), project="grokmon-test")
    probe = ProbeSet.from_token_ids(torch.randint(2, 128, (8, 12), generator=torch.Generator().manual_seed(0)))
    rule = PlateauRule("pathway_distance", mode="min", patience=2, min_delta=0.01, name="distance_plateau",
                       wait_duration=600)
    monitor = GrokkingMonitor(probe, MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False, stages=False),
                              alerts=[rule], sinks=[WandbSink(run, step_key="step")])
    model = tiny_model("olmoe").train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-7)
    x = torch.randint(2, 128, (4, 12))
    for step in range(1, 7):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
        monitor.step(model, step)
    monitor.close()
    run.finish()
    records = read_wandb_run(run.dir.rsplit("/files", 1)[0], wait=10)
    flags = [r["grokmon/alert/distance_plateau"] for r in records.history if "grokmon/alert/distance_plateau" in r]
    # probe 1 sets the best value; probes 2 and 3 do not improve it by 1 %: the count reaches
    # patience=2 at probe 3 (EarlyStopping's counting), the rule fires once and stays active
    assert flags == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert [a["title"] for a in records.alerts] == ["grokmon: distance_plateau plateau"]
    assert records.alerts[0]["level"] == "WARN" and records.alerts[0]["wait_duration"] == 600
