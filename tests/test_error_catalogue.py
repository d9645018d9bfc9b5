"""The error catalogue (docs/errors.md): every catalogued bad input raises its type and message.

``CASES`` holds the catalogued checks that no other test file triggers with its message. Each case
builds a tiny bad input and must raise ``exception`` with ``fragment`` (a literal substring, the part
a user would grep for) in the message. docs/errors.md names each case as
``tests/test_error_catalogue.py::test_error[<id>]``; ``test_docs_table_names_existing_tests`` checks
that every test the page names exists, that every case here is in the table, and that each row of
a case shows the case's exception type and message fragment, so page and tests cannot drift apart.
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

from grokmon.errors import ConfigError, GrokmonError, ProbeError, RouterNotFoundError, RoutingError, SinkError
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

    monitor = GrokkingMonitor(probe(), every=1, jsonl=False, async_metrics=False, on_error="raise")
    try:
        monitor.step(llama(), 1)
    finally:
        monitor.close()


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

    GrokkingMonitor(probe(n=1), every=1, jsonl=False)


# ---------------------------------------------------------------------------- monitor


@case("monitor-batch-size", ConfigError, "batch_size must be a positive number of probe samples per forward")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    GrokkingMonitor(probe(), every=1, jsonl=False, batch_size=0)


@case("monitor-load-not-a-state-file", GrokmonError, "is not a grokmon monitor state file")
def _(tmp, mp):
    from grokmon.monitor import GrokkingMonitor

    torch.save({"x": 1}, tmp / "state.pt")
    monitor = GrokkingMonitor(probe(), every=1, jsonl=False)
    try:
        monitor.load(tmp / "state.pt")
    finally:
        monitor.close()


@case("monitor-hf-callback-without-monitor", ConfigError, "GrokkingCallback needs a GrokkingMonitor")
def _(tmp, mp):
    from grokmon.integrations import hf

    mp.setattr(hf, "_LIVE", [])  # no live callback from another test to adopt
    hf.GrokkingCallback()


@case("monitor-hf-callback-not-a-monitor", ConfigError, "GrokkingCallback needs a GrokkingMonitor, got str")
def _(tmp, mp):
    from grokmon.integrations import hf

    hf.GrokkingCallback("x")


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


@case("monitor-lightning-missing", GrokmonError, "GrokmonLightningCallback needs Lightning")
def _(tmp, mp):
    from grokmon.integrations.lightning import lightning_module

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        mp.setitem(sys.modules, name, None)  # a None entry makes the import fail
    lightning_module()


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


@case("metric-config-backend", ConfigError, "unknown edit-distance backend 'numba'")
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
    from grokmon.metrics.routing import routing_entropy

    routing_entropy(torch.zeros(2, 4))


@case("metric-edit-distance-devices", ConfigError, "move both to one device", gpu=True)
def _(tmp, mp):
    from grokmon.editdistance import edit_distance

    a, n = torch.tensor([[1, 2]]), torch.tensor([2])
    edit_distance(a, n, a.cuda(), n.cuda())


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


# ---------------------------------------------------------------------------- sinks


@case("sinks-read-jsonl-missing", SinkError, "no JSONL file at")
def _(tmp, mp):
    from grokmon.sinks.jsonl import read_jsonl

    read_jsonl(tmp / "missing.jsonl")


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


# ---------------------------------------------------------------------------- tests


def _params() -> list:
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs two devices (CPU and CUDA)")
    return [pytest.param(c, id=c, marks=[pytest.mark.gpu, skip] if c in GPU_ONLY else []) for c in CASES]


@pytest.mark.parametrize("case_id", _params())
def test_error(case_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exception, fragment, trigger = CASES[case_id]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exception, match=re.escape(fragment)) as info:
            trigger(tmp_path, monkeypatch)
    assert isinstance(info.value, GrokmonError), "grokmon's own checks raise GrokmonError subclasses"


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

    monitor = GrokkingMonitor(probe(), every=1, output_dir=tmp_path, async_metrics=False)
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
    strict = GrokkingMonitor(probe(), every=1, jsonl=False, on_error="raise")
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


def _table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[\s|:-]+\|$", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


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


def test_docs_rows_show_each_case_type_and_message() -> None:
    seen = set()
    for cells in _table_rows(DOC.read_text()):
        for path, _, param in _doc_refs(" ".join(cells)):
            if (ROOT / path).resolve() != THIS or param is None:
                continue
            assert param in CASES, f"docs/errors.md names case {param!r}, which this file does not define"
            seen.add(param)
            exception, fragment, _ = CASES[param]
            assert len(cells) == 4, f"row of {param} must have 4 cells (input, type, message, test): {cells}"
            assert f"`{exception.__name__}`" in cells[1], f"row of {param} must name {exception.__name__}"
            assert fragment in cells[2].replace("`", ""), f"row of {param} must quote {fragment!r}"
    assert seen == set(CASES)
