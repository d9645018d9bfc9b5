"""The error catalogue (docs/errors.md): every catalogued bad input raises its type and message.

Every row of the page's tables (all but the table of error types) names at least one case of
``CASES`` as ``tests/test_error_catalogue.py::test_error[<id>]``; it may name an older test in
another file as well, but the case is what checks the row. A case builds a tiny bad input and must
raise ``exception`` with ``fragment`` in its message:

* ``fragment`` is literal text, except that ``...`` stands for any text: ``"no probe file at
  ...: save one"`` checks the two parts, in this order. The row's message cell must show the
  same parts in the same order, so the page quotes what the code says.
* ``exception`` is an exception type (``pytest.raises``; it must be a ``GrokmonError``), or a
  ``Warning`` subclass for the few rows where grokmon warns and goes on (``pytest.warns``: the
  category and the message are checked the same way).

``test_docs_rows_show_each_case_type_and_message`` fails for a row without a case, for a case without a row,
and for a row that does not show its cases' type and message, so page and code cannot drift apart.
"""

from __future__ import annotations

import json
import re
import struct
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as tf
from torch import nn

from grokmon.config import MonitorConfig
from grokmon.errors import (ConfigError, GrokmonError, ProbeError, RouterNotFoundError, RoutingError, SinkError,
                            UnsafeFileError)
from grokmon.probe import ProbeSet, stratified_counts
from grokmon.routing import capture_pathways, register_router, unregister_router
from grokmon.routing.types import RouterOutput

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "errors.md"
THIS = Path(__file__).resolve()

# id -> (exception type, literal message fragment, trigger(tmp_path, monkeypatch))
CASES: dict[str, tuple[type[BaseException], str, Callable[[Path, pytest.MonkeyPatch], Any]]] = {}
GPU_ONLY: set[str] = set()


def case(case_id: str, exception: type[BaseException], fragment: str, *, gpu: bool = False):
    """Register ``trigger(tmp_path, monkeypatch)`` as the case ``case_id`` (see the module doc)."""
    def register(fn: Callable[[Path, pytest.MonkeyPatch], Any]) -> Callable[[Path, pytest.MonkeyPatch], Any]:
        assert case_id not in CASES, case_id
        CASES[case_id] = (exception, fragment, fn)
        if gpu:
            GPU_ONLY.add(case_id)
        return fn

    return register


# ---------------------------------------------------------------------------- tiny inputs


def ids(n: int = 4, t: int = 8) -> torch.Tensor:
    return (torch.arange(n * t).reshape(n, t) % 50 + 2).long()


def probe(n: int = 4, t: int = 8) -> ProbeSet:
    return ProbeSet.from_token_ids(ids(n, t), min_length=4)


def llama() -> nn.Module:
    config = tf.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                            pad_token_id=0, eos_token_id=1, bos_token_id=None)
    return tf.LlamaForCausalLM(config).eval()


class Gate(nn.Module):
    """A custom router; ``out`` turns its logits into what its forward returns."""

    def __init__(self, out: Callable[[torch.Tensor], Any] = lambda x: x, top_k: int | None = 2) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 4, bias=False)
        self.out = out
        self.top_k = top_k

    def forward(self, x: torch.Tensor) -> Any:
        return self.out(self.proj(x).reshape(-1, 4))


class RouterModel(nn.Module):
    """Embedding + a Gate called ``calls`` times per forward (no lm head: no probe loss)."""

    def __init__(self, calls: int = 1, **gate: Any) -> None:
        super().__init__()
        self.emb = nn.Embedding(64, 8)
        self.gate = Gate(**gate)
        self.calls = calls

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        h = self.emb(input_ids)
        for _ in range(self.calls):
            self.gate(h)
        return h


def capture_custom(model: nn.Module, extractor: Any = None, **kwargs: Any) -> Any:
    register_router(Gate, extractor)
    try:
        return capture_pathways(model, ids(2, 4), compute_loss=False, **kwargs)
    finally:
        unregister_router(Gate)


# ---------------------------------------------------------------------------- model / routing


@case("routing-router-did-not-run", RoutingError, "did not run during one probe forward")
def _(tmp, mp):
    capture_custom(RouterModel(calls=0))


@case("routing-router-ran-twice", RoutingError, "grokmon expects one call per forward")
def _(tmp, mp):
    capture_custom(RouterModel(calls=2))


@case("routing-extractor-wrong-rows", RoutingError, "its extractor must return one row per token")
def _(tmp, mp):
    def one_row(module, args, out):
        return RouterOutput(torch.zeros(1, 2, dtype=torch.long), torch.full((1, 2), 0.5), None, 4)

    capture_custom(RouterModel(), one_row)


@case("routing-extractor-ids-out-of-range", RoutingError, "gave expert ids outside [0, ")
def _(tmp, mp):
    def expert_seven(module, args, out):
        rows = out.shape[0]
        return RouterOutput(torch.full((rows, 2), 7), torch.full((rows, 2), 0.5), None, 4)

    capture_custom(RouterModel(), expert_seven)


@case("routing-extractor-float-ids", RoutingError, "its extractor must return integer expert_ids [tokens, k]")
def _(tmp, mp):
    def float_ids(module, args, out):
        rows = out.shape[0]
        return RouterOutput(torch.zeros(rows, 2), torch.full((rows, 2), 0.5), None, 4)

    capture_custom(RouterModel(), float_ids)


@case("routing-extractor-returns-tuple", RoutingError, "its extractor returned tuple, not a RouterOutput")
def _(tmp, mp):
    def as_tuple(module, args, out):
        top = torch.softmax(out, -1).topk(2)
        return top.indices, top.values

    capture_custom(RouterModel(), as_tuple)


@case("routing-top-k-above-experts", RoutingError, "experts but its logits have only")
def _(tmp, mp):
    capture_custom(RouterModel(top_k=5))


@case("routing-output-not-tensor", RoutingError, "not a tensor or a tuple of tensors")
def _(tmp, mp):
    capture_custom(RouterModel(out=lambda logits: None))


@case("routing-output-no-2d-tensor", RoutingError, "router output holds no [tokens, experts] tensor")
def _(tmp, mp):
    capture_custom(RouterModel(out=lambda logits: logits.reshape(-1)))


@case("routing-ids-without-weights", RoutingError, "router output has expert ids")
def _(tmp, mp):
    capture_custom(RouterModel(out=lambda logits: torch.topk(logits, 2).indices))


@case("routing-logits-without-top-k", RoutingError, "returns logits only and has no top_k/k attribute")
def _(tmp, mp):
    capture_custom(RouterModel(top_k=None))


@case("routing-register-not-module", ConfigError, "register_router needs an nn.Module subclass")
def _(tmp, mp):
    register_router(object)


@case("routing-register-bad-kind", ConfigError, "kind must be 'mlp' or 'attention'")
def _(tmp, mp):
    register_router(Gate, kind="ffn")


@case("routing-register-extractor-not-callable", ConfigError, "extractor must be callable")
def _(tmp, mp):
    register_router(Gate, "standard")


@case("routing-capture-batch-size", ConfigError, "batch_size must be >= 1")
def _(tmp, mp):
    capture_custom(RouterModel(), batch_size=0)


@case("routing-capture-float-ids", ProbeError, "input_ids must hold integer token ids")
def _(tmp, mp):
    capture_pathways(RouterModel(), torch.rand(2, 4))


@case("routing-capture-mask-shape", ProbeError, "!= input_ids shape")
def _(tmp, mp):
    capture_pathways(RouterModel(), ids(2, 4), torch.ones(2, 3, dtype=torch.long))


@case("routing-capture-negative-id", ProbeError, "input_ids contains a negative id")
def _(tmp, mp):
    capture_pathways(RouterModel(), torch.tensor([[3, -100, 4]]))


@case("routing-monitor-non-moe-model", RouterNotFoundError, "no MoE router found in")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    monitor = GrokkingMonitor(probe(), MonitorConfig(every=1, jsonl=False, async_metrics=False, on_error="raise"))
    try:
        monitor.step(llama(), 1)
    finally:
        monitor.close()


@case("routing-meta-device", ConfigError,
      "the model's weights are on the meta device (not loaded yet): probe a model whose weights are materialised")
def _(tmp, mp):
    with torch.device("meta"):
        model = RouterModel()
    capture_custom(model)


@case("routing-dense-llama", RouterNotFoundError, "no MoE router found in LlamaForCausalLM: ... Register your router "
      "class with grokmon.routing.register_router(RouterClass, extractor)")
def _(tmp, mp):
    capture_pathways(llama(), ids(2, 4))


@case("routing-unregistered-router", RouterNotFoundError, "no MoE router found in Sequential ... register_router")
def _(tmp, mp):
    capture_pathways(nn.Sequential(nn.Embedding(64, 8), nn.Linear(8, 64)), ids(2, 4))


@case("routing-nan-router-weights", RoutingError, "produced NaN/inf logits or weights during the probe: the model's "
      "weights have diverged")
def _(tmp, mp):
    model = RouterModel()
    with torch.no_grad():
        model.gate.proj.weight.fill_(float("nan"))
    capture_custom(model)


@case("routing-output-no-expert", RoutingError, "router logits have shape (8, 0): no expert")
def _(tmp, mp):
    capture_custom(RouterModel(out=lambda logits: logits[:, :0]))


@case("routing-capture-ids-1d", ProbeError, "input_ids must be a 2-D [samples, seq] integer tensor, got")
def _(tmp, mp):
    capture_pathways(RouterModel(), torch.tensor([3, 4, 5]))


@case("routing-capture-ids-empty", ProbeError, "input_ids is empty (shape ...): build a non-empty ProbeSet")
def _(tmp, mp):
    capture_pathways(RouterModel(), torch.zeros(0, 4, dtype=torch.long))


