"""GrokkingLightningCallback in real Lightning runs of a tiny OLMoE on CPU (CSVLogger)."""

from __future__ import annotations

import copy
import functools
import csv
import math

import pytest
from optional import need
import torch
from moe_models import random_probe, tiny_model

pl = need("lightning.pytorch")
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from grokmon.alerts import ThresholdRule  # noqa: E402
from grokmon.integrations.lightning import GrokkingLightningCallback  # noqa: E402
from grokmon.metrics import MetricConfig, compute_metrics  # noqa: E402
from grokmon.monitor import GrokkingMonitor  # noqa: E402
from grokmon.config import MonitorConfig
from grokmon.probe import ProbeSet  # noqa: E402
from grokmon.routing import capture_pathways  # noqa: E402
from grokmon.sinks import read_jsonl  # noqa: E402

VOCAB, SEQ = 128, 16
pytestmark = [
    pytest.mark.filterwarnings("ignore:The number of training batches"),  # log_every_n_steps=50 on purpose
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated"),
]
KEY = "grokmon/pathway_distance"


make_probe = functools.partial(random_probe, 8, seed=123, seq_len=SEQ, vocab_size=VOCAB, groups="alternate")


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randint(2, VOCAB, (64, SEQ), generator=g)), batch_size=4)


