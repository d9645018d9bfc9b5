"""Misuse gets a typed error that names the fix (issue 12): a non-integer step, a step counter that
restarts, a model on the meta device, a JSONL record that cannot be written."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from moe_models import random_probe, tiny_model

from grokmon import GrokkingMonitor, MonitorConfig, capture_pathways
from grokmon.errors import ConfigError, SinkError
from grokmon.sinks import read_jsonl


@pytest.mark.parametrize("bad", ["10", 2.0, None, torch.tensor([1, 2])])
def test_a_step_that_is_not_an_integer_is_named(tmp_path, bad) -> None:
    monitor = GrokkingMonitor(random_probe(), MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False))
    with pytest.raises(ConfigError, match=r"step must be an integer optimizer step, got .*: pass int\(step\)"):
        monitor.step(tiny_model("mixtral"), bad)
    monitor.close()


def test_numpy_and_tensor_integer_steps_are_accepted(tmp_path) -> None:
    model = tiny_model("mixtral")
    monitor = GrokkingMonitor(random_probe(), MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False))
    monitor.step(model, np.int64(1))
    monitor.step(model, torch.tensor(2))
    monitor.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "grokmon.jsonl") if "metrics" in r] == [1, 2]


def test_a_counter_that_restarts_each_epoch_keeps_probing_on_grokmons_own_count(tmp_path) -> None:
    model = tiny_model("mixtral")
    monitor = GrokkingMonitor(random_probe(), MonitorConfig(every=2, output_dir=tmp_path, async_metrics=False))
    with pytest.warns(RuntimeWarning, match=r"went backwards, from 4 to 0 .* logged as 5") as caught:
        for epoch in range(2):
            for step in range(6):      # 0..5, then 0..5 again
                monitor.step(model, step)
    assert len([w for w in caught if "went backwards" in str(w.message)]) == 1
    state = json.loads(json.dumps(monitor.state_dict(include_pathways=False)))
    monitor.close()
    steps = [r["step"] for r in read_jsonl(tmp_path / "grokmon.jsonl") if "metrics" in r]
    assert steps == [0, 2, 4, 6, 8, 10]    # the second epoch is logged as 5..10, probed every 2
    # the offset is part of the state: a resumed monitor continues the same count, with no new warning
    again = GrokkingMonitor(random_probe(), MonitorConfig(every=2, output_dir=tmp_path / "b", async_metrics=False))
    again.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "grokmon: pathway_consistency needs")  # 2 MoE layers: C_i left out
        again.step(model, 5)           # the host's 5 is grokmon's 10: probed already
        again.step(model, 7)           # 12: probed
    again.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "b" / "grokmon.jsonl") if "metrics" in r] == [12]


def test_a_backwards_step_raises_in_raise_mode(tmp_path) -> None:
    monitor = GrokkingMonitor(random_probe(),
                              MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False, on_error="raise"))
    model = tiny_model("mixtral")
    monitor.step(model, 3)
    monitor.step(model, 3)   # the same step again is not backwards: it is simply not probed twice
    with pytest.raises(ConfigError, match="went backwards, from 3 to 1.*pass a step that only grows"):
        monitor.step(model, 1)
    monitor.close()


def test_a_model_on_the_meta_device_is_named() -> None:
    with torch.device("meta"):
        model = tiny_model("mixtral")
    probe = random_probe()
    with pytest.raises(ConfigError, match="meta device .* probe a model whose weights are materialised"):
        capture_pathways(model, probe.input_ids, probe.attention_mask)


def test_an_unwritable_jsonl_path_is_a_typed_error_at_set_up(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SinkError, match=r"cannot create the folder of the JSONL record .*jsonl=False"):
        GrokkingMonitor(random_probe(), MonitorConfig(every=1, jsonl=str(tmp_path / "file" / "g.jsonl")))
    if os.geteuid() != 0:   # root writes anywhere: the permission case needs a normal user
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SinkError, match="cannot"):
            GrokkingMonitor(random_probe(), MonitorConfig(every=1, output_dir=locked / "run"))
