"""GrokmonCallback: run a :class:`~grokmon.monitor.GrokkingMonitor` inside an OLMo-core ``Trainer``.

An OLMo-core ``Callback`` (a dataclass), attached with ``TrainerConfig(...).with_callback("grokmon",
GrokmonCallback(monitor))`` or ``trainer.add_callback(...)``. It is never copied: ``with_callback``
deep-copies the callbacks already in the config, and each copy keeps this one instance, so the
trainer drives the monitor you hold. Per trainer event:

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

OLMo-core is optional: ``pip install grokmon[olmo-core]`` (``ai2-olmo-core``). The class is built
on first use.

Example:
    >>> from grokmon import GrokkingMonitor                              # doctest: +SKIP
    >>> from grokmon.integrations.olmo_core import GrokmonCallback       # doctest: +SKIP
    >>> monitor = GrokkingMonitor(probe, MonitorConfig(every=200, output_dir="grokmon_out"))  # doctest: +SKIP
    >>> trainer_config = TrainerConfig(save_folder="ckpt").with_callback(
    ...     "grokmon", GrokmonCallback(monitor))                           # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from typing import Any, ClassVar

from ..errors import ConfigError
from ..keys import PREFIX
from ._common import MonitorAdapter

__all__ = ["GrokmonCallback", "STEP_KEY"]

STEP_KEY = PREFIX + "step"  # the probe step of the values recorded with it

logger = logging.getLogger(__name__)


def _olmo_callback_base() -> type:
    try:
        from olmo_core.train.callbacks import Callback
    except ImportError as error:
        raise ConfigError(
            "GrokmonCallback needs OLMo-core: pip install grokmon[olmo-core] (or pip install ai2-olmo-core) "
            f"({error})"
        ) from None
    return Callback


@functools.cache
def _build_class() -> type:
    import dataclasses

    Callback = _olmo_callback_base()

    @dataclasses.dataclass
    class GrokmonCallback(MonitorAdapter, Callback):
        """Probe a MoE model every ``monitor.config.every`` steps of an OLMo-core ``Trainer`` (see the module doc).

        Args:
            monitor: the :class:`~grokmon.monitor.GrokkingMonitor` to drive.
            record_metrics: also send the values through ``trainer.record_metric`` (rank 0).
            close_on_train_end: close the monitor in ``post_train``.

        Example:
            >>> cb = GrokmonCallback(GrokkingMonitor(probe, MonitorConfig(every=100)))        # doctest: +SKIP
            >>> TrainerConfig(save_folder="ckpt").with_callback("grokmon", cb)  # doctest: +SKIP
        """

        priority: ClassVar[int] = 2  # before the checkpointer (1): a checkpoint holds its own step's probe

        monitor: Any = None
        record_metrics: bool = True
        close_on_train_end: bool = True

        def __post_init__(self) -> None:
            self._attach(self.monitor, who="GrokmonCallback", close_on_train_end=self.close_on_train_end)
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

        def __deepcopy__(self, memo: dict) -> GrokmonCallback:
            # TrainerConfig.with_callback(s) deep-copies the callbacks already added: a copy would
            # drive a second monitor (or fail on its open JSONL record), not the one the user holds
            return self

        def __repr__(self) -> str:
            return f"GrokmonCallback(monitor={self.monitor!r})"

    GrokmonCallback.__module__ = __name__
    GrokmonCallback.__qualname__ = "GrokmonCallback"
    return GrokmonCallback


def __getattr__(name: str) -> Any:
    if name == "GrokmonCallback":  # built on first use: OLMo-core is imported only then
        return _build_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
