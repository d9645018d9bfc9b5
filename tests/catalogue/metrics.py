"""The error catalogue's cases: metric configuration (see tests/test_error_catalogue.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from grokmon.errors import ConfigError

from catalogue.registry import case


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