@case("routing-capture-vocab-mismatch", ProbeError, "tokenizer/vocab mismatch: probe has token id ... but the model's "
      "vocabulary has ... ids; build the probe with the model's tokenizer")
def _(tmp, mp):
    capture_pathways(RouterModel(), torch.tensor([[3, 100, 4]]))


@case("routing-monitor-vocab-mismatch", ProbeError, "tokenizer/vocab mismatch: probe has token id ... but the model's "
      "vocabulary has ... ids")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    forwards = []
    model = RouterModel()
    model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    bad = ids()
    bad[1, 2] = 100
    monitor = GrokkingMonitor(ProbeSet.from_token_ids(bad, min_length=4),
                              MonitorConfig(every=1, jsonl=False, async_metrics=False, on_error="raise"))
    try:
        register_router(Gate)
        monitor.step(model, 1)
    finally:
        unregister_router(Gate)
        monitor.close()
        assert forwards == [], "the vocabulary is checked before any forward"


@case("routing-capture-mask-all-zero", ProbeError, "probe samples [ ... ] have no non-padding token: drop them from "
      "the ProbeSet")
def _(tmp, mp):
    capture_pathways(RouterModel(), ids(2, 4), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))


@case("routing-extractor-routed-shape", RoutingError, "its extractor returned routed ... for expert_ids ...: routed "
      "must be a bool mask shaped like the ids, or None")
def _(tmp, mp):
    def routed_one_column(module, args, out):
        rows = out.shape[0]
        return RouterOutput(torch.zeros(rows, 2, dtype=torch.long), torch.full((rows, 2), 0.5), None, 4,
                            routed=torch.ones(rows, 1, dtype=torch.bool))

    capture_custom(RouterModel(), routed_one_column)


@case("routing-extractor-no-expert-per-token", RoutingError, "reported 4 experts and 0 per token: its extractor must "
      "return expert_ids [tokens, k] with k >= 1 and num_experts >= 1")
def _(tmp, mp):
    def no_slot(module, args, out):
        rows = out.shape[0]
        return RouterOutput(torch.zeros(rows, 0, dtype=torch.long), torch.zeros(rows, 0), None, 4)

    capture_custom(RouterModel(), no_slot)

@case("routing-deepspeed-gate-output", RoutingError, "DeepSpeed TopKGate returned ...: expected the 7-tuple of "
      "sparse_routes=True ... This DeepSpeed release changed the gate: register an extractor with "
      "grokmon.routing.register_router(TopKGate, extractor)")
def _(tmp, mp):
    from grokmon.engines.deepspeed import read_topk_gate  # reads a gate's output; DeepSpeed not needed

    read_topk_gate(None, (), (torch.tensor(0.0), torch.zeros(4, 2)))


@case("routing-deepspeed-gate-shapes", RoutingError, "DeepSpeed TopKGate returned indices ... and gates ...: expected "
      "both [k, tokens]. This DeepSpeed release changed the gate: register an extractor with")
def _(tmp, mp):
    from grokmon.engines.deepspeed import read_topk_gate

    indices = torch.tensor([2, 0, 1], dtype=torch.int32)  # 1-D: not the [k, S] of sparse_routes=True
    read_topk_gate(None, (), (torch.tensor(0.0), 4, 4, indices, torch.zeros_like(indices), torch.ones(3), None))


@case("routing-probe-state-not-module", ConfigError, "register_probe_state needs an nn.Module subclass (the class, not "
      "an instance), got ...: register_probe_state(ModuleClass, 'attribute', ...)")
def _(tmp, mp):
    from grokmon.routing import register_probe_state

    register_probe_state(Gate(), "aux")


@case("routing-probe-state-no-attributes", ConfigError, "register_probe_state needs one or more attribute names "
      "(non-empty strings), got (): pass them after the class")
def _(tmp, mp):
    from grokmon.routing import register_probe_state

    register_probe_state(Gate)


# ---------------------------------------------------------------------------- probe


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
    probe().validate(0)


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
    list(probe().batches(0))


@case("probe-monitor-one-sample", ProbeError, "the probe needs at least 2 samples")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    GrokkingMonitor(probe(n=1), MonitorConfig(every=1, jsonl=False))


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
    probe().validate(16)


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
    probe().save(tmp / "probe.pt")
    saved = torch.load(tmp / "probe.pt", weights_only=True)
    saved["input_ids"][0, 0] += 1  # the content changes, its stored fingerprint does not
    torch.save(saved, tmp / "probe.pt")
    ProbeSet.load(tmp / "probe.pt")


@case("probe-load-other-fingerprint", ProbeError, "holds a different probe (...) than the run was started with (...): "
      "restore the run's own probe file")
def _(tmp, mp):
    probe().save(tmp / "probe.pt")
    ProbeSet.load(tmp / "probe.pt", expected_fingerprint=probe(n=6).fingerprint())


@case("probe-shard-rank", ConfigError, "shard needs 0 <= rank < world_size, got rank=3, world_size=3")
def _(tmp, mp):
    probe().shard(3, 3)


@case("probe-shard-of-shard", ConfigError, "this probe is already a shard: shard the full probe instead")
def _(tmp, mp):
    probe().shard(0, 2).shard(0, 2)


# ---------------------------------------------------------------------------- monitor


@case("monitor-batch-size", ConfigError, "batch_size must be a positive number of probe samples per forward")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    GrokkingMonitor(probe(), MonitorConfig(every=1, jsonl=False, batch_size=0))


@case("monitor-load-not-a-state-file", GrokmonError, "is not a grokmon monitor state file")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    torch.save({"x": 1}, tmp / "state.pt")
    monitor = GrokkingMonitor(probe(), MonitorConfig(every=1, jsonl=False))
    try:
        monitor.load(tmp / "state.pt")
    finally:
        monitor.close()


@case("monitor-hf-callback-without-monitor", ConfigError, "GrokkingHFCallback needs a GrokkingMonitor, got NoneType: "
      "pass GrokkingHFCallback(monitor)")
def _(tmp, mp):
    from grokmon.integrations import hf

    hf.GrokkingHFCallback(None)


@case("monitor-hf-callback-not-a-monitor", ConfigError, "GrokkingHFCallback needs a GrokkingMonitor, got str")
def _(tmp, mp):
    from grokmon.integrations import hf

    hf.GrokkingHFCallback("x")


@case("monitor-hf-state-not-grokmon", ConfigError, "is not a grokmon callback state file")
def _(tmp, mp):
    from grokmon.integrations.hf import STATE_FILE, read_callback_state

    (tmp / STATE_FILE).write_text(json.dumps({"format": "something else"}))
    read_callback_state(tmp)


@case("monitor-hf-state-newer", ConfigError, "was written by a newer grokmon")
def _(tmp, mp):
    from grokmon.integrations.hf import _FORMAT, STATE_FILE, read_callback_state

    (tmp / STATE_FILE).write_text(json.dumps({"format": _FORMAT, "version": 99, "monitor_state": {}}))
    read_callback_state(tmp)


@case("monitor-lightning-missing", GrokmonError, "GrokkingLightningCallback needs Lightning")
def _(tmp, mp):
    from grokmon.integrations.lightning import lightning_module

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        mp.setitem(sys.modules, name, None)  # a None entry makes the import fail
    lightning_module()


def monitor(**kwargs: Any):
    from moe_models import build_monitor

    probe_set = kwargs.pop("probe") if "probe" in kwargs else probe()
    return build_monitor(probe_set, **{"every": 1, "jsonl": False, **kwargs})


def moe() -> nn.Module:
    from moe_models import tiny_model

    return tiny_model("mixtral", num_layers=1, num_experts=4)


@case("monitor-step-not-integer", ConfigError, "step must be an integer optimizer step, got '10' (str): pass int(step)")
def _(tmp, mp):
    m = monitor()
    try:
        m.step(moe(), "10")
    finally:
        m.close()


def step_backwards(on_error: str) -> None:
    m = monitor(async_metrics=False, on_error=on_error)
    model = moe()
    try:
        for step in (0, 4, 0):  # a counter that restarts
            m.step(model, step)
        assert m.history[-1][0] == 5, "grokmon's own count goes on after the last probed step"
    finally:
        m.close()


@case("monitor-step-backwards-warns", RuntimeWarning, "the step went backwards, from 4 to 0 (a counter that restarts "
      "each epoch?) ... this step is logged as 5")
def _(tmp, mp):
    step_backwards("warn")


@case("monitor-step-backwards-raise", ConfigError, "the step went backwards, from 4 to 0 (a counter that restarts "
      "each epoch?)")
def _(tmp, mp):
    step_backwards("raise")


@case("monitor-jsonl-under-a-file", SinkError, "cannot create the folder of the JSONL record ... pass a path in a "
      "writable folder (jsonl=... / output_dir=...), or jsonl=False")
def _(tmp, mp):
    (tmp / "file").write_text("x")
    monitor(jsonl=str(tmp / "file" / "g.jsonl"))


@case("monitor-sink-timeout", ConfigError, "sink_timeout must be a positive number of seconds, got 0")
def _(tmp, mp):
    monitor(sink_timeout=0)


@case("monitor-sink-buffer", ConfigError, "sink_buffer must be a positive number of records, got 0")
def _(tmp, mp):
    monitor(sink_buffer=0)


@case("monitor-probe-not-probeset", ConfigError, "probe must be a grokmon.ProbeSet, got Tensor: build one with "
      "ProbeSet.from_*")
def _(tmp, mp):
    monitor(probe=ids())


@case("monitor-every-zero", ConfigError, "every must be a positive number of optimizer steps, got 0")
def _(tmp, mp):
    monitor(every=0)


