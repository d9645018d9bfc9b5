"""MonitorConfig: every setting of a :class:`~grokmon.monitor.GrokkingMonitor` that is not a live object.

Plain, JSON-able data, checked when built (a :class:`~grokmon.errors.ConfigError` naming the fix;
a keyword that is no field names the closest one) and saved in ``monitor.state_dict()["config"]``.
The live objects (the probe, sinks, alert rules, a configured stage tracker, the accelerator,
``on_alert``) are passed to the monitor itself. Each field's documentation sits under the field.

Example:
    >>> config = MonitorConfig(every=100, batch_size=8, jsonl=False)
    >>> config.every, config.to_dict()["metrics"]["form"]
    (100, 'threshold')
    >>> MonitorConfig.from_dict(config.to_dict()) == config
    True
    >>> MonitorConfig(output="run")
    Traceback (most recent call last):
    grokmon.errors.ConfigError: MonitorConfig has no field 'output': did you mean output_dir? ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ._keywords import CheckedKeywords
from .errors import ConfigError
from .metrics import MetricConfig

__all__ = ["MonitorConfig"]


@dataclass
class MonitorConfig(CheckedKeywords):
    """The settings of a :class:`~grokmon.monitor.GrokkingMonitor` (``GrokkingMonitor(probe, MonitorConfig(...))``)."""

    every: int = 200
    """Probe cadence in optimizer steps (steps where ``step % every == 0``)."""

    metrics: MetricConfig = field(default_factory=MetricConfig)
    """What to compute (:class:`~grokmon.metrics.MetricConfig`, or a dict of its fields); per-group keys
    appear when the probe has groups."""

    jsonl: str | bool = True
    """The JSONL record: True for ``<run folder>/grokmon.jsonl``, a file path, or False."""

    output_dir: str | None = None
    """Folder of the JSONL record and of the saved probe (``probe.pt``). ``None`` (the default): each
    run gets a new folder of its own, ``run-<n>`` under ``grokmon_out/`` (under the Hugging Face
    Trainer, ``<TrainingArguments.output_dir>/grokmon/``; under Lightning, ``<default_root_dir>/grokmon/``),
    made at the first probe, so running a script again never appends to the last run's record; a
    resume reopens the folder saved in the checkpoint's monitor state. A path: exactly that folder."""

    stages: bool = True
    """Track the per-group grokking stage (by default: probe loss falling, or unknown; docs/alerts.md). To change its patience,
    thresholds or alert level, pass a configured tracker as ``GrokkingMonitor(stage_tracker=...)``."""

    batch_size: int = 32
    """Probe samples per forward (the probe's memory budget). When a probe runs out of memory the
    monitor halves it, down to 1, and keeps the size that worked: ``monitor.config.batch_size`` is
    always the size in use (the monitor works on its own copy of the config you pass)."""

    keep_token_ids: bool = False
    """Keep per-token expert ids (always on when a metric form is ``"token"``)."""

    compute_loss: bool = True
    """Compute each probe sample's next-token loss (``probe_loss``, ``group/<g>/probe_loss``; needed by
    ``MetricConfig(selection="memorized")``)."""

    baseline: bool = True
    """The integrations (Trainer, Lightning, OLMo-core) probe once before the first training step."""

    async_metrics: bool = True
    """Compute metrics on a background thread (False: inline, for tests)."""

    on_error: Literal["warn", "raise"] = "warn"
    """``"warn"`` (count in ``grokmon/errors``, warn once per kind, go on) or ``"raise"`` (tests)."""

    flush_on_sigterm: bool = True
    """On SIGTERM (preemption), write the finished results before the process ends
    (:mod:`grokmon.shutdown`; chained to any handler already installed)."""

    save_probe: bool = True
    """Write the probe beside the JSONL record (``probe.pt``), so a restarted or later job can
    ``ProbeSet.load`` exactly the same samples."""

    sink_timeout: float = 5.0
    """Seconds one sink call (``log``, ``alert``) may take before that sink is marked stalled; sinks run
    on their own threads, so training never waits for them (:mod:`grokmon.delivery`)."""

    sink_buffer: int = 10_000
    """Records held per sink while it is slow or stalled (past that the oldest are dropped and counted
    in ``grokmon/sink_drops``)."""

    sink_buffer_bytes: int = 64 * 2**20
    """About this many bytes of records held per sink while it is slow or stalled (64 MiB; a record
    with per-expert load keys is ~50 KB, so the count alone could hold 500 MB through a W&B outage);
    past it the oldest are dropped and counted, as past ``sink_buffer``."""

    sink_detach_after: float = 60.0
    """Seconds a stalled sink call may last before the sink is detached (the JSONL record never is)."""

    history_limit: int = 1000
    """Results kept in ``monitor.history`` (a count: the oldest go first; the JSONL record keeps them
    all). Its memory is about 125 bytes per metric key per result (docs/performance.md): 1,000 results
    of 400 keys are about 50 MB."""

    wandb_charts_every: int | None = 10
    """Refresh the W&B per-group charts and stage table every this many probes (None: only when the
    monitor closes); used by the W&B sink the Trainer and Lightning adapters add."""

    wandb_alert_level: str = "WARN"
    """The lowest alert level that calls ``run.alert`` in that sink (``"WARN"``: rules, not each group's
    stage change; ``"INFO"``: every event)."""

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(f"every must be a positive number of optimizer steps, got {self.every!r}")
        if self.on_error not in ("warn", "raise"):
            raise ConfigError(f"on_error must be 'warn' or 'raise', got {self.on_error!r}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive number of probe samples per forward, got {self.batch_size!r}")
        for name in ("sink_timeout", "sink_detach_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.sink_buffer, int) or isinstance(self.sink_buffer, bool) or self.sink_buffer < 1:
            raise ConfigError(f"sink_buffer must be a positive number of records, got {self.sink_buffer!r}")
        if not isinstance(self.sink_buffer_bytes, int) or isinstance(self.sink_buffer_bytes, bool) \
                or self.sink_buffer_bytes < 1:
            raise ConfigError(f"sink_buffer_bytes must be a positive number of bytes, got {self.sink_buffer_bytes!r}")
        if not isinstance(self.history_limit, int) or isinstance(self.history_limit, bool) or self.history_limit < 1:
            raise ConfigError(f"history_limit must be a positive number of results, got {self.history_limit!r}")
        if self.wandb_charts_every is not None and (not isinstance(self.wandb_charts_every, int) or isinstance(
                self.wandb_charts_every, bool) or self.wandb_charts_every < 1):
            raise ConfigError(f"wandb_charts_every must be a positive number of probes, or None (charts only at "
                              f"close), got {self.wandb_charts_every!r}")
        if self.wandb_alert_level not in ("INFO", "WARN", "ERROR"):
            raise ConfigError(f"wandb_alert_level must be 'INFO', 'WARN' or 'ERROR', got {self.wandb_alert_level!r}")
        if self.metrics is None:
            self.metrics = MetricConfig()
        elif isinstance(self.metrics, Mapping):
            self.metrics = MetricConfig(**self.metrics)
        if not isinstance(self.metrics, MetricConfig):
            raise ConfigError(f"metrics must be a grokmon.MetricConfig (or a dict of its fields), got "
                              f"{type(self.metrics).__name__}")
        if isinstance(self.jsonl, (str, Path)):
            if Path(self.jsonl).is_dir():
                raise ConfigError(f"jsonl={str(self.jsonl)!r} is a folder: pass a file path (e.g. "
                                  f"{Path(self.jsonl) / 'grokmon.jsonl'}), True for output_dir/grokmon.jsonl, or False")
            self.jsonl = str(self.jsonl)
        self.output_dir = None if self.output_dir is None else str(self.output_dir)
        if not isinstance(self.stages, bool):
            if type(self.stages).__name__ == "GroupStageTracker":
                raise ConfigError("MonitorConfig.stages is True or False: pass a configured GroupStageTracker as "
                                  "GrokkingMonitor(probe, config, stage_tracker=tracker)")
            raise ConfigError(f"stages must be True or False, got {self.stages!r}")
        if self.metrics.selection == "memorized" and not self.compute_loss:
            raise ConfigError("MetricConfig(selection='memorized') selects samples by their probe loss: "
                              "keep compute_loss=True")

    @property
    def capture_token_ids(self) -> bool:
        """Keep per-token expert ids: asked for, or needed by a ``"token"`` form (headline or extra)."""
        return self.keep_token_ids or "token" in (self.metrics.form, *self.metrics.extra_forms)

    @property
    def jsonl_path(self) -> Path | None:
        """The JSONL record's path; None when it is off or in a run folder made at the first probe
        (``output_dir=None``: the monitor's ``jsonl_path`` says where it went)."""
        if not self.jsonl:
            return None
        if self.jsonl is not True:
            return Path(self.jsonl)
        return None if self.output_dir is None else Path(self.output_dir) / "grokmon.jsonl"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``metrics`` as a dict of its fields)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MonitorConfig:
        """The inverse of :meth:`to_dict`."""
        data = dict(data)
        metrics = dict(data.pop("metrics", {}) or {})
        if "extra_forms" in metrics:
            metrics["extra_forms"] = tuple(metrics["extra_forms"])
        return cls(metrics=MetricConfig(**metrics), **data)
