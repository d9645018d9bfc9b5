"""grokmon: watch an MoE LLM turn memorization into generalization, live, from training data alone.

Implements the pathway metrics of Li, Fan, Zhou, "Where to find Grokking in LLM Pretraining?
Monitor Memorization-to-Generalization without Test" (arXiv 2506.21551) and streams them to
Weights & Biases, TensorBoard or JSONL while training runs.

Example:
    >>> from grokmon import GrokkingHFCallback, GrokkingMonitor, MonitorConfig, ProbeSet  # doctest: +SKIP
    >>> probe = ProbeSet.from_token_ids(token_ids, groups=domains)  # doctest: +SKIP
    >>> monitor = GrokkingMonitor(probe, MonitorConfig(every=200))  # doctest: +SKIP
    >>> trainer = Trainer(..., callbacks=[GrokkingHFCallback(monitor)])  # doctest: +SKIP

Public names are imported lazily, so ``import grokmon`` stays cheap and pulls in transformers,
W&B or Lightning only when the part that needs them is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# The public API, grouped (about 25 names): public name -> module that defines it. Everything else
# lives in its sub-package (grokmon.metrics, grokmon.routing, grokmon.sinks, grokmon.errors, ...).
_EXPORTS: dict[str, str] = {
    # the monitor and its settings
    "GrokkingMonitor": "grokmon.monitor",
    "MonitorConfig": "grokmon.config",
    "ProbeSet": "grokmon.probe",
    "MetricConfig": "grokmon.metrics",
    # training-framework adapters (the others: grokmon.integrations)
    "GrokkingHFCallback": "grokmon.integrations.hf",
    "GrokkingLightningCallback": "grokmon.integrations.lightning",
    # alerts and stages
    "PlateauRule": "grokmon.alerts",
    "ThresholdRule": "grokmon.alerts",
    "DivergenceRule": "grokmon.alerts",
    "GroupStageTracker": "grokmon.alerts",
    "AlertEvent": "grokmon.alerts",
    # where results go, and reading them back
    "JsonlSink": "grokmon.sinks",
    "WandbSink": "grokmon.sinks",
    "TensorBoardSink": "grokmon.sinks",
    "AccelerateSink": "grokmon.sinks",
    "CallbackSink": "grokmon.sinks",
    "read_metrics": "grokmon.sinks",
    # metrics without a monitor (checkpoints, notebooks)
    "capture_pathways": "grokmon.routing",
    "compute_metrics": "grokmon.metrics",
    "Pathways": "grokmon.pathways",
    # another MoE router
    "register_router": "grokmon.routing",
    "RouterOutput": "grokmon.routing",
    # errors (the specific kinds: grokmon.errors)
    "GrokmonError": "grokmon.errors",
    "ConfigError": "grokmon.errors",
}

__all__ = [*_EXPORTS, "__version__"]


__getattr__, __dir__ = lazy_exports("grokmon", _EXPORTS, globals(), __all__)

# Declares the routers of the optional training engines (torchtitan, Megatron-core) by class path,
# for find_routers; imports neither torch nor an engine (grokmon/engines/__init__.py).
from . import engines as _engines  # noqa: E402,F401


if TYPE_CHECKING:  # pragma: no cover - static analysers see the real names
    from .errors import ConfigError, GrokmonError
    from .pathways import Pathways
