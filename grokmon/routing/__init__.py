"""Find, hook and normalise the routers of MoE models, and capture pathways from a probe forward."""

from .capture import CaptureResult, capture_pathways, probe_mode, unwrap_compiled
from .discover import canonical_name, find_routers, register_router, unregister_router
from .normalise import default_extractor
from .types import RouterOutput, RouterSite

__all__ = [
    "CaptureResult", "RouterOutput", "RouterSite", "canonical_name", "capture_pathways", "default_extractor",
    "find_routers", "probe_mode", "register_router", "unregister_router", "unwrap_compiled",
]
