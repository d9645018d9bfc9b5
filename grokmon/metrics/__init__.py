"""Pathway metrics as pure functions on tensors (CPU or GPU); no distributed, W&B or transformers imports."""

from .compute import MetricConfig, compute_metrics
from .consistency import ConsistencyResult, layer_cosines, pathway_consistency, routing_cosine
from .distance import DistanceResult, cross_group_distance, pathway_distance, sample_pairs
from .routing import DriftResult, LoadResult, expert_load, pathway_drift, routing_entropy

__all__ = [
    "ConsistencyResult", "DistanceResult", "DriftResult", "LoadResult", "MetricConfig", "compute_metrics",
    "cross_group_distance", "expert_load", "layer_cosines", "pathway_consistency", "pathway_distance",
    "pathway_drift", "routing_cosine", "routing_entropy", "sample_pairs",
]