@case("monitor-on-error", ConfigError, "on_error must be 'warn' or 'raise', got 'ignore'")
def _(tmp, mp):
    monitor(on_error="ignore")


@case("monitor-metrics-type", ConfigError, "metrics must be a grokmon.MetricConfig (or a dict of its fields), got list")
def _(tmp, mp):
    monitor(metrics=["threshold"])


@case("monitor-sinks-string", ConfigError, "sinks[0] is a str, not a sink: pass objects with a log(metrics, step) "
      "method (grokmon.WandbSink() for W&B)")
def _(tmp, mp):
    monitor(sinks=["wandb"])


@case("monitor-jsonl-folder", ConfigError, "is a folder: pass a file path (e.g. ... /grokmon.jsonl), True for "
      "output_dir/grokmon.jsonl, or False")
def _(tmp, mp):
    monitor(jsonl=tmp)


@case("monitor-stages-type", ConfigError, "stages must be True or False, got 'yes'")
def _(tmp, mp):
    monitor(stages="yes")


@case("monitor-stages-tracker-in-config", ConfigError, "MonitorConfig.stages is True or False: pass a configured "
      "GroupStageTracker as GrokkingMonitor(probe, config, stage_tracker=tracker)")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    monitor(stages=GroupStageTracker())


@case("monitor-stage-tracker-type", ConfigError, "stage_tracker must be a grokmon.GroupStageTracker, got bool")
def _(tmp, mp):
    monitor(stage_tracker=True)


@case("monitor-stage-tracker-stages-off", ConfigError, "stage_tracker was given but MonitorConfig(stages=False) turns "
      "stage tracking off: drop one of the two")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    monitor(stages=False, stage_tracker=GroupStageTracker())


@case("monitor-config-unknown-field", ConfigError, "MonitorConfig has no field 'output': did you mean output_dir? "
      "(fields: every, metrics, ")
def _(tmp, mp):
    MonitorConfig(output="run")


@case("monitor-config-not-a-config", ConfigError, "config must be a grokmon.MonitorConfig, got int: the cadence is a "
      "setting, MonitorConfig(every=200)")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    GrokkingMonitor(probe(), 200)


@case("monitor-load-missing", GrokmonError, "cannot read a grokmon monitor state from ... pass a file written by GrokkingMonitor.save")
def _(tmp, mp):
    m = monitor()
    try:
        m.load(tmp / "missing.pt")
    finally:
        m.close()


@case("monitor-output-dir-other-probe", RuntimeWarning, "holds another probe than this monitor's; it is kept. A "
      "resumed run must probe the same samples")
def _(tmp, mp):
    monitor(output_dir=tmp, jsonl=True).close()
    try:
        monitor(probe=probe(n=6), output_dir=tmp, jsonl=True).close()
    finally:
        assert ProbeSet.load(tmp / "probe.pt").fingerprint() == probe().fingerprint(), "the first probe is kept"


@case("monitor-alerts-not-rules", ConfigError, "alerts must be grokmon.alerts rules (PlateauRule, ThresholdRule, ...), "
      "got")
def _(tmp, mp):
    monitor(alerts=[lambda step, metrics: []])


@case("monitor-state-other-probe", GrokmonError, "probe changed since the checkpoint: load the saved probe with "
      "ProbeSet.load so the same samples are probed before and after the restart")
def _(tmp, mp):
    first, other = monitor(), monitor(probe=probe(n=6))
    try:
        other.load_state_dict(first.state_dict())
    finally:
        first.close()
        other.close()


class _RunsCode:
    """Unpickling this would call ``print``: a stand-in for code in a crafted file."""

    def __reduce__(self):
        return (print, ("code ran",))


@case("monitor-load-code", UnsafeFileError, "is not a grokmon monitor state: it holds objects other than tensors "
      "and plain data, which grokmon never loads (nothing in it was run); pass a file written by GrokkingMonitor.save")
def _(tmp, mp):
    torch.save({"format": "grokmon.monitor", "state": _RunsCode()}, tmp / "state.pt")
    m = monitor()
    try:
        m.load(tmp / "state.pt")
    finally:
        m.close()


@case("pathways-load-code", UnsafeFileError, "is not grokmon pathways: it holds objects other than tensors and "
      "plain data, which grokmon never loads (nothing in it was run); pass a file written by Pathways.save")
def _(tmp, mp):
    from grokmon.pathways import Pathways

    torch.save(_RunsCode(), tmp / "pathways.pt")
    Pathways.load(tmp / "pathways.pt")


@case("pathways-load-not-pathways", GrokmonError, "is not a grokmon pathways file: write one with Pathways.save")
def _(tmp, mp):
    from grokmon.pathways import Pathways

    torch.save({"x": 1}, tmp / "pathways.pt")
    Pathways.load(tmp / "pathways.pt")


@case("probe-load-code", UnsafeFileError, "is not a grokmon probe file: it holds objects other than tensors and "
      "plain data, which grokmon never loads (nothing in it was run); rebuild the probe")
def _(tmp, mp):
    torch.save({"format": "grokmon.probe", "input_ids": _RunsCode()}, tmp / "probe.pt")
    ProbeSet.load(tmp / "probe.pt")


@case("monitor-load-other-probe", GrokmonError, "probe changed since the checkpoint")
def _(tmp, mp):
    first, other = monitor(), monitor(probe=probe(n=6))
    try:
        first.save(tmp / "monitor.pt")
        other.load(tmp / "monitor.pt")
    finally:
        first.close()
        other.close()


@case("monitor-hf-resume-other-probe", GrokmonError, "probe changed since the checkpoint")
def _(tmp, mp):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from grokmon.integrations.hf import GrokkingHFCallback

    args = TrainingArguments(output_dir=str(tmp), report_to=[])
    state = TrainerState(global_step=4)
    (tmp / "checkpoint-4").mkdir()
    first, other = monitor(), monitor(probe=probe(n=6))
    try:
        GrokkingHFCallback(first).on_save(args, state, TrainerControl())  # the state saved beside checkpoint-4
        resumed = TrainingArguments(output_dir=str(tmp / "new"), report_to=[],
                                    resume_from_checkpoint=str(tmp / "checkpoint-4"))
        GrokkingHFCallback(other).on_train_begin(resumed, state, TrainerControl())
    finally:
        first.close()
        other.close()


@case("monitor-hf-state-not-json", ConfigError, "is not valid JSON (...): delete it to resume without the grokmon "
      "state")
def _(tmp, mp):
    from grokmon.integrations.hf import STATE_FILE, read_callback_state

    (tmp / STATE_FILE).write_text("{not json")
    read_callback_state(tmp)


@case("monitor-lightning-model-attribute", GrokmonError, "has no attribute 'backbone': pass model= the attribute that "
      "holds the Hugging Face model, or a function of the LightningModule")
def _(tmp, mp):
    pytest.importorskip("lightning")
    from grokmon.integrations.lightning import GrokkingLightningCallback

    m = monitor()
    try:
        GrokkingLightningCallback(m, model="backbone").probe_model(nn.Module())
    finally:
        m.close()


# ---------------------------------------------------------------------------- training engines
# The engine readers are called on hand-made outputs, torchtitan's MetricsProcessor is a stand-in
# module and Megatron's model chunks are plain modules: no case needs an engine installed.


