"""Resuming a Trainer run from a checkpoint: same probe, restored monitor state, no step twice.

Run 1 saves a checkpoint at step 4 and goes on to step 7 (the part after the checkpoint is "lost",
as when a job is killed). Run 2 is a new monitor and Trainer in the same output dir and JSONL file,
resumed from checkpoint-4 up to step 10.
"""

from __future__ import annotations

import json
import math
import os

import pytest
from moe_models import tiny_model
from test_hf_trainer import KEY, VOCAB, jsonl_metrics, make_args, make_dataset, trainer_monitor, make_probe
from transformers import Trainer

from grokmon.alerts import ThresholdRule
from grokmon.errors import GrokmonError
from grokmon.integrations.hf import PATHWAYS_FILE, STATE_FILE, GrokkingHFCallback, read_callback_state
from grokmon.monitor import GrokkingMonitor
from grokmon.config import MonitorConfig
from grokmon.sinks import read_jsonl

EVERY = 2


def _rule() -> ThresholdRule:
    # pathway distance >= 0: fires on the first probe and stays active; a monitor that forgot its
    # alert state would fire it again after the restart
    return ThresholdRule("pathway_distance", above=-1.0)


def _first_run(tmp_path) -> Trainer:
    monitor = trainer_monitor(tmp_path, every=EVERY, alerts=[_rule()])
    args = make_args(tmp_path / "out", max_steps=7, save_strategy="steps", save_steps=4)
    trainer = Trainer(model=tiny_model("olmoe", vocab_size=VOCAB).train(), args=args,
                      train_dataset=make_dataset(), callbacks=[GrokkingHFCallback(monitor)])
    trainer.train()
    return trainer


@pytest.mark.parametrize("restore_callback_states", [False, True], ids=["default", "restore_callback_states"])
def test_resume_from_trainer_checkpoint(tmp_path, restore_callback_states):
    """One save path: grokmon_state.json (and the pathways) in the checkpoint, whatever the Trainer restores."""
    _first_run(tmp_path)
    jsonl = tmp_path / "grokmon.jsonl"
    assert sorted(jsonl_metrics(jsonl)) == [0, 2, 4, 6]
    ckpt = tmp_path / "out" / "checkpoint-4"
    saved = read_callback_state(ckpt)
    assert saved["global_step"] == 4 and saved["monitor_state"]["last_probe_step"] == 4
    with open(ckpt / "trainer_state.json") as f:
        in_trainer_state = json.load(f).get("stateful_callbacks", {})
    assert not any("Grokking" in name for name in in_trainer_state)  # not saved a second time there

    # a restart: new process state, same probe (rebuilt from the same seed), same files
    monitor = trainer_monitor(tmp_path, every=EVERY, alerts=[_rule()])
    args = make_args(tmp_path / "out", max_steps=10, save_strategy="steps", save_steps=4,
                     restore_callback_states_from_checkpoint=restore_callback_states)
    trainer = Trainer(model=tiny_model("olmoe", vocab_size=VOCAB).train(), args=args,
                      train_dataset=make_dataset(), callbacks=[GrokkingHFCallback(monitor)])
    trainer.train(resume_from_checkpoint=str(ckpt))
    assert trainer.state.global_step == 10

    # the JSONL: strictly increasing steps, none twice, the lost step 6 replaced by the resumed one
    records = read_jsonl(jsonl)
    steps = [r["step"] for r in records if "metrics" in r]
    assert steps == [0, 2, 4, 6, 8, 10]
    # the checkpoint carried the step-4 pathways: drift is there at the first probe after resuming
    assert (ckpt / PATHWAYS_FILE).exists()
    assert all(math.isfinite(r["metrics"]["grokmon/pathway_drift"]) for r in records if r.get("step", 0) > 4
               and "metrics" in r)
    # the log history (restored from the checkpoint, then continued) agrees with the JSONL
    hist = [(h["step"], h[KEY]) for h in trainer.state.log_history if KEY in h]
    jl = jsonl_metrics(jsonl)
    assert hist == [(s, jl[s][KEY]) for s in steps]
    # monitor state came back: probe count continues, the active alert did not fire again,
    # no baseline probe was repeated at the resumed step
    state = monitor.state_dict()
    assert state["probe_count"] == 6 and state["last_probe_step"] == 10
    assert state["alerts"] == monitor.rules.state_dict()
    fired = [r["step"] for r in records if "alert" in r and "threshold_pathway_distance" in r["alert"]["title"]]
    assert fired == [0]
    assert [s for s, _ in monitor.history] == [6, 8, 10]
    cb = [c for c in trainer.callback_handler.callbacks if isinstance(c, GrokkingHFCallback)]
    assert len(cb) == 1 and cb[0].monitor is monitor
    assert STATE_FILE in cb[0]._restored


def test_resume_refuses_a_different_probe(tmp_path):
    _first_run(tmp_path)
    other = GrokkingMonitor(make_probe(seed=999),
                            MonitorConfig(every=EVERY, jsonl=str(tmp_path / "other.jsonl"), on_error="raise"))
    trainer = Trainer(model=tiny_model("olmoe", vocab_size=VOCAB).train(),
                      args=make_args(tmp_path / "out", max_steps=10), train_dataset=make_dataset(),
                      callbacks=[GrokkingHFCallback(other)])
    with pytest.raises(GrokmonError, match="probe changed"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-4"))
    other.close()


def test_state_file_is_json_and_versioned(tmp_path):
    _first_run(tmp_path)
    path = tmp_path / "out" / "checkpoint-4" / STATE_FILE
    with open(path) as f:
        data = json.load(f)
    assert data["format"] == "grokmon.callback_state" and data["version"] == 1
    assert data["monitor_state"]["probe_fingerprint"] == make_probe().fingerprint()
    path.write_text("{not json")
    from grokmon.errors import ConfigError

    with pytest.raises(ConfigError, match="delete it"):
        read_callback_state(path.parent)
    assert read_callback_state(tmp_path / "out") is None
    assert os.path.isdir(tmp_path / "out" / "checkpoint-4")
