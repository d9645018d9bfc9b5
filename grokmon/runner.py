"""ProbeRunner: one probe's forwards on this rank, and the whole probe's pathways back on every rank.

What it takes care of, so the monitor only has to say "probe now":

* sharding: each rank captures its equal share of the probe (:meth:`ProbeSet.shard`); padding
  duplicates are not run through the hooks, so summed expert counts count every token once;
* padding forwards: extra no-hook forwards so every rank runs the same number (under FSDP /
  ZeRO-3 each forward is a collective);
* agreement: a failure on any rank is agreed on (``all_agree``) before anyone gathers, so no rank
  waits forever in a collective; then :func:`~grokmon.distributed.gather_pathways`;
* out of memory on any rank: every rank retries with half the batch, down to 1; the size that
  worked is kept;
* the training run is left as it was: the RNG is forked (CPU and the model's CUDA device), a
  schedule-free optimizer is put in eval mode for the probe and back, module modes are restored.

Example:
    >>> runner = ProbeRunner(probe, MonitorConfig(batch_size=16))    # doctest: +SKIP
    >>> result = runner.capture(model, optimizer)                    # doctest: +SKIP
    >>> result.pathways.num_samples == len(probe)                    # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, NamedTuple

import torch
from torch import nn

from .config import MonitorConfig
from .distributed import all_agree, gather_pathways, rank_and_world, unwrap_for_probe
from .errors import GrokmonError
from .probe import ProbeSet
from .routing.capture import CaptureResult
from .routing.registry import probe_state_guard

__all__ = ["ProbeRunner"]


class _OutOfMemory(GrokmonError):
    """Raised on every rank when any rank ran out of memory in the probe forward (retry smaller)."""


class _Rows(NamedTuple):
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    groups: torch.Tensor | None


class ProbeRunner:
    """Captures ``probe`` through a model on every rank (see the module doc for what it handles).

    Args:
        probe: the whole (unsharded) probe; this rank's shard is taken here.
        config: the monitor's settings: ``batch_size`` (probe samples per forward; halved in place, for
            good, after an out-of-memory retry), ``capture_token_ids`` and ``compute_loss`` (passed
            to :func:`~grokmon.routing.capture_pathways`).
        accelerator: an ``accelerate.Accelerator`` whose wrapping is removed before the forward.
    """

    def __init__(self, probe: ProbeSet, config: MonitorConfig, *, accelerator: Any = None) -> None:
        self.probe = probe
        self.config = config
        self.accelerator = accelerator
        self.rank, self.world_size = rank_and_world()
        self._shard = probe.shard(self.rank, self.world_size) if self.world_size > 1 else probe

    def capture(self, model: nn.Module, optimizer: Any = None) -> CaptureResult:
        """The whole probe's pathways and per-sample loss, on every rank (a collective: all ranks call it).

        ``num_tokens`` counts the whole probe, ``seconds`` the try that worked. Out of memory (on any
        rank) retries with half the batch, down to 1; the GPU cache is emptied between tries.
        """
        while True:
            try:
                return self._capture_once(model, optimizer, self.config.batch_size)
            except _OutOfMemory as error:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if self.config.batch_size == 1:
                    raise GrokmonError("out of memory probing even with batch_size=1: this probe is skipped; use "
                                       "shorter probe samples (seq_len) or probe less of the model's memory peak") \
                        from error.__cause__
                tried = self.config.batch_size
                self.config.batch_size = max(1, tried // 2)
                warnings.warn(f"grokmon: out of memory probing with batch_size={tried}; retrying with "
                              f"{self.config.batch_size} (kept for later probes)", RuntimeWarning, stacklevel=3)

    def _rows(self) -> tuple[_Rows, torch.Tensor, bool]:
        """This rank's rows to capture, their probe positions (-1: not a sample), counts valid?

        Each real sample is captured once on one rank. A rank whose shard holds no real sample
        captures one padding row to learn the shapes and contributes zero counts.
        """
        shard = self._shard
        if self.world_size == 1:
            return _Rows(shard.input_ids, shard.attention_mask, shard.groups), torch.arange(len(shard)), True
        real = shard.is_padding.logical_not()
        rows, valid = (real.nonzero().flatten(), True) if bool(real.any()) else (torch.tensor([0]), False)
        picked = _Rows(shard.input_ids[rows], None if shard.attention_mask is None else shard.attention_mask[rows],
                       None if shard.groups is None else shard.groups[rows])
        return picked, shard.sample_index[rows], valid

    def _capture_once(self, model: nn.Module, optimizer: Any, batch_size: int) -> CaptureResult:
        from . import routing  # looked up at call time: tests replace routing.capture_pathways

        start = time.perf_counter()
        rows, index, counts_valid = self._rows()
        has_eval = callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))
        result, error = None, None
        try:  # any failure is agreed on below, so no rank is left waiting in a collective
            target = unwrap_for_probe(model, self.accelerator)
            vocab = getattr(getattr(target, "config", None), "vocab_size", None)
            if vocab is not None:
                self.probe.validate(vocab)  # a clear ProbeError before any forward
            device = next(iter(target.parameters()), torch.empty(0)).device
            if has_eval:
                optimizer.eval()  # schedule-free optimizers: evaluate at the averaged weights
            try:
                cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
                    if device.type == "cuda" else []
                with torch.random.fork_rng(devices=cuda):  # the probe never moves the training RNG
                    result = routing.capture_pathways(
                        target, rows.input_ids, rows.attention_mask, batch_size=batch_size,
                        keep_token_ids=self.config.capture_token_ids, compute_loss=self.config.compute_loss,
                        groups=rows.groups, group_names=self.probe.group_names,
                    )
                    if self.world_size > 1:
                        self._pad_forwards(target, rows.input_ids.shape[0], device)
            finally:
                if has_eval:
                    optimizer.train()
        except Exception as caught:  # noqa: BLE001
            error = caught
        if self.world_size == 1:
            if isinstance(error, torch.OutOfMemoryError):
                raise _OutOfMemory("out of memory in the probe") from error
            if error is not None:
                raise error
            return CaptureResult(result.pathways, result.loss_per_sample, int(self.probe.num_tokens),
                                 time.perf_counter() - start)
        if not all_agree(error is None):
            if not all_agree(not isinstance(error, torch.OutOfMemoryError)):
                raise _OutOfMemory("a rank ran out of memory in the probe") from error  # every rank retries
            raise error or GrokmonError("another rank failed its probe: this probe is skipped on every rank")
        pathways, loss = gather_pathways(
            result.pathways, result.loss_per_sample, index, num_samples=len(self.probe),
            groups=self.probe.groups, group_names=self.probe.group_names, counts_valid=counts_valid,
        )
        return CaptureResult(pathways, loss, int(self.probe.num_tokens), time.perf_counter() - start)

    def _pad_forwards(self, model: nn.Module, captured: int, device: torch.device) -> None:
        """Extra no-hook forwards so every rank runs the same number (forwards are collectives under FSDP)."""
        per_rank = math.ceil(len(self.probe) / self.world_size)
        needed = math.ceil(per_rank / self.config.batch_size)
        done = math.ceil(captured / self.config.batch_size)
        if needed > done:
            sample = self.probe.input_ids[:1].to(device)
            flags = [(m, m.training) for m in model.modules()]
            model.eval()
            try:
                with torch.no_grad(), probe_state_guard(model):  # e.g. DeepSpeed's l_aux stays the training one
                    for _ in range(needed - done):
                        model(input_ids=sample, use_cache=False)
            finally:
                for m, flag in flags:
                    m.training = flag