def titan_integration(mp: pytest.MonkeyPatch) -> Any:
    """grokmon.integrations.torchtitan imported over a stand-in torchtitan.components.metrics (undone by ``mp``)."""
    import dataclasses
    import importlib
    import types

    import grokmon.integrations

    @dataclasses.dataclass(kw_only=True, slots=True)
    class Config:  # torchtitan's MetricsProcessor.Config, the one field grokmon reads
        log_freq: int = 10

    class MetricsProcessor:
        def __init__(self, config: Any, **kwargs: Any) -> None:
            self.config, self.model_parts = config, None

        def log(self, *args: Any, **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            pass

    MetricsProcessor.Config = Config  # type: ignore[attr-defined]
    metrics = types.ModuleType("torchtitan.components.metrics")
    metrics.MetricsProcessor = MetricsProcessor  # type: ignore[attr-defined]
    for name in ("torchtitan", "torchtitan.components"):
        mp.setitem(sys.modules, name, types.ModuleType(name))
    mp.setitem(sys.modules, "torchtitan.components.metrics", metrics)
    mp.setitem(sys.modules, "grokmon.integrations.torchtitan", None)  # undo restores the real one (or none)
    del sys.modules["grokmon.integrations.torchtitan"]
    mp.setattr(grokmon.integrations, "torchtitan", None, raising=False)
    return importlib.import_module("grokmon.integrations.torchtitan")


@case("engine-torchtitan-router-output", RoutingError, "torchtitan TokenChoiceTopKRouter: expected (topk_scores [B, L, "
      "k], topk_expert_ids [B, L, k], scores [B, L, E]) as in torchtitan 0.3.0, got tuple of 2: for another torchtitan "
      "version register a reader with grokmon.routing.register_router(TokenChoiceTopKRouter, fn)")
def _(tmp, mp):
    from grokmon.engines.torchtitan import read_router

    scores = torch.rand(1, 2, 4)
    read_router(None, (), (scores, scores.topk(2).indices))


@case("engine-torchtitan-router-shapes", RoutingError, "torchtitan TokenChoiceTopKRouter: expected integer ids and "
      "scores of one shape [B, L, k] and scores [B, L, E], got ids torch.float32 ...: for another torchtitan version "
      "register a reader")
def _(tmp, mp):
    from grokmon.engines.torchtitan import read_router

    scores = torch.rand(1, 2, 4)
    top = scores.topk(2)
    read_router(None, (), (top.values, top.indices.float(), scores))


@case("engine-megatron-router-output", RoutingError, "Megatron TopKRouter: expected (probs [tokens, E], routing_map "
      "[tokens, E]) as in megatron-core 0.16, got Tensor: for another version register a reader with "
      "grokmon.routing.register_router(TopKRouter, fn)")
def _(tmp, mp):
    from grokmon.engines.megatron import read_router

    read_router(None, (torch.zeros(2, 1, 4),), torch.rand(2, 3), top_k=2)


@case("engine-megatron-router-shapes", RoutingError, "Megatron TopKRouter: expected float probs and a bool routing_map "
      "of one [tokens, E] shape, got torch.float32 (2, 3) and torch.float32 (2, 3): for another version register")
def _(tmp, mp):
    from grokmon.engines.megatron import read_router

    probs = torch.tensor([[0.7, 0.0, 0.3], [0.0, 1.0, 0.0]])
    read_router(None, (torch.zeros(2, 1, 4),), (probs, (probs > 0).float()), top_k=2)


@case("engine-megatron-router-input", RoutingError, "Megatron TopKRouter: its input must be hidden_states [seq, batch, "
      "hidden] with seq * batch = 2 token rows, got (2, 4): grokmon needs seq and batch")
def _(tmp, mp):
    from grokmon.engines.megatron import read_router

    probs = torch.tensor([[0.7, 0.0, 0.3], [0.0, 1.0, 0.0]])
    read_router(None, (torch.zeros(2, 4),), (probs, probs > 0), top_k=2)


@case("engine-megatron-top-k", RoutingError, "Megatron TopKRouter: top-k must be in [1, 3], got None (the router's "
      ".topk, from moe_router_topk): set moe_router_topk to the experts per token, or pass read_router(..., top_k=k)")
def _(tmp, mp):
    from grokmon.engines.megatron import read_router

    probs = torch.tensor([[0.7, 0.0, 0.3], [0.0, 1.0, 0.0]])
    read_router(nn.Linear(4, 3), (torch.zeros(2, 1, 4),), (probs, probs > 0))  # a module without .topk


@case("engine-declare-router-class-path", ConfigError, "declare_router: class_path must be the router's dotted path "
      "'package.module.Class', got 'Gate'")
def _(tmp, mp):
    from grokmon._router_table import declare_router

    declare_router("Gate", "mypkg.support:read_gate")


@case("engine-declare-router-extractor-path", ConfigError, "declare_router: extractor_path must be 'module:function' "
      "(one colon), got 'mypkg.support.read_gate'")
def _(tmp, mp):
    from grokmon._router_table import declare_router

    declare_router("mypkg.moe.Gate", "mypkg.support.read_gate")


@case("engine-declare-router-kind", ConfigError, "declare_router: kind must be 'mlp' or 'attention', got 'ffn'")
def _(tmp, mp):
    from grokmon._router_table import declare_router

    declare_router("mypkg.moe.Gate", "mypkg.support:read_gate", kind="ffn")


@case("engine-declare-probe-state-class-path", ConfigError, "declare_probe_state: class_path must be "
      "'package.module.Class', got 'MOELayer'")
def _(tmp, mp):
    from grokmon._router_table import declare_probe_state

    declare_probe_state("MOELayer", "l_aux")


@case("engine-declare-probe-state-no-attributes", ConfigError, "declare_probe_state: give one or more attribute "
      "names, got ()")
def _(tmp, mp):
    from grokmon._router_table import declare_probe_state

    declare_probe_state("deepspeed.moe.sharded_moe.MOELayer")


def needs_olmo_core() -> None:
    try:
        import olmo_core.train.callbacks  # noqa: F401
    except ImportError:
        pytest.skip("needs OLMo-core: pip install grokmon[olmo-core]")


@case("engine-olmo-core-missing", ConfigError, "GrokkingOLMoCoreCallback needs OLMo-core: pip install "
      "grokmon[olmo-core] (or pip install ai2-olmo-core)")
def _(tmp, mp):
    import importlib

    mp.delitem(sys.modules, "grokmon.integrations.olmo_core", raising=False)  # put back after the case
    mp.setitem(sys.modules, "olmo_core.train.callbacks", None)  # the import fails as if not installed
    importlib.import_module("grokmon.integrations.olmo_core")


@case("engine-olmo-core-not-a-monitor", ConfigError, "GrokkingOLMoCoreCallback needs a GrokkingMonitor, got object: "
      "pass GrokkingOLMoCoreCallback(monitor)")
def _(tmp, mp):
    needs_olmo_core()
    from grokmon.integrations import GrokkingOLMoCoreCallback

    GrokkingOLMoCoreCallback(object())


@case("engine-olmo-core-config-no-probe", ConfigError, "GrokkingOLMoCoreCallbackConfig needs probe= the path of a "
      "saved probe (ProbeSet.save or grokmon probe)")
def _(tmp, mp):
    needs_olmo_core()
    from grokmon.integrations import GrokkingOLMoCoreCallbackConfig

    GrokkingOLMoCoreCallbackConfig().build(None)


@case("engine-olmo-core-probe-too-long", ConfigError, "the probe's sequences have 8 tokens, more than the 4 tokens the "
      "model's MoE layers accept per forward (its training micro-batch, rank_microbatch_size): build the probe with "
      "seq_len <= 4")
def _(tmp, mp):
    import types

    needs_olmo_core()
    from grokmon.integrations import GrokkingOLMoCoreCallback

    experts = nn.Module()
    experts.max_local_microbatch_size = 4   # what OLMo-core's capacity-based experts were sized for
    model = nn.Sequential(experts)
    callback = GrokkingOLMoCoreCallback(monitor())
    callback.trainer = types.SimpleNamespace(train_module=types.SimpleNamespace(model=model), global_step=0)
    try:
        callback._fit_probe_batch()
    finally:
        callback.monitor.close()


@case("engine-olmo-core-router-output", RoutingError, "OLMo-core router Module returned Tensor, not (expert_weights, "
      "expert_indices, batch_size_per_expert, aux_loss): this OLMo-core version changed its router contract; register "
      "a reader with grokmon.routing.register_router")
def _(tmp, mp):
    from grokmon.engines.olmo_core import read_router

    read_router(nn.Module(), (), torch.zeros(4, 2))


@case("engine-torchtitan-missing", ConfigError, "grokmon.integrations.torchtitan needs torchtitan (tested with 0.3.0), "
      "which is not importable (...): pip install grokmon[torchtitan]")
def _(tmp, mp):
    import importlib

    for name in [n for n in sys.modules if n == "torchtitan" or n.startswith("torchtitan.")]:
        mp.setitem(sys.modules, name, None)  # a None entry makes the import fail
    mp.setitem(sys.modules, "torchtitan", None)
    mp.delitem(sys.modules, "grokmon.integrations.torchtitan", raising=False)
    importlib.import_module("grokmon.integrations.torchtitan")


@case("engine-torchtitan-not-a-monitor", ConfigError, "GrokkingMetricsProcessor needs a GrokkingMonitor, got str: pass "
      "monitor=GrokkingMonitor(probe, MonitorConfig(every=...)), or leave monitor out and set Config(grokmon_probe='probe.pt')")
def _(tmp, mp):
    titan = titan_integration(mp)
    titan.GrokkingMetricsProcessor(titan.GrokkingMetricsProcessor.Config(log_freq=10), monitor="monitor")


@case("engine-torchtitan-log-freq", ConfigError, "grokmon probes every 5 steps but torchtitan calls the metrics "
      "processor only every log_freq=10 steps: make every a multiple of log_freq (e.g. 10)")
def _(tmp, mp):
    titan = titan_integration(mp)
    with monitor(every=5) as m:
        titan.GrokkingMetricsProcessor(titan.GrokkingMetricsProcessor.Config(log_freq=10), monitor=m)


@case("engine-torchtitan-no-probe", ConfigError, "GrokkingMetricsProcessor needs a probe: set "
      "Config(grokmon_probe='probe.pt') (a ProbeSet saved with probe.save(path)) or pass monitor=GrokkingMonitor(...)")
def _(tmp, mp):
    titan = titan_integration(mp)
    titan.GrokkingMetricsProcessor(titan.GrokkingMetricsProcessor.Config(log_freq=10))


@case("engine-torchtitan-no-model-parts", RuntimeWarning, "grokmon: not probing: model_parts is not set (the "
      "torchtitan Trainer sets it after building the model): outside the Trainer, set processor.model_parts = [model]")
def _(tmp, mp):
    titan = titan_integration(mp)
    processor = titan.GrokkingMetricsProcessor(titan.GrokkingMetricsProcessor.Config(log_freq=2),
                                               monitor=monitor(every=2))
    try:
        assert processor.probe_step(2) == []
    finally:
        processor.close()


@case("engine-torchtitan-pipeline-parallel", RuntimeWarning, "grokmon: not probing: there are 2 model parts (pipeline "
      "parallelism: each stage holds only its own routers); grokmon probes a model in one part: train without "
      "pipeline parallelism to probe")
def _(tmp, mp):
    titan = titan_integration(mp)
    processor = titan.GrokkingMetricsProcessor(titan.GrokkingMetricsProcessor.Config(log_freq=2),
                                               monitor=monitor(every=2))
    processor.model_parts = [RouterModel(), RouterModel()]  # two pipeline stages
    try:
        assert processor.probe_step(2) == []
    finally:
        processor.close()


@case("engine-megatron-probe-model-not-module", ConfigError, "MegatronProbeModel needs the Megatron model chunk (an "
      "nn.Module), got list: pass one chunk, e.g. MegatronProbeModel(model[0])")
def _(tmp, mp):
    from grokmon.integrations.megatron import MegatronProbeModel  # imports no Megatron

    MegatronProbeModel([RouterModel()])  # the list of chunks get_model returns


@case("engine-megatron-bridge-not-a-monitor", ConfigError, "GrokkingBridgeCallback needs a GrokkingMonitor, got str: "
      "pass GrokkingBridgeCallback(monitor)")
def _(tmp, mp):
    from grokmon.integrations.megatron import GrokkingBridgeCallback

    GrokkingBridgeCallback("monitor")


@case("engine-megatron-bridge-pipeline-parallel", RuntimeWarning, "grokmon: not probing: 2 model chunks (pipeline "
      "parallelism: each holds only its own layers' routers); grokmon probes a model in one chunk: train without "
      "pipeline parallelism to probe")
def _(tmp, mp):
    import types

    from grokmon.integrations.megatron import GrokkingBridgeCallback

    callback = GrokkingBridgeCallback(monitor(every=1))
    # shaped like Bridge's callback context: two pipeline chunks
    context = types.SimpleNamespace(model=[RouterModel(), RouterModel()],
                                    state=types.SimpleNamespace(train_state=types.SimpleNamespace(step=0)))
    try:
        callback.on_train_step_end(context)
    finally:
        callback.on_train_end(context)
    assert callback.monitor.history == []


# ---------------------------------------------------------------------------- metric configuration


def pathways(**kwargs: Any):
    from grokmon.pathways import Pathways

    w = torch.softmax(torch.randn(4, 2, 4, generator=torch.Generator().manual_seed(0)), -1)
    args = dict(mean_weights=w, layers=(0, 1), router_names=("a", "b"), num_experts=4,
                expert_counts=torch.ones(2, 4, dtype=torch.long))
    return Pathways(**{**args, **kwargs})


@case("metric-config-form", ConfigError, "unknown pathway form")
def _(tmp, mp):
    from grokmon.metrics import MetricConfig

    MetricConfig(form="tokens")


@case("metric-config-threshold", ConfigError, "threshold must be in (0, 1]")
def _(tmp, mp):
    from grokmon.metrics import MetricConfig

    MetricConfig(threshold=0.0)


@case("metric-config-max-pairs", ConfigError, "max_pairs must be a positive number of pairs or None")
def _(tmp, mp):
    from grokmon.metrics import MetricConfig

    MetricConfig(max_pairs=0)


@case("metric-config-consistency-experts", ConfigError, "consistency_experts must be 'all' or 'kept'")
def _(tmp, mp):
    from grokmon.metrics import MetricConfig

    MetricConfig(consistency_experts="some")


@case("metric-config-token-order", ConfigError, "token_order must be 'layer' or 'token'")
def _(tmp, mp):
    from grokmon.metrics import MetricConfig

    MetricConfig(form="token", token_order="sample")


@case("metric-config-backend", ConfigError, "unknown edit-distance backend 'numba': use one of ('auto', 'torch', "
      "'rapidfuzz', 'triton')")
def _(tmp, mp):
    from grokmon.metrics import MetricConfig

    MetricConfig(backend="numba")


@case("metric-config-top-k", ConfigError, "top_k must be a positive number of experts or None")
def _(tmp, mp):
    from grokmon.metrics import MetricConfig

    MetricConfig(form="topk", top_k=0)


@case("metric-token-order", ConfigError, "order must be 'layer' or 'token'")
def _(tmp, mp):
    from grokmon.pathways import pathway_sequences

    p = pathways(token_ids=torch.zeros(4, 3, 2, 1, dtype=torch.int16))
    pathway_sequences(p, "token", order="sample")


@case("metric-pathway-sequences-top-k-zero", ConfigError, "top_k must be a positive number of experts or None")
def _(tmp, mp):
    from grokmon.pathways import pathway_sequences

    pathway_sequences(pathways(meta={"top_k": 2}), "topk", top_k=0)


@case("metric-pathways-num-experts", ConfigError, "experts but num_experts=")
def _(tmp, mp):
    pathways(num_experts=5)


@case("metric-pathways-groups", ConfigError, "groups must be [N]=")
def _(tmp, mp):
    pathways(groups=torch.zeros(3, dtype=torch.long))


@case("metric-consistency-dims", ConfigError, "pathway_consistency needs mean_weights [N, L, E] and router_weights")
def _(tmp, mp):
    from grokmon.metrics.consistency import pathway_consistency

    pathway_consistency(torch.zeros(2, 4), torch.zeros(2, 4, 3))


@case("metric-routing-cosine-one-router", ConfigError, "routing_cosine needs mean_weights [N, L>=2, E]")
def _(tmp, mp):
    from grokmon.metrics.consistency import routing_cosine

    routing_cosine(torch.zeros(2, 1, 4))


@case("metric-routing-entropy-dims", ConfigError, "routing_entropy needs mean_weights [N, L, E]")
def _(tmp, mp):
    from grokmon.metrics.usage import routing_entropy

    routing_entropy(torch.zeros(2, 4))


@case("metric-edit-distance-devices", ConfigError, "move both to one device", gpu=True)
def _(tmp, mp):
    from grokmon.editdistance import edit_distance

    a, n = torch.tensor([[1, 2]]), torch.tensor([2])
    edit_distance(a, n, a.cuda(), n.cuda())


@case("metric-token-form-without-token-ids", ConfigError, "the 'token' pathway form needs per-token expert ids: "
      "capture with keep_token_ids=True")
def _(tmp, mp):
    from grokmon.pathways import pathway_sequences

    pathway_sequences(pathways(), "token")


@case("metric-compute-token-form-without-token-ids", ConfigError, "the 'token' pathway form needs per-token expert "
      "ids: capture with keep_token_ids=True")
def _(tmp, mp):
    from grokmon.metrics import MetricConfig, compute_metrics

    compute_metrics(pathways(), config=MetricConfig(extra_forms=("token",)))


@case("metric-pathway-sequences-form", ConfigError, "form must be 'threshold', 'topk' or 'token'")
def _(tmp, mp):
    from grokmon.pathways import pathway_sequences

    pathway_sequences(pathways(), "tokens")


@case("metric-pathway-sequences-threshold", ConfigError, "threshold must be in (0, 1]")
def _(tmp, mp):
    from grokmon.pathways import pathway_sequences

    pathway_sequences(pathways(), "threshold", threshold=1.5)


@case("metric-pathway-sequences-top-k-above-experts", ConfigError, "top_k must be in [1, ")
def _(tmp, mp):
    from grokmon.pathways import pathway_sequences

    pathway_sequences(pathways(), "topk", top_k=5)


@case("metric-pathways-mean-weights-dims", ConfigError, "Pathways.mean_weights must be [N, L, E], got shape")
def _(tmp, mp):
    pathways(mean_weights=torch.full((4, 4), 0.25))


@case("metric-pathways-router-count", ConfigError, "routers in mean_weights but ... layer indices and ... router names")
def _(tmp, mp):
    pathways(layers=(0,))


@case("metric-distance-groups", ConfigError, "groups must be one label per sample, shape [")
def _(tmp, mp):
    from grokmon.metrics import pathway_distance
    from grokmon.pathways import pathway_sequences

    pathway_distance(pathway_sequences(pathways(), "threshold"), torch.zeros(3, dtype=torch.long))


def consistency_inputs(routers: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Routing weights [N=4, L, E=4] and router rows [L, E, H=3]."""
    return pathways().mean_weights[:, :routers], torch.randn(routers, 4, 3, generator=torch.Generator().manual_seed(0))


@case("metric-consistency-one-router", ConfigError, "pathway consistency compares consecutive MoE layers: the model "
      "needs at least 2 routers (turn it off with MetricConfig(consistency=False))")
def _(tmp, mp):
    from grokmon.metrics.consistency import pathway_consistency

    pathway_consistency(*consistency_inputs(routers=1))


@case("metric-consistency-router-weights", ConfigError, "router_weights ... do not match mean_weights ... need one "
      "row per expert of every router, [L, E, H]")
def _(tmp, mp):
    from grokmon.metrics.consistency import pathway_consistency

    weights, rows = consistency_inputs()
    pathway_consistency(weights, rows[:, :3])


@case("metric-consistency-kept-mask", ConfigError, "kept_mask must have mean_weights' shape")
def _(tmp, mp):
    from grokmon.metrics.consistency import pathway_consistency

    pathway_consistency(*consistency_inputs(), kept_mask=torch.ones(2, 2, dtype=torch.bool))


@case("metric-consistency-groups", ConfigError, "groups must be [N]=")
def _(tmp, mp):
    from grokmon.metrics.consistency import pathway_consistency

    pathway_consistency(*consistency_inputs(), torch.zeros(3, dtype=torch.long))


@case("metric-layer-cosines-chunk", ConfigError, "chunk must be a positive number of samples, got 0")
def _(tmp, mp):
    from grokmon.metrics.consistency import layer_cosines

    layer_cosines(*consistency_inputs(), chunk=0)


@case("metric-expert-load-dims", ConfigError, "expert_load needs expert_counts [L, E], got")
def _(tmp, mp):
    from grokmon.metrics import expert_load

    expert_load(torch.zeros(4, dtype=torch.long))


@case("metric-drift-other-samples", ConfigError, "pathway_drift compares the same samples at two probes, got ... "
      "samples: keep the probe set fixed between probes")
def _(tmp, mp):
    from grokmon.metrics import pathway_drift
    from grokmon.pathways import pathway_sequences

    four = pathway_sequences(pathways(), "threshold")
    three = pathway_sequences(pathways(mean_weights=pathways().mean_weights[:3]), "threshold")
    pathway_drift(four, three)


def edit_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two padded rows [[1, 2], [3, -1]] and their lengths [2, 1]."""
    return torch.tensor([[1, 2], [3, -1]], dtype=torch.int32), torch.tensor([2, 1])


@case("metric-edit-distance-backend", ConfigError, "unknown edit-distance backend 'numba': use one of ('auto', "
      "'torch', 'rapidfuzz', 'triton')")
def _(tmp, mp):
    from grokmon.editdistance import pairwise_edit_distance

    pairwise_edit_distance(*edit_inputs(), backend="numba")


@case("metric-edit-distance-rapidfuzz-missing", ConfigError, "backend='rapidfuzz' needs the rapidfuzz package: pip "
      "install rapidfuzz, or use backend='torch'")
def _(tmp, mp):
    from grokmon.editdistance import pairwise_edit_distance, rapidfuzz_backend

    mp.setattr(rapidfuzz_backend, "_process", None)  # as if rapidfuzz were not installed
    pairwise_edit_distance(*edit_inputs(), backend="rapidfuzz")


EDIT_DISTANCE_MISUSE = {
    "dtype": ("must be an integer tensor", lambda a, n: ((a.float(), n), {})),
    "rank": ("must have 2 dimension(s)", lambda a, n: ((a[0], n), {})),
    "row-count": ("rows but ... lengths", lambda a, n: ((a, torch.tensor([1, 1, 1])), {})),
    "length-range": ("lengths must be in [0, ", lambda a, n: ((a, torch.tensor([3, 1])), {})),
    "negative-id": ("has a negative id inside its length", lambda a, n: ((a, torch.tensor([1, 2])), {})),
    "pairs-shape": ("pairs must be [P, 2]", lambda a, n: ((a, n, torch.tensor([[0, 1, 1]])), {})),
    "pairs-range": ("every index must be in [0, ", lambda a, n: ((a, n, torch.tensor([[0, 2]])), {})),
    "chunk-size": ("chunk_size must be a positive number",
                   lambda a, n: ((a, n), {"backend": "torch", "chunk_size": 0})),
}


def _edit_distance_case(what: str, fragment: str, make: Callable) -> None:
    @case(f"metric-edit-distance-{what}", ConfigError, fragment)
    def _(tmp, mp):
        from grokmon.editdistance import pairwise_edit_distance

        args, kwargs = make(*edit_inputs())
        pairwise_edit_distance(*args, **kwargs)


for _what, (_fragment, _make) in EDIT_DISTANCE_MISUSE.items():
    _edit_distance_case(_what, _fragment, _make)


@case("metric-edit-distance-row-counts", ConfigError, "compares rows pairwise")
def _(tmp, mp):
    from grokmon.editdistance import edit_distance

    a, n = edit_inputs()
    edit_distance(a, n, a[:1], n[:1])


# ---------------------------------------------------------------------------- alerts


@case("alerts-stage-key-template", ConfigError, "must contain '{g}' exactly once")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    GroupStageTracker(stage_key_template="stage")


@case("alerts-distance-template-missing", ConfigError, "distance_key_template is needed with loss_key_template")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    GroupStageTracker(distance_key_template=None)


@case("alerts-saved-stage-unknown", ConfigError, "the state is corrupt or newer")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    tracker = GroupStageTracker()
    tracker.update(0, {"probe_loss": 1.0, "pathway_distance": 0.5})
    state = json.loads(json.dumps(tracker.state_dict()))
    state["overall"]["stage"] = "forgetting"
    GroupStageTracker().load_state_dict(state)


@case("alerts-wait-duration-not-number", ConfigError, "must be seconds (a number) or a timedelta")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", wait_duration="soon")


@case("alerts-number-not-number", ConfigError, "must be a number >=")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", min_delta="small")


@case("alerts-count-below-minimum", ConfigError, "patience=0 must be an integer >= 1 (it counts probes)")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", patience=0)


@case("alerts-choice-not-allowed", ConfigError, "mode='down' is not one of 'min', 'max', 'any'")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", mode="down")


@case("alerts-divergence-no-direction", ConfigError, "DivergenceRule('pathway_consistency'): pathway_consistency has "
      "no fixed good direction, so moving 'the wrong way' is undefined: pass mode='min' or mode='max'")
def _(tmp, mp):
    from grokmon.alerts import DivergenceRule

    DivergenceRule("pathway_consistency", max_change=0.1)


@case("monitor-metric-needs-more-moe-layers", RuntimeWarning, "grokmon: pathway_consistency needs >= 3 MoE layers and "
      "this model has 2: not logged (it could mean nothing here; docs/metrics.md)")
def _(tmp, mp):
    from moe_models import tiny_model

    m = monitor(async_metrics=False)
    try:
        m.step(tiny_model("olmoe", num_layers=2), 1)
    finally:
        m.close()


@case("alerts-number-negative", ConfigError, "min_delta=-0.1 must be a finite number >= 0")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", min_delta=-0.1)


@case("alerts-ema-alpha", ConfigError, "ema_alpha=0.0 must be in (0, 1]; 1 means no smoothing")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", smooth="ema", ema_alpha=0.0)


@case("alerts-level", ConfigError, "alert level 'CRITICAL' is not one of INFO, WARN, ERROR (W&B's AlertLevel); pick "
      "one")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", level="CRITICAL")


@case("alerts-rule-name", ConfigError, "rule name 'bad name!' is not usable in a metric key: use letters, digits and "
      "_ . - /")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", name="bad name!")


@case("alerts-wait-duration-negative", ConfigError, "wait_duration=-5 must be a finite number of seconds >= 0")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("pathway_distance", wait_duration=-5)


@case("alerts-metric-empty", ConfigError, "metric='' must be a non-empty metric key such as 'pathway_distance'")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule

    PlateauRule("")


@case("alerts-threshold-above-and-below", ConfigError, "ThresholdRule needs exactly one of above=... or below=...; "
      "use two rules for a band")
def _(tmp, mp):
    from grokmon.alerts import ThresholdRule

    ThresholdRule("pathway_distance", above=1.0, below=0.0)


@case("alerts-update-not-a-number", GrokmonError, "is not a scalar: 'high' of type str is not a number; pass scalar "
      "metrics (dict[str, float])")
def _(tmp, mp):
    from grokmon.alerts import ThresholdRule

    ThresholdRule("pathway_distance", above=1.0).update(0, {"pathway_distance": "high"})


@case("alerts-duplicate-names", ConfigError, "two alert rules are named ... names key the metric alert/ ... and the "
      "saved state, so pass a distinct name=... to each")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule, RuleSet

    RuleSet([PlateauRule("pathway_distance"), PlateauRule("pathway_distance", patience=3)])


@case("alerts-state-of-another-rule", ConfigError, "cannot load the state of a ... give each rule its own name or drop "
      "the old state")
def _(tmp, mp):
    from grokmon.alerts import PlateauRule, ThresholdRule

    ThresholdRule("pathway_distance", above=1.0, name="x").load_state_dict(
        PlateauRule("pathway_distance", name="x").state_dict())


@case("alerts-loss-key-template", ConfigError, "loss_key_template='group/probe_loss' must contain '{g}' exactly once, "
      "e.g. 'group/{g}/probe_loss'")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    GroupStageTracker(loss_key_template="group/probe_loss")


@case("alerts-tracker-nothing-to-track", ConfigError, "GroupStageTracker has nothing to track: give loss_key or "
      "loss_key_template (or both)")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    GroupStageTracker(loss_key=None, loss_key_template=None)


@case("alerts-tracker-min-drop", ConfigError, "min_drop=1.0 is a fraction of the peak distance and must be < 1")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker

    GroupStageTracker(min_drop=1.0)


@case("alerts-tracker-state-of-a-rule", ConfigError, "not a GroupStageTracker state (type='PlateauRule')")
def _(tmp, mp):
    from grokmon.alerts import GroupStageTracker, PlateauRule

    GroupStageTracker().load_state_dict(PlateauRule("pathway_distance").state_dict())


# ---------------------------------------------------------------------------- sinks


@case("sinks-read-jsonl-missing", SinkError, "no JSONL file at")
def _(tmp, mp):
    from grokmon.sinks.jsonl import read_jsonl

    read_jsonl(tmp / "missing.jsonl")


@case("sinks-jsonl-in-use", SinkError, "is already being written by another grokmon monitor or sink (process ...): "
      "two runs would mix their steps in one record. Give each run its own output_dir (or jsonl= path)")
def _(tmp, mp):
    from grokmon.sinks import JsonlSink

    first = JsonlSink(tmp / "g.jsonl")
    try:
        JsonlSink(tmp / "g.jsonl")
    finally:
        first.close()


def _stalled_sink(detach_after: float) -> None:
    import threading
    import time

    from grokmon.delivery import Delivery
    from grokmon.results import Faults
    from grokmon.sinks import CallbackSink

    release = threading.Event()
    delivery = Delivery(Faults("warn"), timeout=0.05, detach_after=detach_after)
    delivery.add(CallbackSink(lambda metrics, step: release.wait(), name="hung"))
    delivery.log({"grokmon/x": 1.0}, 1)
    time.sleep(0.3)
    delivery.check()
    release.set()


@case("sinks-stalled", RuntimeWarning, "grokmon: sink hung delivery failed, training goes on (counted in "
      "grokmon/errors): SinkError('sink hung: a call has taken more than 0.05 s; training goes on, its records are "
      "held (up to 10000) and detached after 60 s')")
def _(tmp, mp):
    _stalled_sink(60.0)


@case("sinks-stalled-detached", RuntimeWarning, "grokmon: sink hung stalled for 0 s and is detached: 1 "
      "record(s) dropped (counted in grokmon/sink_drops); the JSONL record and monitor.history keep every result")
def _(tmp, mp):
    _stalled_sink(0.1)


@case("sinks-accelerate-not-accelerator", SinkError, "AccelerateSink needs an accelerate.Accelerator")
def _(tmp, mp):
    from grokmon.sinks import AccelerateSink

    AccelerateSink(object())


@case("sinks-callback-not-callable", SinkError, "CallbackSink needs a function fn(metrics, step)")
def _(tmp, mp):
    from grokmon.sinks import CallbackSink

    CallbackSink(42)


@case("sinks-callback-alert-fn-not-callable", SinkError, "alert_fn must be a function")
def _(tmp, mp):
    from grokmon.sinks import CallbackSink

    CallbackSink(print, alert_fn="log")


@case("sinks-tensorboard-missing", SinkError, "TensorBoardSink needs the tensorboard package")
def _(tmp, mp):
    from grokmon.sinks import TensorBoardSink

    mp.setitem(sys.modules, "torch.utils.tensorboard", None)
    TensorBoardSink(tmp / "tb")


@case("sinks-wandb-file-chunk-type", SinkError, "unexpected chunk type")
def _(tmp, mp):
    pytest.importorskip("wandb")
    from grokmon.testing.wandb_records import _HEADER, iter_wandb_records

    kind, payload = 9, b"x"
    chunk = struct.pack("<IHB", zlib.crc32(bytes([kind]) + payload), len(payload), kind) + payload
    (tmp / "run-x.wandb").write_bytes(_HEADER + b"\x00" + chunk)
    list(iter_wandb_records(tmp / "run-x.wandb"))


@case("sinks-alert-level", SinkError, "alert level 'loud' is not one of ('INFO', 'WARN', 'ERROR')")
def _(tmp, mp):
    from grokmon.sinks import CallbackSink

    CallbackSink(print).alert("title", "text", "loud")


@case("sinks-alert-without-title", SinkError, "alert() needs a title string or an event with a .title, got object")
def _(tmp, mp):
    from grokmon.sinks import CallbackSink

    CallbackSink(print).alert(object())


def log_to_jsonl(tmp: Path, value: Any) -> None:
    from grokmon.sinks import JsonlSink

    with JsonlSink(tmp / "g.jsonl") as sink:
        sink.log({"m": value}, step=1)


@case("sinks-metric-list", SinkError, "metric 'm' is not a scalar: [1, 2] of type list is not a number; log scalars "
      "only")
def _(tmp, mp):
    log_to_jsonl(tmp, [1, 2])


@case("sinks-metric-tensor-of-values", SinkError, "metric 'm' is not a scalar: a tensor of 2 values (shape [2]); log "
      "scalars only")
def _(tmp, mp):
    log_to_jsonl(tmp, torch.tensor([0.5, 0.25]))


@case("sinks-jsonl-closed", SinkError, "JsonlSink( ... ) is closed: create a new sink to log again")
def _(tmp, mp):
    from grokmon.sinks import JsonlSink

    sink = JsonlSink(tmp / "g.jsonl")
    sink.close()
    sink.log({"m": 1.0}, step=1)


@case("sinks-jsonl-corrupt-middle-line", SinkError, "line 2 of ... is not JSON (...): the file is corrupted; move it "
      "away")
def _(tmp, mp):
    from grokmon.sinks import JsonlSink

    (tmp / "g.jsonl").write_text('{"step": 1, "metrics": {}}\nnot json\n{"step": 2, "metrics": {}}\n')
    JsonlSink(tmp / "g.jsonl")


@case("sinks-wandb-no-run", SinkError, "no active W&B run: call wandb.init() first or pass run=")
def _(tmp, mp):
    wandb = pytest.importorskip("wandb")
    from grokmon.sinks import WandbSink

    mp.setattr(wandb, "run", None)
    WandbSink().log({"grokmon/a": 1.0}, step=1)


@case("sinks-wandb-metric-glob", SinkError, "metric_glob='*/grokmon': W&B accepts only a suffix glob such as "
      "'grokmon/*'")
def _(tmp, mp):
    from grokmon.sinks import WandbSink

    WandbSink(metric_glob="*/grokmon")


@case("sinks-tensorboard-no-target", SinkError, "TensorBoardSink needs exactly one of log_dir= or writer=")
def _(tmp, mp):
    from grokmon.sinks import TensorBoardSink

    TensorBoardSink()


@case("sinks-wandb-file-missing", SinkError, "no W&B run file or directory at ... pass the offline-run-* directory or "
      "its .wandb file")
def _(tmp, mp):
    from grokmon.testing.wandb_records import find_wandb_file

    find_wandb_file(tmp / "missing")


@case("sinks-wandb-folder-without-run-file", SinkError, "no run-*.wandb file under ... was wandb.init(dir=...) pointed "
      "elsewhere?")
def _(tmp, mp):
    from grokmon.testing.wandb_records import find_wandb_file

    find_wandb_file(tmp)


@case("sinks-wandb-file-bad-header", SinkError, "is not a W&B run file (bad header")
def _(tmp, mp):
    from grokmon.testing.wandb_records import read_wandb_run

    (tmp / "run-x.wandb").write_bytes(b"hello world, not a run")
    read_wandb_run(tmp / "run-x.wandb")


@case("sinks-wandb-file-checksum", SinkError, "checksum mismatch at byte ... the file is corrupted")
def _(tmp, mp):
    from grokmon.testing.wandb_records import _HEADER, iter_wandb_records

    payload = b"x"
    chunk = struct.pack("<IHB", zlib.crc32(bytes([1]) + payload) ^ 1, len(payload), 1) + payload  # a wrong checksum
    (tmp / "run-x.wandb").write_bytes(_HEADER + b"\x00" + chunk)
    list(iter_wandb_records(tmp / "run-x.wandb"))


@case("sinks-wandb-charts-every", SinkError, "charts_every=0 must be a positive number of probes, or None (charts only "
      "at close)")
def _(tmp, mp):
    from grokmon.sinks import WandbSink

    WandbSink(charts_every=0)


class FinishedRun:
    """A stand-in W&B run that takes logs until ``finish()``."""

    def __init__(self) -> None:
        self._is_finished, self.step, self.summary = False, 0, {}

    def define_metric(self, *args: Any, **kwargs: Any) -> None: ...

    def log(self, *args: Any, **kwargs: Any) -> None:
        assert not self._is_finished, "a finished run takes no logs"

    def finish(self) -> None:
        self._is_finished = True


@case("sinks-wandb-close-after-finish", SinkError, "the W&B run finished before WandbSink.close(): the per-group "
      "charts and the stage table were not logged. Close the monitor (monitor.close()) before run.finish()")
def _(tmp, mp):
    pytest.importorskip("wandb")
    from grokmon.sinks import WandbSink

    run = FinishedRun()
    sink = WandbSink(run)
    sink.log({"grokmon/group/a/pathway_distance": 0.3}, step=2)  # a chart to log at close
    run.finish()
    sink.close()


@case("sinks-wandb-records-table-missing", SinkError, "no history value 'nope' in ... was the table logged under "
      "another key?")
def _(tmp, mp):
    from grokmon.testing.wandb_records import WandbRunRecords

    WandbRunRecords(tmp / "run-x.wandb", history=[{"_step": 0, "grokmon/a": 1.0}]).table("nope")


# ---------------------------------------------------------------------------- CLI, report, plots


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

    probe().save(tmp / "probe.pt")
    (tmp / "checkpoint-7").mkdir()
    (tmp / "run").mkdir()
    (tmp / "run" / "grokmon.jsonl").write_text(json.dumps({"step": 5, "metrics": {"pathway_distance": 0.5}}) + "\n")
    scan([tmp / "checkpoint-7"], tmp / "probe.pt", tmp / "run", progress=False)


@case("cli-checkpoint-not-a-directory", GrokmonError, "is not a directory: pass saved Hugging Face checkpoint")
def _(tmp, mp):
    from grokmon.cli import scan

    probe().save(tmp / "probe.pt")
    (tmp / "checkpoint-7").write_text("weights")
    scan([tmp / "checkpoint-7"], tmp / "probe.pt", tmp / "out", progress=False)


@case("cli-checkpoint-no-config", GrokmonError, "has no config.json: it is not a saved Hugging Face model")
def _(tmp, mp):
    from grokmon.cli import scan

    probe().save(tmp / "probe.pt")
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

    probe().save(tmp / "probe.pt")
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


# ---------------------------------------------------------------------------- report


def record(tmp: Path) -> Path:
    """A one-probe grokmon.jsonl."""
    path = tmp / "grokmon.jsonl"
    path.write_text(json.dumps({"step": 0, "metrics": {"grokmon/pathway_distance": 0.5, "grokmon/probe_loss": 2.0}})
                    + "\n")
    return path


@case("report-jsonl-missing", ConfigError, "does not exist: pass the grokmon.jsonl a run (GrokkingMonitor output_dir) "
      "or grokmon scan wrote")
def _(tmp, mp):
    from grokmon.report import write_report

    write_report(tmp / "missing.jsonl", tmp / "out")


@case("report-folder-without-jsonl", ConfigError, "is a folder without a grokmon.jsonl: pass the JSONL file a run "
      "(GrokkingMonitor output_dir) or grokmon scan wrote")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "run").mkdir()
    write_report(tmp / "run", tmp / "out")


@case("report-jsonl-empty", ConfigError, "has no metric records: the file is empty or the run has not probed yet "
      "(the first probe is at step 0, then one each every= optimizer steps); wait for a probe, or pass the "
      "grokmon.jsonl of a run that has one")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "g.jsonl").write_text("")
    write_report(tmp / "g.jsonl", tmp / "out")


