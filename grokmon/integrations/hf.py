"""GrokkingHFCallback: run a :class:`~grokmon.monitor.GrokkingMonitor` inside a Hugging Face ``Trainer``.

What it does, per Trainer event:

* ``on_train_begin``: when ``"wandb"`` is in ``args.report_to`` and a W&B run exists (the
  ``WandbCallback`` created it just before us), world rank 0 adds a
  ``WandbSink(step_key="train/global_step")``: grokmon values land in the Trainer's own run as
  ``grokmon/...`` keys on the ``train/global_step`` axis, logged without ``step=`` (W&B drops a
  ``step=`` behind its own counter), with the per-group charts refreshed every
  ``MonitorConfig.wandb_charts_every`` probes and ``run.alert`` from ``wandb_alert_level`` up. Then a baseline probe at the current step
  (``monitor.config.baseline``), unless the monitor's state was restored from a checkpoint.
* ``on_step_end`` (once per optimizer update, so gradient accumulation is respected by
  construction): ``monitor.step(model, state.global_step, optimizer=...)`` on **every rank** (the
  probe forward is a collective under FSDP / ZeRO-3). ``model`` is passed as the Trainer gives it
  (under FSDP the wrapped root); the monitor decides how to call it. When the monitor's
  ``should_stop`` is set (an alert rule with ``stop_training=True`` fired), training stops
  (``control.should_training_stop``).
* ``on_save``: the monitor's JSON state is written to ``<checkpoint>/grokmon_state.json`` and the
  last probe's pathways to ``<checkpoint>/grokmon_pathways.pt``.
* ``on_train_end``: the monitor is flushed (remaining results logged) and closed.

Where the values go besides the monitor's own sinks (JSONL, W&B, ...): every result is also
appended to ``trainer.state.log_history`` as ``{**metrics, "step": probe_step}``, so they are in
``trainer_state.json`` whatever ``report_to`` is. Appending by hand reaches no logger, and that is
deliberate when W&B is on: ``trainer.log`` would send a second, renamed copy
(``train/grokmon/...``) through ``WandbCallback``. When ``report_to`` names integrations but not W&B
(TensorBoard, MLflow, ...) and the callback was given the ``trainer``, results go through
``trainer.log`` instead, which reaches those integrations and fills ``log_history``; the Trainer's
``global_step`` is set to the probe step for the duration of that call, because asynchronous
metrics can finish a step or more after their probe and ``trainer.log`` stamps the current step.

Resume. The monitor's state (schedule, probe fingerprint, alert and stage state) is saved in one
place, ``grokmon_state.json`` in each checkpoint folder (with the pathways beside it), which this
callback restores itself on resume (``state.global_step > 0``), from
``args.resume_from_checkpoint`` or ``<output_dir>/checkpoint-<global_step>``: no
``restore_callback_states_from_checkpoint`` needed, and the Trainer never has to rebuild the
callback (a monitor is not JSON). The probe fingerprint is checked by the monitor, the baseline
probe is not repeated, and the monitor's sinks keep steps strictly increasing.

Example:
    >>> from grokmon import GrokkingMonitor, ProbeSet                    # doctest: +SKIP
    >>> monitor = GrokkingMonitor(ProbeSet.from_token_ids(ids), MonitorConfig(every=200))  # doctest: +SKIP
    >>> trainer = Trainer(model=model, args=TrainingArguments("out", report_to="wandb"),
    ...                   train_dataset=ds, callbacks=[GrokkingHFCallback(monitor)])   # doctest: +SKIP
    >>> trainer.train()                                                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..errors import ConfigError, GrokmonError
from ..torchfile import load_torch_file
from ._common import MonitorAdapter

if TYPE_CHECKING:  # pragma: no cover
    from ..monitor import GrokkingMonitor

__all__ = ["GrokkingHFCallback", "PATHWAYS_FILE", "STATE_FILE", "read_callback_state"]

logger = logging.getLogger(__name__)

STATE_FILE = "grokmon_state.json"
PATHWAYS_FILE = "grokmon_pathways.pt"  # the last probe's pathways, for pathway_drift after resume
_FORMAT = "grokmon.callback_state"
_VERSION = 1


def _report_to(args: TrainingArguments) -> list[str]:
    r = getattr(args, "report_to", None)
    if r is None or r == "none":
        return []
    names = [r] if isinstance(r, str) else list(r)
    if "all" in names:
        from transformers.integrations import get_available_reporting_integrations

        names = list(get_available_reporting_integrations())
    return [n for n in names if n != "none"]


def read_callback_state(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The grokmon state a :class:`GrokkingHFCallback` saved in a Trainer checkpoint, or ``None``.

    Returns ``{"format", "version", "global_step", "monitor_state"}``.

    Example:
        >>> read_callback_state("out/checkpoint-600")["global_step"]     # doctest: +SKIP
        600
    """
    path = os.path.join(os.fspath(checkpoint_dir), STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}): delete it to resume without the grokmon state") from e
    if not isinstance(data, dict) or data.get("format") != _FORMAT or "monitor_state" not in data:
        raise ConfigError(f"{path} is not a grokmon callback state file: delete it to resume without it")
    if data.get("version", 0) > _VERSION:
        raise ConfigError(f"{path} was written by a newer grokmon (version {data['version']}): upgrade grokmon")
    return data


