"""WandbSink: log into the run the host already has (the Trainer's, Accelerate's, the user's).

Two step modes:

* ``step_key="train/global_step"`` (default; Lightning uses ``"trainer/global_step"``): on first use
  the sink calls ``run.define_metric(step_key)`` and ``run.define_metric(metric_glob,
  step_metric=step_key)``, then logs ``run.log({**metrics, step_key: step})`` **without** ``step=``.
  W&B's own ``_step`` has usually moved past the training step because of the host's log calls,
  and a ``step=`` below it is dropped by W&B ("Tried to log to step ... less than the current step").
* ``step_key=None``: ``run.log(metrics, step=step)`` for runs whose steps the user controls
  (Accelerate: same semantics as ``accelerator.log``). A step below the last one this sink logged,
  or below the run's current step, is dropped here with a warning instead of silently by W&B.

``alert`` calls ``run.alert(title=, text=, level=, wait_duration=)`` (seconds; titles are cut to
64 characters, W&B's limit). Offline runs keep the alert in the ``.wandb`` file.

Example:
    >>> import wandb                                                   # doctest: +SKIP
    >>> run = wandb.init(project="moe", mode="offline")                # doctest: +SKIP
    >>> sink = WandbSink(run)                                          # doctest: +SKIP
    >>> sink.log({"grokmon/pathway_distance": 3.5}, step=200)          # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import SinkError
from .base import AlertInfo, Sink, to_float

__all__ = ["WandbSink"]

_MAX_TITLE = 64


class WandbSink(Sink):
    """Log grokmon metrics and alerts into a W&B run (see module doc for the step modes)."""

    name = "wandb"

    def __init__(self, run: Any = None, step_key: str | None = "train/global_step", *,
                 metric_glob: str | None = "grokmon/*") -> None:
        if metric_glob is not None and "*" in metric_glob[:-1]:
            raise SinkError(f"metric_glob={metric_glob!r}: W&B accepts only a suffix glob such as 'grokmon/*'")
        self._run = run
        self.step_key = step_key
        self.metric_glob = metric_glob
        self.last_step: int | None = None
        self.dropped = 0
        self._defined = False

    @property
    def run(self) -> Any:
        """The W&B run: the one given, else ``wandb.run`` at first use."""
        if self._run is None:
            import wandb

            if wandb.run is None:
                raise SinkError("no active W&B run: call wandb.init() first or pass run=")
            self._run = wandb.run
        return self._run

    def _define(self, run: Any) -> None:
        if self._defined:
            return
        if self.step_key is not None:
            run.define_metric(self.step_key)
            if self.metric_glob is not None:
                run.define_metric(self.metric_glob, step_metric=self.step_key)
        self._defined = True

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        run = self.run
        self._define(run)
        step = int(step)
        values = {str(k): to_float(v, k) for k, v in metrics.items()}
        if self.step_key is not None:
            run.log({**values, self.step_key: step})
            self.last_step = step
            return
        # W&B's run.step is the row it is filling: a lower step= is dropped by W&B, an equal one merges
        floor = max(self.last_step if self.last_step is not None else 0, _int(getattr(run, "step", 0)))
        if step < floor:
            self.dropped += 1
            warnings.warn(
                f"WandbSink: step {step} is below the run's current step {floor}; W&B would drop it, so it is "
                "not logged. Use step_key='train/global_step' (log against a step metric) when other code logs too",
                RuntimeWarning, stacklevel=2,
            )
            return
        run.log(values, step=step)
        self.last_step = step

    def _alert(self, alert: AlertInfo) -> None:
        kwargs: dict[str, Any] = {"title": alert.title[:_MAX_TITLE], "text": alert.text or alert.title,
                                  "level": alert.level}
        if alert.wait_duration is not None:
            kwargs["wait_duration"] = alert.wait_duration
        self.run.alert(**kwargs)

    def close(self) -> None:
        """Nothing to release: the run belongs to the host, which finishes it."""


def _int(x: Any) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) else 0
