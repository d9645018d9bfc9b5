"""Find, hook and normalise the MoE routers of a model, and capture a probe's Pathways.

Example:
    >>> from grokmon.routing import capture_pathways, find_routers   # doctest: +SKIP
    >>> [s.name for s in find_routers(model)][:1]                     # doctest: +SKIP
    ['model.layers.0.mlp.gate']
    >>> capture_pathways(model, probe.input_ids, probe.attention_mask).pathways  # doctest: +SKIP
"""

from .capture import CaptureResult, capture_pathways
from .discovery import find_routers
from .extract import finish, standard_extractor
from .registry import probe_state_guard, register_probe_state, register_router, unregister_router
from .types import RouterOutput, RouterSite, canonical_name, parse_layer

__all__ = [
    "CaptureResult", "RouterOutput", "RouterSite", "canonical_name", "capture_pathways", "find_routers",
    "finish", "parse_layer", "probe_state_guard", "register_probe_state", "register_router", "standard_extractor",
    "unregister_router",
]
