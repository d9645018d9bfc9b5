"""Megatron-core (0.16): grokmon reads ``TopKRouter`` in Megatron MoE layers run on a CPU.

Megatron's full model needs CUDA and Transformer Engine; its MoE layer runs on a CPU with the
test-side shim of ``tests/megatron_cpu.py``. The layers sit at ``decoder.layers.{i}.mlp`` as in a
``GPTModel``. Every captured id and weight is checked against a reference computed here from
``router.weight`` and the router's sequence-first input, with batch > 1 so that the reordering
from Megatron's ``s * B + b`` rows to grokmon's ``b * S + s`` rows is exercised.

Run: ``pytest tests/test_engine_megatron.py`` (needs ``pip install grokmon[megatron]``).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from megatron_cpu import TinyMegatronMoE, megatron_on_cpu, moe_layer_config

pytestmark = [pytest.mark.engine, pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*(moe_ffn_hidden_size|full scope).*:UserWarning")]

VOCAB, EXPERTS, TOP_K = 64, 6, 2
BATCH, SEQ, N = 3, 5, 6


@pytest.fixture(scope="module", autouse=True)
def _cpu_megatron():
    pytest.importorskip("megatron.core", reason="megatron-core is not installed: pip install grokmon[megatron]")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex|moe_ffn_hidden_size|full scope).*")
        with megatron_on_cpu():
            yield


def _router_inputs(model):
    """The test's own pre-hooks: each router's input ``[S, B, H]``, appended per forward."""
    seen: dict[int, list[torch.Tensor]] = {}
    handles = [block.mlp.router.register_forward_pre_hook(
        lambda m, args, i=i: seen.setdefault(i, []).append(args[0].detach().clone()))
        for i, block in enumerate(model.decoder.layers)]
    return seen, handles


def _reference(router, x_sbh: torch.Tensor, score: str, bias: torch.Tensor | None, capacity_factor: float | None):
    """Megatron's TopKRouter by hand, on tokens in batch-major order: ids ``[B*S, k]``, weights, kept mask."""
    s, b, h = x_sbh.shape
    logits_seq = x_sbh.reshape(-1, h).float() @ router.weight.float().T  # rows s * B + b, as Megatron
    if score == "softmax":
        top, ids = torch.topk(logits_seq, TOP_K, dim=-1)
        probs = torch.softmax(top, dim=-1)
    else:
        scores = torch.sigmoid(logits_seq)
        ids = torch.topk(scores + bias, TOP_K, dim=-1).indices
        probs = scores.gather(-1, ids)
        probs = probs / probs.sum(-1, keepdim=True)
    kept = torch.ones_like(ids, dtype=torch.bool)
    if capacity_factor is not None:  # per expert, only the `capacity` tokens of highest prob stay
        capacity = math.ceil(s * b * TOP_K / EXPERTS * capacity_factor)
        for e in range(EXPERTS):
            rows, slots = (ids == e).nonzero(as_tuple=True)
            order = probs[rows, slots].argsort(descending=True)
            kept[rows[order[capacity:]], slots[order[capacity:]]] = False
    probs = probs * kept
    # sequence-first -> batch-major, by explicit index arithmetic
    order = torch.tensor([si * b + bi for bi in range(b) for si in range(s)])
    ids, probs, kept = ids[order], probs[order], kept[order]
    total = probs.sum(-1, keepdim=True)
    weights = probs / torch.where(total > 0, total, torch.ones_like(total))
    return ids, weights, kept


