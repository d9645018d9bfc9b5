"""GrokkingLightningCallback: run a :class:`~grokmon.monitor.GrokkingMonitor` inside Lightning.

* ``on_train_start``: a baseline probe at ``trainer.global_step`` (``monitor.config.baseline``),
  unless the monitor's state came back from a checkpoint.
* ``on_train_batch_end``: fires once per micro-batch; the callback acts only when
  ``trainer.global_step`` (optimizer updates) has changed since its last call, so
  ``accumulate_grad_batches`` is respected. ``monitor.step`` runs on every rank.
* Results are written through ``trainer.loggers`` with ``logger.log_metrics(metrics,
  step=probe_step)`` on global rank 0 – not ``pl_module.log``, whose step-level values reach the
  loggers only every ``log_every_n_steps`` and would silently drop probes. ``CSVLogger`` puts
  them in its ``step`` column. A ``WandbLogger`` is not called: its run gets a
  :class:`~grokmon.sinks.WandbSink` on the logger's ``trainer/global_step`` axis instead (as under
  the HF Trainer: headline and diagnostic sections, per-group charts refreshed every
  ``MonitorConfig.wandb_charts_every`` probes, ``run.alert`` from ``wandb_alert_level`` up).
* ``monitor.should_stop`` (an alert rule with ``stop_training=True``) sets ``trainer.should_stop``.
* ``state_dict`` / ``load_state_dict`` carry the monitor state in Lightning checkpoints, filed under
  a ``state_key`` built from the monitor's settings (Lightning's ``_generate_state_key``), so two
  grokmon callbacks in one Trainer keep their own state.
* ``on_train_end`` / ``on_exception``: flush (log what is left) and close the monitor.

The probe forward needs the Hugging Face model, not the ``LightningModule`` (whose ``forward``
takes whatever its author chose): by default the callback probes the shallowest
``transformers.PreTrainedModel`` inside the module, else the module itself. Pass ``model="net"``
(an attribute name) or ``model=lambda m: m.net`` to choose.

Lightning is optional: ``pip install grokmon[lightning]`` (``lightning`` or ``pytorch_lightning``).
This module subclasses the ``Callback`` of whichever of the two is in use when it is imported
(``lightning.pytorch`` unless only ``pytorch_lightning`` is).

Example:
    >>> import lightning.pytorch as pl                                   # doctest: +SKIP
    >>> trainer = pl.Trainer(max_steps=1000, callbacks=[GrokkingLightningCallback(monitor)])  # doctest: +SKIP
    >>> trainer.fit(lit_module, train_loader)                            # doctest: +SKIP
"""

from __future__ import annotations

import os

import sys
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import GrokmonError
from ._common import MonitorAdapter

__all__ = ["GrokkingLightningCallback", "lightning_module"]


def lightning_module() -> Any:
    """The Lightning package in use: ``lightning.pytorch`` (preferred) or ``pytorch_lightning``."""
    if "pytorch_lightning" in sys.modules and "lightning.pytorch" not in sys.modules:
        import pytorch_lightning as pl

        return pl
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError:
            raise GrokmonError(
                "GrokkingLightningCallback needs Lightning: pip install grokmon[lightning] "
                "(or pip install lightning)"
            ) from None
    return pl


def _find_hf_model(module: Any) -> Any:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return module
    best, depth = None, None
    for name, sub in module.named_modules():
        if isinstance(sub, PreTrainedModel):
            d = 0 if not name else name.count(".") + 1
            if depth is None or d < depth:
                best, depth = sub, d
    return module if best is None else best


pl = lightning_module()


