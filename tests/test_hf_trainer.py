"""GrokkingHFCallback in real Hugging Face Trainer runs of a tiny OLMoE on CPU.

Checks what reached W&B (the offline ``.wandb`` file read back), ``state.log_history`` and the
JSONL file, against each other and against a direct capture + compute on the same weights.
"""

from __future__ import annotations

from pathlib import Path

import copy
import functools
import logging
import math
import os

import pytest
from optional import need
import torch
from moe_models import build_monitor, random_probe, tiny_model

pytest.importorskip("transformers")
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from grokmon.alerts import ThresholdRule  # noqa: E402
from grokmon.integrations.hf import GrokkingHFCallback  # noqa: E402
from grokmon.metrics import MetricConfig, compute_metrics  # noqa: E402
from grokmon.monitor import GrokkingMonitor  # noqa: E402
from grokmon.probe import ProbeSet  # noqa: E402
from grokmon.routing import capture_pathways  # noqa: E402
from grokmon.sinks import read_jsonl  # noqa: E402

VOCAB = 128
SEQ = 16
KEY = "grokmon/pathway_distance"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "grokmon-tests")
    monkeypatch.setenv("WANDB_LOG_MODEL", "false")
    monkeypatch.setenv("WANDB_WATCH", "false")


# ---------------------------------------------------------------- shared helpers (test_resume uses them)

make_probe = functools.partial(random_probe, seed=123, seq_len=SEQ, vocab_size=VOCAB, groups="alternate")


def make_dataset(n: int = 64, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (n, SEQ), generator=g)
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def make_args(out_dir, **overrides) -> TrainingArguments:
    kw = dict(
        output_dir=str(out_dir), per_device_train_batch_size=4, gradient_accumulation_steps=2,
        max_steps=6, learning_rate=5e-3, lr_scheduler_type="constant", logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, seed=0,
    )
    kw.update(overrides)
    return TrainingArguments(**kw)


def trainer_monitor(tmp_path, every: int = 2, **kw) -> GrokkingMonitor:
    kw.setdefault("jsonl", str(tmp_path / "grokmon.jsonl"))
    return build_monitor(make_probe(), every=every, output_dir=str(tmp_path / "grokmon_out"), on_error="raise", **kw)


def jsonl_metrics(path) -> dict[int, dict]:
    """step -> metrics of a grokmon JSONL file (asserting each step appears once)."""
    out: dict[int, dict] = {}
    for rec in read_jsonl(path):
        if "metrics" in rec:
            assert rec["step"] not in out, f"step {rec['step']} twice in {path}"
            out[rec["step"]] = rec["metrics"]
    return out


def reference(model, probe: ProbeSet) -> dict[str, float]:
    """The metrics computed directly (no monitor, no Trainer) on ``model``'s current weights."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        res = capture_pathways(model, probe.input_ids, probe.attention_mask, groups=probe.groups,
                               group_names=probe.group_names)
    return compute_metrics(res.pathways, None, MetricConfig())


class Counter(TrainerCallback):
    """Counts micro-batches and optimizer updates, as the Trainer reports them."""

    def __init__(self) -> None:
        self.micro = 0
        self.updates = 0

    def on_substep_end(self, args, state, control, **kw):
        self.micro += 1

    def on_step_end(self, args, state, control, **kw):
        self.micro += 1
        self.updates += 1


class Reference(TrainerCallback):
    """Direct capture + compute on the model's weights at every ``every``-th update (and step 0)."""

    def __init__(self, probe: ProbeSet, every: int) -> None:
        self.probe, self.every, self.values = probe, every, {}

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.values[state.global_step] = reference(model, self.probe)["pathway_distance"]

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step % self.every == 0:
            self.values[state.global_step] = reference(model, self.probe)["pathway_distance"]


def same(a, b) -> bool:
    """JSON / W&B values equal (NaN is ``None`` in JSONL, a float NaN elsewhere)."""
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    return a == b


# ---------------------------------------------------------------- tests