class LitMoE(pl.LightningModule):
    """A LightningModule whose forward is not the HF model's: the callback must find ``self.net``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model("olmoe", vocab_size=VOCAB).train()

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        return self.net(input_ids=ids, labels=ids).loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=5e-3)


def reference(net, probe: ProbeSet) -> float:
    net = copy.deepcopy(net).eval()
    with torch.no_grad():
        res = capture_pathways(net, probe.input_ids, probe.attention_mask, groups=probe.groups,
                               group_names=probe.group_names)
    return compute_metrics(res.pathways, None, MetricConfig())["pathway_distance"]


class Reference(pl.Callback):
    """Counts micro-batches; computes the metric directly whenever an optimizer update lands on ``every``."""

    def __init__(self, every: int) -> None:
        self.every, self.micro, self.values, self._last = every, 0, {}, None

    def on_train_start(self, trainer, pl_module):
        self.values[trainer.global_step] = reference(pl_module.net, make_probe())
        self._last = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.micro += 1
        step = trainer.global_step
        if step != self._last and step % self.every == 0:
            self.values[step] = reference(pl_module.net, make_probe())
        self._last = step


def make_trainer(tmp_path, max_steps: int, callbacks, version: int = 0, **kw) -> pl.Trainer:
    kw.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        max_steps=max_steps, accumulate_grad_batches=2, logger=CSVLogger(tmp_path, name="csv", version=version),
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
        log_every_n_steps=50, callbacks=callbacks, **kw,
    )


def csv_rows(tmp_path, version: int = 0) -> list[dict]:
    with open(tmp_path / "csv" / f"version_{version}" / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get(KEY)]


def jsonl_steps(path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for r in read_jsonl(path):
        if "metrics" in r:
            assert r["step"] not in out
            out[r["step"]] = r["metrics"]
    return out


def test_lightning_run_logs_through_loggers(tmp_path):
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=2, jsonl=str(tmp_path / "g.jsonl"), on_error="raise"))
    ref = Reference(every=2)
    trainer = make_trainer(tmp_path, 6, [GrokkingLightningCallback(monitor), ref])
    trainer.fit(LitMoE(), loader())

    assert (ref.micro, trainer.global_step) == (12, 6)  # accumulate_grad_batches=2
    rows = csv_rows(tmp_path)
    assert [int(r["step"]) for r in rows] == [0, 2, 4, 6]
    jl = jsonl_steps(tmp_path / "g.jsonl")
    for r in rows:
        step = int(r["step"])
        for k, v in jl[step].items():
            # JSONL writes NaN (e.g. an undefined C_i) as null, the CSV logger as "nan"
            assert (v is None and (r[k] == "" or math.isnan(float(r[k])))) or float(r[k]) == v, (step, k)
    # each probe saw the weights after exactly `step` optimizer updates, of the HF model inside
    assert [float(r[KEY]) for r in rows] == pytest.approx([ref.values[s] for s in (0, 2, 4, 6)], abs=1e-6)
    assert len({round(v, 6) for v in ref.values.values()}) > 1


def test_state_dict_round_trip(tmp_path):
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=2, jsonl=False, on_error="raise"),
                              alerts=[ThresholdRule("pathway_distance", above=-1.0)])
    cb = GrokkingLightningCallback(monitor, close_on_train_end=False)
    make_trainer(tmp_path, 4, [cb]).fit(LitMoE(), loader())
    state = cb.state_dict()
    assert state["last_step"] == 4 and state["monitor_state"]["last_probe_step"] == 4

    other = GrokkingMonitor(make_probe(), MonitorConfig(every=2, jsonl=False, on_error="raise"),
                            alerts=[ThresholdRule("pathway_distance", above=-1.0)])
    cb2 = GrokkingLightningCallback(other)
    cb2.load_state_dict(state)
    assert other.state_dict(include_pathways=False) == monitor.state_dict(include_pathways=False)
    assert torch.equal(other.pathways_state()["mean_weights"], monitor.pathways_state()["mean_weights"])
    monitor.close()
    other.close()


def test_two_callbacks_keep_their_own_state(tmp_path):
    """The state key comes from the callback's settings (Lightning's _generate_state_key), not a fixed name."""
    a = GrokkingMonitor(make_probe(), MonitorConfig(every=2, jsonl=str(tmp_path / "a.jsonl"), on_error="raise"))
    b = GrokkingMonitor(make_probe(), MonitorConfig(every=4, jsonl=str(tmp_path / "b.jsonl"), on_error="raise"))
    callbacks = [GrokkingLightningCallback(a), GrokkingLightningCallback(b)]
    assert callbacks[0].state_key != callbacks[1].state_key
    assert callbacks[0].state_key.startswith("GrokkingLightningCallback{")
    save = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    make_trainer(tmp_path, 4, [*callbacks, save], enable_checkpointing=True).fit(LitMoE(), loader())
    saved = torch.load(tmp_path / "ckpt" / "step=4.ckpt", weights_only=False)["callbacks"]
    ours = {key: value for key, value in saved.items() if key.startswith("GrokkingLightningCallback")}
    assert sorted(ours) == sorted(cb.state_key for cb in callbacks)
    assert [ours[cb.state_key]["monitor_state"]["probe_count"] for cb in callbacks] == [3, 2]  # 0,2,4 and 0,4


def test_resume_from_lightning_checkpoint(tmp_path):
    jsonl = str(tmp_path / "g.jsonl")
    ckpt_dir = tmp_path / "ckpt"
    first = GrokkingMonitor(make_probe(), MonitorConfig(every=2, jsonl=jsonl, on_error="raise"))
    save = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=4, save_top_k=-1, filename="{step}")
    make_trainer(tmp_path, 6, [GrokkingLightningCallback(first), save], enable_checkpointing=True).fit(LitMoE(), loader())
    assert (ckpt_dir / "step=4.ckpt").exists()

    second = GrokkingMonitor(make_probe(), MonitorConfig(every=2, jsonl=jsonl, on_error="raise"))
    trainer = make_trainer(tmp_path, 10, [GrokkingLightningCallback(second)], version=1)
    trainer.fit(LitMoE(), loader(), ckpt_path=str(ckpt_dir / "step=4.ckpt"))
    assert trainer.global_step == 10
    # no baseline at the resumed step; the lost step 6 of the first run is replaced
    assert [s for s, _ in second.history] == [6, 8, 10]
    assert sorted(jsonl_steps(jsonl)) == [0, 2, 4, 6, 8, 10]
    assert [int(r["step"]) for r in csv_rows(tmp_path, version=1)] == [6, 8, 10]
    assert second.state_dict()["probe_count"] == 6
    # the checkpoint carried the step-4 pathways: drift is there at the first probe after resuming
    assert all(math.isfinite(m["grokmon/pathway_drift"]) for _, m in second.history)


def test_alert_rule_stops_lightning(tmp_path):
    rule = ThresholdRule("pathway_distance", above=-1.0, stop_training=True)
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=2, jsonl=False, on_error="raise"), alerts=[rule])
    trainer = make_trainer(tmp_path, 10, [GrokkingLightningCallback(monitor)])
    trainer.fit(LitMoE(), loader())
    assert monitor.should_stop
    assert 1 <= trainer.global_step < 10


def test_custom_model_attribute(tmp_path):
    monitor = GrokkingMonitor(make_probe(), MonitorConfig(every=2, jsonl=False, on_error="raise"))
    module = LitMoE()
    assert GrokkingLightningCallback(monitor).probe_model(module) is module.net
    assert GrokkingLightningCallback(monitor, model="net").probe_model(module) is module.net
    assert GrokkingLightningCallback(monitor, model=lambda m: m.net.model).probe_model(module) is module.net.model
    from grokmon.errors import GrokmonError

    with pytest.raises(GrokmonError, match="no attribute 'backbone'"):
        GrokkingLightningCallback(monitor, model="backbone").probe_model(module)
    monitor.close()


def test_wandb_logger_run_gets_a_wandb_sink(tmp_path, monkeypatch):
    """With a WandbLogger the run gets grokmon's W&B sink (sections, per-group charts refreshed while
    training, the logger's trainer/global_step axis); the CSV logger still gets every value; no
    value reaches W&B twice."""
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    from grokmon import MonitorConfig
    from grokmon.sinks.wandb_file import read_wandb_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    config = MonitorConfig(every=2, jsonl=str(tmp_path / "g.jsonl"), on_error="raise", wandb_charts_every=2)
    monitor = GrokkingMonitor(make_probe(), config=config)
    wb = WandbLogger(project="grokmon-tests", save_dir=str(tmp_path), offline=True)
    trainer = pl.Trainer(max_steps=6, accumulate_grad_batches=2, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1, log_every_n_steps=50,
                         logger=[CSVLogger(tmp_path, name="csv", version=0), wb],
                         callbacks=[GrokkingLightningCallback(monitor)])
    try:
        trainer.fit(LitMoE(), loader())
        run_dir = tmp_path / "wandb"
    finally:
        wandb.finish()
    rec = read_wandb_run(run_dir, wait=10)
    rows = [r for r in rec.history if KEY in r]
    assert [r["trainer/global_step"] for r in rows] == [0, 2, 4, 6]
    assert all("grokmon_diag/probe_seconds" in r and "grokmon_group/a/pathway_distance" in r for r in rows)
    assert not any("grokmon/probe_seconds" in r for r in rec.history)       # not also logged by the logger
    refresh = [r["trainer/global_step"] for r in rec.history if "grokmon/by_group/pathway_distance_table" in r]
    assert refresh[:2] == [2, 6]                                              # every 2 probes, then at close
    assert any(m["glob_name"] == "grokmon_diag/*" and m["step_metric"] == "trainer/global_step" for m in rec.metrics)
    assert [float(r[KEY]) for r in csv_rows(tmp_path)] == pytest.approx([r[KEY] for r in rows])
