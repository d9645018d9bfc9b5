"""The error catalogue's cases: probe (see tests/test_error_catalogue.py)."""

from __future__ import annotations

import torch

from grokmon.config import MonitorConfig
from grokmon.errors import ConfigError, ProbeError
from grokmon.probe import ProbeSet, stratified_counts

from catalogue.inputs import ids, tiny_probe
from catalogue.registry import case


@case("probe-ctor-not-tensor", ProbeError, "ProbeSet.input_ids must be a tensor")
def _(tmp, mp):
    ProbeSet([[1, 2, 3]])


@case("probe-ctor-not-2d", ProbeError, "ProbeSet.input_ids must be [N, T]")
def _(tmp, mp):
    ProbeSet(torch.ones(4, dtype=torch.long))


@case("probe-ctor-empty", ProbeError, "the probe set is empty")
def _(tmp, mp):
    ProbeSet(torch.zeros(0, 4, dtype=torch.long))


@case("probe-ctor-negative-id", ProbeError, "probe has negative token id")
def _(tmp, mp):
    ProbeSet(torch.tensor([[1, -100, 3], [1, 2, 3]]))


@case("probe-ctor-mask-shape", ProbeError, "attention_mask has shape")
def _(tmp, mp):
    ProbeSet(ids(2, 4), torch.ones(2, 3, dtype=torch.long))


@case("probe-ctor-mask-values", ProbeError, "attention_mask must hold only 0 and 1")
def _(tmp, mp):
    ProbeSet(ids(2, 4), torch.full((2, 4), 2))


@case("probe-ctor-mask-fraction", ProbeError, "must hold only 0 and 1 (1 = real token, 0 = padding), got 0.5")
def _(tmp, mp):
    ProbeSet(ids(2, 4), torch.full((2, 4), 0.5))


@case("probe-ctor-mask-empty-row", ProbeError, "has no real token (all-zero attention_mask)")
def _(tmp, mp):
    ProbeSet(ids(2, 4), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))


@case("probe-ctor-groups-length", ProbeError, "entries but the probe has")
def _(tmp, mp):
    ProbeSet(ids(4, 4), groups=torch.tensor([0, 0, 1]))


@case("probe-ctor-group-out-of-range", ProbeError, "group ids must lie in")
def _(tmp, mp):
    ProbeSet(ids(4, 4), groups=torch.tensor([0, 0, 2, 2]), group_names=("a", "b"))


@case("probe-ctor-sample-index", ProbeError, "sample_index must be [N]")
def _(tmp, mp):
    ProbeSet(ids(4, 4), sample_index=torch.zeros(3, dtype=torch.long))


@case("probe-ids-not-sequence", ProbeError, "token ids must be a sequence of ints")
def _(tmp, mp):
    ProbeSet.from_token_ids([5, 6, 7, 8])


@case("probe-ids-row-not-1d", ProbeError, "one sample's ids must be 1-D")
def _(tmp, mp):
    ProbeSet.from_token_ids([ids(2, 8)])


@case("probe-ids-tensor-3d", ProbeError, "token ids must be [N, T]")
def _(tmp, mp):
    ProbeSet.from_token_ids(ids(4, 8).reshape(2, 2, 8))


@case("probe-ids-mask-shape", ProbeError, "differs from ids")
def _(tmp, mp):
    ProbeSet.from_token_ids(ids(2, 8), attention_mask=torch.ones(2, 7, dtype=torch.long))


@case("probe-ids-mask-rows", ProbeError, "rows but there are")
def _(tmp, mp):
    ProbeSet.from_token_ids([[2] * 8, [3] * 8], attention_mask=[[1] * 8])


@case("probe-ids-row-mask-shape", ProbeError, "differs from input_ids")
def _(tmp, mp):
    ProbeSet.from_token_ids([[2] * 8], attention_mask=[[1] * 7])


