"""AccelerateSink: log through the trackers of an ``accelerate.Accelerator``.

Accelerate's own ``accelerator.log(values, step=step)`` passes ``step=`` to W&B, and W&B drops a
row whose step is behind the row it is filling. grokmon's metrics are computed in the background
and arrive one or more steps after their probe, by which time the user's ``accelerator.log(...,
step=global_step)`` has moved W&B on: those rows would be lost. So:

* the W&B tracker gets ``run.log({..., "grokmon_step": probe_step}, commit=False)``: the values join
  the row W&B is filling (never a ``step=``, never advancing W&B's counter, so the user's next
  ``step=`` log is not dropped either), and ``define_metric("grokmon/*", step_metric="grokmon_step")``
  plots every grokmon curve against the step of its probe;
* every other tracker (TensorBoard, CSV, MLflow, ...) gets ``tracker.log(values, step=probe_step)``,
  where a late step is harmless; a step below one this sink already logged is dropped with a warning.

Alerts go to the W&B tracker's run when the accelerator has one, and nowhere otherwise.

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
from ..keys import METRIC_GLOB
from .base import AlertInfo, Sink, to_float
from .wandb import _MAX_TITLE

__all__ = ["AccelerateSink", "STEP_KEY"]

#: The W&B step metric of grokmon's curves in Accelerate runs (outside the ``grokmon/*`` glob it governs).
STEP_KEY = "grokmon_step"


class AccelerateSink(Sink):
    """Log probe metrics to every tracker of ``accelerator`` (W&B without ``step=``, see the module doc)."""

    name = "accelerate"

    def __init__(self, accelerator: Any, *, metric_glob: str = METRIC_GLOB) -> None:
        if not hasattr(accelerator, "log"):
            raise SinkError(f"AccelerateSink needs an accelerate.Accelerator, got {type(accelerator).__name__}")
        self.accelerator = accelerator
        self.metric_glob = metric_glob
        self.last_step: int | None = None
        self.dropped = 0
        self._defined: set[int] = set()
        self._pending: tuple[int, int | None] | None = None  # (run, W&B row) holding our last uncommitted values
        self._pending_step = 0

    def _wandb_run(self) -> Any:
        try:
            return self.accelerator.get_tracker("wandb", unwrap=True)
        except (ValueError, KeyError, AttributeError):
            return None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if not getattr(self.accelerator, "is_main_process", True):
            return
        step = int(step)
        values = {str(k): to_float(v, k) for k, v in metrics.items()}
        late = self.last_step is not None and step < self.last_step
        for tracker in getattr(self.accelerator, "trackers", []):
            if getattr(tracker, "name", None) == "wandb":
                self._wandb_log(tracker.tracker, values, step)
            elif late:
                self.dropped += 1
                warnings.warn(f"AccelerateSink: step {step} is below the last logged step {self.last_step}; not sent "
                              f"to the {tracker.name} tracker", RuntimeWarning, stacklevel=2)
            else:
                tracker.log(values, step=step)
        if not late:
            self.last_step = step

    def _wandb_log(self, run: Any, values: dict[str, float], step: int) -> None:
        if id(run) not in self._defined:
            run.define_metric(STEP_KEY)
            run.define_metric(self.metric_glob, step_metric=STEP_KEY)
            self._defined.add(id(run))
        row = _int(getattr(run, "step", None))
        if row is not None and self._pending == (id(run), row):
            # our previous result is still in the row W&B is filling (the user has not logged since):
            # commit that row, or this result would overwrite it
            run.log({STEP_KEY: self._pending_step}, commit=True)
            row = _int(getattr(run, "step", None))
        run.log({**values, STEP_KEY: step}, commit=False)
        self._pending, self._pending_step = (id(run), row), step

    def _alert(self, alert: AlertInfo) -> None:
        if not getattr(self.accelerator, "is_main_process", True):
            return
        run = self._wandb_run()
        if run is None or not hasattr(run, "alert"):
            return  # no W&B tracker configured: alerts have no channel here
        kwargs: dict[str, Any] = {"title": alert.title[:_MAX_TITLE], "text": alert.text or alert.title,
                                  "level": alert.level}
        if alert.wait_duration is not None:
            kwargs["wait_duration"] = alert.wait_duration
        run.alert(**kwargs)


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None
