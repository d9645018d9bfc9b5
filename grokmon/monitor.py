"""GrokkingMonitor: probe an MoE model every N steps and stream pathway metrics, without stalling training.

On a probe step every rank runs one eval-mode, no-grad forward of its shard of the probe, the
pathways are gathered, and the metric computation goes to a background thread; the call returns
at once. Results are judged at later calls and reach the sinks (JSONL by default, W&B,
TensorBoard, ...) through each sink's own thread, logged against the step they belong to. A monitor failure warns, counts
itself in ``grokmon/errors`` and lets training go on (``on_error="raise"`` for tests).

The monitor keeps the schedule, the state and the lifecycle. Its settings are a
:class:`~grokmon.config.MonitorConfig`; the forwards are a :class:`~grokmon.runner.ProbeRunner`'s
job, and everything after the capture (metrics, rules, stages, sinks, the stop decision) a
:class:`~grokmon.results.ResultPath`'s.

Example:
    >>> monitor = GrokkingMonitor(probe, MonitorConfig(every=200))      # doctest: +SKIP
    >>> for step, batch in enumerate(loader, start=1):                  # doctest: +SKIP
    ...     loss = model(**batch).loss; loss.backward(); opt.step(); opt.zero_grad()
    ...     monitor.step(model, step)
    >>> monitor.close()                                                 # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from . import shutdown
from .alerts import AlertEvent, GroupStageTracker, Rule
from .config import MonitorConfig
from .errors import ConfigError, GrokmonError, ProbeError, SinkError
from .pathways import Pathways
from .probe import ProbeSet
from .results import ResultPath
from .runfolder import DEFAULT_RUNS_ROOT, new_run_folder
from .runner import ProbeRunner
from .clock import StepClock
from .torchfile import load_torch_file
from .runinfo import config_line
from .sinks import AccelerateSink, JsonlSink, check_sinks

Results = list[tuple[int, dict[str, float]]]


def _layout_change(before: Pathways, after: Pathways) -> str | None:
    """What changed in the MoE layout between two probes (None: the same, drift is defined)."""
    if (before.layers, before.num_experts, before.num_samples) == (after.layers, after.num_experts, after.num_samples):
        return None
    shape = lambda p: f"{len(p.layers)} routers x {p.num_experts} experts, {p.num_samples} samples"  # noqa: E731
    return f"{shape(before)} -> {shape(after)}"


def _free_record(taken: Path, error: SinkError) -> tuple[JsonlSink, Path]:
    """The first ``grokmon.<n>.jsonl`` beside ``taken`` that no file or live monitor uses, opened."""
    for n in range(2, 1000):
        path = taken.with_name(f"{taken.stem}.{n}{taken.suffix}")
        if path.exists():
            continue
        try:
            record = JsonlSink(path)
        except SinkError:
            continue
        warnings.warn(f"grokmon: {error} -- this monitor writes {path} instead", RuntimeWarning, stacklevel=4)
        return record, path
    raise error


class GrokkingMonitor:
    """Probe ``probe`` through the model every ``config.every`` optimizer steps and log grokmon's metrics.

    Args:
        probe: the fixed probe set (save it with the run; the same one must be used after resume).
        config: the settings (:class:`~grokmon.config.MonitorConfig`; default ``MonitorConfig()``).
            The monitor keeps its own copy as ``monitor.config``: read settings there
            (``monitor.config.every``); ``monitor.config.batch_size`` is the size in use after an
            out-of-memory halving.
        sinks: extra sinks (W&B, TensorBoard, a function); the JSONL record is on by default.
        alerts: alert rules (``PlateauRule`` ...) evaluated on every probe's metrics.
        stage_tracker: a configured :class:`GroupStageTracker` (patience, thresholds, level) instead of
            the default one ``config.stages`` turns on.
        accelerator: an ``accelerate.Accelerator``: logs to its trackers and unwraps the model.
        on_alert: called with each :class:`AlertEvent`.

    Faults never stop training (``on_error="warn"``): each warns once per kind and is counted in
    ``grokmon/errors``; a failed probe logs its step with NaN metrics. Sinks are called from their own
    threads: one that stalls (``sink_timeout``) has its records held and is detached after
    ``sink_detach_after`` s, one that fails 3 times in a row is detached; the JSONL record never is,
    and the in-memory ``history`` keeps the last ``history_limit`` results (:mod:`grokmon.delivery`).

    Example:
        >>> GrokkingMonitor(probe, MonitorConfig(every=100, batch_size=8),                  # doctest: +SKIP
        ...                 alerts=[PlateauRule("pathway_distance")])
    """

    def __init__(self, probe: ProbeSet, config: MonitorConfig | None = None, *, sinks: Sequence[Any] = (),
                 alerts: Sequence[Rule] = (), stage_tracker: GroupStageTracker | None = None,
                 accelerator: Any = None, on_alert: Callable[[AlertEvent], None] | None = None) -> None:
        if not isinstance(probe, ProbeSet):
            raise ConfigError(f"probe must be a grokmon.ProbeSet, got {type(probe).__name__}: "
                              "build one with ProbeSet.from_*")
        if len(probe) < 2:
            raise ProbeError("the probe needs at least 2 samples: pathway distance compares pairs")
        if config is None:
            config = MonitorConfig()
        if not isinstance(config, MonitorConfig):
            hint = (f": the cadence is a setting, MonitorConfig(every={config})" if isinstance(config, int)
                    and not isinstance(config, bool) else "")
            raise ConfigError(f"config must be a grokmon.MonitorConfig, got {type(config).__name__}{hint}")
        if stage_tracker is not None:
            if not isinstance(stage_tracker, GroupStageTracker):
                raise ConfigError(f"stage_tracker must be a grokmon.GroupStageTracker, got {type(stage_tracker).__name__}")
            if not config.stages:
                raise ConfigError("stage_tracker was given but MonitorConfig(stages=False) turns stage tracking off: "
                                  "drop one of the two")
        self.config = dataclasses.replace(config)  # the monitor's own copy (batch_size changes after an OOM)
        sinks = check_sinks(sinks)
        self.probe_set = probe
        self._fingerprint = probe.fingerprint()
        self.accelerator = accelerator
        self.runner = ProbeRunner(probe, self.config, accelerator=accelerator)
        self.results = ResultPath(self.config, rules=alerts, on_alert=on_alert,
                                  stage_tracker=stage_tracker or (GroupStageTracker() if self.config.stages else None))
        self.jsonl_path: Path | None = None
        self._run_root = DEFAULT_RUNS_ROOT
        self._run_record: str | None = None  # the record in a run folder this monitor made (output_dir=None)
        self._record_pending = False
        self._config_pending: JsonlSink | None = None
        if self.results.rank == 0:
            self._open_sinks(sinks, accelerator)
        self.last_probe_step: int | None = None
        self._clock = StepClock()
        self._probe_count = 0
        self._previous: Pathways | None = None
        self._closed = False
        shutdown.register(self, sigterm=self.config.flush_on_sigterm)
        # dropped without close(): deliver what is pending and release the record's lock anyway
        self._finalizer = weakref.finalize(self, self.results.close, shutdown.SHUTDOWN_TIMEOUT)
        self._finalizer.atexit = False  # at exit, grokmon.shutdown closes the open monitors within one deadline

    def _open_sinks(self, sinks: list[Any], accelerator: Any) -> None:
        """World rank 0: the JSONL record (now, or in a run folder at the first probe), the
        accelerator's trackers, the user's sinks."""
        self._record_pending = bool(self.config.jsonl) and self.config.jsonl_path is None
        if self.config.jsonl_path is not None:
            self._open_record(self.config.jsonl_path)
        if accelerator is not None:
            self.results.add_sink(AccelerateSink(accelerator))
        for sink in sinks:
            self.results.add_sink(sink)
        if sinks or accelerator is not None:
            shutdown.run_first_at_exit()

    def _open_record(self, path: Path, resume_step: int | None = None) -> None:
        """Open the JSONL record at ``path`` (with the probe beside it); a resumed run drops lines after ``resume_step``."""
        try:
            record = JsonlSink(path, resume_step=resume_step)  # creates the folder; a clear SinkError if it cannot
        except SinkError as error:
            if self.config.jsonl is not True or not getattr(error, "in_use", False):
                raise
            record, path = _free_record(path, error)  # the explicit output_dir's record held by another live monitor
        # a new record starts with its configuration line (settings, probe, model, versions), written at
        # the first probe, which knows the model
        self._config_pending = record if resume_step is None else None
        self.results.add_sink(record)
        self.jsonl_path = path
        self._record_pending = False
        if self.config.save_probe:  # beside the record: a restarted or later job loads the same samples
            try:
                self.probe_set.save_once(path.parent / "probe.pt")
            except OSError as error:
                self.results.fail("probe save", error)

    def _write_config(self, record: JsonlSink, model: nn.Module | None) -> None:
        self._config_pending = None
        try:
            record.write_config(config_line(self.probe_set, monitor=self.config, model=model))
        except Exception as error:  # noqa: BLE001 - a record without it still reads
            self.results.fail("configuration line", error)

    def set_run_root(self, root: str | Path) -> None:
        """Make this run's folder under ``root`` instead of ``grokmon_out/`` (``output_dir=None`` only).

        The adapters call it with their host's output folder (the Trainer's ``output_dir/grokmon``)
        before the first probe; it changes nothing once the record is open or with an explicit
        ``output_dir``.

        Example:
            >>> monitor.set_run_root("out/grokmon")   # the first probe writes out/grokmon/run-1/grokmon.jsonl  # doctest: +SKIP
        """
        self._run_root = Path(root)

    def _ensure_record(self, resume_record: str | None = None, resume_step: int | None = None) -> None:
        """Open the pending run-folder record: the one a resumed state names, else a new ``run-<n>``."""
        if not self._record_pending or self.results.rank != 0:
            return
        try:
            path = Path(resume_record) if resume_record else new_run_folder(self._run_root) / "grokmon.jsonl"
            self._open_record(path, resume_step=resume_step if resume_record else None)
            self._run_record = os.path.abspath(self.jsonl_path)
        except (OSError, GrokmonError) as error:  # no record: the other sinks and history go on
            self._record_pending = False
            self.results.fail("record", error)

    # ------------------------------------------------------------------ what the settings and results say
    sinks = property(lambda self: self.results.sinks, doc="The sinks results go to (world rank 0).")
    rules = property(lambda self: self.results.rules, doc="The alert rules (a RuleSet).")
    stage_tracker = property(lambda self: self.results.stage_tracker, doc="The per-group stage tracker or None.")
    history = property(lambda self: self.results.history,
                       doc="The last ``history_limit`` (1000) ``(step, prefixed metrics)`` delivered.")
    last_metrics = property(lambda self: self.results.last_metrics, doc="The last result delivered.")
    should_stop = property(lambda self: self.results.should_stop,
                           doc="An alert rule with ``stop_training=True`` fired (agreed on all ranks).")
    errors = property(lambda self: self.results.fail.count, doc="Failures so far (``grokmon/errors``).")

    # ------------------------------------------------------------------ schedule
    def should_probe(self, step: int) -> bool:
        """True on steps that are multiples of ``every`` and not probed yet."""
        return step % self.config.every == 0 and (self.last_probe_step is None or step > self.last_probe_step)

    def step(self, model: nn.Module, step: int, *, optimizer: Any = None) -> dict[str, float]:
        """Call after each optimizer step on every rank. Probes on schedule, returns finished metrics.

        ``step`` must be an integer; one that goes backwards is warned about once and continued on
        grokmon's own count (:class:`grokmon.clock.StepClock`; ``on_error="raise"`` raises).
        """
        if self._closed:
            self._after_close("step")
            return {}
        step = self._clock.resolve(step, last_probed=self.last_probe_step, on_error=self.config.on_error)
        if not self.should_probe(step):
            return _merged(self.poll())
        self._probe_at(model, step, optimizer)
        results = self.poll()
        self.results.agree_after_probe()
        return _merged(results)

    def probe_now(self, model: nn.Module, step: int, *, optimizer: Any = None) -> None:
        """Probe now, whatever the schedule (all ranks must call it at the same step)."""
        if self._closed:
            self._after_close("probe_now")
            return
        self._probe_at(model, self._clock.resolve(step, last_probed=self.last_probe_step, on_error=self.config.on_error), optimizer)

    def _after_close(self, call: str) -> None:
        self.results.fail(f"{call} after close", GrokmonError(
            f"monitor.{call}() was called after monitor.close(): nothing is probed or recorded; "
            "make a new GrokkingMonitor for a new run"))

    def _probe_at(self, model: nn.Module, step: int, optimizer: Any) -> None:
        self._ensure_record()
        if self._config_pending is not None:
            self._write_config(self._config_pending, model)
        self.results.agree_before_probe()
        self.last_probe_step = step
        try:
            capture = self.runner.capture(model, optimizer)
        except Exception as error:  # noqa: BLE001 - a monitor problem must not stop training
            self.results.fail("probe", error)
            self.results.submit_failed(step, None if self._previous is None else self._previous.mean_weights.device)
            return
        self._probe_count += 1
        previous, self._previous = self._previous, capture.pathways
        change = None if previous is None else _layout_change(previous, capture.pathways)
        if change is not None:
            self.results.fail("probe layout", GrokmonError(
                f"the MoE layout changed since the previous probe ({change}): pathway_drift is NaN for this probe"))
            previous = None
        self.results.submit_probe(step, capture, previous, drift_invalid=change is not None)

    # ------------------------------------------------------------------ results
    def poll(self) -> Results:
        """Send finished results to the sinks; returns ``(step, prefixed metrics)`` pairs in step order."""
        return self.results.poll()

    def flush(self, timeout: float | None = 300.0) -> Results:
        """Wait for pending metric computation and deliver everything (at most ``timeout`` s in all)."""
        return self.results.flush(timeout)

    def add_sink(self, sink: Any) -> None:
        """Add a sink (only world rank 0 writes). At exit (Ctrl-C included) the monitor is closed
        before the teardown hooks that the sink's owner registered so far (a W&B run's)."""
        self.results.add_sink(sink)
        shutdown.run_first_at_exit()

    def sink_status(self) -> list[Any]:
        """Each sink's delivery state (``ok`` / ``stalled`` / ``detached`` / ``closed``) and its
        delivered, queued and dropped record counts (:class:`grokmon.delivery.SinkStatus`)."""
        return self.results.sink_status()

    # ------------------------------------------------------------------ lifecycle and state
    def close(self, timeout: float | None = 300.0) -> None:
        """Flush pending metrics, close the sinks, stop the worker: at most ``timeout`` s in all
        (:meth:`grokmon.results.ResultPath.close`: probes still computing then are counted, not waited for)."""
        if self._closed:
            return
        self._closed = True
        shutdown.unregister(self)
        self._finalizer.detach()
        if self._config_pending is not None:   # closed before any probe: the record still says what made it
            self._write_config(self._config_pending, None)
        self.results.close(timeout)

    def state_dict(self, *, include_pathways: bool = True) -> dict[str, Any]:
        """Schedule, probe fingerprint, alert and stage state, error count; the settings and the last pathways.

        Waits for the metrics still being computed first, so a checkpoint holds the alert and stage
        state of every probe so far. The full state adds the settings (``config``, for the record:
        :meth:`load_state_dict` keeps the monitor's own) and the last probe's pathways (CPU tensors,
        ``[N, L, E]`` routing weights: 4 bytes x N x L x E), which let ``pathway_drift`` compare the
        first probe after a restart with the last one before it. ``include_pathways=False`` gives the
        compact JSON-able state, the same for any settings (what the Trainer's ``trainer_state.json``
        holds; the HF callback saves the pathways in a file of their own).
        """
        if not self._closed:
            self.flush()  # results still computing belong to the state (alerts, stages, errors)
        state: dict[str, Any] = {"every": self.config.every, "last_probe_step": self.last_probe_step,
                                 "clock": self._clock.state_dict(),
                                 "probe_fingerprint": self._fingerprint, "probe_count": self._probe_count,
                                 "record": self._run_record,  # the run folder's record, for a resume
                                 **self.results.state_dict()}
        if include_pathways:
            state.update(config=self.config.to_dict(), previous_pathways=self.pathways_state())
        return state

    def pathways_state(self) -> dict[str, Any] | None:
        """The last probe's pathways as a dict of CPU tensors (None before the first probe)."""
        return None if self._previous is None else self._previous.to("cpu").state_dict()

    def load_pathways_state(self, state: Mapping[str, Any] | None) -> None:
        """Restore :meth:`pathways_state` output (ignored, with a warning, for another probe size)."""
        if state is None:
            return
        pathways = Pathways.from_state_dict(dict(state))
        if pathways.num_samples != len(self.probe_set):
            warnings.warn(f"grokmon: saved pathways have {pathways.num_samples} samples, the probe {len(self.probe_set)}:"
                          " not restored (no pathway_drift at the next probe)", RuntimeWarning, stacklevel=2)
            return
        self._previous = pathways

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; refuses a different probe. The saved settings are not applied."""
        if state.get("probe_fingerprint") not in (None, self._fingerprint):
            raise GrokmonError(
                "probe changed since the checkpoint: load the saved probe with ProbeSet.load so the same samples "
                "are probed before and after the restart"
            )
        self.last_probe_step = state.get("last_probe_step")
        self._clock.load_state_dict(state.get("clock"))
        self._probe_count = state.get("probe_count", 0)
        self.results.load_state_dict(state)
        self.load_pathways_state(state.get("previous_pathways"))
        if self.last_probe_step is None:
            return
        if self._record_pending:  # the run's own folder, as the checkpoint names it (never a leftover file)
            self._ensure_record(state.get("record"), resume_step=self.last_probe_step)
        elif self.jsonl_path is not None:
            self.results.reopen_jsonl(self.jsonl_path, resume_step=self.last_probe_step)
            self._config_pending = None   # the record goes on: its first run wrote the configuration line

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` plus the last probe's pathways (for ``pathway_drift`` after resume).

        Example:
            >>> monitor.save("ckpt/grokmon_state.pt"); monitor.load("ckpt/grokmon_state.pt")  # doctest: +SKIP
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": "grokmon.monitor", "version": 2, "state": self.state_dict()}, path)
        return path

    def load(self, path: str | Path) -> None:
        """Restore what :meth:`save` wrote (raises :class:`GrokmonError` for a different probe).

        Only tensors and plain data are read back (``weights_only=True``): a file holding anything
        else raises :class:`~grokmon.errors.UnsafeFileError` and nothing of it runs.
        """
        data = load_torch_file(path, what="a grokmon monitor state", fix="pass a file written by GrokkingMonitor.save")
        if not isinstance(data, dict) or data.get("format") != "grokmon.monitor":
            raise GrokmonError(f"{path} is not a grokmon monitor state file: write one with GrokkingMonitor.save")
        self.load_state_dict(data["state"])

    def __enter__(self) -> GrokkingMonitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        # leaving on an exception (Ctrl-C, SystemExit): the short shutdown deadline, as at exit
        self.close() if exc[0] is None else self.close(timeout=shutdown.SHUTDOWN_TIMEOUT)


def _merged(results: Results) -> dict[str, float]:
    merged: dict[str, float] = {}
    for _, metrics in results:
        merged.update(metrics)
    return merged
