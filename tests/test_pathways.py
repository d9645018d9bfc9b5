"""Pathway forms against a plain-Python reference, and the Pathways container."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grokmon.errors import ConfigError
from grokmon.pathways import Pathways, pathway_sequences


def reference_threshold(weights: list[list[float]], threshold: float, separator: int | None) -> list[int]:
    """The paper's pathway of one sample, written the obvious way."""
    out: list[int] = []
    for layer_index, layer in enumerate(weights):
        ranked = sorted(range(len(layer)), key=lambda e: (-layer[e], e))
        total = 0.0
        for rank, expert in enumerate(ranked):
            if rank > 0 and (total >= threshold - 1e-6 or layer[expert] <= 0):
                break
            out.append(expert)
            total += layer[expert]
        if separator is not None and layer_index < len(weights) - 1:
            out.append(separator)
    return out


def reference_tokens(ids: list, order: str, separator: int | None) -> list[int]:
    """Per-token form of one sample: ids[t][l] is a list of k ids, -1 on padding."""
    t_count, l_count = len(ids), len(ids[0])
    if order == "layer":
        units = [[e for t in range(t_count) for e in ids[t][l] if e >= 0] for l in range(l_count)]
    else:
        units = [[e for l in range(l_count) for e in ids[t][l] if e >= 0] for t in range(t_count)]
    units = [u for u in units if u]
    out: list[int] = []
    for i, unit in enumerate(units):
        out.extend(unit)
        if separator is not None and i < len(units) - 1:
            out.append(separator)
    return out


def make_pathways(weights: torch.Tensor, token_ids: torch.Tensor | None = None) -> Pathways:
    n, l, e = weights.shape
    return Pathways(
        mean_weights=weights,
        layers=tuple(range(l)),
        router_names=tuple(f"model.layers.{i}.mlp.gate" for i in range(l)),
        num_experts=e,
        expert_counts=torch.zeros(l, e, dtype=torch.long),
        token_ids=token_ids,
        meta={"top_k": 2},
    )


def random_weights(n: int, l: int, e: int, seed: int, sparsity: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, l, e, generator=g)
    w[torch.rand(n, l, e, generator=g) < sparsity] = 0.0
    w[..., 0] += 1e-3  # no all-zero layer
    return w / w.sum(-1, keepdim=True)


def rows(seq) -> list[list[int]]:
    return [seq.ids[i, : seq.lengths[i]].tolist() for i in range(seq.ids.shape[0])]


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.8, 1.0])
@pytest.mark.parametrize("separator", [True, False])
def test_threshold_form_matches_reference(threshold: float, separator: bool) -> None:
    w = random_weights(12, 4, 8, seed=1)
    seq = pathway_sequences(make_pathways(w), "threshold", threshold=threshold, separator=separator)
    expected = [reference_threshold(w[i].tolist(), threshold, 8 if separator else None) for i in range(12)]
    assert rows(seq) == expected
    assert seq.alphabet_size == (9 if separator else 8)
    # padding after each row's length
    for i, length in enumerate(seq.lengths.tolist()):
        assert (seq.ids[i, length:] == -1).all()


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 5), l=st.integers(1, 5), e=st.integers(2, 12),
    threshold=st.floats(0.05, 1.0), seed=st.integers(0, 10_000),
)
def test_threshold_form_property(n: int, l: int, e: int, threshold: float, seed: int) -> None:
    w = random_weights(n, l, e, seed=seed)
    seq = pathway_sequences(make_pathways(w), "threshold", threshold=threshold)
    assert rows(seq) == [reference_threshold(w[i].tolist(), threshold, e) for i in range(n)]


def test_ties_break_towards_lower_expert_id() -> None:
    w = torch.tensor([[[0.25, 0.25, 0.25, 0.25]]])
    seq = pathway_sequences(make_pathways(w), "threshold", threshold=0.5)
    assert rows(seq) == [[0, 1]]


def test_topk_form() -> None:
    w = random_weights(6, 3, 8, seed=2, sparsity=0.0)
    seq = pathway_sequences(make_pathways(w), "topk", top_k=3)
    expected = [
        [e for l in range(3) for e in torch.argsort(w[i, l], descending=True, stable=True)[:3].tolist()]
        for i in range(6)
    ]
    assert rows(seq) == expected
    assert seq.lengths.tolist() == [9] * 6
    # default k comes from the capture's metadata
    assert pathway_sequences(make_pathways(w), "topk").lengths.tolist() == [6] * 6


@pytest.mark.parametrize("order", ["layer", "token"])
@pytest.mark.parametrize("separator", [True, False])
def test_token_form_matches_reference(order: str, separator: bool) -> None:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 6, (4, 5, 3, 2), generator=g).to(torch.int16)
    ids[1, 3:] = -1  # padded tail
    ids[2, :] = -1   # fully padded sample
    p = make_pathways(torch.full((4, 3, 6), 1 / 6), token_ids=ids)
    seq = pathway_sequences(p, "token", order=order, separator=separator)
    expected = [reference_tokens(ids[i].tolist(), order, 6 if separator else None) for i in range(4)]
    assert rows(seq) == expected


def test_token_form_needs_token_ids() -> None:
    with pytest.raises(ConfigError, match="keep_token_ids=True"):
        pathway_sequences(make_pathways(random_weights(2, 2, 4, 0)), "token")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"form": "bogus"}, "form must be"),
        ({"form": "threshold", "threshold": 0.0}, "threshold must be"),
        ({"form": "topk", "top_k": 9}, "top_k must be"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        pathway_sequences(make_pathways(random_weights(2, 2, 8, 0)), **kwargs)


def test_container_checks_shapes() -> None:
    with pytest.raises(ConfigError, match=r"\[N, L, E\]"):
        Pathways(torch.zeros(2, 3), layers=(0,), router_names=("a",), num_experts=3,
                 expert_counts=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="layer indices"):
        Pathways(torch.zeros(2, 3, 4), layers=(0,), router_names=("a",), num_experts=4,
                 expert_counts=torch.zeros(3, 4, dtype=torch.long))


def test_select_save_load_round_trip(tmp_path) -> None:
    w = random_weights(5, 2, 4, seed=4)
    p = make_pathways(w)
    p.groups = torch.tensor([0, 1, 0, 1, 1])
    p.group_names = ("a", "b")
    sub = p.select([4, 0])
    assert torch.equal(sub.mean_weights, w[[4, 0]])
    assert sub.groups.tolist() == [1, 0]
    path = tmp_path / "p.pt"
    p.save(path)
    back = Pathways.load(path)
    assert torch.equal(back.mean_weights, p.mean_weights)
    assert back.group_names == ("a", "b") and back.layers == p.layers and back.meta == p.meta
