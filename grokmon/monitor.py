"""GrokkingMonitor: probe an MoE model every N steps and stream pathway metrics, without stalling training.

On a probe step every rank runs one eval-mode, no-grad forward of its shard of the probe, the
pathways are gathered, and the metric computation goes to a background thread; the call returns
at once. Results reach the sinks (JSONL by default, W&B, TensorBoard, ...) from the training
thread at later calls, logged against the step they belong to. A monitor failure warns, counts
itself in ``grokmon/errors`` and lets training go on (``on_error="raise"`` for tests).

Example:
    >>> monitor = GrokkingMonitor(probe, every=200)                     # doctest: +SKIP
    >>> for step, batch in enumerate(loader, start=1):                  # doctest: +SKIP
    ...     loss = model(**batch).loss; loss.backward(); opt.step(); opt.zero_grad()
    ...     monitor.step(model, step)
    >>> monitor.close()                                                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, NamedTuple, Sequence

import torch
from torch import nn

from .alerts import AlertEvent, GroupStageTracker, Rule, RuleSet
from .distributed import all_agree, gather_pathways, rank_and_world, unwrap_for_probe
from .errors import ConfigError, GrokmonError, ProbeError
from .metrics import MemorizationTracker, MetricConfig, compute_metrics
from .pathways import Pathways
from . import shutdown
from .probe import ProbeSet
from .worker import MetricWorker

log = logging.getLogger("grokmon")
MAX_SINK_FAILURES = 3


def _check_sinks(sinks: Any) -> list[Any]:
    """A list of sink objects (one sink alone is accepted), or a ConfigError naming the bad entry."""
    if hasattr(sinks, "log") and callable(sinks.log):
        return [sinks]
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, Sequence):
        raise ConfigError(f"sinks must be a list of sink objects (e.g. [WandbSink()]), got {type(sinks).__name__}")
    for i, sink in enumerate(sinks):
        if not (hasattr(sink, "log") and callable(sink.log)):
            hint = " (grokmon.WandbSink() for W&B)" if isinstance(sink, str) else ""
            raise ConfigError(f"sinks[{i}] is a {type(sink).__name__}, not a sink: pass objects with a "
                              f"log(metrics, step) method{hint}, or wrap a function in grokmon.CallbackSink")
    return list(sinks)


class _OutOfMemory(GrokmonError):
    """Raised on every rank when any rank ran out of memory in the probe forward (retry smaller)."""


def _same_layout(a: Pathways, b: Pathways) -> bool:
    return a.layers == b.layers and a.num_experts == b.num_experts and a.num_samples == b.num_samples


def _layout(p: Pathways) -> str:
    return f"{len(p.layers)} routers x {p.num_experts} experts, {p.num_samples} samples"


class _Rows(NamedTuple):
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    groups: torch.Tensor | None


class GrokkingMonitor:
    """Probe ``probe`` through the model every ``every`` optimizer steps and log grokmon's metrics.

    Args:
        probe: the fixed probe set (save it with the run; the same one must be used after resume).
        every: probe cadence in optimizer steps (steps where ``step % every == 0``).
        metrics: what to compute (``MetricConfig``); per-group keys appear when the probe has groups.
        sinks: extra sinks (W&B, TensorBoard, a function); the JSONL record is on by default.
        jsonl: True for ``output_dir/grokmon.jsonl``, a path, or False.
        alerts: alert rules (``PlateauRule`` ...) evaluated on every probe's metrics.
        stages: track the per-group grokking stage (memorizing / grokking / saturated); pass a
            configured :class:`GroupStageTracker` to change its patience, thresholds or alert level.
        batch_size: probe samples per forward (the probe's memory budget); halved, down to 1, when a
            probe runs out of memory, and kept at the size that worked.
        keep_token_ids: keep per-token expert ids (needed for ``MetricConfig(form="token")``).
        baseline: integrations probe once before the first training step.
        async_metrics: compute metrics on a background thread (False: inline, for tests).
        on_error: ``"warn"`` (count, warn, go on) or ``"raise"``.
        accelerator: an ``accelerate.Accelerator``: logs to its trackers and unwraps the model.
        on_alert: called with each :class:`AlertEvent`.
        flush_on_sigterm: on SIGTERM (preemption), write the finished results before the process ends
            (:mod:`grokmon.shutdown`; chained to any handler already installed).
        save_probe: write the probe beside the JSONL record (``probe.pt``), so a restarted or later
            job can ``ProbeSet.load`` exactly the same samples.

    Faults never stop training (``on_error="warn"``): each warns once per kind and is counted in
    ``grokmon/errors``; a failed probe logs its step with NaN metrics; a sink that fails 3 times in a
    row is dropped (the in-memory ``history`` keeps every result).
    """

    def __init__(
        self,
        probe: ProbeSet,
        every: int = 200,
        *,
        metrics: MetricConfig | None = None,
        sinks: Sequence[Any] = (),
        jsonl: str | Path | bool = True,
        output_dir: str | Path = "grokmon_out",
        alerts: Sequence[Rule] = (),
        stages: bool = True,
        batch_size: int = 32,
        keep_token_ids: bool = False,
        compute_loss: bool = True,
        baseline: bool = True,
        async_metrics: bool = True,
        on_error: Literal["warn", "raise"] = "warn",
        accelerator: Any = None,
        prefix: str = "grokmon/",
        on_alert: Callable[[AlertEvent], None] | None = None,
        flush_on_sigterm: bool = True,
        save_probe: bool = True,
    ) -> None:
        if not isinstance(probe, ProbeSet):
            raise ConfigError(f"probe must be a grokmon.ProbeSet, got {type(probe).__name__}: "
                              "build one with ProbeSet.from_*")
        if len(probe) < 2:
            raise ProbeError("the probe needs at least 2 samples: pathway distance compares pairs")
        if not isinstance(every, int) or every < 1:
            raise ConfigError(f"every must be a positive number of optimizer steps, got {every!r}")
        if on_error not in ("warn", "raise"):
            raise ConfigError(f"on_error must be 'warn' or 'raise', got {on_error!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive number of probe samples per forward, got {batch_size!r}")
        if isinstance(metrics, Mapping):
            metrics = MetricConfig(**metrics)
        if metrics is not None and not isinstance(metrics, MetricConfig):
            raise ConfigError(f"metrics must be a grokmon.MetricConfig (or a dict of its fields), got "
                              f"{type(metrics).__name__}")
        sinks = _check_sinks(sinks)
        if isinstance(jsonl, (str, Path)) and Path(jsonl).is_dir():
            raise ConfigError(f"jsonl={str(jsonl)!r} is a folder: pass a file path (e.g. {Path(jsonl) / 'grokmon.jsonl'}),"
                              " True for output_dir/grokmon.jsonl, or False")
        if not isinstance(stages, (bool, GroupStageTracker)):
            raise ConfigError(f"stages must be True, False or a GroupStageTracker, got {type(stages).__name__}")
        self.probe_set = probe
        self._fingerprint = probe.fingerprint()
        self.errors = 0
        self._warned: set[str] = set()
        self.every = every
        self.metric_config = metrics or MetricConfig()
        self.batch_size = batch_size
        # the per-token form needs every token's expert ids, whether it is the headline form or an extra one
        self.keep_token_ids = keep_token_ids or "token" in (self.metric_config.form, *self.metric_config.extra_forms)
        self.compute_loss = compute_loss
        self.baseline = baseline
        self.on_error = on_error
        self.accelerator = accelerator
        self.prefix = prefix
        self.on_alert = on_alert
        self.rules = RuleSet(alerts)
        self._memorization: MemorizationTracker | None = None
        if self.metric_config.selection == "memorized":
            if not compute_loss:
                raise ConfigError("MetricConfig(selection='memorized') selects samples by their probe loss: "
                                  "keep compute_loss=True")
            self._memorization = MemorizationTracker(self.metric_config.memorized_fraction,
                                                     self.metric_config.memorized_tolerance)
        self.stage_tracker = stages if isinstance(stages, GroupStageTracker) else (GroupStageTracker() if stages else None)
        self.rank, self.world_size = rank_and_world()
        self.output_dir = Path(output_dir)
        self.sinks: list[Any] = []
        self._sink_failures: dict[int, int] = {}
        self.jsonl_path: Path | None = None
        if self.rank == 0:
            if jsonl:
                from .sinks import JsonlSink

                path = self.output_dir / "grokmon.jsonl" if jsonl is True else Path(jsonl)
                path.parent.mkdir(parents=True, exist_ok=True)
                self.jsonl_path = path
                self.sinks.append(JsonlSink(path))
                if save_probe:
                    self._save_probe(path.parent / "probe.pt")
            if accelerator is not None:
                from .sinks import AccelerateSink

                self.sinks.append(AccelerateSink(accelerator))
            self.sinks.extend(sinks)
        self.should_stop = False
        self._stop_pending_step: int | None = None
        self.history: list[tuple[int, dict[str, float]]] = []
        self.last_metrics: dict[str, float] = {}
        self.last_probe_step: int | None = None
        self._probe_count = 0
        self._previous: Pathways | None = None
        self._shard = probe.shard(self.rank, self.world_size) if self.world_size > 1 else probe
        self._worker: MetricWorker | None = None
        self._async = async_metrics
        self._inline: list[tuple[int, Any, BaseException | None]] = []
        self._closed = False
        shutdown.register(self, sigterm=flush_on_sigterm)

    def _save_probe(self, path: Path) -> None:
        """Save the probe with the run; an existing file of another probe is kept, with a warning."""
        if path.exists():
            try:
                same = ProbeSet.load(path).fingerprint() == self._fingerprint
            except Exception:  # noqa: BLE001 - unreadable or another format: keep it, warn below
                same = False
            if not same:
                warnings.warn(f"grokmon: {path} holds another probe than this monitor's; it is kept. A resumed run "
                              f"must probe the same samples: ProbeSet.load({str(path)!r})", RuntimeWarning, stacklevel=3)
            return
        try:  # written aside, then renamed: a reader never sees half a file
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            self.probe_set.save(tmp)
            os.replace(tmp, path)
        except OSError as error:
            self._fail("probe save", error)

    # ------------------------------------------------------------------ schedule
    def should_probe(self, step: int) -> bool:
        """True on steps that are multiples of ``every`` and not probed yet."""
        return step % self.every == 0 and (self.last_probe_step is None or step > self.last_probe_step)

    def step(self, model: nn.Module, step: int, *, optimizer: Any = None) -> dict[str, float]:
        """Call after each optimizer step on every rank. Probes on schedule, returns finished metrics."""
        if not self.should_probe(step):
            return self._merged(self.poll())
        self.probe_now(model, step, optimizer=optimizer)
        results = self.poll()
        if self.world_size > 1 and not self._async:
            self._agree_on_stop()  # this probe's results are in on every rank: decide together now
        return self._merged(results)

    def probe_now(self, model: nn.Module, step: int, *, optimizer: Any = None) -> None:
        """Probe now, whatever the schedule (all ranks must call it at the same step)."""
        if self.world_size > 1 and self._async:
            # Background results reach each rank at different times; a stop asked for by probe p
            # takes effect here, at the next probe, after every rank has all of p's results.
            self.flush()
            self._agree_on_stop()
        self.last_probe_step = step
        try:
            pathways, loss, seconds, tokens = self._capture(model, optimizer)
        except Exception as error:  # noqa: BLE001 - a monitor problem must not stop training
            self._fail("probe", error)
            self._submit(step, self._invalid_row)  # the step is logged, its metrics NaN: visibly invalid
            return
        self._probe_count += 1
        previous, self._previous = self._previous, pathways
        drift_invalid = previous is not None and not _same_layout(previous, pathways)
        if drift_invalid:
            self._fail("probe layout", GrokmonError(
                f"the MoE layout changed since the previous probe ({_layout(previous)} -> {_layout(pathways)}): "
                "pathway_drift is NaN for this probe"))
            previous = None
        job = self._job(step, pathways, previous, loss, seconds, tokens, drift_invalid=drift_invalid)
        self._submit(step, job)

    def _invalid_row(self) -> dict[str, float]:
        """NaN for every headline metric (those of the last good probe, or the defaults)."""
        keys = [k[len(self.prefix):] for k in self.last_metrics if k.startswith(self.prefix)]
        keys = [k for k in keys if not k.startswith(("alert/", "group/")) and k not in ("stage", "errors")]
        return {k: math.nan for k in keys or ("pathway_distance", "probe_loss")}

    def _submit(self, step: int, job: Callable[[], dict[str, float]]) -> None:
        """Run ``job`` for ``step`` in the background (or now); results are delivered in step order."""
        if self._async:
            if self._worker is None:
                device = self._previous.mean_weights.device if self._previous is not None else None
                self._worker = MetricWorker(device=device)
            self._worker.submit(step, job)
        else:
            try:
                self._inline.append((step, job(), None))
            except Exception as error:  # noqa: BLE001
                self._inline.append((step, None, error))

    probe = probe_now  # the name in docs/architecture.md

    # ------------------------------------------------------------------ capture
    def _shard_rows(self) -> tuple[_Rows, torch.Tensor, bool]:
        """This rank's rows to capture, their probe positions (-1: not a sample), counts valid?

        Each real sample is captured once on one rank (padding duplicates are not run through the
        hooks, so summed expert counts count every token once). A rank whose shard holds no real
        sample captures one padding row to learn the shapes and contributes zero counts.
        """
        shard = self._shard
        if self.world_size == 1:
            return _Rows(shard.input_ids, shard.attention_mask, shard.groups), torch.arange(len(shard)), True
        real = shard.is_padding.logical_not()
        if bool(real.any()):
            rows, valid = real.nonzero().flatten(), True
        else:
            rows, valid = torch.tensor([0]), False
        picked = _Rows(shard.input_ids[rows], None if shard.attention_mask is None else shard.attention_mask[rows],
                       None if shard.groups is None else shard.groups[rows])
        return picked, shard.sample_index[rows], valid

    def _capture(self, model: nn.Module, optimizer: Any) -> tuple[Pathways, torch.Tensor | None, float, int]:
        """Capture this probe; out of memory (on any rank) retries with half the batch, down to 1.

        A smaller batch that worked is kept for later probes; the GPU cache is emptied between tries.
        """
        while True:
            try:
                return self._capture_once(model, optimizer, self.batch_size)
            except _OutOfMemory as error:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if self.batch_size == 1:
                    raise GrokmonError("out of memory probing even with batch_size=1: this probe is skipped; use "
                                       "shorter probe samples (seq_len) or probe less of the model's memory peak") \
                        from error.__cause__
                tried, self.batch_size = self.batch_size, max(1, self.batch_size // 2)
                warnings.warn(f"grokmon: out of memory probing with batch_size={tried}; retrying with "
                              f"{self.batch_size} (kept for later probes)", RuntimeWarning, stacklevel=3)

    def _capture_once(self, model: nn.Module, optimizer: Any,
                      batch_size: int) -> tuple[Pathways, torch.Tensor | None, float, int]:
        from .routing import capture_pathways

        start = time.perf_counter()
        rows, index, counts_valid = self._shard_rows()
        has_eval = callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))
        result, error = None, None
        try:  # any failure is agreed on below, so no rank is left waiting in a collective
            target = unwrap_for_probe(model, self.accelerator)
            vocab = getattr(getattr(target, "config", None), "vocab_size", None)
            if vocab is not None:
                self.probe_set.validate(vocab)  # a clear ProbeError before any forward
            device = next(iter(target.parameters()), torch.empty(0)).device
            if has_eval:
                optimizer.eval()  # schedule-free optimizers: evaluate at the averaged weights
            try:
                cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
                    if device.type == "cuda" else []
                with torch.random.fork_rng(devices=cuda):  # the probe never moves the training RNG
                    result = capture_pathways(
                        target, rows.input_ids, rows.attention_mask, batch_size=batch_size,
                        keep_token_ids=self.keep_token_ids, compute_loss=self.compute_loss,
                        groups=rows.groups, group_names=self.probe_set.group_names,
                    )
                    if self.world_size > 1:
                        self._pad_forwards(target, rows.input_ids.shape[0], device)
            finally:
                if has_eval:
                    optimizer.train()
        except Exception as caught:  # noqa: BLE001
            error = caught
        if self.world_size > 1:
            if not all_agree(error is None):
                if not all_agree(not isinstance(error, torch.OutOfMemoryError)):
                    raise _OutOfMemory("a rank ran out of memory in the probe") from error  # every rank retries
                raise error or GrokmonError("another rank failed its probe: this probe is skipped on every rank")
            pathways, loss = gather_pathways(
                result.pathways, result.loss_per_sample, index, num_samples=len(self.probe_set),
                groups=self.probe_set.groups, group_names=self.probe_set.group_names, counts_valid=counts_valid,
            )
        else:
            if isinstance(error, torch.OutOfMemoryError):
                raise _OutOfMemory("out of memory in the probe") from error
            if error is not None:
                raise error
            pathways, loss = result.pathways, result.loss_per_sample
        return pathways, loss, time.perf_counter() - start, int(self.probe_set.num_tokens)

    def _pad_forwards(self, model: nn.Module, captured: int, device: torch.device) -> None:
        """Extra no-hook forwards so every rank runs the same number (forwards are collectives under FSDP)."""
        per_rank = math.ceil(len(self.probe_set) / self.world_size)
        needed = math.ceil(per_rank / self.batch_size)
        done = math.ceil(captured / self.batch_size)
        if needed > done:
            sample = self.probe_set.input_ids[:1].to(device)
            flags = [(m, m.training) for m in model.modules()]
            model.eval()
            try:
                with torch.no_grad():
                    for _ in range(needed - done):
                        model(input_ids=sample, use_cache=False)
            finally:
                for m, flag in flags:
                    m.training = flag

    # ------------------------------------------------------------------ metrics (worker thread)
    def _job(self, step: int, pathways: Pathways, previous: Pathways | None, loss: torch.Tensor | None,
             seconds: float, tokens: int, *, drift_invalid: bool = False) -> Callable[[], dict[str, float]]:
        config = self.metric_config

        def compute(memorized_since: torch.Tensor | None) -> dict[str, float]:
            try:
                return compute_metrics(pathways, previous, config, loss_per_sample=loss, memorized_since=memorized_since)
            except torch.OutOfMemoryError:
                # GPU memory is the training run's: retry on the CPU rather than lose the probe
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                warnings.warn(f"grokmon: out of memory computing the metrics of step {step}; computed on the CPU "
                              "instead", RuntimeWarning, stacklevel=2)
                return compute_metrics(pathways.to("cpu"), None if previous is None else previous.to("cpu"), config,
                                       loss_per_sample=loss, memorized_since=memorized_since)

        def run() -> dict[str, float]:
            start = time.perf_counter()
            memorized_since = None
            if self._memorization is not None:  # jobs run one at a time, in step order
                memorized_since = (torch.full((pathways.num_samples,), -1) if loss is None
                                   else self._memorization.update(step, loss, pathways.groups))
            metrics = compute(memorized_since)
            if drift_invalid:
                metrics["pathway_drift"] = math.nan
            metrics["probe_seconds"] = seconds
            metrics["probe_tokens"] = float(tokens)
            metrics["metric_seconds"] = time.perf_counter() - start
            return metrics

        return run

    # ------------------------------------------------------------------ results (training thread)
    def poll(self) -> list[tuple[int, dict[str, float]]]:
        """Send finished results to the sinks; returns ``(step, prefixed metrics)`` pairs in step order."""
        finished = list(self._inline)
        self._inline.clear()
        if self._worker is not None:
            finished += self._worker.drain()
        return self._deliver(finished)

    def flush(self, timeout: float | None = 300.0) -> list[tuple[int, dict[str, float]]]:
        """Wait for pending metric computation and deliver everything."""
        finished = list(self._inline)
        self._inline.clear()
        if self._worker is not None:
            finished += self._worker.drain(wait=True, timeout=timeout)
        return self._deliver(finished)

    def _deliver(self, finished: list) -> list[tuple[int, dict[str, float]]]:
        out = []
        for step, metrics, error in sorted(finished, key=lambda item: item[0]):
            if error is not None:
                self._fail("metrics", error)
                continue
            events = self.rules.update(step, metrics) if len(self.rules) else []
            metrics.update(self.rules.active_metrics() if len(self.rules) else {})
            if self.stage_tracker is not None:
                events += self.stage_tracker.update(step, metrics)
                metrics.update(self.stage_tracker.stage_metrics())
            metrics["errors"] = float(self.errors)
            prefixed = {self.prefix + k: v for k, v in metrics.items()}
            self._log(prefixed, step)
            for event in events:
                self._alert(event)
            if self.rules.stop_requested and not self.should_stop and self._stop_pending_step is None:
                if self.world_size > 1:
                    self._stop_pending_step = step  # rank-local values (probe_seconds) may differ: agree first
                else:
                    self.should_stop = True
            self.history.append((step, prefixed))
            self.last_metrics = prefixed
            out.append((step, prefixed))
        return out

    def _agree_on_stop(self) -> None:
        """Every rank stops if any rank's rules asked to (a collective: all ranks call it at the same probe)."""
        if not all_agree(self._stop_pending_step is None) and not self.should_stop:
            self.should_stop = True

    @staticmethod
    def _merged(results: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
        merged: dict[str, float] = {}
        for _, metrics in results:
            merged.update(metrics)
        return merged

    def _log(self, metrics: Mapping[str, float], step: int) -> None:
        for sink in list(self.sinks):
            try:
                sink.log(metrics, step)
                self._sink_failures[id(sink)] = 0
            except Exception as error:  # noqa: BLE001
                self._sink_error(sink, error)

    def _alert(self, event: AlertEvent) -> None:
        if self.rank == 0:  # stage changes are INFO: news, not a problem
            log.log(logging.INFO if event.level == "INFO" else logging.WARNING, "grokmon alert at step %s: %s — %s",
                    event.step, event.title, event.text)
        for sink in list(self.sinks):
            try:
                sink.alert(event)
            except Exception as error:  # noqa: BLE001
                self._sink_error(sink, error)
        if self.on_alert is not None:
            try:
                self.on_alert(event)
            except Exception as error:  # noqa: BLE001
                self._fail("on_alert", error)

    def _sink_error(self, sink: Any, error: Exception) -> None:
        name = getattr(sink, "name", type(sink).__name__)
        failures = self._sink_failures.get(id(sink), 0) + 1
        self._sink_failures[id(sink)] = failures
        if failures >= MAX_SINK_FAILURES and sink in self.sinks:
            self.sinks.remove(sink)
            warnings.warn(f"grokmon: sink {name} failed {failures} times in a row and is dropped: {error!r}",
                          RuntimeWarning, stacklevel=3)
        self._fail(f"sink {name}", error)

    def _fail(self, where: str, error: BaseException) -> None:
        self.errors += 1
        if self.on_error == "raise":
            raise error
        if where not in self._warned:
            self._warned.add(where)
            warnings.warn(f"grokmon: {where} failed, training goes on (counted in grokmon/errors): {error!r}",
                          RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ lifecycle and state
    def add_sink(self, sink: Any) -> None:
        """Add a sink (only world rank 0 writes)."""
        if self.rank == 0 and sink not in self.sinks:
            self.sinks.append(sink)

    def close(self, timeout: float | None = 300.0) -> None:
        """Flush pending metrics (waiting at most ``timeout`` s per result), close the sinks, stop the worker."""
        if self._closed:
            return
        self._closed = True
        shutdown.unregister(self)
        self.flush(timeout)
        if self._worker is not None:
            self._worker.close()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as error:  # noqa: BLE001
                self._fail("sink close", error)

    def state_dict(self, *, include_pathways: bool = True) -> dict[str, Any]:
        """Schedule, probe fingerprint, alert and stage state, error count, and the last probe's pathways.

        Waits for the metrics still being computed first, so a checkpoint holds the alert and stage
        state of every probe so far. The pathways (CPU tensors, ``[N, L, E]`` routing weights: 4 bytes x N x L x E) let
        ``pathway_drift`` compare the first probe after a restart with the last one before it.
        ``include_pathways=False`` gives a JSON-able dict (what the Trainer's ``trainer_state.json``
        holds; the HF callback saves the pathways in a file of their own).
        """
        if not self._closed:
            self.flush()  # results still computing belong to the state (alerts, stages, errors)
        state: dict[str, Any] = {
            "every": self.every,
            "last_probe_step": self.last_probe_step,
            "probe_fingerprint": self._fingerprint,
            "probe_count": self._probe_count,
            "errors": self.errors,
            "should_stop": self.should_stop,
            "stop_pending_step": self._stop_pending_step,
            "alerts": self.rules.state_dict(),
            "stages": self.stage_tracker.state_dict() if self.stage_tracker is not None else None,
            "memorization": None if self._memorization is None else self._memorization.state_dict(),
        }
        if include_pathways:
            state["previous_pathways"] = self.pathways_state()
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
        """Restore :meth:`state_dict` output; refuses a different probe."""
        if state.get("probe_fingerprint") not in (None, self._fingerprint):
            raise GrokmonError(
                "probe changed since the checkpoint: load the saved probe with ProbeSet.load so the same samples "
                "are probed before and after the restart"
            )
        self.last_probe_step = state.get("last_probe_step")
        self._probe_count = state.get("probe_count", 0)
        self.errors = state.get("errors", 0)
        self.should_stop = bool(state.get("should_stop", False))
        self._stop_pending_step = state.get("stop_pending_step")
        if state.get("alerts"):
            self.rules.load_state_dict(state["alerts"])
        if state.get("stages") and self.stage_tracker is not None:
            self.stage_tracker.load_state_dict(state["stages"])
        if state.get("memorization") and self._memorization is not None:
            self._memorization.load_state_dict(state["memorization"])
        self.load_pathways_state(state.get("previous_pathways"))
        if self.jsonl_path is not None and self.last_probe_step is not None:
            from .sinks import JsonlSink

            for i, sink in enumerate(self.sinks):
                if isinstance(sink, JsonlSink):
                    sink.close()
                    self.sinks[i] = JsonlSink(self.jsonl_path, resume_step=self.last_probe_step)

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
        """Restore what :meth:`save` wrote (raises :class:`GrokmonError` for a different probe)."""
        try:
            data = torch.load(Path(path), map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError, ValueError) as error:
            raise GrokmonError(f"cannot read a monitor state from {path} ({error}): pass a file written by "
                               "GrokkingMonitor.save") from error
        if not isinstance(data, dict) or data.get("format") != "grokmon.monitor":
            raise GrokmonError(f"{path} is not a grokmon monitor state file: write one with GrokkingMonitor.save")
        self.load_state_dict(data["state"])
        if data.get("version") == 1:
            self.load_pathways_state(data.get("previous"))

    def hf_callback(self, trainer: Any = None) -> Any:
        """A ``transformers.TrainerCallback`` driving this monitor."""
        from .integrations.hf import GrokkingCallback

        return GrokkingCallback(self, trainer=trainer)

    def lightning_callback(self) -> Any:
        """A Lightning ``Callback`` driving this monitor."""
        from .integrations.lightning import GrokmonLightningCallback

        return GrokmonLightningCallback(self)

    def __enter__(self) -> "GrokkingMonitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
