"""torchtitan: a ``MetricsProcessor`` that probes on schedule and logs through torchtitan's loggers.

torchtitan (0.3.0) has no callback API; its maintainers point to a custom ``MetricsProcessor``
(``torchtitan.components.metrics``), which the ``Trainer`` builds from ``config.metrics`` and
hands its ``model_parts``. :class:`GrokkingMetricsProcessor` is one:

* torchtitan calls ``log(step, ...)`` on **every rank**, after the optimizer step, at the logging
  steps (``step == 1`` or ``step % log_freq == 0``). The processor logs torchtitan's own metrics
  first, then calls ``monitor.step(model_parts[0], step)``: the probe runs on every rank at the same
  steps, so ``every`` must be a multiple of ``log_freq`` (checked).
* Finished results go to torchtitan's metric logger (``self.logger``: TensorBoard / W&B on the
  metrics rank) as ``grokmon/...`` keys plus ``grokmon/probe_step``, at the current step (results
  arrive a few steps after their probe; torchtitan's W&B logger logs with ``step=`` and W&B drops a
  step behind its own), and a one-line summary to torchtitan's stdout logger. grokmon's JSONL
  record keeps each result at its probe step.
* ``close()`` (the trainer's last call) flushes the last results and closes the monitor.

Not handled: a baseline probe (torchtitan calls nothing before step 1), pipeline parallelism
(each stage holds only its own routers: with several ``model_parts`` the processor warns and does
not probe), stopping (torchtitan reads no stop flag from its metrics processor: check
``trainer.metrics_processor.should_stop`` in your own loop), and checkpoints (call
``processor.monitor.save(path)`` beside torchtitan's checkpoint and ``monitor.load(path)`` on
restart).

The ``Trainer`` itself needs a GPU; on a CPU the processor's ``log`` runs with a CPU model
(``tests/test_engine_torchtitan.py``), the trainer around it does not.

Example (``pip install grokmon[torchtitan]``)::

    from grokmon import ProbeSet
    from grokmon.integrations.torchtitan import GrokkingMetricsProcessor

    ProbeSet.from_token_ids(ids, groups=domains).save("probe.pt")     # once
    config.metrics = GrokkingMetricsProcessor.Config(                  # config: a torchtitan Trainer.Config
        log_freq=10, enable_wandb=True,
        grokmon_probe="probe.pt", grokmon_every=100, grokmon_output_dir="outputs/grokmon")
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..keys import PREFIX
from ._common import MonitorAdapter, Results, is_monitor

try:
    from torchtitan.components.metrics import MetricsProcessor
except ImportError as error:  # pragma: no cover - exercised by a test that hides torchtitan
    raise ConfigError(
        f"grokmon.integrations.torchtitan needs torchtitan (tested with 0.3.0), which is not importable ({error}): "
        "pip install grokmon[torchtitan]"
    ) from error

__all__ = ["GrokkingMetricsProcessor"]

# torchtitan logs to the root logger (torchtitan.tools.logging.logger is logging.getLogger()).
_stdout = logging.getLogger()
_SUMMARY_KEYS = ("pathway_distance", "pathway_consistency", "routing_entropy", "pathway_drift")


class GrokkingMetricsProcessor(MonitorAdapter, MetricsProcessor):
    """torchtitan's ``MetricsProcessor`` plus a :class:`~grokmon.GrokkingMonitor` (see the module doc).

    Built by torchtitan from :class:`GrokkingMetricsProcessor.Config` (the monitor comes from the
    ``grokmon_*`` fields), or directly with ``monitor=`` (every other argument as torchtitan's).

    Args:
        config: torchtitan's metrics settings plus ``grokmon_probe`` (a ``ProbeSet`` saved with
            ``probe.save(path)``), ``grokmon_every`` and ``grokmon_output_dir``.
        monitor: a ready :class:`~grokmon.GrokkingMonitor`; the ``grokmon_*`` fields are then unused.
        **kwargs: torchtitan's ``MetricsProcessor`` arguments (``parallel_dims=``, ...).

    Raises:
        ConfigError: no probe and no monitor, or ``every`` not a multiple of ``log_freq``.

    Example::

        processor = GrokkingMetricsProcessor(MetricsProcessor.Config(log_freq=5), monitor=monitor,
                                             parallel_dims=parallel_dims)
        processor.model_parts = [model]            # the Trainer sets this
        processor.log(10, loss, max_loss, grad_norm)   # the Trainer calls this every log_freq steps
    """

    @dataclass(kw_only=True, slots=True)
    class Config(MetricsProcessor.Config):
        grokmon_probe: str = ""
        """Path of the probe set, saved once with ``ProbeSet.save(path)`` (the same file on every rank)."""

        grokmon_every: int = 100
        """Probe every this many optimizer steps: a multiple of ``log_freq``."""

        grokmon_output_dir: str = "grokmon"
        """Folder of grokmon's JSONL record."""

    def __init__(self, config: Any, *, monitor: Any = None, **kwargs: Any) -> None:
        MetricsProcessor.__init__(self, config, **kwargs)
        if monitor is None:
            monitor = _monitor_from(config)
        if not is_monitor(monitor):
            raise ConfigError(f"GrokkingMetricsProcessor needs a GrokkingMonitor, got {type(monitor).__name__}: pass "
                              "monitor=GrokkingMonitor(probe, MonitorConfig(every=...)), or leave monitor out and set "
                              "Config(grokmon_probe='probe.pt')")
        self._attach(monitor, who="GrokkingMetricsProcessor")
        log_freq = config.log_freq
        if monitor.config.every % log_freq:
            nearest = log_freq * max(1, monitor.config.every // log_freq)
            raise ConfigError(
                f"grokmon probes every {monitor.config.every} steps but torchtitan calls the metrics processor only every "
                f"log_freq={log_freq} steps: make every a multiple of log_freq (e.g. {nearest})"
            )
        self._last_step = 0
        self._warned_parts = False

    @property
    def should_stop(self) -> bool:
        """An alert rule with ``stop_training=True`` fired (the same on every rank)."""
        return bool(self.monitor.should_stop)

    def log(self, step: int, global_avg_loss: float, global_max_loss: float, grad_norm: float,
            extra_metrics: dict[str, Any] | None = None) -> None:
        """torchtitan's logging, then :meth:`probe_step` (torchtitan calls this on every rank)."""
        MetricsProcessor.log(self, step, global_avg_loss, global_max_loss, grad_norm, extra_metrics=extra_metrics)
        self.probe_step(step)

    def probe_step(self, step: int) -> Results:
        """``monitor.step(model_parts[0], step)``, then the finished results to torchtitan's loggers.

        Returns the ``(probe step, metrics)`` pairs forwarded (on the rank that logs; ``[]`` elsewhere).
        """
        self._last_step = step
        model = self._model()
        if model is None:
            return []
        self._step(model, step)
        items = self._drain()
        self._forward(items, step)
        return items

    def close(self) -> None:
        """Deliver the last results (logged at the last step seen), close the monitor and torchtitan's loggers."""
        try:
            self._finish(lambda items: self._forward(items, self._last_step))
        finally:
            MetricsProcessor.close(self)

    # ------------------------------------------------------------------ internals
    def _model(self) -> Any:
        parts = self.model_parts
        if parts is not None and len(parts) == 1:
            return parts[0]
        if not self._warned_parts:
            self._warned_parts = True
            why = ("model_parts is not set (the torchtitan Trainer sets it after building the model): outside the "
                   "Trainer, set processor.model_parts = [model] before log()" if not parts else
                   f"there are {len(parts)} model parts (pipeline parallelism: each stage holds only its own routers); "
                   "grokmon probes a model in one part: train without pipeline parallelism to probe")
            warnings.warn(f"grokmon: not probing: {why}", RuntimeWarning, stacklevel=3)
        return None

    def _forward(self, items: Results, step: int) -> None:
        for probe_step, metrics in items:
            self.logger.log({**metrics, PREFIX + "probe_step": probe_step}, max(step, probe_step))
            shown = [f"{key}: {metrics[PREFIX + key]:.4f}" for key in _SUMMARY_KEYS if PREFIX + key in metrics]
            _stdout.info(f"grokmon probe of step {probe_step}: " + ("  ".join(shown) or f"{len(metrics)} values"))


def _monitor_from(config: Any) -> Any:
    from ..config import MonitorConfig
    from ..monitor import GrokkingMonitor
    from ..probe import ProbeSet

    path = getattr(config, "grokmon_probe", "")
    if not path:
        raise ConfigError("GrokkingMetricsProcessor needs a probe: set Config(grokmon_probe='probe.pt') (a ProbeSet "
                          "saved with probe.save(path)) or pass monitor=GrokkingMonitor(...)")
    return GrokkingMonitor(ProbeSet.load(path),
                           MonitorConfig(every=config.grokmon_every, output_dir=config.grokmon_output_dir))