class GrokkingHFCallback(MonitorAdapter, TrainerCallback):
    """Probe a MoE model every ``monitor.config.every`` optimizer steps of a ``transformers.Trainer``.

    Args:
        monitor: the :class:`~grokmon.monitor.GrokkingMonitor` to drive (``GrokkingHFCallback(monitor)``
            builds this callback for you).
        trainer: optional; with it, results reach non-W&B ``report_to`` integrations through
            ``trainer.log`` (see the module doc). Pass it after building the Trainer, e.g.
            ``trainer.add_callback(GrokkingHFCallback(monitor, trainer=trainer))``.
        close_on_train_end: close the monitor (its files, its worker) when training ends.

    Example:
        >>> cb = GrokkingHFCallback(monitor)                             # doctest: +SKIP
        >>> Trainer(model, args, train_dataset=ds, callbacks=[cb]).train()  # doctest: +SKIP
    """

    def __init__(self, monitor: GrokkingMonitor, trainer: Any = None, *, close_on_train_end: bool = True) -> None:
        self._attach(monitor, who="GrokkingHFCallback", close_on_train_end=close_on_train_end)
        self.trainer = trainer
        self._wandb_sink: Any = None
        self._restored: str | None = None  # where the monitor state came from on resume

    def _load(self, monitor_state: Mapping[str, Any], source: str) -> None:
        self.monitor.load_state_dict(dict(monitor_state))
        self._restored = source
        logger.info("grokmon: monitor state restored from %s", source)

    @staticmethod
    def _checkpoint_folders(args: TrainingArguments, state: TrainerState) -> list[str]:
        candidates = []
        if isinstance(getattr(args, "resume_from_checkpoint", None), str):
            candidates.append(args.resume_from_checkpoint)
        candidates.append(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
        return candidates

    def _restore_pathways(self, args: TrainingArguments, state: TrainerState) -> None:
        """The last probe's pathways from the checkpoint, for pathway_drift at the first probe after resume."""
        for folder in self._checkpoint_folders(args, state):
            path = os.path.join(folder, PATHWAYS_FILE)
            if os.path.exists(path):
                try:  # tensors and plain data only: a crafted pickle is refused unrun
                    state = load_torch_file(path, what="grokmon pathways", fix="delete it to resume without "
                                            "pathway_drift at the first probe")
                    if state is not None and not isinstance(state, dict):
                        raise GrokmonError(f"{path} is not a grokmon pathways file (it holds a "
                                           f"{type(state).__name__}): delete it to resume without pathway_drift")
                    self.monitor.load_pathways_state(state)
                except (GrokmonError, TypeError, KeyError, ValueError) as error:  # a damaged resume file never stops training
                    self.monitor.results.fail("resume pathways", error)
                return

    def _restore_from_checkpoint(self, args: TrainingArguments, state: TrainerState) -> None:
        candidates = self._checkpoint_folders(args, state)
        for folder in candidates:
            try:
                data = read_callback_state(folder)
            except ConfigError as error:  # a damaged resume file never stops training: the monitor starts fresh
                self.monitor.results.fail("resume state", error)
                continue
            if data is None:
                continue
            if data.get("global_step") != state.global_step:
                logger.warning("grokmon: %s is from step %s, not the resumed step %s; ignored",
                               os.path.join(folder, STATE_FILE), data.get("global_step"), state.global_step)
                continue
            self._load(data["monitor_state"], os.path.join(folder, STATE_FILE))
            return
        logger.warning("grokmon: resuming at step %d but no %s was found in %s; the monitor starts fresh",
                       state.global_step, STATE_FILE, " or ".join(candidates))

    # ---------------------------------------------------------------- events

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, optimizer: Any = None, **kwargs: Any) -> None:
        # a new run's record goes in its own folder under the Trainer's output_dir (output_dir=None)
        self.monitor.set_run_root(os.path.join(args.output_dir, "grokmon"))
        if state.is_world_process_zero:
            self._attach_wandb(args)
            others = [r for r in _report_to(args) if r != "wandb"]
            if others and self.trainer is None and "wandb" not in _report_to(args):
                logger.warning(
                    "grokmon: report_to=%s, but the callback has no trainer to log through, so grokmon's values "
                    "reach only log_history and the monitor's own sinks. Pass it: "
                    "GrokkingHFCallback(monitor, trainer=trainer) "
                    "(create the Trainer first, then trainer.add_callback(...)), or add a sink such as "
                    "grokmon.TensorBoardSink", others)
        if state.global_step > 0 and self._restored is None:
            self._restore_from_checkpoint(args, state)
        if state.global_step > 0 and self._restored is not None:
            self._restore_pathways(args, state)
        self._baseline(model, state.global_step, optimizer)
        self._forward(args, state)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: Any = None, optimizer: Any = None, **kwargs: Any) -> None:
        stop = self._step(model, state.global_step, optimizer)
        # Results must be in before a checkpoint records the monitor state, and before the last
        # step ends (integrations close their writers in on_train_end). Same decision on all ranks.
        if control.should_save or control.should_training_stop or stop or state.global_step >= state.max_steps:
            self.monitor.flush()
        self._forward(args, state)
        if stop or self.monitor.should_stop:
            control.should_training_stop = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if not os.path.isdir(folder):
            logger.warning("grokmon: checkpoint folder %s not found; monitor state not saved next to it", folder)
            return
        data = {"format": _FORMAT, "version": _VERSION, "global_step": state.global_step,
                "monitor_state": self.monitor.state_dict(include_pathways=False)}
        path = os.path.join(folder, STATE_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
        pathways = self.monitor.pathways_state()
        if pathways is not None:  # for pathway_drift across the restart
            import torch

            torch.save(pathways, path_tmp := os.path.join(folder, PATHWAYS_FILE + ".tmp"))
            os.replace(path_tmp, os.path.join(folder, PATHWAYS_FILE))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self._finish(lambda items: self._forward(args, state, items))

    # ---------------------------------------------------------------- logging

    def _attach_wandb(self, args: TrainingArguments) -> None:
        if "wandb" not in _report_to(args):
            return
        import wandb

        from ..sinks.wandb import WandbSink

        run = wandb.run
        if run is None:
            return
        if self._wandb_sink is not None and self._wandb_sink._run is run:
            return
        if any(isinstance(s, WandbSink) and s is not self._wandb_sink for s in getattr(self.monitor, "sinks", ())):
            return  # the user gave the monitor a W&B sink of their own
        config = self.monitor.config
        self._wandb_sink = WandbSink(run, step_key="train/global_step", charts_every=config.wandb_charts_every,
                                     alert_level=config.wandb_alert_level)
        self.monitor.add_sink(self._wandb_sink)

    def _forward(self, args: TrainingArguments, state: TrainerState, items: list | None = None) -> None:
        items = self._drain() if items is None else items
        if not items:
            return
        report = _report_to(args)
        through_trainer = self.trainer is not None and bool(report) and "wandb" not in report
        for step, metrics in items:
            if not through_trainer:
                state.log_history.append({**metrics, "step": step})
                continue
            # trainer.log and the integrations stamp rows with state.global_step; with asynchronous
            # metrics a result can arrive a step or more after its probe, so show them the probe step
            host = self.trainer.state
            now = host.global_step
            host.global_step = step
            try:
                self.trainer.log(dict(metrics))
            finally:
                host.global_step = now

    def __repr__(self) -> str:
        return f"GrokkingHFCallback(monitor={self.monitor!r})"
