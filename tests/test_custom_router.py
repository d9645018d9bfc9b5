"""A hand-written PyTorch MoE, registered with register_router, is captured exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from grokmon.routing import RouterOutput, capture_pathways, find_routers, register_router, unregister_router


class LogitsRouter(nn.Module):
    """Returns logits only; the block picks top-k itself."""

    def __init__(self, hidden: int, experts: int, top_k: int):
        super().__init__()
        self.proj = nn.Linear(hidden, experts, bias=False)
        self.top_k = top_k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.reshape(-1, x.shape[-1]))


class TupleRouter(LogitsRouter):
    """Returns (ids, probs) in an order grokmon cannot guess: needs an extractor."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(self.proj(x.reshape(-1, x.shape[-1])), -1)
        top, chosen = torch.topk(probs, self.top_k, -1)
        return chosen, top


class Block(nn.Module):
    def __init__(self, router: nn.Module, hidden: int, experts: int):
        super().__init__()
        self.router = router
        self.experts = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(experts))
        self.dispatched: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.router(x)
        if isinstance(out, tuple):
            chosen, weights = out
        else:
            weights, chosen = torch.topk(torch.softmax(out, -1), self.router.top_k, -1)
        self.dispatched.append(chosen)
        flat = x.reshape(-1, x.shape[-1])
        mixed = torch.zeros_like(flat)
        for slot in range(chosen.shape[1]):
            for e, expert in enumerate(self.experts):
                rows = chosen[:, slot] == e
                mixed[rows] += weights[rows, slot, None] * expert(flat[rows])
        return x + mixed.view_as(x)


class TinyMoE(nn.Module):
    def __init__(self, router_cls: type, vocab: int = 50, hidden: int = 16, experts: int = 6, top_k: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(Block(router_cls(hidden, experts, top_k), hidden, experts) for _ in range(2))
        self.head = nn.Linear(hidden, vocab)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


@pytest.fixture
def registry():
    yield register_router
    unregister_router(LogitsRouter)
    unregister_router(TupleRouter)


def test_logits_router_with_default_extractor(registry) -> None:
    registry(LogitsRouter)
    model = TinyMoE(LogitsRouter)
    sites = find_routers(model)
    assert [(s.name, s.layer) for s in sites] == [("layers.0.router", 0), ("layers.1.router", 1)]
    x = torch.randint(0, 50, (3, 5))
    result = capture_pathways(model, x, keep_token_ids=True, compute_loss=False)
    for i, block in enumerate(model.layers):
        truth = block.dispatched[-1].sort(-1).values
        captured = result.pathways.token_ids[:, :, i].reshape(-1, 2).long().sort(-1).values
        assert torch.equal(captured, truth)


def test_tuple_router_with_custom_extractor(registry) -> None:
    def extract(module: nn.Module, args: tuple, out: tuple) -> RouterOutput:
        chosen, probs = out
        return RouterOutput(chosen, probs / probs.sum(-1, keepdim=True), None, num_experts=6)

    registry(TupleRouter, extract)
    model = TinyMoE(TupleRouter)
    x = torch.randint(0, 50, (2, 4))
    result = capture_pathways(model, x, keep_token_ids=True, compute_loss=False)
    truth = model.layers[1].dispatched[-1]
    assert torch.equal(result.pathways.token_ids[:, :, 1].reshape(-1, 2).long(), truth)
    assert result.pathways.router_weights.shape == (2, 6, 16)


def test_unregistered_router_found_by_name_heuristic() -> None:
    # a module called '...router' with a top_k attribute is taken for a router even unregistered
    assert [s.name for s in find_routers(TinyMoE(LogitsRouter))] == ["layers.0.router", "layers.1.router"]


def test_model_without_anything_router_like_is_refused() -> None:
    from grokmon.errors import RouterNotFoundError

    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
    with pytest.raises(RouterNotFoundError, match="Sequential.*register_router"):
        find_routers(model)
