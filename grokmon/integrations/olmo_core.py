"""Run a :class:`~grokmon.monitor.GrokkingMonitor` inside an OLMo-core ``Trainer``, OLMo-core's way.

Two classes, as OLMo-core splits its own callbacks that hold live state:

* :class:`GrokkingOLMoCoreCallbackConfig`: a ``CallbackConfig`` (plain, copyable settings: the probe
  file and a :class:`~grokmon.config.MonitorConfig`) for ``TrainerConfig(...).with_callback("grokmon",
  ...)``; ``TrainerConfig.build`` calls its ``build(trainer)``, which loads the probe and makes the
  monitor and the callback. Reach the monitor as ``trainer.callbacks["grokmon"].monitor``.
* :class:`GrokkingOLMoCoreCallback`: the ``Callback`` that drives a monitor you built yourself, added
  to a built trainer with ``trainer.add_callback("grokmon", GrokkingOLMoCoreCallback(monitor))``.

Per trainer event:

* ``pre_train``: the probe batch is lowered to what the MoE layers accept per forward
  (capacity-based experts are sized for ``rank_microbatch_size`` tokens), then a baseline probe at
  ``trainer.global_step`` (``monitor.config.baseline``), unless the monitor's state came back from
  the trainer's checkpoint (OLMo-core loads it before ``pre_train``).
* ``post_train_batch`` (once per optimizer step, right after the update):
  ``monitor.step(trainer.train_module.model, trainer.global_step)`` on **every rank** (under FSDP the
  probe forward is a collective). Not ``post_step``: OLMo-core's checkpointer saves in
  ``post_train_batch``, and the callback's priority (2, above the checkpointer's 1) puts the probe of
  step ``S`` before the checkpoint of step ``S``, so that checkpoint holds it; a run resumed from it
  neither repeats nor loses that probe. When the monitor's ``should_stop`` is set (an alert rule with
  ``stop_training=True``, agreed on all ranks at the same step), the run is ended with
  ``trainer.cancel_run(reason, no_sync=True)``: OLMo-core's own way to stop, which then runs
  ``post_train`` and its shutdown as usual.
* At the last step (``max_steps``, or the stop): the monitor is flushed, so the last probes' values
  are recorded at that step. ``post_train``: flush and close the monitor. ``on_error``: flush what
  was measured, close, never mask the training error.
* ``state_dict`` / ``load_state_dict``: the monitor state (``monitor.state_dict()``: schedule, probe
  fingerprint, alert and stage state, last pathways) goes into every trainer checkpoint
  (``train/rank{r}.pt``) and comes back on resume; a different probe is refused.

Where the values go: the monitor's own sinks (JSONL by default) on world rank 0, and
``trainer.record_metric("grokmon/...", value, reduce_type=None)`` on rank 0, so they reach OLMo-core's
``WandBCallback``, ``CometCallback`` and console logger with the trainer's other metrics.
``reduce_type=None``: OLMo-core then neither all-reduces nor averages the value (grokmon's values
are already global: every rank probed its shard and rank 0 holds the gathered result), and a
metric recorded on rank 0 only does not disturb the trainer's cross-rank metric consistency check
(only reduced metrics must match across ranks). ``record_metric`` files a value under the
*current* step and grokmon's metrics finish on a background thread one or more steps after their
probe, so each probe's values are recorded at the step they arrive, with ``grokmon/step`` holding
the probe's own step (plot ``grokmon/*`` against it), one probe per trainer step, oldest first;
at the last step the ones still waiting are merged into it (the newest wins). Values are recorded
only inside the training loop, never in ``pre_train`` / ``post_train`` (see ``_record``): after an
early end other than a grokmon stop (hard stop, cancel) the last results reach grokmon's sinks
only. The JSONL record always has every probe under its own step.

OLMo-core is optional: ``pip install grokmon[olmo-core]`` (``ai2-olmo-core``); importing this module
without it raises a :class:`~grokmon.errors.ConfigError` saying so.

Example:
    >>> from grokmon import MonitorConfig                                # doctest: +SKIP
    >>> from grokmon.integrations.olmo_core import GrokkingOLMoCoreCallbackConfig  # doctest: +SKIP
    >>> trainer_config = TrainerConfig(save_folder="ckpt").with_callback("grokmon", GrokkingOLMoCoreCallbackConfig(
    ...     probe="probe.pt", monitor=MonitorConfig(every=200, output_dir="grokmon_out")))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import MonitorConfig
from ..errors import ConfigError
from ..keys import PREFIX
from ._common import MonitorAdapter

try:
    from olmo_core.train.callbacks import Callback, CallbackConfig
except ImportError as _error:
    raise ConfigError(
        "GrokkingOLMoCoreCallback needs OLMo-core: pip install grokmon[olmo-core] (or pip install ai2-olmo-core) "
        f"({_error})"
    ) from None

__all__ = ["GrokkingOLMoCoreCallback", "GrokkingOLMoCoreCallbackConfig", "STEP_KEY"]

STEP_KEY = PREFIX + "step"  # the probe step of the values recorded with it

logger = logging.getLogger(__name__)


class GrokkingOLMoCoreCallback(MonitorAdapter, Callback):
    """Probe a MoE model every ``monitor.config.every`` steps of an OLMo-core ``Trainer`` (see the module doc).

    Holds a live monitor, so it goes to a built trainer (``trainer.add_callback``); in a
    ``TrainerConfig`` use :class:`GrokkingOLMoCoreCallbackConfig`.

    Args:
        monitor: the :class:`~grokmon.monitor.GrokkingMonitor` to drive.
        record_metrics: also send the values through ``trainer.record_metric`` (rank 0).
        close_on_train_end: close the monitor in ``post_train``.

    Example:
        >>> trainer = TrainerConfig(save_folder="ckpt").build(train_module, data_loader)        # doctest: +SKIP
        >>> trainer.add_callback("grokmon", GrokkingOLMoCoreCallback(GrokkingMonitor(probe)))  # doctest: +SKIP
    """

    priority: ClassVar[int] = 2  # before the checkpointer (1): a checkpoint holds its own step's probe
    __eq__ = object.__eq__  # one callback per monitor: not the field-wise equality of OLMo-core's dataclass
    __hash__ = object.__hash__

    def __init__(self, monitor: Any, *, record_metrics: bool = True, close_on_train_end: bool = True) -> None:
        self._attach(monitor, who="GrokkingOLMoCoreCallback", close_on_train_end=close_on_train_end)
        self.record_metrics = record_metrics
        self._waiting: deque = deque()

    # ------------------------------------------------------------ helpers
    def _model(self) -> Any:
        return self.trainer.train_module.model

    def _optimizer(self) -> Any:
        return getattr(self.trainer.train_module, "optim", None)

    def _fit_probe_batch(self) -> None:
        """Keep probe forwards within the MoE's token budget (OLMo-core's capacity-based experts
        refuse a forward of more tokens than the training micro-batch they were sized for)."""
        limits = [m.max_local_microbatch_size // max(1, getattr(m, "tp_degree", 1))
                  for m in self._model().modules()
                  if isinstance(getattr(m, "max_local_microbatch_size", None), int)]
        if not limits:
            return
        seq = int(self.monitor.probe_set.input_ids.shape[1])
        if seq > min(limits):
            raise ConfigError(
                f"the probe's sequences have {seq} tokens, more than the {min(limits)} tokens the model's "
                "MoE layers accept per forward (its training micro-batch, rank_microbatch_size): build the "
                f"probe with seq_len <= {min(limits)}"
            )
        fit = max(1, min(limits) // seq)
        if self.monitor.config.batch_size > fit:
            logger.info("grokmon: probe batch_size %d -> %d (%d tokens per MoE forward at most)",
                        self.monitor.config.batch_size, fit, min(limits))
            self.monitor.config.batch_size = fit

    def _record(self, *, final: bool = False) -> None:
        """Record waiting results with ``trainer.record_metric``: one probe per step, all at the end.

        Only inside the training loop, where every rank records its training metrics at the same
        step: OLMo-core's metric reduction returns early on a rank that recorded nothing, so a
        value recorded on rank 0 alone before or after the loop (where the checkpointer's save
        reduces metrics) would leave rank 0 waiting in an all-reduce the others never join.
        """
        self._waiting.extend(self._drain())  # empty on ranks other than 0: only rank 0 has sinks
        if not self.record_metrics:
            self._waiting.clear()
            return
        from olmo_core.train.common import MetricMergeStrategy

        while self._waiting:
            step, metrics = self._waiting.popleft()
            for name, value in {**metrics, STEP_KEY: float(step)}.items():
                self.trainer.record_metric(name, float(value), reduce_type=None,
                                           merge_strategy=MetricMergeStrategy.latest)
            if not final:
                break

    # ------------------------------------------------------------ hooks
    def pre_train(self) -> None:
        self._fit_probe_batch()
        self._baseline(self._model(), int(self.trainer.global_step), self._optimizer())
        # nothing recorded here: see _record (the baseline's values go out at the first step)

    def post_train_batch(self) -> None:
        step = int(self.trainer.global_step)
        stop = self._step(self._model(), step, self._optimizer())
        max_steps = self.trainer.max_steps
        last = stop or (max_steps is not None and step >= max_steps)
        if last:  # training ends: the last probes' values go out while every rank records metrics
            self.monitor.flush()
        self._record(final=last)
        if stop and not self.trainer.is_canceled:
            # should_stop is agreed on all ranks at the same step: no extra sync is needed
            self.trainer.cancel_run("grokmon: an alert rule with stop_training=True fired", no_sync=True)

    def post_train(self) -> None:
        def leftover(items: list) -> None:
            self._waiting.extend(items)
            if self._waiting:  # training ended early (hard stop, epoch end, cancel): sinks only
                logger.info("grokmon: %d probe result(s) after the last step went to grokmon's sinks only, "
                            "not to trainer.record_metric", len(self._waiting))
                self._waiting.clear()

        self._finish(leftover)

    def on_error(self, exc: BaseException) -> None:
        self._abort(lambda items: None, exc)

    # ------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"monitor_state": self.monitor.state_dict()}  # flushes first: alert state is complete

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict and "monitor_state" in state_dict:
            self.monitor.load_state_dict(dict(state_dict["monitor_state"]))
            self._restored = True

    def __repr__(self) -> str:
        return f"GrokkingOLMoCoreCallback(monitor={self.monitor!r})"


@dataclass
class GrokkingOLMoCoreCallbackConfig(CallbackConfig):
    """The grokmon callback's settings for a ``TrainerConfig``: ``build(trainer)`` makes the monitor and the callback.

    Example:
        >>> GrokkingOLMoCoreCallbackConfig(probe="probe.pt", monitor=MonitorConfig(every=100))  # doctest: +SKIP
    """

    probe: str = ""
    """The probe file (``ProbeSet.save`` / ``grokmon probe``); every rank loads it."""

    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    """The monitor's settings."""

    record_metrics: bool = True
    """Also send the values through ``trainer.record_metric`` (rank 0)."""

    enabled: bool = True
    """False: ``build`` returns None and the trainer runs without grokmon."""

    def build(self, trainer: Any) -> GrokkingOLMoCoreCallback | None:
        """The monitor of ``probe`` with ``monitor``'s settings, in a :class:`GrokkingOLMoCoreCallback`."""
        if not self.enabled:
            return None
        if not self.probe:
            raise ConfigError("GrokkingOLMoCoreCallbackConfig needs probe= the path of a saved probe "
                              "(ProbeSet.save or grokmon probe)")
        from ..monitor import GrokkingMonitor
        from ..probe import ProbeSet

        monitor = self.monitor if isinstance(self.monitor, MonitorConfig) else MonitorConfig.from_dict(self.monitor)
        return GrokkingOLMoCoreCallback(GrokkingMonitor(ProbeSet.load(self.probe), monitor),
                                        record_metrics=self.record_metrics)