@case("report-jsonl-alerts-only", ConfigError, "has no metric records: the file is empty or the run has not probed yet "
      "(the first probe is at step 0, then one each every= optimizer steps); wait for a probe, or pass the "
      "grokmon.jsonl of a run that has one")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "alerts.jsonl").write_text(json.dumps({"step": 1, "alert": {"title": "t"}}) + "\n")
    write_report(tmp / "alerts.jsonl", tmp / "out")


@case("report-jsonl-corrupt-line", SinkError, "line ... is not JSON (...): the file is corrupted; move it away")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "g.jsonl").write_text('{"step": 1, "metrics": {}}\nnot json\n{"step": 2, "metrics": {}}\n')
    write_report(tmp / "g.jsonl", tmp / "out")


@case("report-jsonl-binary", SinkError, "line ... is not JSON (...): the file is corrupted; move it away")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "g.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\n\x00")
    write_report(tmp / "g.jsonl", tmp / "out")


@case("report-jsonl-line-not-object", ConfigError, "line 1 of ... is a JSON list, not a grokmon record: pass the "
      "grokmon.jsonl a run wrote")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "g.jsonl").write_text("[1, 2]\n")
    write_report(tmp / "g.jsonl", tmp / "out")


@case("report-input-type", ConfigError, "write_report needs a JSONL path or a list of records, got int")
def _(tmp, mp):
    from grokmon.report import write_report

    write_report(3, tmp / "out")


