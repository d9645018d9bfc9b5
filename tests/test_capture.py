"""capture_pathways: padding, batching, mode/hook hygiene, compiled models, probe loss, errors."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F
import transformers as tf

from grokmon.errors import ProbeError, RouterNotFoundError, RoutingError
from grokmon.routing import capture_pathways, find_routers
from moe_models import tiny_model


def _ids(n, t, seed=0):
    return torch.randint(2, 128, (n, t), generator=torch.Generator().manual_seed(seed))


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _reference_loss(model, ids, mask):
    """Per-sample mean next-token CE from the model's own full [B, T, V] logits."""
    with torch.no_grad():
        logits = model(ids, attention_mask=mask, use_cache=False).logits.float()
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                         reduction="none").view(ids.shape[0], -1)
    valid = (mask[:, :-1] * mask[:, 1:]).float()
    return (ce * valid).sum(1) / valid.sum(1)


def test_rows_sum_to_one_and_counts_match_token_ids(olmoe):
    ids = _ids(5, 10)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 2:] = 0
    res = capture_pathways(olmoe, ids, mask, keep_token_ids=True, batch_size=2)
    p = res.pathways
    torch.testing.assert_close(p.mean_weights.sum(-1), torch.ones(5, 2))
    assert res.num_tokens == int(mask.sum())
    assert p.token_mask.tolist() == mask.bool().tolist()
    assert bool((p.token_ids[~mask.bool()] == -1).all()) and bool((p.token_ids[mask.bool()] >= 0).all())
    for l in range(2):
        tok = p.token_ids[:, :, l].long()
        assert p.expert_counts[l].tolist() == torch.bincount(tok[tok >= 0], minlength=8).tolist()
    assert p.meta == {"top_k": 2, "model_class": "OlmoeForCausalLM", "router_kinds": ["mlp", "mlp"]}
    expected_rw = torch.stack([olmoe.model.layers[i].mlp.gate.weight for i in range(2)])
    assert torch.equal(p.router_weights, expected_rw)


def test_padding_is_dropped(olmoe):
    ids = _ids(2, 12, seed=1)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0                                   # sample 1 right-padded to 7 real tokens
    both = capture_pathways(olmoe, ids, mask, keep_token_ids=True)
    alone = capture_pathways(olmoe, ids[1:, :7], keep_token_ids=True)
    first = capture_pathways(olmoe, ids[:1], keep_token_ids=True)
    torch.testing.assert_close(both.pathways.mean_weights[1], alone.pathways.mean_weights[0])
    assert torch.equal(both.pathways.token_ids[1, :7], alone.pathways.token_ids[0])
    torch.testing.assert_close(both.loss_per_sample[1], alone.loss_per_sample[0])
    assert torch.equal(both.pathways.expert_counts,
                       alone.pathways.expert_counts + first.pathways.expert_counts)


def test_batch_size_invariance(olmoe):
    ids = _ids(7, 8, seed=2)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    a = capture_pathways(olmoe, ids, mask, batch_size=7, keep_token_ids=True)
    b = capture_pathways(olmoe, ids, mask, batch_size=3, keep_token_ids=True)
    torch.testing.assert_close(a.pathways.mean_weights, b.pathways.mean_weights)
    assert torch.equal(a.pathways.token_ids, b.pathways.token_ids)
    assert torch.equal(a.pathways.expert_counts, b.pathways.expert_counts)
    torch.testing.assert_close(a.loss_per_sample, b.loss_per_sample)


def test_modes_restored_and_hooks_removed_after_success_and_failure():
    model = tiny_model("mixtral").train()
    model.model.layers[0].eval()                      # a mixed state must come back as it was
    before = {n: m.training for n, m in model.named_modules()}
    seen = []
    model.model.layers[1].register_forward_pre_hook(lambda m, a: seen.append(m.training))
    hooks = _hook_count(model)
    capture_pathways(model, _ids(2, 6))
    assert seen == [False]                            # the forward ran in eval mode
    assert {n: m.training for n, m in model.named_modules()} == before
    assert _hook_count(model) == hooks

    def boom(_m, _a):
        raise RuntimeError("boom")

    h = model.model.layers[1].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        capture_pathways(model, _ids(2, 6))
    h.remove()
    assert {n: m.training for n, m in model.named_modules()} == before
    assert _hook_count(model) == hooks