class GrokkingLightningCallback(MonitorAdapter, pl.Callback):
    """Probe a MoE model every ``monitor.config.every`` optimizer updates of a Lightning ``Trainer``.

    Args:
        monitor: the :class:`~grokmon.monitor.GrokkingMonitor` to drive.
        model: what to probe: ``None`` (the shallowest Hugging Face model inside the
            LightningModule, else the module), an attribute name, or a function of the module.
        close_on_train_end: close the monitor when training ends.

    Example:
        >>> cb = GrokkingLightningCallback(monitor)                      # doctest: +SKIP
        >>> pl.Trainer(max_steps=100, callbacks=[cb]).fit(module, loader)  # doctest: +SKIP
    """

    def __init__(self, monitor: Any, *, model: str | Callable[[Any], Any] | None = None,
                 close_on_train_end: bool = True) -> None:
        super().__init__()
        self._attach(monitor, who="GrokkingLightningCallback", close_on_train_end=close_on_train_end)
        self.model = model
        self._last_step: int | None = None
        self._wandb_logger: Any = None

    @property
    def state_key(self) -> str:
        """Where Lightning files this callback's checkpoint state: built from the monitor's settings,
        so two grokmon callbacks in one Trainer keep their own state (Lightning's ``_generate_state_key``)."""
        config = self.monitor.config
        return self._generate_state_key(every=config.every, jsonl=str(config.jsonl_path),
                                        probe=self.monitor.probe_set.fingerprint())

    # ------------------------------------------------------------ helpers
    def probe_model(self, pl_module: Any) -> Any:
        """The module the probe forward runs on (see ``model``)."""
        if self.model is None:
            return _find_hf_model(pl_module)
        if isinstance(self.model, str):
            if not hasattr(pl_module, self.model):
                raise GrokmonError(
                    f"{type(pl_module).__name__} has no attribute {self.model!r}: pass model= the attribute "
                    "that holds the Hugging Face model, or a function of the LightningModule"
                )
            return getattr(pl_module, self.model)
        return self.model(pl_module)

    @staticmethod
    def _optimizer(trainer: Any) -> Any:
        opts = getattr(trainer, "optimizers", None) or []
        return opts[0] if opts else None

    def _forward(self, trainer: Any, items: list | None = None) -> None:
        items = self._drain() if items is None else items
        if not items or not trainer.is_global_zero:
            return
        for step, metrics in items:
            for lg in trainer.loggers:
                if lg is not self._wandb_logger:  # its run has a WandbSink of its own
                    lg.log_metrics(dict(metrics), step=step)

    def _attach_wandb(self, trainer: Any) -> None:
        """Give a ``WandbLogger``'s run a WandbSink (charts, sections, alerts), once, on global rank 0."""
        if self._wandb_logger is not None or not trainer.is_global_zero:
            return
        from ..sinks.wandb import WandbSink

        for lg in trainer.loggers:
            if type(lg).__name__ != "WandbLogger":
                continue
            if any(isinstance(s, WandbSink) for s in getattr(self.monitor, "sinks", ())):
                return  # the user gave the monitor a W&B sink of their own
            config = self.monitor.config
            self.monitor.add_sink(WandbSink(lg.experiment, step_key="trainer/global_step",
                                            charts_every=config.wandb_charts_every,
                                            alert_level=config.wandb_alert_level))
            self._wandb_logger = lg
            return

    # ------------------------------------------------------------ hooks
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # before Lightning restores callback state: a new run's folder goes under the Trainer's root
        self.monitor.set_run_root(os.path.join(trainer.default_root_dir, "grokmon"))

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._attach_wandb(trainer)
        step = int(trainer.global_step)
        self._baseline(self.probe_model(pl_module), step, self._optimizer(trainer))
        self._last_step = step
        self._forward(trainer)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = int(trainer.global_step)
        if step == self._last_step:
            return  # a micro-batch that did not step the optimizer
        self._last_step = step
        stop = self._step(self.probe_model(pl_module), step, self._optimizer(trainer))
        self._forward(trainer)
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(lambda items: self._forward(trainer, items))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._abort(lambda items: self._forward(trainer, items), exception)

    # ------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        # results still in flight would otherwise be missing from the saved alert state
        self.monitor.flush()
        return {"monitor_state": self.monitor.state_dict(), "last_step": self._last_step}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.monitor.load_state_dict(dict(state_dict["monitor_state"]))
        self._last_step = state_dict.get("last_step")
        self._restored = True

    def __repr__(self) -> str:
        return f"GrokkingLightningCallback(monitor={self.monitor!r})"