@case("report-out-dir-is-a-file", ConfigError, "is a file: pass a folder for report.html and overview.png")
def _(tmp, mp):
    from grokmon.report import write_report

    (tmp / "file").write_text("")
    write_report(record(tmp), tmp / "file")


@case("report-probe-file-missing", ConfigError, "probe_file 'nope.pt' does not exist: pass the probe.pt the monitor "
      "saved beside grokmon.jsonl, or leave probe_file out")
def _(tmp, mp):
    from grokmon.report import write_report

    mp.chdir(tmp)
    write_report(record(tmp), tmp / "out", probe_file="nope.pt")


@case("report-eval-file-no-step", ConfigError, "row 1 of eval_file ... has no 'step' (found ['acc', 'epoch']): write "
      "CSV with a 'step' column,")
def _(tmp, mp):
    from grokmon.report.evalfile import read_eval_file

    (tmp / "eval.csv").write_text("acc,epoch\n0.5,1\n")
    read_eval_file(tmp / "eval.csv")


@case("report-matplotlib-missing", ConfigError, "the report needs matplotlib: pip install 'grokmon[plot]'")
def _(tmp, mp):
    from grokmon.report import write_report

    mp.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    write_report(record(tmp), tmp / "out")


# ---------------------------------------------------------------------------- tests


