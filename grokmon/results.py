"""The result path: from a captured probe to its metrics, rules, stages, sinks and the stop decision.

::

    CaptureResult (runner.py)
      ─► metric job: compute_metrics + timings; out of memory → again on the CPU   (worker thread, or inline)
      ─► alert rules and per-group stages (alerts/) ─► prefixed keys (grokmon/...)
      ─► every sink's queue, in step order; then alerts (sinks, log, on_alert)    (training thread)
      ─► each sink called from its own thread, timed (delivery.py)              (sink threads)
      ─► stop agreement across ranks ─► history / last_metrics

Results are judged on the thread that calls ``poll`` / ``flush`` (so rules, stages and the stop
decision follow the host loop); the sinks are called from their own threads
(:class:`~grokmon.delivery.Delivery`), so a sink that blocks costs training nothing. A failure
anywhere is counted by :class:`Faults` (``grokmon/errors``), warned once per place and never raised
(``on_error="raise"`` for tests). A sink that stalls or fails ``MAX_SINK_FAILURES`` times in a row
is detached (never the JSONL record); ``history`` keeps the last ``history_limit`` results and
``grokmon/sink_drops`` counts the records a sink never got.

Example:
    >>> from grokmon.config import MonitorConfig
    >>> from grokmon.sinks import CallbackSink
    >>> path = ResultPath(MonitorConfig(async_metrics=False), sinks=[CallbackSink(lambda m, s: print(s, m))])
    >>> path.submit(200, lambda: {"pathway_distance": 0.5})
    >>> _ = path.flush()
    200 {'grokmon/pathway_distance': 0.5, 'grokmon/errors': 0.0, 'grokmon/sink_drops': 0.0}
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .alerts import AlertEvent, GroupStageTracker, Rule, RuleSet
from .config import MonitorConfig
from .delivery import MAX_SINK_FAILURES, Delivery, SinkStatus
from .distributed import all_agree, rank_and_world
from .keys import PREFIX, prefixed, unprefixed
from .metrics import MemorizationTracker, MetricConfig, compute_metrics
from .metrics.info import drop_meaningless, metric_info
from .pathways import Pathways
from .routing.capture import CaptureResult
from .sinks import JsonlSink
from .worker import MetricWorker

__all__ = ["Faults", "MAX_SINK_FAILURES", "ResultPath", "metric_job"]

log = logging.getLogger("grokmon")
#: Seconds of a close's deadline kept for the sinks (at most half of it): metric jobs stop waiting before.
SINK_RESERVE = 3.0
Results = list[tuple[int, dict[str, float]]]


class Faults:
    """Counts the monitor's failures; warns once per place, or re-raises with ``on_error="raise"``.

    Example:
        >>> faults = Faults("warn")
        >>> import warnings; warnings.simplefilter("ignore")
        >>> faults("sink jsonl", OSError("disk full")); faults.count
        1
    """

    def __init__(self, on_error: str = "warn") -> None:
        self.on_error = on_error
        self.count = 0
        self._warned: set[str] = set()

    def __call__(self, where: str, error: BaseException) -> None:
        self.count += 1
        if self.on_error == "raise":
            raise error
        if where not in self._warned:
            self._warned.add(where)
            warnings.warn(f"grokmon: {where} failed, training goes on (counted in grokmon/errors): {error!r}",
                          RuntimeWarning, stacklevel=3)


def metric_job(step: int, capture: CaptureResult, previous: Pathways | None, config: MetricConfig, *,
               memorization: MemorizationTracker | None = None, drift_invalid: bool = False,
               on_dropped: Callable[[list[str], int], None] | None = None) -> Callable[[], dict[str, float]]:
    """The one path from a captured probe to its unprefixed metrics (the monitor's and ``grokmon scan``'s).

    Returns a function to run later (on the worker): :func:`compute_metrics` with the per-sample
    loss (``probe_loss``, ``group/<g>/probe_loss``), plus ``probe_seconds``, ``probe_tokens`` and
    ``metric_seconds``. Out of GPU memory, it computes again on the CPU (the GPU is the training
    run's). ``memorization`` (the paper's sample selection) is fed in step order: jobs run one at a time.
    A metric the model has too few MoE layers for (``MetricInfo.min_moe_layers``: ``pathway_consistency``
    needs 3) is left out, and ``on_dropped(names, layers)`` is told.

    Example:
        >>> metrics = metric_job(200, capture_pathways(model, ids), None, MetricConfig())()  # doctest: +SKIP
    """
    pathways, loss = capture.pathways, capture.loss_per_sample

    def compute(memorized_since: torch.Tensor | None) -> dict[str, float]:
        try:
            return compute_metrics(pathways, previous, config, loss_per_sample=loss, memorized_since=memorized_since)
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            warnings.warn(f"grokmon: out of memory computing the metrics of step {step}; computed on the CPU "
                          "instead", RuntimeWarning, stacklevel=2)
            return compute_metrics(pathways.to("cpu"), None if previous is None else previous.to("cpu"), config,
                                   loss_per_sample=loss, memorized_since=memorized_since)

    def run() -> dict[str, float]:
        start = time.perf_counter()
        memorized_since = None
        if memorization is not None:
            memorized_since = (torch.full((pathways.num_samples,), -1) if loss is None
                               else memorization.update(step, loss, pathways.groups))
        metrics = compute(memorized_since)
        dropped = drop_meaningless(metrics, pathways.num_routers)
        if dropped and on_dropped is not None:
            on_dropped(dropped, pathways.num_routers)
        if drift_invalid:
            metrics["pathway_drift"] = math.nan
        metrics["probe_seconds"] = capture.seconds
        metrics["probe_tokens"] = float(capture.num_tokens)
        metrics["metric_seconds"] = time.perf_counter() - start
        return metrics

    return run


class ResultPath:
    """Computes, judges and delivers probe results (see the module doc); owns the sinks and the stop flag.

    Args:
        config: the monitor's settings (``on_error``, ``async_metrics``, ``metrics``, the sink settings).
        sinks: where results go (already set up; empty on ranks other than 0).
        rules: alert rules, evaluated on every result in step order.
        stage_tracker: the per-group stage tracker, or None.
        on_alert: called with each :class:`AlertEvent` after the sinks.
    """

    def __init__(self, config: MonitorConfig, *, sinks: Sequence[Any] = (), rules: Sequence[Rule] = (),
                 stage_tracker: GroupStageTracker | None = None,
                 on_alert: Callable[[AlertEvent], None] | None = None) -> None:
        self.config = config
        self.fail = Faults(config.on_error)
        self.delivery = Delivery(self.fail, timeout=config.sink_timeout, capacity=config.sink_buffer,
                                 detach_after=config.sink_detach_after, max_bytes=config.sink_buffer_bytes)
        for sink in sinks:
            self.delivery.add(sink)
        self.rules = RuleSet(rules)
        self.stage_tracker = stage_tracker
        self.on_alert = on_alert
        self.memorization = None
        if config.metrics.selection == "memorized":
            self.memorization = MemorizationTracker(config.metrics.memorized_fraction,
                                                    config.metrics.memorized_tolerance)
        self.rank, self.world_size = rank_and_world()
        self.history: Results = []
        self.last_metrics: dict[str, float] = {}
        self.should_stop = False
        self._stop_pending_step: int | None = None
        self._worker: MetricWorker | None = None
        self._inline: list[tuple[int, Any, BaseException | None]] = []
        self._warned_dropped = False
        self.unfinished = 0  # probes whose metrics were still computing when the monitor closed

    # ------------------------------------------------------------------ jobs in
    def submit_probe(self, step: int, capture: CaptureResult, previous: Pathways | None, *,
                     drift_invalid: bool = False) -> None:
        """Compute this probe's metrics in the background (or now); they are delivered in step order."""
        job = metric_job(step, capture, previous, self.config.metrics, memorization=self.memorization,
                         drift_invalid=drift_invalid, on_dropped=self._dropped)
        self.submit(step, job, device=capture.pathways.mean_weights.device)

    def _dropped(self, names: list[str], layers: int) -> None:
        """Warn once per monitor about metrics left out for too few MoE layers (from the worker thread)."""
        if self._warned_dropped:
            return
        self._warned_dropped = True
        needs = ", ".join(f"{n} needs >= {info.min_moe_layers}" for n in names if (info := metric_info(n)))
        warnings.warn(f"grokmon: {needs} MoE layers and this model has {layers}: not logged (it could mean "
                      "nothing here; docs/metrics.md)", RuntimeWarning, stacklevel=2)

    def submit_failed(self, step: int, device: torch.device | None = None) -> None:
        """Log ``step`` with its metrics NaN: visibly invalid (see :meth:`_invalid_row`)."""
        self.submit(step, self._invalid_row, device=device)

    def _invalid_row(self) -> dict[str, float]:
        """NaN for every headline metric (those of the last good probe, or the defaults)."""
        keys = [unprefixed(k) for k in self.last_metrics if k.startswith(PREFIX)]
        keys = [k for k in keys if not k.startswith(("alert/", "group/")) and k not in ("stage", "errors")]
        return {k: math.nan for k in keys or ("pathway_distance", "probe_loss")}

    def submit(self, step: int, job: Callable[[], dict[str, float]], device: torch.device | None = None) -> None:
        """Run ``job`` for ``step`` on the worker (started on ``device`` at first use) or inline."""
        if not self.config.async_metrics:
            try:
                self._inline.append((step, job(), None))
            except Exception as error:  # noqa: BLE001
                self._inline.append((step, None, error))
            return
        if self._worker is None:
            self._worker = MetricWorker(device=device)
        self._worker.submit(step, job)

    # ------------------------------------------------------------------ results out (training thread)
    def poll(self) -> Results:
        """Deliver the results finished so far; ``(step, prefixed metrics)`` pairs in step order."""
        results = self._deliver(self._take(wait=False))
        self.delivery.check()
        return results

    def flush(self, timeout: float | None = 300.0) -> Results:
        """Wait for pending metric computation, deliver everything, and wait for the healthy sinks to
        take it: at most ``timeout`` s in all; stalled sinks are not waited for."""
        deadline = None if timeout is None else time.monotonic() + timeout
        results = self._deliver(self._take(wait=True, timeout=timeout))
        self.delivery.flush(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return results

    @property
    def sinks(self) -> list[Any]:
        """The attached sinks (detached ones are gone; see :meth:`sink_status`)."""
        return self.delivery.sinks

    def sink_status(self) -> list[SinkStatus]:
        """Each sink's delivery state and record counts (:class:`~grokmon.delivery.SinkStatus`)."""
        return self.delivery.status()

    def _take(self, wait: bool, timeout: float | None = None) -> list:
        finished, self._inline = self._inline, []
        if self._worker is not None:
            finished += self._worker.drain(wait=wait, timeout=timeout)
        return finished

    def _deliver(self, finished: list) -> Results:
        out = []
        for step, metrics, error in sorted(finished, key=lambda item: item[0]):
            if error is not None:
                self.fail("metrics", error)
                continue
            events = self.rules.update(step, metrics) if len(self.rules) else []
            metrics.update(self.rules.active_metrics() if len(self.rules) else {})
            if self.stage_tracker is not None:
                events += self.stage_tracker.update(step, metrics)
                metrics.update(self.stage_tracker.stage_metrics())
            metrics["errors"] = float(self.fail.count)
            metrics["sink_drops"] = float(self.delivery.dropped)
            keyed = prefixed(metrics)
            self._log(keyed, step)
            for event in events:
                self._alert(event)
            if self.rules.stop_requested and not self.should_stop and self._stop_pending_step is None:
                if self.world_size > 1:
                    self._stop_pending_step = step  # rank-local values (probe_seconds) may differ: agree first
                else:
                    self.should_stop = True
            self.history.append((step, keyed))
            if len(self.history) > self.config.history_limit:  # bounded: the JSONL record keeps every result
                del self.history[: len(self.history) - self.config.history_limit]
            self.last_metrics = keyed
            out.append((step, keyed))
        return out

    # ------------------------------------------------------------------ stop agreement (all ranks)
    def agree_before_probe(self) -> None:
        """With background metrics on several ranks: settle the previous probes, then decide together.

        Results reach each rank at different times; a stop asked for by probe p takes effect at the
        next probe, after every rank has all of p's results.
        """
        if self.world_size > 1 and self.config.async_metrics:
            self._deliver(self._take(wait=True, timeout=300.0))  # metrics only: never waits on a sink
            self.agree_on_stop()

    def agree_after_probe(self) -> None:
        """With inline metrics on several ranks: this probe's results are in everywhere, decide now."""
        if self.world_size > 1 and not self.config.async_metrics:
            self.agree_on_stop()

    def agree_on_stop(self) -> None:
        """Every rank stops if any rank's rules asked to (a collective: all ranks call it at the same probe)."""
        if not all_agree(self._stop_pending_step is None) and not self.should_stop:
            self.should_stop = True

    # ------------------------------------------------------------------ sinks and their drop policy
    def add_sink(self, sink: Any) -> None:
        """Add a sink (only world rank 0 writes)."""
        if self.rank == 0:
            self.delivery.add(sink)

    def reopen_jsonl(self, path: Path, resume_step: int) -> None:
        """Reopen the JSONL record at ``path`` for a resumed run (lines after ``resume_step`` are dropped)."""
        self.delivery.flush(self.config.sink_timeout)
        for sink in self.sinks:
            if isinstance(sink, JsonlSink):
                sink.close()
                self.delivery.replace(sink, JsonlSink(path, resume_step=resume_step))

    def _log(self, metrics: Mapping[str, float], step: int) -> None:
        self.delivery.log(metrics, step)

    def _alert(self, event: AlertEvent) -> None:
        if self.rank == 0:  # stage changes are INFO: news, not a problem
            log.log(logging.INFO if event.level == "INFO" else logging.WARNING, "grokmon alert at step %s: %s — %s",
                    event.step, event.title, event.text)
        self.delivery.alert(event)
        if self.on_alert is not None:
            try:
                self.on_alert(event)
            except Exception as error:  # noqa: BLE001
                self.fail("on_alert", error)

    # ------------------------------------------------------------------ lifecycle and state
    def close(self, timeout: float | None = 300.0) -> None:
        """Deliver what is pending, stop the worker, close the sinks: one deadline, ``timeout`` s, for
        the metric jobs and the sinks together (a stalled sink is never called again).

        The metric jobs may use the deadline less a reserve for the sinks (half of it, at most
        :data:`SINK_RESERVE` s), so the probes that finished are written; a probe still computing
        then is not waited for: it is warned about, counted in ``grokmon/errors`` and in
        :attr:`unfinished`.
        """
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        jobs_until = None if timeout is None else start + max(0.0, timeout - min(timeout / 2, SINK_RESERVE))
        self._deliver(self._take(wait=True, timeout=None if jobs_until is None else max(0.0, jobs_until - start)))
        if self._worker is not None:
            idle = not self._worker.unfinished_steps  # nothing running: the dispatcher ends at once
            left = 0.0 if deadline is None else max(0.0, deadline - time.monotonic())
            self._worker.close(timeout=(5.0 if deadline is None else left) if idle else 0.0)  # never waits on a running job
            self._deliver(self._take(wait=False))  # any that finished meanwhile
            steps = self._worker.unfinished_steps
            if steps:
                self.unfinished += len(steps)
                self.fail.count += len(steps)
                warnings.warn(f"grokmon: {len(steps)} probe(s) were still computing their metrics when the monitor "
                              f"closed (steps {steps[:10]}{' ...' if len(steps) > 10 else ''}; shutdown deadline "
                              f"{timeout:g} s): they are not written (counted in grokmon/errors)",
                              RuntimeWarning, stacklevel=3)
        self.delivery.close(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def state_dict(self) -> dict[str, Any]:
        """Errors, the stop decision, alert, stage and memorization state (JSON-able)."""
        return {
            "errors": self.fail.count,
            "should_stop": self.should_stop,
            "stop_pending_step": self._stop_pending_step,
            "alerts": self.rules.state_dict(),
            "stages": self.stage_tracker.state_dict() if self.stage_tracker is not None else None,
            "memorization": None if self.memorization is None else self.memorization.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (missing keys start fresh)."""
        self.fail.count = state.get("errors", 0)
        self.should_stop = bool(state.get("should_stop", False))
        self._stop_pending_step = state.get("stop_pending_step")
        if state.get("alerts"):
            self.rules.load_state_dict(state["alerts"])
        if state.get("stages") and self.stage_tracker is not None:
            self.stage_tracker.load_state_dict(state["stages"])
        if state.get("memorization") and self.memorization is not None:
            self.memorization.load_state_dict(state["memorization"])
