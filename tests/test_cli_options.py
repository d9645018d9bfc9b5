"""The CLI explains itself: help for every option, plain descriptions, --version, the metric options
of scan, probe --min-length, and clear errors for a missing device or a non-text corpus field."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import transformers as tf
from moe_models import tiny_model

import grokmon
from grokmon.cli import build_parser, main
from grokmon.sinks import read_metrics
from grokmon.metrics import MetricConfig, compute_metrics
from grokmon.probe import ProbeSet
from grokmon.routing import capture_pathways


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_of_every_command_has_help_and_descriptions_are_plain() -> None:
    parser = build_parser()
    assert "`" not in parser.description
    for name, sub in _subparsers(parser).items():
        assert sub.description and "`" not in sub.description, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"grokmon {name} {action.dest} has no help text"


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"grokmon {grokmon.__version__}"


@pytest.fixture
def checkpoint(tmp_path):
    tiny_model("olmoe", seed=0).save_pretrained(tmp_path / "ckpts" / "checkpoint-10")
    ids = torch.randint(2, 128, (6, 12), generator=torch.Generator().manual_seed(0))
    ProbeSet.from_token_ids(ids, groups=["a", "a", "a", "b", "b", "b"]).save(tmp_path / "probe.pt")
    return tmp_path


def test_scan_takes_the_metric_options(checkpoint) -> None:
    out = checkpoint / "scan"
    assert main(["scan", str(checkpoint / "ckpts" / "checkpoint-10"), "--probe", str(checkpoint / "probe.pt"),
                 "--out", str(out), "--form", "token", "--extra-forms", "topk", "threshold",
                 "--threshold", "0.5", "--max-pairs", "2", "--seed", "3"]) == 0
    (step, got), = read_metrics(out / "grokmon.jsonl")
    probe = ProbeSet.load(checkpoint / "probe.pt")
    model = tf.AutoModelForCausalLM.from_pretrained(checkpoint / "ckpts" / "checkpoint-10")
    pathways = capture_pathways(model, probe.input_ids, probe.attention_mask, groups=probe.groups,
                                group_names=probe.group_names, keep_token_ids=True).pathways
    want = compute_metrics(pathways, config=MetricConfig(form="token", extra_forms=("topk", "threshold"),
                                                         threshold=0.5, max_pairs=2, seed=3))
    assert step == 10
    for key in ("pathway_distance", "pathway_distance/topk", "pathway_distance/threshold"):
        assert got[key] == pytest.approx(want[key]), key
    assert got["pathway_distance_stderr"] > 0   # 3 pairs per group, 2 sampled


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_scan_names_a_device_the_machine_lacks(checkpoint, capsys) -> None:
    assert main(["scan", str(checkpoint / "ckpts" / "checkpoint-10"), "--probe", str(checkpoint / "probe.pt"),
                 "--out", str(checkpoint / "o"), "--device", "cuda"]) == 2
    assert "asks for CUDA, which this machine does not have: use --device cpu" in capsys.readouterr().err
    assert main(["scan", str(checkpoint / "ckpts" / "checkpoint-10"), "--probe", str(checkpoint / "probe.pt"),
                 "--out", str(checkpoint / "o"), "--device", "gpu0"]) == 2
    assert "is not a device" in capsys.readouterr().err


def test_probe_min_length_and_a_non_text_field(tmp_path, word_tokenizer, capsys) -> None:
    rows = [{"text": " ".join(word_tokenizer[i:i + 4])} for i in range(10)]   # 4-token samples
    (tmp_path / "short.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    args = ["probe", str(tmp_path / "short.jsonl"), "--tokenizer", str(tmp_path / "tok"), "--n", "5"]
    assert main([*args, "--out", str(tmp_path / "a.pt")]) == 2       # default min_length 8
    assert "has 4 tokens, fewer than --min-length 8 (10 lines of the corpus" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b.pt"), "--min-length", "4"]) == 0
    assert ProbeSet.load(tmp_path / "b.pt").input_ids.shape == (5, 4)
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps({"text": i}) for i in range(10)))
    assert main(["probe", str(tmp_path / "bad.jsonl"), "--tokenizer", str(tmp_path / "tok"), "--n", "5",
                 "--out", str(tmp_path / "c.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("grokmon: error: line 1 of") and "has a int in its 'text' field, not text" in err


def test_report_repairs_a_cut_off_record_and_names_bad_lines(tmp_path, capsys) -> None:
    cut = tmp_path / "cut.jsonl"    # a crashed run: the last line was never finished
    cut.write_text('{"step": 0, "metrics": {"grokmon/pathway_distance": 0.5}}\n'
                   '{"step": 1, "metrics": {"grokmon/pathway_distance": 0.4}}\n{"step": 2, "metr')
    assert main(["report", str(cut), "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "report.html").is_file()
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text('{"step": 0, "metrics": {}}\ngarbage\n{"step": 2, "metrics": {}}\n')
    assert main(["report", str(garbled), "--out", str(tmp_path / "b")]) == 2
    assert "grokmon: error: line 2 of" in capsys.readouterr().err
    badstep = tmp_path / "badstep.jsonl"
    badstep.write_text('{"step": "x", "metrics": {"grokmon/pathway_distance": 0.5}}\n')
    assert main(["report", str(badstep), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "line 1 of" in err and "without a numeric 'step'" in err


def test_scan_skips_unreadable_checkpoints_and_writes_the_others(checkpoint, capsys) -> None:
    ckpts = checkpoint / "ckpts"
    tiny_model("olmoe", seed=1).save_pretrained(ckpts / "checkpoint-20")
    weights = ckpts / "checkpoint-20" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])              # truncated weights
    tiny_model("olmoe", seed=2).save_pretrained(ckpts / "checkpoint-30")
    (ckpts / "checkpoint-30" / "config.json").write_text("{not json")  # a broken config
    out = checkpoint / "scan"
    capsys.readouterr()  # save_pretrained's progress bars
    code = main(["scan", *(str(ckpts / f"checkpoint-{s}") for s in (10, 20, 30)),
                 "--probe", str(checkpoint / "probe.pt"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "grokmon: error: 2 of 3 checkpoints could not be scanned; the 1 others are in" in err
    skipped = [line.strip() for line in err.splitlines() if line.strip().startswith("skipped ")]
    assert len(skipped) == 2 and "checkpoint-20: " in skipped[0] and "checkpoint-30: " in skipped[1]
    assert "Traceback" not in err
    assert [step for step, _ in read_metrics(out / "grokmon.jsonl")] == [10]
    assert (out / "grokmon.csv").read_text().splitlines()[1].startswith("10,")