def test_compiled_model_gives_the_same_pathways(olmoe):
    # backend="eager": dynamo tracing without inductor codegen, to stay fast on a CPU test machine
    compiled = torch.compile(olmoe, backend="eager")
    ids = _ids(3, 8, seed=5)
    with torch.no_grad():
        compiled(ids, use_cache=False)                # compile before the probe
    a = capture_pathways(compiled, ids, keep_token_ids=True)
    b = capture_pathways(olmoe, ids, keep_token_ids=True)
    assert a.pathways.router_names == b.pathways.router_names == ("model.layers.0.mlp.gate", "model.layers.1.mlp.gate")
    assert torch.equal(a.pathways.token_ids, b.pathways.token_ids)
    torch.testing.assert_close(a.loss_per_sample, b.loss_per_sample)


def test_regionally_compiled_layers_still_fire(olmoe):
    model = tiny_model("olmoe", seed=4)
    for layer in model.model.layers:
        layer.compile(backend="eager")
    ids = _ids(2, 8, seed=6)
    with torch.no_grad():
        model(ids, use_cache=False)
    a = capture_pathways(model, ids, keep_token_ids=True)
    b = capture_pathways(olmoe, ids, keep_token_ids=True)
    assert torch.equal(a.pathways.token_ids, b.pathways.token_ids)


@pytest.mark.parametrize("family", ["olmoe", "mixtral", "granitemoe"])
def test_probe_loss_matches_full_logits_loss(family):
    model = tiny_model(family, seed=6)
    if family == "granitemoe":
        model.config.logits_scaling = 4.0             # the forward divides logits by it
    ids = _ids(4, 11, seed=3)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    mask[3, 9:] = 0
    res = capture_pathways(model, ids, mask, batch_size=3)
    torch.testing.assert_close(res.loss_per_sample, _reference_loss(model, ids, mask), atol=1e-5, rtol=1e-5)
    # and against the model's own loss on an unpadded batch (mean over every position)
    full = capture_pathways(model, ids)
    with torch.no_grad():
        own = model(ids, labels=ids, use_cache=False).loss
    torch.testing.assert_close(full.loss_per_sample.mean(), own, atol=1e-5, rtol=1e-5)


def test_compute_loss_off(olmoe):
    assert capture_pathways(olmoe, _ids(2, 5), compute_loss=False).loss_per_sample is None


def test_no_router_model_raises():
    cfg = tf.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, eos_token_id=1, bos_token_id=None)
    with pytest.raises(RouterNotFoundError, match="LlamaForCausalLM.*register_router"):
        capture_pathways(tf.LlamaForCausalLM(cfg).eval(), _ids(2, 5))


def test_bad_inputs_raise(olmoe):
    with pytest.raises(ProbeError, match="tokenizer/vocab mismatch.*200.*128"):
        capture_pathways(olmoe, torch.tensor([[3, 200, 4]]))
    with pytest.raises(ProbeError, match="2-D"):
        capture_pathways(olmoe, torch.tensor([3, 4, 5]))
    with pytest.raises(ProbeError, match="empty"):
        capture_pathways(olmoe, torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ProbeError, match="no non-padding"):
        capture_pathways(olmoe, _ids(2, 4), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))


def test_nan_router_weights_raise():
    model = tiny_model("qwen3_moe")
    with torch.no_grad():
        model.model.layers[1].mlp.gate.weight.fill_(float("nan"))
    before = _hook_count(model)
    with pytest.raises(RoutingError, match=r"model\.layers\.1\.mlp\.gate \(layer 1\).*NaN"):
        capture_pathways(model, _ids(2, 6))
    assert _hook_count(model) == before


def test_groups_are_stored(olmoe):
    p = capture_pathways(olmoe, _ids(3, 5), groups=[0, 1, 0], group_names=("a", "b")).pathways
    assert p.groups.tolist() == [0, 1, 0] and p.group_names == ("a", "b")
