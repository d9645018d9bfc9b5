"""The error catalogue's cases: model / routing (see tests/test_error_catalogue.py)."""

from __future__ import annotations

import torch
from torch import nn

from grokmon.config import MonitorConfig
from grokmon.errors import ConfigError, ProbeError, RouterNotFoundError, RoutingError
from grokmon.probe import ProbeSet
from grokmon.routing import capture_pathways, register_router, unregister_router
from grokmon.routing.types import RouterOutput

from catalogue.inputs import Gate, RouterModel, capture_custom, ids, llama, monitor, tiny_probe
from catalogue.registry import case


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

    monitor = GrokkingMonitor(tiny_probe(), MonitorConfig(every=1, jsonl=False, async_metrics=False, on_error="raise"))
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