def _params() -> list:
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs two devices (CPU and CUDA)")
    return [pytest.param(c, id=c, marks=[pytest.mark.gpu, skip] if c in GPU_ONLY else []) for c in CASES]


def _parts(fragment: str) -> list[str]:
    """The literal parts of a fragment; ``...`` between them stands for any text."""
    return [part.strip() for part in fragment.split("...") if part.strip()]


def _pattern(fragment: str) -> str:
    return ".*".join(re.escape(part) for part in _parts(fragment))


def _shows_in_order(parts: list[str], text: str) -> bool:
    at = 0
    for part in parts:
        at = text.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


@pytest.mark.parametrize("case_id", _params())
def test_error(case_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exception, fragment, trigger = CASES[case_id]
    pattern = re.compile(_pattern(fragment), re.DOTALL)
    if issubclass(exception, Warning):
        with pytest.warns(exception) as caught:
            trigger(tmp_path, monkeypatch)
        messages = [str(w.message) for w in caught if issubclass(w.category, exception)]
        assert any(pattern.search(m) for m in messages), f"no {exception.__name__} matches {fragment!r}: {messages}"
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exception, match=pattern) as info:
            trigger(tmp_path, monkeypatch)
    assert isinstance(info.value, GrokmonError), "grokmon's own checks raise GrokmonError subclasses"


