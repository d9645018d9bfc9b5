"""Pathway metrics as pure functions on tensors (CPU or GPU), and :func:`compute_metrics`.

No torch.distributed, W&B or transformers imports here. docs/metrics.md defines every metric.

Example:
    >>> import torch
    >>> from grokmon.metrics import routing_entropy
    >>> routing_entropy(torch.full((2, 3, 4), 0.25)).tolist()
    [1.0, 1.0, 1.0]
"""

from .compute import MetricConfig, compute_metrics
from .consistency import (
    ConsistencyResult, consistency_from_cosines, kept_experts_mask, layer_cosines, pathway_consistency,
    routing_cosine,
)
from .distance import DistanceResult, cross_group_distance, pathway_distance
from .pairs import sample_cross_pairs, sample_pairs
from .info import MetricInfo, metric_info
from .usage import DriftResult, LoadResult, expert_load, pathway_drift, routing_entropy
from .selection import MemorizationTracker

__all__ = [
    "ConsistencyResult", "DistanceResult", "DriftResult", "LoadResult", "MemorizationTracker", "MetricConfig",
    "MetricInfo", "compute_metrics", "metric_info",
    "consistency_from_cosines", "cross_group_distance", "expert_load", "kept_experts_mask", "layer_cosines",
    "pathway_consistency", "pathway_distance", "pathway_drift", "routing_cosine", "routing_entropy",
    "sample_cross_pairs", "sample_pairs",
]