@case("probe-seq-len-zero", ConfigError, "seq_len must be >= 1")
def _(tmp, mp):
    ProbeSet.from_token_ids(ids(), seq_len=0)


@case("probe-seq-len-below-min-length", ConfigError, "is below min_length")
def _(tmp, mp):
    ProbeSet.from_token_ids(ids(), seq_len=4, min_length=8)


@case("probe-groups-2d", ProbeError, "groups must be 1-D (one label per sample)")
def _(tmp, mp):
    ProbeSet.from_token_ids(ids(4, 8), groups=torch.zeros(2, 2, dtype=torch.long))


@case("probe-groups-tensor-count", ProbeError, "pass one per sample")
def _(tmp, mp):
    ProbeSet.from_token_ids(ids(4, 8), groups=torch.tensor([0, 0, 1]), group_names=["a", "b"])


@case("probe-group-label-tensor", ProbeError, "a group label must be one value per sample")
def _(tmp, mp):
    ProbeSet.from_token_ids(ids(2, 8), groups=[torch.tensor([0, 1]), torch.tensor([0, 1])])


@case("probe-group-names-with-labels", ProbeError, "group_names goes with integer group ids in a tensor")
def _(tmp, mp):
    ProbeSet.from_token_ids(ids(2, 8), groups=["a", "a"], group_names=["a"])


@case("probe-validate-vocab-nonpositive", ConfigError, "vocab_size must be positive")
def _(tmp, mp):
    tiny_probe().validate(0)


@case("probe-from-texts-empty", ProbeError, "the probe set is empty: pass at least one text")
def _(tmp, mp):
    ProbeSet.from_texts([], tokenizer=None, seq_len=8)


@case("probe-from-texts-no-tokenizer", ProbeError, "from_texts needs a Hugging Face tokenizer, got NoneType")
def _(tmp, mp):
    ProbeSet.from_texts(["a text"], tokenizer=None, seq_len=8)


@case("probe-from-texts-not-a-tokenizer", ProbeError, "not an encoding with 'input_ids'")
def _(tmp, mp):
    ProbeSet.from_texts(["a text"], tokenizer=lambda texts, **kwargs: [[5, 6, 7]], seq_len=8)


@case("probe-dataset-group-by-type", ProbeError, "needs dict rows, tuple rows with an int position")
def _(tmp, mp):
    ProbeSet.from_dataset([[2] * 8] * 4, n=2, group_by="lang")


@case("probe-dataset-text-rows", ProbeError, "is text, not token ids")
def _(tmp, mp):
    ProbeSet.from_dataset(["some text"] * 4, n=2)


@case("probe-dataloader-missing-column", ProbeError, "has no 'input_ids' key")
def _(tmp, mp):
    ProbeSet.from_dataloader([{"tokens": ids(2, 8)}], n=2)


@case("probe-dataloader-missing-group-key", ProbeError, "key to group by")
def _(tmp, mp):
    ProbeSet.from_dataloader([{"input_ids": ids(2, 8)}], n=2, group_by="lang")


@case("probe-dataloader-group-by-plain-batches", ProbeError, "needs dict or tuple batches")
def _(tmp, mp):
    ProbeSet.from_dataloader([ids(2, 8)], n=2, group_by="lang")


@case("probe-dataloader-label-count", ProbeError, "group labels for")
def _(tmp, mp):
    ProbeSet.from_dataloader([{"input_ids": ids(3, 8), "lang": ["a", "b"]}], n=2, group_by="lang")


@case("probe-stratified-n-too-large", ProbeError, "is larger than the dataset")
def _(tmp, mp):
    stratified_counts([1, 1], 3)


@case("probe-load-unreadable", ProbeError, "is not a readable grokmon probe file")
def _(tmp, mp):
    (tmp / "probe.pt").write_text("not a torch file")
    ProbeSet.load(tmp / "probe.pt")


@case("probe-load-newer-format", ProbeError, "was written by a newer grokmon")
def _(tmp, mp):
    torch.save({"format": "grokmon.probe", "version": 99}, tmp / "probe.pt")
    ProbeSet.load(tmp / "probe.pt")


@case("probe-batches-zero", ConfigError, "batch_size must be >= 1")
def _(tmp, mp):
    list(tiny_probe().batches(0))


@case("probe-monitor-one-sample", ProbeError, "the probe needs at least 2 samples")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    GrokkingMonitor(tiny_probe(n=1), MonitorConfig(every=1, jsonl=False))


@case("probe-ids-empty-list", ProbeError, "the probe set is empty")
def _(tmp, mp):
    ProbeSet.from_token_ids([])


@case("probe-ids-empty-tensor", ProbeError, "the probe set is empty")
def _(tmp, mp):
    ProbeSet.from_token_ids(torch.zeros(0, 8, dtype=torch.long))


@case("probe-ids-float-tensor", ProbeError, "input_ids must hold integer token ids, got dtype torch.float32: pass "
      "token ids, not embeddings or floats")
def _(tmp, mp):
    ProbeSet.from_token_ids(torch.rand(2, 8))


@case("probe-ids-float-in-list", ProbeError, "token ids must be integers, got 3.5: pass token ids, not text or floats")
def _(tmp, mp):
    ProbeSet.from_token_ids([[2, 3, 3.5, 4, 5, 6, 7, 8]])


@case("probe-ids-string", ProbeError, "from_token_ids got a string: use ProbeSet.from_texts(texts, tokenizer, ...)")
def _(tmp, mp):
    ProbeSet.from_token_ids("the cat sat on the mat")


@case("probe-ids-negative", ProbeError, "has negative token id -100: pass real token ids (labels use -100; "
      "input_ids must not)")
def _(tmp, mp):
    ProbeSet.from_token_ids([[2, 3, 4, -100, 5, 6, 7, 8], [2] * 8])


@case("probe-ids-shorter-than-min-length", ProbeError, "tokens, fewer than min_length=8: drop short samples, lower "
      "min_length, or use longer texts")
def _(tmp, mp):
    ProbeSet.from_token_ids([[2] * 5, [3] * 8])


@case("probe-ids-ragged-without-pad", ProbeError, "samples have different lengths and pad_token_id=None: pass "
      "pad_token_id")
def _(tmp, mp):
    ProbeSet.from_token_ids([[2] * 8, [3] * 9], pad_token_id=None)


@case("probe-group-labels-count", ProbeError, "groups has ... labels but there are ... samples: pass one label per "
      "sample")
def _(tmp, mp):
    ProbeSet.from_token_ids(ids(4, 8), groups=["a", "a", "b"])


@case("probe-group-of-one", ProbeError, "group 'b' has 1 sample: pathway distance needs pairs; add samples or merge "
      "the group")
def _(tmp, mp):
    ProbeSet.from_token_ids(ids(4, 8), groups=["a", "a", "a", "b"])


@case("probe-group-label-none", ProbeError, "a group label is None: give every sample a group (or put the unlabelled "
      "ones in 'other')")
def _(tmp, mp):
    ProbeSet.from_token_ids(ids(4, 8), groups=["a", "a", None, "b"])


@case("probe-validate-vocab-mismatch", ProbeError, "tokenizer/vocab mismatch: probe has token id ... but the model's "
      "vocabulary has ... ids; build the probe with the model's tokenizer")
def _(tmp, mp):
    tiny_probe().validate(16)


@case("probe-from-texts-one-string", ProbeError, "from_texts takes a list of texts, got one string: wrap it in a list")
def _(tmp, mp):
    ProbeSet.from_texts("the cat sat", tokenizer=lambda texts, **kwargs: {"input_ids": [[5, 6, 7]]}, seq_len=8)


@case("probe-dataset-no-len", ProbeError, "has no len(): use ProbeSet.from_dataloader for iterable datasets")
def _(tmp, mp):
    ProbeSet.from_dataset(iter([[2] * 8] * 4), n=2)