def test_fragments_are_literal_where_they_say_so() -> None:
    assert _parts("no probe file at ...: save one") == ["no probe file at", ": save one"]
    assert re.search(_pattern("a (b) ... c."), "a (b) x y c.") and not re.search(_pattern("a (b) ... c."), "a b x c.")
    assert _shows_in_order(["a", "c"], "a b c") and not _shows_in_order(["c", "a"], "a b c")
    assert all(_parts(fragment) for _, fragment, _ in CASES.values()), "a fragment of only '...' checks nothing"


def test_cli_bad_input_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from grokmon.cli import main

    (tmp_path / "corpus.txt").write_text("one sample\nanother sample\n")
    code = main(["probe", str(tmp_path / "corpus.txt"), "--tokenizer", str(tmp_path / "no-tokenizer"),
                 "--out", str(tmp_path / "probe.pt"), "--n", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("grokmon: error: cannot load the tokenizer") and "Traceback" not in err


def test_monitor_problem_warns_and_counts_unless_on_error_raise(tmp_path: Path) -> None:
    """The rule of docs/errors.md: during training a monitor problem warns and counts; it raises
    only with ``on_error="raise"``. Here: a model without MoE routers."""
    from grokmon.monitor import GrokkingMonitor

    monitor = GrokkingMonitor(probe(), MonitorConfig(every=1, output_dir=tmp_path, async_metrics=False))
    model = llama()
    with pytest.warns(RuntimeWarning, match=r"grokmon: probe failed, training goes on \(counted in grokmon/errors\)"):
        metrics = monitor.step(model, 1)  # training goes on; no metric of this probe is a number
    assert not any(v == v for k, v in metrics.items() if k.endswith("pathway_distance"))
    assert monitor.errors == 1
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        monitor.step(model, 2)  # counted every time, warned once per place
    assert not [w for w in again if "probe failed" in str(w.message)]
    assert monitor.errors == 2
    monitor.close()
    strict = GrokkingMonitor(probe(), MonitorConfig(every=1, jsonl=False, on_error="raise"))
    with pytest.raises(RouterNotFoundError, match="register_router"):
        strict.step(model, 1)
    assert strict.errors == 1
    strict.close()


def test_error_types_form_one_hierarchy() -> None:
    import grokmon.errors as errors

    kinds = [RouterNotFoundError, RoutingError, ProbeError, ConfigError, SinkError]
    assert all(issubclass(k, GrokmonError) for k in kinds)
    assert issubclass(ProbeError, ValueError) and issubclass(ConfigError, ValueError)
    public = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, GrokmonError)}
    text = DOC.read_text()
    for name in public:
        assert f"`{name}`" in text, f"docs/errors.md does not describe {name}"


# ---------------------------------------------------------------------------- the page cannot rot

_TEST_REF = re.compile(r"`(tests/[\w/.-]+\.py)::(\w+)(?:\[([^\]`]+)\])?`")


def _doc_refs(text: str) -> list[tuple[str, str, str | None]]:
    return [(m[1], m[2], m[3]) for m in _TEST_REF.finditer(text)]


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each markdown table of the page: (header cells, data rows)."""
    tables: list[tuple[list[str], list[list[str]]]] = []
    rows: list[list[str]] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if rows:
            tables.append((rows[0], [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]))
            rows = []
    return tables


TYPES_HEADER = ["type", "base classes", "raised when"]
ROWS_HEADER = ["bad input", "exception", "message (abridged)", "test"]


def _catalogue_rows() -> list[list[str]]:
    tables = _tables(DOC.read_text())
    headers = [header for header, _ in tables]
    assert headers.count(TYPES_HEADER) == 1, "docs/errors.md has one table of error types"
    others = [header for header in headers if header != TYPES_HEADER]
    assert others and all(h == ROWS_HEADER for h in others), f"every other table has the columns {ROWS_HEADER}"
    return [row for header, rows in tables if header == ROWS_HEADER for row in rows]


def test_docs_table_names_existing_tests() -> None:
    text = DOC.read_text()
    refs = _doc_refs(text)
    assert len(refs) >= len(CASES), "docs/errors.md names fewer tests than the catalogue has cases"
    for path, name, param in refs:
        file = ROOT / path
        assert file.is_file(), f"docs/errors.md names {path}, which does not exist"
        assert re.search(rf"^\s*def {name}\(", file.read_text(), re.MULTILINE), f"{path} has no test {name}"
        if file.resolve() == THIS and param is not None:
            assert param in CASES, f"docs/errors.md names case {param!r}, which {path} does not define"
    named = {param for path, _, param in refs if (ROOT / path).resolve() == THIS}
    missing = sorted(set(CASES) - named)
    assert not missing, f"cases not in docs/errors.md: {missing}"


def _case_refs(cells: list[str]) -> list[str]:
    return [param for path, name, param in _doc_refs(" ".join(cells))
            if (ROOT / path).resolve() == THIS and name == "test_error" and param is not None]


def test_docs_rows_show_each_case_type_and_message() -> None:
    """Every catalogue row names a case, and shows each of its cases' type and message."""
    seen: list[str] = []
    rows = _catalogue_rows()
    assert len(rows) >= len(CASES) // 2
    for cells in rows:
        assert len(cells) == 4, f"a catalogue row has 4 cells (input, type, message, test): {cells}"
        params = _case_refs(cells)
        assert params, (f"the row {cells[0]!r} names no tests/test_error_catalogue.py::test_error[<id>] case: add "
                        "a case that triggers it and asserts its type and message")
        for param in params:
            assert param in CASES, f"docs/errors.md names case {param!r}, which this file does not define"
            exception, fragment, _ = CASES[param]
            assert f"`{exception.__name__}`" in cells[1], f"row of {param} must name {exception.__name__}"
            assert _shows_in_order(_parts(fragment), cells[2].replace("`", "")), \
                f"row of {param} must quote {fragment!r} (parts in order)"
        seen += params
    assert sorted(seen) == sorted(set(seen)), "each case checks one row"
    assert set(seen) == set(CASES), f"cases without a row: {sorted(set(CASES) - set(seen))}"
