"""The error catalogue's cases: CLI, report, plots (see tests/test_error_catalogue.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grokmon.errors import ConfigError, GrokmonError

from catalogue.inputs import llama, tiny_probe
from catalogue.registry import case
from optional import need


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


@case("cli-trainer-state-step-overflow", GrokmonError, "trainer_state.json has no readable global_step (OverflowError: "
      "cannot convert float infinity to integer): restore")
def _(tmp, mp):
    from grokmon.cli import checkpoint_step

    (tmp / "checkpoint-7").mkdir()
    (tmp / "checkpoint-7" / "trainer_state.json").write_text('{"global_step": 1e400}')
    checkpoint_step(tmp / "checkpoint-7")


@case("cli-scan-out-is-a-file", GrokmonError, "--out ... is a file: pass a folder for grokmon.jsonl and grokmon.csv")
def _(tmp, mp):
    from grokmon.cli import scan

    (tmp / "taken").write_text("x")
    scan([tmp / "checkpoint-7"], tmp / "probe.pt", tmp / "taken", progress=False)


@case("cli-report-folder-without-jsonl", GrokmonError, "is a folder without a grokmon.jsonl: pass the grokmon.jsonl a "
      "run or a scan wrote, or its folder")
def _(tmp, mp):
    from grokmon.cli import report

    (tmp / "empty").mkdir()
    report(tmp / "empty", tmp / "plots")


@case("cli-corpus-not-utf8", GrokmonError, "is not UTF-8 text (line 2, byte 12: b'\\xe9'): convert it to UTF-8 "
      "(e.g. iconv -f latin1 -t utf-8)")
def _(tmp, mp):
    from grokmon.cli import build_probe

    (tmp / "corpus.txt").write_bytes(b"one line\ncaf\xe9\n")
    build_probe(tmp / "corpus.txt", "tokenizer", tmp / "probe.pt", n=1, seq_len=8)


@case("cli-probe-out-is-a-folder", GrokmonError, "--out ... is a folder: pass the probe file to write (e.g. "
      ".../probe.pt)")
def _(tmp, mp):
    from grokmon.cli import build_probe

    (tmp / "corpus.txt").write_text("one sample\nanother sample\n")
    (tmp / "out").mkdir()
    try:
        build_probe(tmp / "corpus.txt", "tokenizer", tmp / "out", n=1, seq_len=8)
    finally:
        assert not (tmp / "out.tmp").exists()


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


def _word_tokenizer(folder: Path) -> None:
    """A word-level tokenizer (``w0``..``w9``) saved to ``folder``."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i + 2 for i in range(10)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tf.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)


@case("cli-probe-text-too-short", GrokmonError, "line 4 of ... has 2 tokens, fewer than --min-length 4 (1 line of the "
      "corpus is that short): pass --skip-short to leave them out of the draw, or lower --min-length")
def _(tmp, mp):
    from grokmon.cli import build_probe

    _word_tokenizer(tmp / "tok")
    (tmp / "corpus.txt").write_text("w1 w2 w3 w4 w5\nw1 w2 w3 w4\n\nw1 w2\n")
    build_probe(tmp / "corpus.txt", str(tmp / "tok"), tmp / "probe.pt", n=3, seq_len=8, min_length=4)


@case("cli-probe-too-few-after-skip", GrokmonError, "the corpus has 2 texts of at least --min-length 4 tokens, fewer "
      "than --n 3: lower --n or --min-length")
def _(tmp, mp):
    from grokmon.cli import build_probe

    _word_tokenizer(tmp / "tok")
    (tmp / "corpus.txt").write_text("w1 w2 w3 w4 w5\nw1 w2 w3 w4\n\nw1 w2\n")
    build_probe(tmp / "corpus.txt", str(tmp / "tok"), tmp / "probe.pt", n=3, seq_len=8, min_length=4, skip_short=True)


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


@case("plots-no-records", ConfigError, "no metric values to plot: the JSONL file is empty, or has no metric lines with a finite value")
def _(tmp, mp):
    from grokmon.plots import plot_metrics

    plot_metrics([], tmp)


@case("plots-metric-not-in-records", ConfigError, "metric 'nope' is not in the records; found: [")
def _(tmp, mp):
    need("matplotlib")
    from grokmon.plots import plot_metrics

    plot_metrics([(1, {"pathway_distance": 0.5})], tmp, metrics=["nope"])