@case("probe-dataset-n-zero", ProbeError, "n must be a positive int (the probe size), got 0")
def _(tmp, mp):
    ProbeSet.from_dataset([[2] * 8] * 4, n=0)


@case("probe-dataset-n-too-large", ProbeError, "n=11 is larger than the dataset (10 samples): lower n or use more data")
def _(tmp, mp):
    ProbeSet.from_dataset([[2] * 8] * 10, n=11)


@case("probe-dataloader-n-too-large", ProbeError, "is larger than the dataloader (")
def _(tmp, mp):
    ProbeSet.from_dataloader([ids(2, 8)], n=5)


@case("probe-dataset-missing-column", ProbeError, "has no 'tokens' field (fields: ...): tokenize the dataset or pass "
      "column=")
def _(tmp, mp):
    ProbeSet.from_dataset([{"input_ids": [2] * 8}] * 4, n=2, column="tokens")


@case("probe-dataset-supervision-unseen", RuntimeWarning, "grokmon: ... probe samples keep none of their supervised "
      "tokens (labels != -100) within seq_len=...: the probe loss cannot see what the model is trained on, so the stages "
      "read from it say nothing about the task; raise seq_len or probe whole training sequences (prompt and answer)")
def _(tmp, mp):
    rows = [{"input_ids": list(range(i, i + 10)), "labels": [-100] * 9 + [i + 9]} for i in range(2)]
    ProbeSet.from_dataset(rows, n=2, seq_len=8)


@case("probe-dataset-missing-group-field", ProbeError, "has no field 'lang' to group by; its fields are [")
def _(tmp, mp):
    ProbeSet.from_dataset([{"input_ids": [2] * 8}] * 4, n=2, group_by="lang")


@case("probe-dataset-row-too-short", ProbeError, "dataset row ... tokens, fewer than min_length=")
def _(tmp, mp):
    ProbeSet.from_dataset([{"input_ids": [2] * 5}] * 4, n=2)


@case("probe-load-missing", ProbeError, "no probe file at ...: save one with ProbeSet.save(path) or rebuild the probe")
def _(tmp, mp):
    ProbeSet.load(tmp / "missing.pt")


@case("probe-load-other-torch-file", ProbeError, "is not a grokmon probe file (written by ProbeSet.save)")
def _(tmp, mp):
    torch.save({"x": 1}, tmp / "probe.pt")
    ProbeSet.load(tmp / "probe.pt")


@case("probe-load-edited", ProbeError, "is corrupted: its content does not match its stored fingerprint; rebuild the "
      "probe")
def _(tmp, mp):
    tiny_probe().save(tmp / "probe.pt")
    saved = torch.load(tmp / "probe.pt", weights_only=True)
    saved["input_ids"][0, 0] += 1  # the content changes, its stored fingerprint does not
    torch.save(saved, tmp / "probe.pt")
    ProbeSet.load(tmp / "probe.pt")


@case("probe-load-other-fingerprint", ProbeError, "holds a different probe (...) than the run was started with (...): "
      "restore the run's own probe file")
def _(tmp, mp):
    tiny_probe().save(tmp / "probe.pt")
    ProbeSet.load(tmp / "probe.pt", expected_fingerprint=tiny_probe(n=6).fingerprint())


@case("probe-shard-rank", ConfigError, "shard needs 0 <= rank < world_size, got rank=3, world_size=3")
def _(tmp, mp):
    tiny_probe().shard(3, 3)


@case("probe-shard-of-shard", ConfigError, "this probe is already a shard: shard the full probe instead")
def _(tmp, mp):
    tiny_probe().shard(0, 2).shard(0, 2)


@case("probe-save-to-a-folder", ProbeError, "is a folder: pass a file path for the probe (e.g. .../probe.pt)")
def _(tmp, mp):
    try:
        tiny_probe().save(tmp)
    finally:
        assert not tmp.with_name(tmp.name + ".tmp").exists()
