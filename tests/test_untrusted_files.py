"""No file a user hands grokmon can run code: every load is ``weights_only=True`` (issue 20, item 1).

Each path that reads a ``torch.save`` file back is fed a crafted pickle whose unpickling would create
a marker file. The load is refused with :class:`UnsafeFileError` (the HF resume warns, counts and
trains on), and the marker never appears. Genuine files written by grokmon still load.
"""

from __future__ import annotations

import pathlib
import warnings

import pytest
import torch
from moe_models import tiny_model
from test_hf_trainer import VOCAB, make_args, make_dataset, make_probe
from transformers import Trainer

from grokmon import GrokkingHFCallback, GrokkingMonitor, MonitorConfig, ProbeSet
from grokmon.errors import GrokmonError, UnsafeFileError
from grokmon.integrations.hf import PATHWAYS_FILE
from grokmon.pathways import Pathways


class _Payload:
    """Unpickling this calls ``Path(marker).touch()``: code from the file."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _crafted(path: pathlib.Path, marker: pathlib.Path, wrap=lambda payload: payload) -> pathlib.Path:
    torch.save(wrap(_Payload(marker)), path)
    # the crafted file really runs code under weights_only=False (so the refusal below means something)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path


def test_monitor_load_refuses_code(tmp_path, make_monitor):
    monitor = make_monitor(every=1)
    marker = tmp_path / "ran"
    path = _crafted(tmp_path / "state.pt", marker,
                    lambda p: {"format": "grokmon.monitor", "version": 2, "state": {"x": p}})
    with pytest.raises(UnsafeFileError, match="objects other than tensors and plain data"):
        monitor.load(path)
    assert not marker.exists()


def test_pathways_load_refuses_code(tmp_path):
    marker = tmp_path / "ran"
    path = _crafted(tmp_path / "pathways.pt", marker)
    with pytest.raises(UnsafeFileError, match="Pathways.save"):
        Pathways.load(path)
    assert not marker.exists()


def test_probe_load_refuses_code(tmp_path):
    marker = tmp_path / "ran"
    path = _crafted(tmp_path / "probe.pt", marker, lambda p: {"format": "grokmon.probe", "input_ids": p})
    with pytest.raises(UnsafeFileError):
        ProbeSet.load(path)
    assert not marker.exists()


def test_genuine_files_still_load(tmp_path, make_monitor, olmoe, probe):
    monitor = make_monitor(every=1, async_metrics=False)
    monitor.step(olmoe, 1)
    monitor.step(olmoe, 2)
    saved = monitor.save(tmp_path / "state.pt")
    again = make_monitor(every=1, jsonl=False)
    again.load(saved)
    assert again.last_probe_step == 2
    assert torch.equal(again.pathways_state()["mean_weights"], monitor.pathways_state()["mean_weights"])
    Pathways.from_state_dict(monitor.pathways_state()).save(tmp_path / "p.pt")
    assert torch.equal(Pathways.load(tmp_path / "p.pt").mean_weights, monitor.pathways_state()["mean_weights"])
    probe.save(tmp_path / "probe.pt")
    assert ProbeSet.load(tmp_path / "probe.pt").fingerprint() == probe.fingerprint()


def _hf_monitor(tmp_path) -> GrokkingMonitor:
    return GrokkingMonitor(make_probe(),
                           MonitorConfig(every=2, output_dir=str(tmp_path / "grokmon_out"), jsonl=str(tmp_path / "grokmon.jsonl"), on_error="warn"))


@pytest.mark.parametrize("damage", ["crafted", "truncated", "not_a_dict", "state_not_json"])
def test_hf_resume_with_a_bad_pathways_file_trains_on(tmp_path, damage):
    """A crafted, truncated or foreign ``grokmon_pathways.pt``, or a broken ``grokmon_state.json``, warns,
    counts and never stops training (issue 20, item 7)."""
    monitor = _hf_monitor(tmp_path)
    args = make_args(tmp_path / "out", max_steps=4, save_strategy="steps", save_steps=4)
    Trainer(model=tiny_model("olmoe", vocab_size=VOCAB).train(), args=args, train_dataset=make_dataset(),
            callbacks=[GrokkingHFCallback(monitor)]).train()
    monitor.close()
    ckpt = tmp_path / "out" / "checkpoint-4"
    pathways_file = ckpt / PATHWAYS_FILE
    assert pathways_file.exists()
    marker = tmp_path / "ran"
    if damage == "crafted":
        _crafted(pathways_file, marker, lambda p: {"mean_weights": p})
    elif damage == "truncated":
        pathways_file.write_bytes(pathways_file.read_bytes()[:100])
    elif damage == "not_a_dict":
        torch.save([1, 2, 3], pathways_file)
    else:
        (ckpt / "grokmon_state.json").write_text("{not json")

    monitor = _hf_monitor(tmp_path)
    args = make_args(tmp_path / "out", max_steps=6, save_strategy="no")
    trainer = Trainer(model=tiny_model("olmoe", vocab_size=VOCAB).train(), args=args,
                      train_dataset=make_dataset(), callbacks=[GrokkingHFCallback(monitor)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(resume_from_checkpoint=str(ckpt))
    assert trainer.state.global_step == 6
    assert not marker.exists()
    assert monitor.errors >= 1
    where = "resume state" if damage == "state_not_json" else "resume pathways"
    assert any(f"{where} failed" in str(w.message) for w in caught)
    monitor.close()


def test_unsafe_file_error_is_a_grokmon_error():
    assert issubclass(UnsafeFileError, GrokmonError)


def test_no_load_in_the_package_or_examples_can_run_code():
    """Every ``torch.load`` in grokmon/ and examples/ passes ``weights_only=True`` (DESIGN.md's rule)."""
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    offenders = []
    for path in [*root.joinpath("grokmon").rglob("*.py"), *root.joinpath("examples").rglob("*.py")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"torch\.load\(", line) and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == []
