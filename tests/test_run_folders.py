"""Each run writes its own record; a resume is recognised from the checkpoint, never from a leftover file.

Issue 20 item 3 and the monitor's lifecycle edges (item 4): with the default ``output_dir=None`` a
run's JSONL goes to a new ``run-<n>`` folder (under the Trainer's ``output_dir/grokmon``), so running
the same script twice gives two records, and a Trainer resume reopens the folder its checkpoint
names. A ``step()`` after ``close()`` warns and counts; a monitor dropped without ``close()`` still
writes every probe and releases its record.
"""

from __future__ import annotations

import gc
import warnings

import pytest
from moe_models import build_monitor, tiny_model
from test_hf_trainer import VOCAB, make_args, make_dataset, make_probe
from transformers import Trainer

from grokmon import GrokkingHFCallback
from grokmon.errors import GrokmonError
from grokmon.sinks import JsonlSink, read_jsonl


def _steps(path) -> list[int]:
    return [r["step"] for r in read_jsonl(path) if "metrics" in r]


def _train(tmp_path, max_steps: int, resume: str | None = None, **args) -> Trainer:
    monitor = build_monitor(make_probe(), every=2, on_error="raise")
    trainer = Trainer(model=tiny_model("olmoe", vocab_size=VOCAB).train(),
                      args=make_args(tmp_path / "out", max_steps=max_steps, **args),
                      train_dataset=make_dataset(), callbacks=[GrokkingHFCallback(monitor)])
    trainer.train(resume_from_checkpoint=resume)
    assert monitor.jsonl_path is not None
    return trainer


def test_plain_loop_runs_get_their_own_folders(tmp_path, monkeypatch, olmoe):
    monkeypatch.chdir(tmp_path)
    first = build_monitor(make_probe(), every=1, async_metrics=False)
    assert not (tmp_path / "grokmon_out").exists()  # nothing is made before the first probe
    first.step(olmoe, 1)
    first.close()
    second = build_monitor(make_probe(), every=1, async_metrics=False)
    second.step(olmoe, 1)
    second.step(olmoe, 2)
    second.close()
    assert first.jsonl_path.resolve() == (tmp_path / "grokmon_out" / "run-1" / "grokmon.jsonl").resolve()
    assert second.jsonl_path.resolve() == (tmp_path / "grokmon_out" / "run-2" / "grokmon.jsonl").resolve()
    assert _steps(first.jsonl_path) == [1] and _steps(second.jsonl_path) == [1, 2]
    assert (tmp_path / "grokmon_out" / "run-2" / "probe.pt").exists()


def test_trainer_runs_and_resume(tmp_path):
    root = tmp_path / "out" / "grokmon"
    _train(tmp_path, max_steps=7, save_strategy="steps", save_steps=4)  # run 1: checkpoint-4, lost steps 5-7
    assert _steps(root / "run-1" / "grokmon.jsonl") == [0, 2, 4, 6]

    # the same script again, from scratch: a new record, the first one untouched
    _train(tmp_path, max_steps=4, save_strategy="no")
    assert _steps(root / "run-2" / "grokmon.jsonl") == [0, 2, 4]
    assert _steps(root / "run-1" / "grokmon.jsonl") == [0, 2, 4, 6]

    # a resume from run 1's checkpoint continues run 1's record (the checkpoint names it), not run 2's
    _train(tmp_path, max_steps=10, resume=str(tmp_path / "out" / "checkpoint-4"), save_strategy="no")
    assert _steps(root / "run-1" / "grokmon.jsonl") == [0, 2, 4, 6, 8, 10]
    assert _steps(root / "run-2" / "grokmon.jsonl") == [0, 2, 4]
    assert sorted(p.name for p in root.iterdir()) == ["run-1", "run-2"]


def test_step_after_close_warns_and_counts(tmp_path, olmoe):
    monitor = build_monitor(make_probe(), every=1, output_dir=str(tmp_path), async_metrics=False)
    monitor.step(olmoe, 1)
    monitor.close()
    with pytest.warns(RuntimeWarning, match=r"step after close failed.*called after monitor.close\(\)"):
        assert monitor.step(olmoe, 2) == {}
    assert monitor.errors == 1
    assert _steps(tmp_path / "grokmon.jsonl") == [1]
    raising = build_monitor(make_probe(), every=1, jsonl=False, on_error="raise")
    raising.close()
    with pytest.raises(GrokmonError, match="make a new GrokkingMonitor"):
        raising.probe_now(olmoe, 1)


def test_a_monitor_dropped_without_close_writes_every_probe_and_frees_its_record(tmp_path, olmoe):
    path = tmp_path / "grokmon.jsonl"
    monitor = build_monitor(make_probe(), every=1, jsonl=str(path))  # metrics on the background worker
    for step in range(1, 6):
        monitor.step(olmoe, step)
    del monitor
    gc.collect()
    assert _steps(path) == [1, 2, 3, 4, 5]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the lock is free: no "already being written" fallback
        JsonlSink(path).close()
