"""capture_pathways: padding, batching, mode restore, hook hygiene, compile, loss, clear errors."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from moe_models import tiny_model

from grokmon.errors import ProbeError, RouterNotFoundError, RoutingError
from grokmon.routing import capture_pathways, find_routers


def ids(n: int = 4, t: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 128, (n, t), generator=torch.Generator().manual_seed(seed))


def test_padding_is_dropped() -> None:
    model = tiny_model("olmoe")
    short = ids(1, 6)
    alone = capture_pathways(model, short, keep_token_ids=True)
    padded_ids = torch.cat([short, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    batch = torch.cat([padded_ids, ids(1, 10, seed=5)])
    mask = torch.ones_like(batch)
    mask[0, 6:] = 0
    both = capture_pathways(model, batch, mask, keep_token_ids=True)
    assert torch.allclose(both.pathways.mean_weights[0], alone.pathways.mean_weights[0], atol=1e-6)
    assert torch.allclose(both.loss_per_sample[0], alone.loss_per_sample[0], atol=1e-5)
    assert (both.pathways.token_ids[0, 6:] == -1).all()
    assert both.num_tokens == 16


def test_batch_size_does_not_change_the_result() -> None:
    model = tiny_model("mixtral")
    x = ids(7)
    one = capture_pathways(model, x, batch_size=7)
    small = capture_pathways(model, x, batch_size=2)
    assert torch.allclose(one.pathways.mean_weights, small.pathways.mean_weights, atol=1e-6)
    assert torch.equal(one.pathways.expert_counts, small.pathways.expert_counts)
    assert torch.allclose(one.loss_per_sample, small.loss_per_sample, atol=1e-5)


@pytest.mark.parametrize("family", ["olmoe", "mixtral", "granitemoe"])
def test_loss_matches_the_models_own_loss(family: str) -> None:
    model = tiny_model(family)
    x = ids(3, 12)
    result = capture_pathways(model, x)
    with torch.no_grad():
        own = [model(input_ids=x[i:i + 1], labels=x[i:i + 1]).loss for i in range(3)]
    assert torch.allclose(result.loss_per_sample, torch.stack(own), atol=1e-5)


def test_modes_restored_and_hooks_removed_even_on_failure() -> None:
    model = tiny_model("olmoe").train()
    model.model.layers[1].eval()  # a mixed state must come back as it was
    before = {name: m.training for name, m in model.named_modules()}
    capture_pathways(model, ids())
    assert {name: m.training for name, m in model.named_modules()} == before

    def boom(module, args, out):
        raise RuntimeError("forward failed")

    handle = model.model.layers[1].register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="forward failed"):
        capture_pathways(model, ids())
    handle.remove()
    assert {name: m.training for name, m in model.named_modules()} == before
    assert all(not m._forward_hooks for m in model.modules())


def test_no_gradients_and_weights_untouched() -> None:
    model = tiny_model("olmoe").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    capture_pathways(model, ids())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_compiled_model() -> None:
    model = tiny_model("olmoe")
    compiled = torch.compile(model, backend="eager")
    x = ids()
    compiled(input_ids=x)  # compile once, as training would
    result = capture_pathways(compiled, x)
    expected = capture_pathways(model, x)
    assert torch.allclose(result.pathways.mean_weights, expected.pathways.mean_weights, atol=1e-6)


def test_model_without_router_names_class_and_fix() -> None:
    config = tf.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=1,
                            bos_token_id=None)
    with pytest.raises(RouterNotFoundError, match=r"LlamaForCausalLM.*register_router"):
        capture_pathways(tf.LlamaForCausalLM(config), ids())


def test_out_of_vocabulary_ids() -> None:
    x = ids()
    x[0, 0] = 500
    with pytest.raises(ProbeError, match="tokenizer/vocab mismatch.*500.*128"):
        capture_pathways(tiny_model("olmoe"), x)


@pytest.mark.parametrize("bad", [torch.zeros(5, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long)])
def test_malformed_probe(bad: torch.Tensor) -> None:
    with pytest.raises(ProbeError):
        capture_pathways(tiny_model("olmoe"), bad)


def test_nan_router_weights_raise_routing_error() -> None:
    model = tiny_model("olmoe")
    with torch.no_grad():
        find_routers(model)[1].module.weight.fill_(float("nan"))
    with pytest.raises(RoutingError, match=r"model\.layers\.1\.mlp\.gate.*NaN"):
        capture_pathways(model, ids())


def test_router_that_never_runs() -> None:
    model = tiny_model("olmoe")
    sites = find_routers(model)
    sites[1].module = torch.nn.Linear(2, 2)  # hook lands on a module the forward never calls
    with pytest.raises(RoutingError, match="never ran"):
        capture_pathways(model, ids(), routers=sites)