@pytest.mark.parametrize("routing", ["softmax", "sigmoid_bias", "capacity_drop"])
def test_capture_matches_hand_reference(routing):
    from grokmon.routing import capture_pathways, find_routers

    score = "sigmoid" if routing == "sigmoid_bias" else "softmax"
    overrides = dict(num_moe_experts=EXPERTS, moe_router_topk=TOP_K, moe_router_score_function=score)
    if routing == "sigmoid_bias":
        overrides.update(moe_router_enable_expert_bias=True, moe_router_topk_scaling_factor=2.5)
    if routing == "capacity_drop":
        overrides.update(moe_expert_capacity_factor=0.5)
    model = TinyMegatronMoE(moe_layer_config(**overrides), vocab_size=VOCAB).eval()
    bias = None
    if routing == "sigmoid_bias":
        bias = torch.linspace(-0.4, 0.4, EXPERTS)
        for block in model.decoder.layers:
            block.mlp.router.expert_bias.copy_(bias)

    sites = find_routers(model)
    assert [(s.name, s.layer, s.num_experts) for s in sites] == [
        ("decoder.layers.0.mlp.router", 0, EXPERTS), ("decoder.layers.1.mlp.router", 1, EXPERTS)]
    assert sites[0].router_weight().data_ptr() == model.decoder.layers[0].mlp.router.weight.data_ptr()

    # distinct tokens: equal inputs would tie at the capacity cut, where Megatron's pick is arbitrary
    ids = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(1))[:N * SEQ].view(N, SEQ)
    seen, handles = _router_inputs(model)
    try:
        result = capture_pathways(model, ids, batch_size=BATCH, keep_token_ids=True, compute_loss=False)
    finally:
        for h in handles:
            h.remove()

    p = result.pathways
    assert p.mean_weights.shape == (N, 2, EXPERTS) and p.token_ids.shape == (N, SEQ, 2, TOP_K)
    dropped = 0
    for layer, block in enumerate(model.decoder.layers):
        assert len(seen[layer]) == N // BATCH and seen[layer][0].shape[:2] == (SEQ, BATCH)
        refs = [_reference(block.mlp.router, x, score, bias, overrides.get("moe_expert_capacity_factor"))
                for x in seen[layer]]
        ref_ids = torch.cat([r[0] for r in refs])
        ref_w = torch.cat([r[1] for r in refs])
        kept = torch.cat([r[2] for r in refs])
        got = p.token_ids[:, :, layer].reshape(-1, TOP_K).long()
        # each token's kept experts first, by weight (the order grokmon returns); dropped slots after
        order = torch.where(kept, ref_w, -1.0).argsort(dim=-1, descending=True, stable=True)
        ref_sorted, kept_sorted = ref_ids.gather(-1, order), kept.gather(-1, order)
        assert torch.equal(torch.where(kept_sorted, got, -1), torch.where(kept_sorted, ref_sorted, -1)), \
            f"layer {layer}: captured expert ids differ from the hand reference"
        dense = torch.zeros(N * SEQ, EXPERTS).scatter_add_(1, torch.where(kept, ref_ids, 0), ref_w)
        torch.testing.assert_close(p.mean_weights[:, layer], dense.view(N, SEQ, EXPERTS).mean(1),
                                   rtol=1e-5, atol=1e-6)
        dropped += int((~kept).sum())
    if routing == "capacity_drop":
        assert dropped > 0  # the capacity really dropped slots
    else:
        torch.testing.assert_close(p.mean_weights.sum(-1), torch.ones(N, 2))


def test_sequence_first_rows_are_reordered_batch_major():
    """Three samples of one batch with different routing: each sample's pathway is its own."""
    from grokmon.routing import capture_pathways

    model = TinyMegatronMoE(moe_layer_config(num_moe_experts=EXPERTS, moe_router_topk=TOP_K, num_layers=1),
                            vocab_size=VOCAB).eval()
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(5))
    together = capture_pathways(model, ids, batch_size=BATCH, keep_token_ids=True, compute_loss=False).pathways
    alone = [capture_pathways(model, ids[i:i + 1], batch_size=1, keep_token_ids=True, compute_loss=False).pathways
             for i in range(BATCH)]
    for i, single in enumerate(alone):  # batch of 1: no reordering involved
        assert torch.equal(together.token_ids[i], single.token_ids[0])
        torch.testing.assert_close(together.mean_weights[i], single.mean_weights[0])
    assert not torch.equal(together.token_ids[0], together.token_ids[1])  # the samples do differ


