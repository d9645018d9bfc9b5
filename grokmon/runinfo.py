"""The configuration line of a grokmon record: what produced it, written first in the JSONL.

``{"time": ..., "config": {...}}`` with the grokmon, torch and transformers versions, the model's
class, type and name (a live run: :func:`describe_model`), the probe's fingerprint, size and
per-group counts, and the settings (a live run's ``MonitorConfig`` as
``monitor``, a scan's ``MetricConfig`` as ``metrics`` with the checkpoints' source). The monitor
writes it when it opens its record, ``grokmon scan`` when it opens its own; ``grokmon report``
shows it (a record written before it existed reads the same, without it).

Example:
    >>> from grokmon import MonitorConfig, ProbeSet
    >>> probe = ProbeSet.from_token_ids([[5, 6, 7], [1, 2, 3], [4, 5, 6], [7, 8, 9]], groups=list("abab"),
    ...                                 min_length=2)
    >>> line = config_line(probe, monitor=MonitorConfig(every=100))
    >>> line["monitor"]["every"], line["probe_groups"], sorted(line)[:3]
    (100, {'a': 2, 'b': 2}, ['grokmon', 'monitor', 'probe_fingerprint'])
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["config_line", "describe_model"]


def describe_model(model: Any) -> dict[str, str]:
    """``{"class", "model_type", "name_or_path"}`` of ``model`` where known (a wrapper's inner model
    is not unwrapped: the class says what was handed to the monitor).

    Example:
        >>> import torch
        >>> describe_model(torch.nn.Linear(2, 2))
        {'class': 'Linear'}
    """
    info = {"class": type(model).__name__}
    config = getattr(model, "config", None)
    for key, attr in (("model_type", "model_type"), ("name_or_path", "_name_or_path")):
        value = getattr(config, attr, None)
        if isinstance(value, str) and value:
            info[key] = value
    return info


def config_line(probe: Any, *, monitor: Any = None, metrics: Any = None, model: Any = None,
                **extra: Any) -> dict[str, Any]:
    """The ``config`` of a record's configuration line (JSON-able).

    Args:
        probe: the :class:`~grokmon.probe.ProbeSet` the record measures.
        model: the model probed (a live run), stored as ``model`` (:func:`describe_model`).
        monitor: a :class:`~grokmon.config.MonitorConfig` (a live run), stored as ``monitor``.
        metrics: a :class:`~grokmon.metrics.MetricConfig` (a scan), stored as ``metrics``.
        extra: further JSON-able fields (a scan's ``source``, ``probe_file``, ``batch_size``).
    """
    import dataclasses

    from . import __version__

    line: dict[str, Any] = {"grokmon": __version__, "torch": _version("torch")}
    transformers = _version("transformers")
    if transformers is not None:
        line["transformers"] = transformers
    if model is not None:
        line["model"] = describe_model(model)
    line["probe_fingerprint"] = probe.fingerprint()
    line["probe_samples"] = len(probe)
    line["probe_seq_len"] = int(probe.seq_len)
    if probe.groups is not None:
        line["probe_groups"] = {str(g): int(n) for g, n in probe.group_counts().items()}
    if monitor is not None:
        line["monitor"] = monitor.to_dict()
    if metrics is not None:
        line["metrics"] = dataclasses.asdict(metrics)
    line.update(extra)
    return line


def _version(module: str) -> str | None:
    """The version of ``module`` if it is already imported (never imports it)."""
    mod = sys.modules.get(module)
    return getattr(mod, "__version__", None) if mod is not None else None
