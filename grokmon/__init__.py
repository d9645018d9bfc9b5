"""grokmon: watch an MoE LLM turn memorization into generalization, live, from training data alone.

Implements the pathway metrics of Li, Fan, Zhou, "Where to find Grokking in LLM Pretraining?
Monitor Memorization-to-Generalization without Test" (arXiv 2506.21551) and streams them to
Weights & Biases, TensorBoard or JSONL while training runs.

Example:
    >>> from grokmon import GrokkingMonitor, ProbeSet          # doctest: +SKIP
    >>> probe = ProbeSet.from_token_ids(token_ids, groups=domains)  # doctest: +SKIP
    >>> trainer = Trainer(..., callbacks=[GrokkingMonitor(probe, MonitorConfig(every=200)).hf_callback()])  # doctest: +SKIP

Public names are imported lazily, so ``import grokmon`` stays cheap and pulls in transformers,
W&B or Lightning only when the part that needs them is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "GrokmonError": "grokmon.errors",
    "RouterNotFoundError": "grokmon.errors",
    "RoutingError": "grokmon.errors",
    "ProbeError": "grokmon.errors",
    "ConfigError": "grokmon.errors",
    "SinkError": "grokmon.errors",
    # data
    "Pathways": "grokmon.pathways",
    "PathwaySequences": "grokmon.pathways",
    "pathway_sequences": "grokmon.pathways",
    "ProbeSet": "grokmon.probe",
    # routing
    "find_routers": "grokmon.routing",
    "register_router": "grokmon.routing",
    "capture_pathways": "grokmon.routing",
    "RouterOutput": "grokmon.routing",
    "RouterSite": "grokmon.routing",
    "CaptureResult": "grokmon.routing",
    # metrics
    "MetricConfig": "grokmon.metrics",
    "compute_metrics": "grokmon.metrics",
    "pathway_distance": "grokmon.metrics",
    "pathway_consistency": "grokmon.metrics",
    "routing_entropy": "grokmon.metrics",
    "expert_load": "grokmon.metrics",
    "pathway_drift": "grokmon.metrics",
    # edit distance
    "levenshtein": "grokmon.editdistance",
    "edit_distance": "grokmon.editdistance",
    "pairwise_edit_distance": "grokmon.editdistance",
    # monitor, alerts, sinks
    "GrokkingMonitor": "grokmon.monitor",
    "MonitorConfig": "grokmon.config",
    "PlateauRule": "grokmon.alerts",
    "ThresholdRule": "grokmon.alerts",
    "DivergenceRule": "grokmon.alerts",
    "GroupStageTracker": "grokmon.alerts",
    "AlertEvent": "grokmon.alerts",
    "JsonlSink": "grokmon.sinks",
    "WandbSink": "grokmon.sinks",
    "TensorBoardSink": "grokmon.sinks",
    "CallbackSink": "grokmon.sinks",
    "AccelerateSink": "grokmon.sinks",
    "BufferSink": "grokmon.sinks",
    "GrokkingHFCallback": "grokmon.integrations.hf",
    "GrokkingLightningCallback": "grokmon.integrations.lightning",
    "GrokkingCallback": "grokmon.integrations.hf",  # first names of the two above
    "GrokmonLightningCallback": "grokmon.integrations.lightning",
    "read_wandb_run": "grokmon.testing.wandb_records",
    "read_jsonl": "grokmon.sinks",
    "read_metrics": "grokmon.sinks",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports("grokmon", _EXPORTS, globals(), __all__)

# Declares the routers of the optional training engines (torchtitan, Megatron-core) by class path,
# for find_routers; imports neither torch nor an engine (grokmon/engines/__init__.py).
from . import engines as _engines  # noqa: E402,F401


if TYPE_CHECKING:  # pragma: no cover - static analysers see the real names
    from .errors import ConfigError, GrokmonError, ProbeError, RouterNotFoundError, RoutingError, SinkError
    from .pathways import Pathways, PathwaySequences, pathway_sequences