class _GPTLike(TinyMegatronMoE):
    """Megatron MoE layers behind a ``GPTModel``-shaped forward ``(input_ids, position_ids, attention_mask)``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.head = torch.nn.Linear(self.embed.embedding_dim, VOCAB, bias=False)
        self.calls = []

    def forward(self, input_ids, position_ids, attention_mask):  # noqa: D102 - GPTModel's positional order
        self.calls.append((position_ids.clone(), attention_mask))
        return self.head(super().forward(input_ids))


def test_probe_model_feeds_gpt_arguments_and_computes_the_loss():
    from grokmon.integrations.megatron import MegatronProbeModel
    from grokmon.routing import capture_pathways

    gpt = _GPTLike(moe_layer_config(num_moe_experts=EXPERTS, moe_router_topk=TOP_K), vocab_size=VOCAB).eval()
    ids = torch.randint(0, VOCAB, (4, SEQ), generator=torch.Generator().manual_seed(7))
    result = capture_pathways(MegatronProbeModel(gpt), ids, batch_size=4)
    assert result.pathways.router_names == ("model.decoder.layers.0.mlp.router", "model.decoder.layers.1.mlp.router")
    positions, mask = gpt.calls[-1]
    assert torch.equal(positions, torch.arange(SEQ).expand(4, SEQ)) and mask is None
    with torch.no_grad():
        logits = gpt(ids, positions, None)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1),
                                           reduction="none").view(4, -1).mean(1)
    torch.testing.assert_close(result.loss_per_sample, ce, rtol=1e-4, atol=1e-5)


def _bridge_context(model, step):
    """Shaped like Megatron-Bridge's CallbackContext: ``state.train_state.step`` and ``model`` (a chunk list)."""
    from types import SimpleNamespace

    return SimpleNamespace(state=SimpleNamespace(train_state=SimpleNamespace(step=step)), model=[model],
                           user_state={}, optimizer=None, scheduler=None)


def test_bridge_callback_probes_updates_done_on_schedule(tmp_path):
    from grokmon import GrokkingMonitor, MonitorConfig, ProbeSet
    from grokmon.integrations.megatron import GrokkingBridgeCallback

    model = _GPTLike(moe_layer_config(num_moe_experts=EXPERTS, moe_router_topk=TOP_K), vocab_size=VOCAB).eval()
    probe = ProbeSet.from_token_ids(torch.randint(0, VOCAB, (6, 10), generator=torch.Generator().manual_seed(8)),
                                    groups=["a", "b"] * 3)
    monitor = GrokkingMonitor(probe, MonitorConfig(every=2, output_dir=tmp_path, on_error="raise", stages=False))
    callback = GrokkingBridgeCallback(monitor)  # probes context.model[0] through MegatronProbeModel
    callback.on_train_start(_bridge_context(model, 0))
    for step in range(5):  # Bridge fires on_train_step_end, then train_state.step += 1
        callback.on_train_step_end(_bridge_context(model, step))
    callback.on_train_end(_bridge_context(model, 5))
    assert [s for s, _ in monitor.history] == [0, 2, 4]  # baseline, then updates done 2 and 4
    assert all(math.isfinite(m["grokmon/pathway_distance"]) and math.isfinite(m["grokmon/probe_loss"])
               for _, m in monitor.history)
    assert not callback.should_stop

    with pytest.warns(RuntimeWarning, match="pipeline parallelism"):
        other = GrokkingBridgeCallback(GrokkingMonitor(probe, MonitorConfig(every=1, output_dir=tmp_path / "pp")))
        context = _bridge_context(model, 0)
        context.model = [model, model]
        other.on_train_step_end(context)
    other.on_train_end(context)
    assert other.monitor.history == []
