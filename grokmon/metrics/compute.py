"""compute_metrics: every grokmon metric of one probe as a flat dict of floats.

Example:
    >>> metrics = compute_metrics(result.pathways, previous_pathways, MetricConfig(per_group=True))  # doctest: +SKIP
    >>> metrics["pathway_distance"]                                                                # doctest: +SKIP
    0.41
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..pathways import PathwayForm, Pathways, pathway_sequences
from .consistency import pathway_consistency, routing_cosine
from .distance import pathway_distance
from .routing import expert_load, pathway_drift, routing_entropy


@dataclass
class MetricConfig:
    """Which metrics to compute and how (defaults follow docs/metrics.md).

    ``per_group`` adds ``group/<name>/...`` keys when the probe has groups (None: whenever it has).
    ``per_layer`` and ``per_expert`` add ``layer/<i>/...`` keys; off by default to keep dashboards
    readable for 48-layer, 128-expert models. ``extra_forms`` adds ``pathway_distance/<form>``.
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
    backend: str = "auto"
    extra_forms: tuple[PathwayForm, ...] = ()


def _sequences(p: Pathways, form: PathwayForm, config: MetricConfig):
    return pathway_sequences(p, form, threshold=config.threshold, top_k=config.top_k, order=config.token_order)


def compute_metrics(pathways: Pathways, previous: Pathways | None = None,
                    config: MetricConfig | None = None) -> dict[str, float]:
    """All metrics of one probe, unprefixed (the monitor adds ``grokmon/``); NaN where undefined."""
    config = config or MetricConfig()
    p = pathways
    out: dict[str, float] = {}
    per_group = (p.groups is not None) if config.per_group is None else (config.per_group and p.groups is not None)
    seqs = _sequences(p, config.form, config)
    distance = pathway_distance(seqs, p.groups if per_group else None, group_names=p.group_names,
                                max_pairs=config.max_pairs, seed=config.seed, backend=config.backend)
    out["pathway_distance"] = distance.normalized
    out["pathway_distance_raw"] = distance.raw
    out["pathway_distance_stderr"] = distance.normalized_stderr
    out["pathway_length"] = float(seqs.lengths.double().mean())
    for form in config.extra_forms:
        extra = pathway_distance(_sequences(p, form, config), p.groups if per_group else None,
                                 group_names=p.group_names, max_pairs=config.max_pairs, seed=config.seed,
                                 backend=config.backend)
        out[f"pathway_distance/{form}"] = extra.normalized
    consistency = None
    if config.consistency and p.router_weights is not None and p.num_routers >= 2:
        consistency = pathway_consistency(p.mean_weights, p.router_weights, p.groups if per_group else None,
                                          group_names=p.group_names)
        out["pathway_consistency"] = consistency.score
        out["pathway_cosine"] = consistency.mean_cosine
    if p.num_routers >= 2:
        out["routing_cosine"] = float(routing_cosine(p.mean_weights).mean())
    entropy = routing_entropy(p.mean_weights)
    load = expert_load(p.expert_counts)
    out["routing_entropy"] = float(entropy.mean())
    out["expert_load_entropy"] = float(load.entropy.mean())
    out["dead_expert_fraction"] = float(load.dead_fraction.mean())
    out["expert_load_max_over_mean"] = float(load.max_over_mean.mean())
    if previous is not None and previous.num_samples == p.num_samples:
        drift = pathway_drift(_sequences(previous, config.form, config), seqs, backend=config.backend)
        out["pathway_drift"] = drift.normalized
        out["pathway_drift_raw"] = drift.raw
    if per_group:
        for name, result in distance.per_group.items():
            out[f"group/{name}/pathway_distance"] = result.normalized
            out[f"group/{name}/pathway_distance_raw"] = result.raw
        if consistency is not None:
            for name, result in consistency.per_group.items():
                out[f"group/{name}/pathway_consistency"] = result.score
                out[f"group/{name}/pathway_cosine"] = result.mean_cosine
    if config.per_layer:
        for i, layer in enumerate(p.layers):
            key = f"layer/{layer}" if p.layers.count(layer) == 1 else f"layer/{layer}_{i}"
            out[f"{key}/routing_entropy"] = float(entropy[i])
            out[f"{key}/expert_load_entropy"] = float(load.entropy[i])
            out[f"{key}/dead_expert_fraction"] = float(load.dead_fraction[i])
            if consistency is not None and i < p.num_routers - 1:
                out[f"{key}/consistency_cosine"] = float(consistency.per_layer_cosine[i])
    if config.per_expert:
        for i, layer in enumerate(p.layers):
            key = f"layer/{layer}" if p.layers.count(layer) == 1 else f"layer/{layer}_{i}"
            for e, share in enumerate(load.fractions[i].tolist()):
                out[f"{key}/expert/{e}/load"] = share
    return {k: (float(v) if v is not None else math.nan) for k, v in out.items()}
