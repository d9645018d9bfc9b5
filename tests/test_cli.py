"""grokmon scan / report / probe on real saved checkpoints, a real tokenizer and the JSONL they write."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from moe_models import tiny_model

from grokmon.cli import checkpoint_step, main
from grokmon.sinks import read_metrics
from grokmon.metrics import MetricConfig, compute_metrics
from grokmon.probe import ProbeSet
from grokmon.routing import capture_pathways


@pytest.fixture
def run_dir(tmp_path):
    for step, seed in ((20, 1), (10, 0)):
        tiny_model("olmoe", seed=seed).save_pretrained(tmp_path / "ckpts" / f"checkpoint-{step}")
    ids = torch.randint(2, 128, (6, 12), generator=torch.Generator().manual_seed(0))
    ProbeSet.from_token_ids(ids, groups=["a", "a", "a", "b", "b", "b"]).save(tmp_path / "probe.pt")
    return tmp_path


def test_scan_writes_metrics_per_checkpoint_and_resumes(run_dir, capsys) -> None:
    ckpts = [str(run_dir / "ckpts" / f"checkpoint-{s}") for s in (20, 10)]
    out = run_dir / "scan"
    assert main(["scan", *ckpts, "--probe", str(run_dir / "probe.pt"), "--out", str(out), "--per-expert"]) == 0
    records = read_metrics(out / "grokmon.jsonl")
    assert [step for step, _ in records] == [10, 20]
    # values equal a direct capture + compute on the same checkpoint
    probe = ProbeSet.load(run_dir / "probe.pt")
    model = tf.AutoModelForCausalLM.from_pretrained(ckpts[1])
    direct = compute_metrics(
        capture_pathways(model, probe.input_ids, probe.attention_mask, groups=probe.groups,
                         group_names=probe.group_names).pathways,
        config=MetricConfig(per_group=True, per_expert=True),
    )
    assert records[0][1]["pathway_distance"] == pytest.approx(direct["pathway_distance"])
    assert {k for k in records[0][1] if "/expert/" in k} == {k for k in direct if "/expert/" in k} != set()
    assert records[0][1]["group/a/pathway_distance"] == pytest.approx(direct["group/a/pathway_distance"])
    assert "pathway_drift" in records[1][1]
    header = (out / "grokmon.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "step" and "pathway_distance" in header
    # the configuration line comes first: the settings, the probe and the versions
    first = json.loads((out / "grokmon.jsonl").read_text().splitlines()[0])
    assert first["config"]["probe_fingerprint"] == probe.fingerprint()
    assert first["config"]["probe_groups"] == {"a": 3, "b": 3} and first["config"]["source"] == "grokmon scan"
    assert first["config"]["metrics"]["per_expert"] is True and first["config"]["torch"] == torch.__version__
    assert first["config"]["probe_file"] == str((run_dir / "probe.pt").resolve())
    # a second scan skips what is done, says so, and writes no new lines
    capsys.readouterr()
    lines = (out / "grokmon.jsonl").read_text().count("\n")
    assert main(["scan", *ckpts, "--probe", str(run_dir / "probe.pt"), "--out", str(out), "--per-expert"]) == 0
    assert (out / "grokmon.jsonl").read_text().count("\n") == lines
    err = capsys.readouterr().err
    assert "2 of 2 checkpoints are already in" in err and "skipped: checkpoint-10, checkpoint-20" in err

    assert main(["report", str(out / "grokmon.jsonl"), "--out", str(run_dir / "page")]) == 0
    assert {p.name for p in (run_dir / "page").iterdir()} == {"report.html", "overview.png"}
    page = (run_dir / "page" / "report.html").read_text()
    # no probe.pt beside the scan's record, but the configuration line names the --probe file
    assert "no <code>probe.pt</code> beside the record" not in page
    assert f"fingerprint <code title=\"{probe.fingerprint()}\">" in page and "from the configuration line" in page
    assert 'id="config-record"' in page and "no configuration line" not in page
    assert main(["report", str(out / "grokmon.jsonl"), "--out", str(run_dir / "plots"), "--pngs"]) == 0
    names = {p.name for p in (run_dir / "plots").iterdir()}
    assert {"report.html", "overview.png", "pathway_distance.png", "expert_load.png"} <= names


def test_scan_errors_are_clear(run_dir, capsys) -> None:
    probe = str(run_dir / "probe.pt")
    assert main(["scan", str(run_dir / "nope"), "--probe", probe, "--out", str(run_dir / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    llama = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=4,
                                               num_key_value_heads=2))
    llama.save_pretrained(run_dir / "dense" / "checkpoint-5")
    assert main(["scan", str(run_dir / "dense" / "checkpoint-5"), "--probe", probe, "--out", str(run_dir / "o")]) == 2
    assert "no MoE router" in capsys.readouterr().err
    tiny_model("olmoe", vocab_size=64).save_pretrained(run_dir / "small" / "step-7")
    assert main(["scan", str(run_dir / "small" / "step-7"), "--probe", probe, "--out", str(run_dir / "o")]) == 2
    assert "tokenizer/vocab mismatch" in capsys.readouterr().err


def test_checkpoint_step_from_name_or_trainer_state(tmp_path) -> None:
    (tmp_path / "checkpoint-300").mkdir()
    assert checkpoint_step(tmp_path / "checkpoint-300") == 300
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "trainer_state.json").write_text(json.dumps({"global_step": 900}))
    assert checkpoint_step(tmp_path / "final") == 900


def test_probe_command_builds_a_probe_from_a_jsonl_corpus(tmp_path, word_tokenizer) -> None:
    words = word_tokenizer
    rows = [{"text": " ".join(words[i:i + 10]), "domain": "x" if i % 2 else "y"} for i in range(20)]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "probe.pt"
    assert main(["probe", str(tmp_path / "corpus.jsonl"), "--tokenizer", str(tmp_path / "tok"), "--out", str(out),
                 "--n", "8", "--seq-len", "10", "--group-key", "domain"]) == 0
    probe = ProbeSet.load(out)
    assert len(probe) == 8 and probe.input_ids.shape[1] == 10 and set(probe.group_names) <= {"x", "y"}


CORPUS = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples" / "data" / "corpus.jsonl"


def test_probe_command_draws_what_the_api_draws_on_the_example_corpus(tmp_path, word_tokenizer, capsys) -> None:
    """``grokmon probe --group-key`` is stratified exactly as ``ProbeSet.from_dataset(group_by=)``."""
    out = tmp_path / "probe.pt"
    argv = ["probe", str(CORPUS), "--tokenizer", str(tmp_path / "tok"), "--out", str(out), "--n", "96",
            "--seq-len", "32", "--group-key", "domain", "--min-length", "12"]
    # without --skip-short a drawn text that is too short is named by its corpus line
    assert main(argv) == 2
    err = capsys.readouterr().err
    tok = tf.AutoTokenizer.from_pretrained(tmp_path / "tok")
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    lengths = [len(tok(r["text"], truncation=True, max_length=32)["input_ids"]) for r in rows]
    short = [i + 1 for i, n in enumerate(lengths) if n < 12]
    assert short, "the test needs short lines in the corpus"
    line = int(err.split("line ")[1].split(" ")[0])
    assert line in short and f"has {lengths[line - 1]} tokens, fewer than --min-length 12" in err
    assert f"({len(short)} lines of the corpus are that short): pass --skip-short" in err

    assert main([*argv, "--skip-short"]) == 0
    printed = capsys.readouterr().out
    assert f"skipped {len(short)} of {len(rows)} texts shorter than --min-length 12 tokens" in printed
    cli = ProbeSet.load(out)
    assert cli.group_counts() == {"code": 32, "numbers": 32, "prose": 32}
    assert "96 samples (code 32, numbers 32, prose 32)" in printed
    # the API on the same rows (the short ones left out, as --skip-short does)
    kept = [{"input_ids": tok(r["text"], truncation=True, max_length=32)["input_ids"], "domain": r["domain"]}
            for r, n in zip(rows, lengths) if n >= 12]
    api = ProbeSet.from_dataset(kept, n=96, seq_len=32, seed=0, group_by="domain", min_length=12,
                                pad_token_id=tok.pad_token_id)
    assert api.group_counts() == cli.group_counts()
    assert torch.equal(api.input_ids, cli.input_ids) and api.group_names == cli.group_names
    assert torch.equal(api.groups, cli.groups)


def test_scan_defaults_are_a_live_runs() -> None:
    """``grokmon scan`` computes what a monitor with default settings computes (no scan-only defaults)."""
    import inspect

    from grokmon import MetricConfig, MonitorConfig
    from grokmon.cli import build_parser, scan

    args = build_parser().parse_args(["scan", "c", "--probe", "p", "--out", "o"])
    run, metric = MonitorConfig(), MetricConfig()
    assert args.batch_size == run.batch_size and not args.per_expert and not args.per_layer
    assert (args.form, args.threshold, args.max_pairs, args.seed) == (metric.form, metric.threshold, metric.max_pairs,
                                                                      metric.seed)
    assert inspect.signature(scan).parameters["config"].default is None  # None: MonitorConfig()