def test_trainer_logs_into_its_own_wandb_run(tmp_path, capfd):
    import wandb

    from grokmon.sinks.wandb_file import read_wandb_run

    model = tiny_model("olmoe", vocab_size=VOCAB).train()
    initial = reference(model, make_probe())
    monitor = trainer_monitor(tmp_path, every=2)
    counter = Counter()
    args = make_args(tmp_path / "out", report_to="wandb", run_name="grokmon-test")
    trainer = Trainer(model=model, args=args, train_dataset=make_dataset(),
                      callbacks=[GrokkingHFCallback(monitor), counter])
    try:
        trainer.train()
        final = reference(trainer.model, make_probe())
        # the run's own folder: W&B keeps the first WANDB_DIR of the process for later runs
        run_dir = Path(wandb.run.dir).parent
    finally:
        wandb.finish()
    # W&B's console output is captured only when this is the first run of the process; the
    # rows-at-every-probe-step check below is what proves that nothing was dropped.
    err = capfd.readouterr().err

    # gradient accumulation: probe steps count optimizer updates, not micro-batches
    assert (counter.micro, counter.updates, trainer.state.global_step) == (12, 6, 6)

    run = read_wandb_run(run_dir, wait=10)
    rows = [r for r in run.history if KEY in r]
    assert [r["train/global_step"] for r in rows] == [0, 2, 4, 6]
    assert all("_step" in r for r in rows)
    # the Trainer's own rows are still there, on the same axis
    assert [r["train/global_step"] for r in run.history if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    # grokmon keys are never renamed (no train/grokmon/... copy through WandbCallback)
    assert not any(k.startswith("train/grokmon") for r in run.history for k in r)

    # W&B values equal the JSONL values of the same step, key by key
    jl = jsonl_metrics(tmp_path / "grokmon.jsonl")
    assert sorted(jl) == [0, 2, 4, 6]
    from grokmon.sinks import WandbSink

    names = WandbSink(run=object())  # W&B files the keys in sections and leaves out uninformative ones
    for row in rows:
        step = row["train/global_step"]
        expected = {names.wandb_key(k): v for k, v in names._informative(jl[step]).items()}
        keys = [k for k in row if k.startswith("grokmon") and "/by_group/" not in k and k != "grokmon/stage_timeline"]
        assert set(keys) == set(expected)
        assert all(same(row[k], expected[k]) for k in keys), step
        assert "grokmon_diag/probe_seconds" in keys and "grokmon_group/a/pathway_distance" in keys
        assert "grokmon_diag/pathway_distance_stderr" not in keys   # 0: every pair is used
        # 2 MoE layers: C_i is left out by the monitor (metric metadata), so neither the JSONL nor W&B has it
        assert not any(k.endswith("pathway_consistency") for k in [*keys, *jl[step]])
        assert "grokmon_diag/pathway_consistency_undefined" in keys   # needs only 2 layers: kept

    # the probe saw the right weights at the right steps
    assert rows[0][KEY] == pytest.approx(initial["pathway_distance"], abs=1e-6)
    assert rows[-1][KEY] == pytest.approx(final["pathway_distance"], abs=1e-6)
    assert initial["pathway_distance"] != final["pathway_distance"]

    # grokmon/* is defined against the Trainer's step metric
    assert any(m["glob_name"] == "grokmon/*" and m["step_metric"] == "train/global_step" for m in run.metrics)
    # at train end the callback closes the monitor, whose W&B sink logs the per-group charts and
    # the stage timeline into the same run; the summary holds every group's stage
    chart = run.table("grokmon/by_group/pathway_distance_table")
    assert "grokmon/by_group/pathway_distance" in run.visualize
    lines = {(step, key) for step, key, _ in chart["data"]}
    assert lines == {(s, k) for s in (0, 2, 4, 6) for k in ("a", "b", "all samples")}
    assert {row[0] for row in run.table("grokmon/stage_timeline")["data"]} == {"overall", "a", "b"}
    assert set(run.summary["grokmon/stages"]) == {"overall", "a", "b"}
    # no row was dropped by W&B for a step behind its counter (all four probe rows are above,
    # in strictly increasing W&B order)
    assert "less than the current step" not in err
    assert [r["_step"] for r in rows] == sorted(r["_step"] for r in rows)
    # also in the Trainer's log history, at the probe steps
    hist = [(h["step"], h[KEY]) for h in trainer.state.log_history if KEY in h]
    assert hist == [(r["train/global_step"], r[KEY]) for r in rows]


def test_log_history_without_wandb(tmp_path):
    model = tiny_model("olmoe", vocab_size=VOCAB).train()
    monitor = trainer_monitor(tmp_path, every=3)
    counter, ref = Counter(), Reference(make_probe(), every=3)
    trainer = Trainer(model=model, args=make_args(tmp_path / "out", max_steps=7), train_dataset=make_dataset(),
                      callbacks=[GrokkingHFCallback(monitor), counter, ref])
    trainer.train()
    assert (counter.micro, counter.updates) == (14, 7)
    entries = [h for h in trainer.state.log_history if KEY in h]
    assert [h["step"] for h in entries] == [0, 3, 6]
    jl = jsonl_metrics(tmp_path / "grokmon.jsonl")
    for h in entries:
        grok = {k: v for k, v in h.items() if k.startswith("grokmon/")}
        assert set(grok) == set(jl[h["step"]])
        assert all(same(v, jl[h["step"]][k]) for k, v in grok.items())
    # each probe saw the weights of its own step (after that many optimizer updates)
    assert sorted(ref.values) == [0, 3, 6]
    assert [h[KEY] for h in entries] == pytest.approx([ref.values[s] for s in (0, 3, 6)], abs=1e-6)
    assert len({round(v, 6) for v in ref.values.values()}) > 1  # training moved the metric


def test_trainer_log_reaches_other_integrations(tmp_path):
    need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = tiny_model("olmoe", vocab_size=VOCAB).train()
    monitor = trainer_monitor(tmp_path, every=2)
    args = make_args(tmp_path / "out", max_steps=4, report_to="tensorboard")
    trainer = Trainer(model=model, args=args, train_dataset=make_dataset())
    trainer.add_callback(GrokkingHFCallback(monitor, trainer=trainer))
    trainer.train()
    entries = [h for h in trainer.state.log_history if KEY in h]
    assert [h["step"] for h in entries] == [0, 2, 4]
    assert all("epoch" in h for h in entries)  # went through trainer.log
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "out") for f in fs if "tfevents" in f]
    assert files
    steps = []
    for f in files:
        acc = EventAccumulator(f)
        acc.Reload()
        if "train/grokmon/pathway_distance" in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars("train/grokmon/pathway_distance")]
    assert sorted(steps) == [0, 2, 4]


