"""Property-based fuzzing of the router-output normaliser (grokmon.routing.extract).

Valid outputs come in the shapes the transformers 5.x families produce: ``(logits, weights, ids)``
in any order (int64/int32 ids, float32/bf16/float16 tensors, ``[T, *]`` or ``[B, S, *]``, with
ties, ``k == E``, noise such as ``None`` / 0-dim / 1-D entries), ``(weights, ids)`` without logits,
bare logits, Llama4's ``(scores, logits)`` and DBRX's ``route_tokens_to_experts``. Malformed ones:
non-tensors, empty dimensions, ``k > E``, weights of the wrong shape, ids out of range, NaN/inf.

Contract checked: a valid output gives ids in ``[0, E)``, distinct per row, ordered by
non-increasing weight, the input's expert set (for logits: a valid top-k), with the input's
weights divided by their sum; a malformed one raises :class:`grokmon.errors.RoutingError` from the
normaliser (shape problems) or from ``capture_pathways`` (value problems, checked without a host
sync per batch) and never another exception type.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
from torch import nn

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from grokmon.errors import RoutingError  # noqa: E402
from grokmon.routing import capture_pathways, register_router, unregister_router  # noqa: E402
from grokmon.routing.extract import standard_extractor  # noqa: E402

FLOATS = (torch.float32, torch.bfloat16, torch.float16)
INTS = (torch.int64, torch.int32)
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Router(nn.Module):
    """A stand-in router: attributes for the extractor, and a forward returning a prepared output."""

    def __init__(self, top_k: int | None, num_experts: int | None, make: Callable[[], Any] | None = None):
        super().__init__()
        self.top_k, self.num_experts, self.make = top_k, num_experts, make

    def forward(self, hidden: torch.Tensor) -> Any:
        return self.make()


class TinyModel(nn.Module):
    def __init__(self, router: Router):
        super().__init__()
        self.embed = nn.Embedding(16, 4)
        self.layers = nn.ModuleList([nn.Module()])
        self.layers[0].router = router

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(input_ids)
        self.layers[0].router(hidden)
        return hidden


@dataclass
class Case:
    """One router output and how to read it; ``expect`` says what the normaliser must do with it."""

    output: Any
    shape: tuple[int, int]              # (B, S): T = B * S token rows
    experts: int = 0                    # E
    k: int = 0
    top_k: int | None = None            # module attribute
    num_experts: int | None = None      # module attribute
    kwargs: dict = field(default_factory=dict)
    expect: str = "valid"               # valid | raise | flagged (returned; capture_pathways raises)
    ids: torch.Tensor | None = None     # [T, k] input ids and weights (ids-given outputs)
    weights: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # [T, E] the logits the selection comes from (no ids given)
    what: str = ""

    def rows(self) -> int:
        return self.shape[0] * self.shape[1]

    def module(self) -> Router:
        return Router(self.top_k, self.num_experts)


# ------------------------------------------------------------------------------------ generators
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(t: int, e: int, ties: bool, gen: torch.Generator) -> torch.Tensor:
    if ties:  # few distinct values: ties inside and at the top-k boundary
        return torch.randint(0, 3, (t, e), generator=gen).float()
    return torch.randn(t, e, generator=gen) * 3


def _ids_and_weights(t: int, e: int, k: int, ties: bool, gen: torch.Generator):
    """Distinct ids per row in random order, with positive weights (not sorted)."""
    ids = torch.argsort(torch.rand(t, e, generator=gen), dim=-1)[:, :k]
    if ties:
        w = torch.randint(1, 3, (t, k), generator=gen).float() / 4
    else:
        w = torch.rand(t, k, generator=gen) * 0.9 + 0.1
    return ids, w


def _shaped(x: torch.Tensor, shape: tuple[int, int], three_d: bool) -> torch.Tensor:
    return x.reshape(*shape, x.shape[-1]) if three_d else x


@st.composite
def dims(draw, max_e: int = 9):
    b, s = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    e = draw(st.integers(1, max_e))
    k = draw(st.one_of(st.integers(1, e), st.just(e)))  # k == E often
    return (b, s), e, k


@st.composite
def valid_cases(draw) -> Case:
    shape, e, k = draw(dims())
    t = shape[0] * shape[1]
    gen = _gen(draw(st.integers(0, 2**31 - 1)))
    ties = draw(st.booleans())
    three_d = draw(st.booleans())
    dtype = draw(st.sampled_from(FLOATS))
    kind = draw(st.sampled_from(["ids", "ids", "ids_no_logits", "logits", "dense", "route_fn"]))

    if kind in ("ids", "ids_no_logits"):
        ids, w = _ids_and_weights(t, e, k, ties, gen)
        ids = ids.to(draw(st.sampled_from(INTS)))
        w = w.to(draw(st.sampled_from(FLOATS)))
        w_in = w.float()  # what the normaliser sees, after the dtype's rounding
        items: list[Any] = [("w", _shaped(w, shape, three_d)), ("ids", _shaped(ids, shape, three_d))]
        if kind == "ids":
            items.append(("logits", _shaped(_logits(t, e, ties, gen).to(dtype), shape, three_d)))
        order = draw(st.permutations(range(len(items))))
        items = [items[i] for i in order]
        names = [n for n, _ in items]
        kwargs: dict = {}
        if kind == "ids":
            if draw(st.booleans()):
                kwargs["logits_index"] = names.index("logits")
            elif k == e and names.index("logits") > names.index("w"):
                # k == E without logits_index: two [T, E] floats, read by the logits-first convention
                i, j = names.index("logits"), names.index("w")
                items[i], items[j] = items[j], items[i]
        # noise the normaliser must ignore: None, a 0-dim aux loss, a 1-D per-expert count
        for extra in draw(st.lists(st.sampled_from(["none", "scalar", "vector"]), max_size=2)):
            pos = draw(st.integers(0, len(items)))
            value = {"none": None, "scalar": torch.tensor(0.5), "vector": torch.arange(e)}[extra]
            items.insert(pos, (extra, value))
            if "logits_index" in kwargs and pos <= kwargs["logits_index"]:
                kwargs["logits_index"] += 1
        values = [v for _, v in items]
        container = draw(st.sampled_from(["tuple", "list", "dict"]))
        output = (tuple(values) if container == "tuple" else values if container == "list"
                  else {f"out{i}": v for i, v in enumerate(values)})
        return Case(output, shape, e, k, top_k=None, num_experts=e if kind == "ids_no_logits" else None,
                    kwargs=kwargs, ids=ids.long(), weights=w_in, what=kind)

    logits = _logits(t, e, ties, gen).to(dtype)
    top_k_attr = draw(st.booleans())
    kwargs = {} if top_k_attr else {"top_k": k}
    case = Case(None, shape, e, k, top_k=k if top_k_attr else None, kwargs=kwargs, logits=logits.float(), what=kind)
    if kind == "logits":
        case.output = _shaped(logits, shape, three_d) if draw(st.booleans()) else (_shaped(logits, shape, three_d),)
    elif kind == "dense":  # Llama4: (sigmoid scores at the top-k, zero elsewhere; logits) with logits_index=1
        top = torch.topk(logits, k, dim=-1)
        scores = torch.full_like(logits, float("-inf")).scatter_(1, top.indices, top.values).sigmoid()
        case.output = (_shaped(scores, shape, three_d), _shaped(logits, shape, three_d))
        case.kwargs["logits_index"] = 1
    else:  # DBRX: bare logits, the block's route_tokens_to_experts selects
        case.output = _shaped(logits, shape, three_d)

        def route(lg: torch.Tensor, k: int = k):
            return torch.topk(torch.softmax(lg.float(), dim=-1), k, dim=-1)

        case.kwargs["route_fn"] = route
    return case


@st.composite
def malformed_cases(draw) -> Case:
    shape, e, k = draw(dims())
    t = shape[0] * shape[1]
    gen = _gen(draw(st.integers(0, 2**31 - 1)))
    dtype = draw(st.sampled_from(FLOATS))
    kind = draw(st.sampled_from([
        "not_tensor", "no_2d", "zero_experts", "zero_k", "k_gt_e", "no_top_k", "weights_width",
        "weights_rows", "two_wide", "narrow_logits", "ids_out_of_range", "nan_logits", "nan_weights",
        "empty_rows",
    ]))
    logits = _logits(t, e, False, gen).to(dtype)
    ids, w = _ids_and_weights(t, e, k, False, gen)
    case = Case(None, shape, e, k, top_k=k, num_experts=None, expect="raise", what=kind)
    if kind == "not_tensor":
        case.output = draw(st.sampled_from([None, 3, "logits", (None, None), [1.0, 2.0]]))
    elif kind == "no_2d":  # only 0-dim / 1-D tensors
        case.output = (torch.tensor(1.0), torch.arange(t), logits.reshape(-1))
    elif kind == "zero_experts":
        case.output = torch.zeros(t, 0, dtype=dtype)
    elif kind == "zero_k":
        case.output = (logits, torch.zeros(t, 0, dtype=dtype), torch.zeros(t, 0, dtype=torch.long))
    elif kind == "k_gt_e":
        case.top_k = e + draw(st.integers(1, 3))
        case.output = (logits,)
    elif kind == "no_top_k":
        case.top_k = None
        case.output = logits
    elif kind == "weights_width":  # weights narrower than the ids (wider ones would be read as logits)
        if k == 1:
            case.output = (ids, torch.zeros(t, 1, 0, dtype=dtype))
        else:
            case.output = (logits, w[:, : k - 1].to(dtype), ids)
    elif kind == "weights_rows":  # weights with fewer rows than the ids
        case.output = (logits[:0], w[:0].to(dtype), ids)
    elif kind == "two_wide":  # ids [T, k], two [T, E] floats, no [T, k] weights (crashed in finish)
        assume_wider = e > k
        case.output = (logits, torch.softmax(logits.float(), -1).to(dtype), ids) if assume_wider else (ids,)
    elif kind == "narrow_logits":  # the recorded logits position holds a tensor narrower than the ids
        if k == 1:
            case.output = (torch.zeros(t, 0, dtype=dtype), w.to(dtype), ids)
        else:
            case.output = (torch.zeros(t, k - 1, dtype=dtype), w.to(dtype), ids)
        case.kwargs["logits_index"] = 0
    elif kind == "ids_out_of_range":
        row, col = draw(st.integers(0, t - 1)), draw(st.integers(0, k - 1))
        bad = ids.clone()
        bad[row, col] = draw(st.sampled_from([-1, -7, e, e + 5, 2**31 - 1]))
        case.ids = bad
        case.output = (logits, w.to(dtype), bad.to(draw(st.sampled_from(INTS))))
        case.expect = "flagged"
    elif kind == "nan_logits":  # logits only: NaN / +inf reach the weights (softmax)
        row = draw(st.integers(0, t - 1))
        bad = logits.clone()
        how = draw(st.sampled_from(["nan", "inf", "row_-inf"]))
        if how == "row_-inf":
            bad[row] = float("-inf")
        else:
            bad[row, draw(st.integers(0, e - 1))] = float("nan") if how == "nan" else float("inf")
        case.output = bad
        case.expect = "flagged"
    elif kind == "nan_weights":
        bad = w.to(dtype).clone()
        bad[draw(st.integers(0, t - 1)), draw(st.integers(0, k - 1))] = draw(
            st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        case.output = (logits, bad, ids)
        case.expect = "flagged"
    else:  # empty_rows: a router returning no token rows at all
        case.output = draw(st.sampled_from([
            torch.zeros(0, e, dtype=dtype), (logits[:0], w[:0].to(dtype), ids[:0]),
        ]))
        case.expect = "flagged"
    return case


# ------------------------------------------------------------------------------------ checks
def _check_valid(case: Case, out) -> None:
    t, e, k = case.rows(), case.experts, case.k
    ids, w = out.expert_ids, out.weights
    assert ids.dtype == torch.int64 and w.dtype == torch.float32
    assert tuple(ids.shape) == (t, k) and tuple(w.shape) == (t, k)
    assert out.num_experts == e
    assert bool(((ids >= 0) & (ids < e)).all()), ids
    assert bool((ids.sort(-1).values.diff(dim=-1) > 0).all()), f"repeated expert in a row: {ids}"
    assert bool((w[:, :-1] >= w[:, 1:]).all()), f"not ordered by weight: {w}"
    torch.testing.assert_close(w.sum(-1), torch.ones(t), atol=1e-5, rtol=0)
    if case.ids is not None:  # ids given: used as given, with their own weights
        assert torch.equal(ids.sort(-1).values, case.ids.sort(-1).values)
        dense = torch.zeros(t, e).scatter_(1, case.ids, case.weights)
        expected = dense.gather(1, ids) / case.weights.sum(-1, keepdim=True)
        torch.testing.assert_close(w, expected, atol=1e-5, rtol=1e-5)
    else:  # logits only: a top-k of the logits (any one among ties)
        logits = case.logits
        chosen = logits.gather(1, ids)
        if k < e:
            unchosen = logits.scatter(1, ids, float("-inf")).max(-1).values
            assert bool((chosen.min(-1).values >= unchosen).all()), (logits, ids)
        if case.what in ("logits", "route_fn"):  # softmax weights, renormalised over the chosen experts
            expected = torch.softmax(chosen, dim=-1)
            torch.testing.assert_close(w, expected, atol=1e-5, rtol=1e-4)


def _extract(case: Case):
    return standard_extractor(case.module(), (), case.output, **case.kwargs)


@FUZZ
@given(valid_cases())
def test_valid_router_outputs_normalise(case: Case) -> None:
    _check_valid(case, _extract(case))


@FUZZ
@given(malformed_cases())
def test_malformed_router_outputs_raise_routing_error_only(case: Case) -> None:
    if case.expect == "raise":
        with pytest.raises(RoutingError):
            _extract(case)
        return
    # value problems are not looked at per call (that would be a host sync per router per batch):
    # the output comes back, or a RoutingError; capture_pathways reports it (next test)
    try:
        out = _extract(case)
    except RoutingError:
        return
    assert out.expert_ids.shape == out.weights.shape
    if case.what == "ids_out_of_range":
        assert bool(((out.expert_ids < 0) | (out.expert_ids >= case.experts)).any())  # not hidden
    if case.what in ("nan_logits", "nan_weights"):
        assert not bool(torch.isfinite(out.weights).all())


# ------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module", autouse=True)
def _registered():
    yield
    unregister_router(Router)


def _capture(case: Case):
    router = Router(case.top_k, case.num_experts, make=lambda: case.output)
    register_router(Router, functools.partial(standard_extractor, **case.kwargs) if case.kwargs else None)
    model = TinyModel(router)
    ids = torch.randint(0, 16, case.shape, generator=_gen(0))
    return capture_pathways(model, ids, batch_size=case.shape[0], compute_loss=False, keep_token_ids=True)


@FUZZ
@given(st.one_of(valid_cases(), malformed_cases()))
def test_capture_raises_routing_error_only(case: Case) -> None:
    if case.expect == "valid":
        res = _capture(case)
        p = res.pathways
        out = _extract(case)
        assert p.num_experts == case.experts
        torch.testing.assert_close(p.mean_weights.sum(-1), torch.ones(case.shape[0], 1), atol=1e-5, rtol=0)
        assert p.expert_counts[0].tolist() == torch.bincount(out.expert_ids.reshape(-1), minlength=case.experts).tolist()
        assert torch.equal(p.token_ids[:, :, 0].reshape(case.rows(), -1).long(), out.expert_ids)
    else:
        with pytest.raises(RoutingError):
            _capture(case)
