"""compute_metrics: every grokmon metric of one probe as a flat dict of floats.

Keys are unprefixed (the monitor adds ``grokmon/``); docs/metrics.md lists them all.

Example:
    >>> import torch
    >>> from grokmon.pathways import Pathways
    >>> w = torch.softmax(torch.randn(4, 2, 4, generator=torch.Generator().manual_seed(0)), -1)
    >>> p = Pathways(mean_weights=w, layers=(0, 1), router_names=("a", "b"), num_experts=4,
    ...              expert_counts=torch.ones(2, 4, dtype=torch.long))
    >>> m = compute_metrics(p)
    >>> 0.0 <= m["pathway_distance"] <= 1.0, "pathway_consistency" in m   # no router rows captured
    (True, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .._keywords import CheckedKeywords
from ..editdistance import BACKENDS
from ..errors import ConfigError
from ..pathways import PathwayForm, Pathways, PathwaySequences, pathway_sequences
from .consistency import kept_experts_mask, pathway_consistency, routing_cosine
from .distance import pathway_distance
from .usage import expert_load, pathway_drift, routing_entropy
from .selection import MemorizationTracker, check_fraction
from .info import MetricInfo

#: The keys computed here and by the result path (:mod:`grokmon.metrics.info`).
INFO = (
    MetricInfo("probe_loss", "lower", "nats", description="mean next-token loss of the probe samples"),
    MetricInfo("probe_seconds", "lower", "s", description="time of the probe forward"),
    MetricInfo("probe_tokens", None, "tokens", description="tokens in the probe"),
    MetricInfo("metric_seconds", "lower", "s", description="time to compute the metrics"),
)

_FORMS = ("threshold", "topk", "token")


@dataclass
class MetricConfig(CheckedKeywords):
    """Which metrics :func:`compute_metrics` computes, and how (defaults follow docs/metrics.md).

    Attributes:
        form: pathway form of the headline distance and the drift: ``"threshold"`` (paper),
            ``"topk"`` or ``"token"`` (needs ``keep_token_ids=True`` at capture).
        threshold: cumulative weight of the threshold form (paper: 0.7).
        top_k: experts per layer of the top-k form (None: the router's k, else 2).
        token_order: ``"layer"`` or ``"token"``, the nesting of the token form.
        max_pairs: most pairs per group for the distance; more are subsampled with ``seed``.
        seed: seed of the pair subsample.
        per_group: add ``group/<name>/...`` keys (None: whenever the pathways have groups). The
            headline values use within-group pairs whenever groups exist, whatever this says.
        per_layer: add ``layer/<i>/...`` keys.
        per_expert: add ``layer/<i>/expert/<e>/load`` keys.
        consistency: compute pathway consistency (needs router weight rows and >= 2 routers).
        consistency_experts: ``"all"`` weights every expert by ``g`` (default); ``"kept"`` uses only
            the experts of the sample's threshold pathway, renormalised.
        backend: edit-distance backend (``"auto"``, ``"torch"``, ``"rapidfuzz"``).
        extra_forms: further forms to compute the distance for, as ``pathway_distance/<form>``.
        selection: ``"all"`` (default) computes the distance over every probe sample; ``"memorized"``
            is the paper's selection: only samples memorized per :class:`MemorizationTracker`,
            paired within the same group and memorization step (needs ``memorized_since``; the
            monitor keeps the tracker). docs/validation.md has its measured effect.
        memorized_fraction: share of each group whose loss is low enough to count (paper: 0.2-0.25).
        memorized_tolerance: largest change of a sample's loss between probes that counts as settled.
    """

    form: PathwayForm = "threshold"
    threshold: float = 0.7
    top_k: int | None = None
    token_order: Literal["layer", "token"] = "layer"
    max_pairs: int | None = 100_000
    seed: int = 0
    per_group: bool | None = None
    per_layer: bool = False
    per_expert: bool = False
    consistency: bool = True
    consistency_experts: Literal["all", "kept"] = "all"
    backend: str = "auto"
    extra_forms: tuple[PathwayForm, ...] = ()
    selection: Literal["all", "memorized"] = "all"
    memorized_fraction: float = 0.2
    memorized_tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.selection not in ("all", "memorized"):
            raise ConfigError(f"selection must be 'all' or 'memorized' (the paper's), got {self.selection!r}")
        check_fraction(self.memorized_fraction)
        MemorizationTracker(self.memorized_fraction, self.memorized_tolerance)  # checks the tolerance
        for form in (self.form, *self.extra_forms):
            if form not in _FORMS:
                raise ConfigError(f"unknown pathway form {form!r}: use one of {_FORMS}")
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1] (the paper uses 0.7), got {self.threshold}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(
                f"top_k must be a positive number of experts or None (the router's k), got {self.top_k}"
            )
        if self.token_order not in ("layer", "token"):
            raise ConfigError(f"token_order must be 'layer' or 'token', got {self.token_order!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown edit-distance backend {self.backend!r}: use one of {BACKENDS}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ConfigError(f"max_pairs must be a positive number of pairs or None, got {self.max_pairs}")
        if self.consistency_experts not in ("all", "kept"):
            raise ConfigError(f"consistency_experts must be 'all' or 'kept', got {self.consistency_experts!r}")
        self.extra_forms = tuple(self.extra_forms)


def _sequences(p: Pathways, form: PathwayForm, config: MetricConfig) -> PathwaySequences:
    return pathway_sequences(p, form, threshold=config.threshold, top_k=config.top_k, order=config.token_order)


def _layer_keys(p: Pathways) -> list[str]:
    """``layer/<model layer index>``; a layer with two routers gets ``layer/<i>_<position>``."""
    return [f"layer/{layer}" if p.layers.count(layer) == 1 else f"layer/{layer}_{i}"
            for i, layer in enumerate(p.layers)]


def compute_metrics(pathways: Pathways, previous: Pathways | None = None,
                    config: MetricConfig | None = None, *, loss_per_sample: torch.Tensor | None = None,
                    memorized_since: torch.Tensor | None = None) -> dict[str, float]:
    """All metrics of one probe as ``{key: float}``, unprefixed; NaN where a value is undefined.

    Args:
        pathways: this probe's routing.
        previous: the previous probe's routing of the same samples, for ``pathway_drift`` (omitted
            when None or when the sample count differs).
        config: what to compute (default :class:`MetricConfig`).
        loss_per_sample: ``[N]`` each sample's mean next-token loss: adds ``probe_loss`` and
            ``group/<g>/probe_loss``.
        memorized_since: ``[N]`` memorization step per sample (``-1``: not memorized), from
            :class:`MemorizationTracker`; needed by ``selection="memorized"``.

    Returns:
        Flat dict (docs/metrics.md has the key table). Consistency keys are omitted without router
        weight rows or with fewer than 2 routers. Same input, same numbers.
    """
    config = config or MetricConfig()
    p = pathways
    out: dict[str, float] = {}
    groups = p.groups
    per_group = groups is not None and (config.per_group is None or config.per_group)
    strata = None
    if config.selection == "memorized":
        if memorized_since is None:
            raise ConfigError("MetricConfig(selection='memorized') needs memorized_since (from a "
                              "grokmon.metrics.MemorizationTracker fed the per-sample probe loss; the monitor does this)")
        strata = torch.as_tensor(memorized_since).detach().cpu().long().flatten()
        if strata.numel() != p.num_samples:
            raise ConfigError(f"memorized_since must have one entry per sample ({p.num_samples}), got {strata.numel()}")
        out["memorized_samples"] = float((strata >= 0).sum())
        if per_group:
            for g, name in enumerate(p.group_names):
                out[f"group/{name}/memorized_samples"] = float(((strata >= 0) & (groups.cpu() == g)).sum())

    def distance_of(seqs: PathwaySequences):
        return pathway_distance(seqs, groups, group_names=p.group_names, max_pairs=config.max_pairs,
                                seed=config.seed, backend=config.backend, strata=strata)

    seqs = _sequences(p, config.form, config)
    distance = distance_of(seqs)
    out["pathway_distance"] = distance.normalized
    out["pathway_distance_raw"] = distance.raw
    out["pathway_distance_stderr"] = distance.normalized_stderr
    out["pathway_length"] = float(seqs.lengths.double().mean()) if p.num_samples else math.nan
    for form in config.extra_forms:
        out[f"pathway_distance/{form}"] = distance_of(_sequences(p, form, config)).normalized

    consistency = None
    if config.consistency and p.router_weights is not None and p.num_routers >= 2:
        kept = kept_experts_mask(p.mean_weights, config.threshold) if config.consistency_experts == "kept" else None
        consistency = pathway_consistency(p.mean_weights, p.router_weights, groups, group_names=p.group_names,
                                          kept_mask=kept)
        out["pathway_consistency"] = consistency.score
        out["pathway_consistency_undefined"] = consistency.undefined_fraction
        out["pathway_cosine"] = consistency.mean_cosine
    if p.num_routers >= 2:
        out["routing_cosine"] = float(routing_cosine(p.mean_weights).double().mean())

    entropy = routing_entropy(p.mean_weights)
    load = expert_load(p.expert_counts)
    out["routing_entropy"] = float(entropy.double().mean())
    out["expert_load_entropy"] = float(load.entropy.double().mean())
    out["dead_expert_fraction"] = float(load.dead_fraction.double().mean())
    out["expert_load_max_over_mean"] = float(load.max_over_mean.double().mean())

    if previous is not None and previous.num_samples == p.num_samples:
        drift = pathway_drift(_sequences(previous, config.form, config), seqs, backend=config.backend)
        out["pathway_drift"] = drift.normalized
        out["pathway_drift_raw"] = drift.raw

    if loss_per_sample is not None:
        loss = loss_per_sample.detach().float().cpu().flatten()
        out["probe_loss"] = float(loss.mean())
        if groups is not None:
            for g, name in enumerate(p.group_names):
                members = loss[groups.cpu() == g]
                out[f"group/{name}/probe_loss"] = float(members.mean()) if len(members) else math.nan

    if per_group:
        for name, result in distance.per_group.items():
            out[f"group/{name}/pathway_distance"] = result.normalized
            out[f"group/{name}/pathway_distance_raw"] = result.raw
        if consistency is not None:
            for name, result in consistency.per_group.items():
                out[f"group/{name}/pathway_consistency"] = result.score
                out[f"group/{name}/pathway_cosine"] = result.mean_cosine

    keys = _layer_keys(p)
    if config.per_layer:
        for i, key in enumerate(keys):
            out[f"{key}/routing_entropy"] = float(entropy[i])
            out[f"{key}/expert_load_entropy"] = float(load.entropy[i])
            out[f"{key}/dead_expert_fraction"] = float(load.dead_fraction[i])
            if consistency is not None and i < p.num_routers - 1:
                # the cosine between this router and the next one
                out[f"{key}/consistency_cosine"] = float(consistency.per_layer_cosine[i])
    if config.per_expert:
        for i, key in enumerate(keys):
            for e, share in enumerate(load.fractions[i].tolist()):
                out[f"{key}/expert/{e}/load"] = share
    return {k: float(v) for k, v in out.items()}