def test_warns_when_values_cannot_reach_other_integrations(tmp_path, caplog):
    need("tensorboard")  # report_to="tensorboard"
    model = tiny_model("olmoe", vocab_size=VOCAB).train()
    monitor = trainer_monitor(tmp_path, every=2)
    args = make_args(tmp_path / "out", max_steps=2, report_to="tensorboard")
    with caplog.at_level(logging.WARNING, logger="grokmon.integrations.hf"):
        Trainer(model=model, args=args, train_dataset=make_dataset(), callbacks=[GrokkingHFCallback(monitor)]).train()
    assert any("GrokkingHFCallback(monitor, trainer=trainer)" in r.getMessage() for r in caplog.records)


def test_alert_rule_stops_the_trainer(tmp_path):
    model = tiny_model("olmoe", vocab_size=VOCAB).train()
    # pathway distance is >= 0, so "above -1" fires on the first judged probe
    rule = ThresholdRule("pathway_distance", above=-1.0, stop_training=True)
    monitor = trainer_monitor(tmp_path, every=2, alerts=[rule])
    trainer = Trainer(model=model, args=make_args(tmp_path / "out", max_steps=10), train_dataset=make_dataset(),
                      callbacks=[GrokkingHFCallback(monitor)])
    trainer.train()
    assert monitor.should_stop
    assert 1 <= trainer.state.global_step < 10
