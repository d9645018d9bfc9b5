"""AccelerateSink: log through ``accelerator.log`` (every tracker the user configured).

``accelerator.log(metrics, step=step)`` already runs on the main process only. Accelerate's step
semantics are the user's: two logs at the same step merge into one W&B row; a step below the last
one logged is dropped by W&B, so this sink drops it first, with a warning. Alerts go to the W&B
tracker's run when the accelerator has one (main process), and nowhere otherwise.

Example:
    >>> from accelerate import Accelerator                       # doctest: +SKIP
    >>> acc = Accelerator(log_with="wandb"); acc.init_trackers("moe")  # doctest: +SKIP
    >>> AccelerateSink(acc).log({"grokmon/pathway_distance": 3.5}, step=200)  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import SinkError
from .base import AlertInfo, Sink, to_float
from .wandb import _MAX_TITLE

__all__ = ["AccelerateSink"]


class AccelerateSink(Sink):
    """Log probe metrics with ``accelerator.log(metrics, step=step)``; never a lower step than before."""

    name = "accelerate"

    def __init__(self, accelerator: Any) -> None:
        if not hasattr(accelerator, "log"):
            raise SinkError(f"AccelerateSink needs an accelerate.Accelerator, got {type(accelerator).__name__}")
        self.accelerator = accelerator
        self.last_step: int | None = None
        self.dropped = 0

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        step = int(step)
        if self.last_step is not None and step < self.last_step:
            self.dropped += 1
            warnings.warn(f"AccelerateSink: step {step} is below the last logged step {self.last_step}; dropped",
                          RuntimeWarning, stacklevel=2)
            return
        self.accelerator.log({str(k): to_float(v, k) for k, v in metrics.items()}, step=step)
        self.last_step = step

    def _alert(self, alert: AlertInfo) -> None:
        if not getattr(self.accelerator, "is_main_process", True):
            return
        try:
            run = self.accelerator.get_tracker("wandb", unwrap=True)
        except (ValueError, KeyError, AttributeError):
            return  # no W&B tracker configured: alerts have no channel here
        if run is None or not hasattr(run, "alert"):
            return
        kwargs: dict[str, Any] = {"title": alert.title[:_MAX_TITLE], "text": alert.text or alert.title,
                                  "level": alert.level}
        if alert.wait_duration is not None:
            kwargs["wait_duration"] = alert.wait_duration
        run.alert(**kwargs)
