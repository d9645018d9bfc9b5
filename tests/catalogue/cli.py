"""The error catalogue's cases: CLI, report, plots (see tests/test_error_catalogue.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grokmon.errors import ConfigError, GrokmonError

from catalogue.inputs import llama, tiny_probe
from catalogue.registry import case


@case("cli-checkpoint-step-unknown", GrokmonError, "cannot tell the step of checkpoint")
def _(tmp, mp):
    from grokmon.cli import checkpoint_step

    (tmp / "final").mkdir()
    checkpoint_step(tmp / "final")


@case("cli-trainer-state-not-json", GrokmonError, "has no readable global_step")
def _(tmp, mp):
    from grokmon.cli import checkpoint_step

    (tmp / "checkpoint-7").mkdir()
    (tmp / "checkpoint-7" / "trainer_state.json").write_text("{truncated")
    checkpoint_step(tmp / "checkpoint-7")


@case("cli-trainer-state-no-global-step", GrokmonError, "trainer_state.json has no readable global_step (KeyError")
def _(tmp, mp):
    from grokmon.cli import checkpoint_step

    (tmp / "checkpoint-7").mkdir()
    (tmp / "checkpoint-7" / "trainer_state.json").write_text(json.dumps({"epoch": 1.0}))
    checkpoint_step(tmp / "checkpoint-7")


@case("cli-scan-out-is-a-run", GrokmonError, "is not a grokmon scan record: --out already holds a grokmon.jsonl")
def _(tmp, mp):
    from grokmon.cli import scan

    tiny_probe().save(tmp / "probe.pt")
    (tmp / "checkpoint-7").mkdir()
    (tmp / "run").mkdir()
    (tmp / "run" / "grokmon.jsonl").write_text(json.dumps({"step": 5, "metrics": {"pathway_distance": 0.5}}) + "\n")
    scan([tmp / "checkpoint-7"], tmp / "probe.pt", tmp / "run", progress=False)


@case("cli-checkpoint-not-a-directory", GrokmonError, "is not a directory: pass saved Hugging Face checkpoint")
def _(tmp, mp):
    from grokmon.cli import scan

    tiny_probe().save(tmp / "probe.pt")
    (tmp / "checkpoint-7").write_text("weights")
    scan([tmp / "checkpoint-7"], tmp / "probe.pt", tmp / "out", progress=False)


@case("cli-checkpoint-no-config", GrokmonError, "has no config.json: it is not a saved Hugging Face model")
def _(tmp, mp):
    from grokmon.cli import scan

    tiny_probe().save(tmp / "probe.pt")
    (tmp / "checkpoint-7").mkdir()
    scan([tmp / "checkpoint-7"], tmp / "probe.pt", tmp / "out", progress=False)


@case("cli-report-missing-jsonl", GrokmonError, "does not exist: pass the grokmon.jsonl")
def _(tmp, mp):
    from grokmon.cli import report

    report(tmp / "missing.jsonl", tmp / "plots")


@case("cli-corpus-missing", GrokmonError, "does not exist")
def _(tmp, mp):
    from grokmon.cli import build_probe

    build_probe(tmp / "missing.txt", "tokenizer", tmp / "probe.pt", n=2, seq_len=8)


@case("cli-corpus-too-small", GrokmonError, "fewer than --n")
def _(tmp, mp):
    from grokmon.cli import build_probe

    (tmp / "corpus.txt").write_text("one sample\nanother sample\n")
    build_probe(tmp / "corpus.txt", "tokenizer", tmp / "probe.pt", n=5, seq_len=8)


@case("cli-corpus-line-not-json", GrokmonError, "line 2 of")
def _(tmp, mp):
    from grokmon.cli import build_probe

    (tmp / "corpus.jsonl").write_text('{"text": "one sample"}\nnot json\n')
    try:
        build_probe(tmp / "corpus.jsonl", "tokenizer", tmp / "probe.pt", n=1, seq_len=8)
    except GrokmonError as error:
        assert "is not JSON" in str(error)
        raise


@case("cli-corpus-row-without-text-key", GrokmonError, "has no 'text' field (found ['body']): pass --text-key")
def _(tmp, mp):
    from grokmon.cli import build_probe

    (tmp / "corpus.jsonl").write_text('{"body": "one sample"}\n')
    build_probe(tmp / "corpus.jsonl", "tokenizer", tmp / "probe.pt", n=1, seq_len=8)


@case("cli-probe-n-not-positive", GrokmonError, "--n must be a positive number of samples, got -1")
def _(tmp, mp):
    from grokmon.cli import build_probe

    (tmp / "corpus.txt").write_text("one sample\nanother sample\n")
    build_probe(tmp / "corpus.txt", "tokenizer", tmp / "probe.pt", n=-1, seq_len=8)


@case("cli-tokenizer-missing", GrokmonError, "(no such folder): pass --tokenizer a folder saved with")
def _(tmp, mp):
    from grokmon.cli import build_probe

    (tmp / "corpus.txt").write_text("one sample\nanother sample\n")
    build_probe(tmp / "corpus.txt", str(tmp / "no-tokenizer"), tmp / "probe.pt", n=2, seq_len=8)


@case("plots-matplotlib-missing", ConfigError, "plots need matplotlib")
def _(tmp, mp):
    from grokmon.plots import plot_metrics

    mp.setitem(sys.modules, "matplotlib", None)
    plot_metrics([(1, {"pathway_distance": 0.5})], tmp)


def scan_one(tmp: Path, checkpoint: Path, *, skipped_as: str | None = None) -> None:
    """``grokmon scan`` of one checkpoint with the tiny probe; ``skipped_as``: the type it must be skipped with."""
    from grokmon.cli import scan

    tiny_probe().save(tmp / "probe.pt")
    try:
        scan([checkpoint], tmp / "probe.pt", tmp / "out", progress=False)
    except GrokmonError as error:
        if skipped_as is not None:
            assert f"skipped {checkpoint}: {skipped_as}: " in str(error), str(error)
        raise


@case("cli-checkpoint-not-found", GrokmonError, "checkpoint(s) not found:")
def _(tmp, mp):
    scan_one(tmp, tmp / "nope")


@case("cli-dense-checkpoint-skipped", GrokmonError, "no MoE router found in LlamaForCausalLM")
def _(tmp, mp):
    llama().save_pretrained(tmp / "checkpoint-5")
    scan_one(tmp, tmp / "checkpoint-5", skipped_as="RouterNotFoundError")


@case("cli-probe-vocab-skipped", GrokmonError, "tokenizer/vocab mismatch")
def _(tmp, mp):
    from moe_models import tiny_model

    tiny_model("mixtral", num_layers=1, num_experts=4, vocab_size=16).save_pretrained(tmp / "checkpoint-5")
    scan_one(tmp, tmp / "checkpoint-5", skipped_as="ProbeError")


@case("cli-checkpoint-unloadable", GrokmonError, "checkpoints could not be scanned; the ... others are in "
      "... grokmon.jsonl and grokmon.csv: ... skipped ... : ... :")
def _(tmp, mp):
    (tmp / "checkpoint-30").mkdir()
    (tmp / "checkpoint-30" / "config.json").write_text("{not json")
    scan_one(tmp, tmp / "checkpoint-30")


@case("plots-no-records", ConfigError, "no records to plot: the JSONL file is empty or has no metric lines")
def _(tmp, mp):
    from grokmon.plots import plot_metrics

    plot_metrics([], tmp)


@case("plots-metric-not-in-records", ConfigError, "metric 'nope' is not in the records; found: [")
def _(tmp, mp):
    from grokmon.plots import plot_metrics

    plot_metrics([(1, {"pathway_distance": 0.5})], tmp, metrics=["nope"])
