"""Megatron: probe a Megatron-core ``GPTModel``, from Megatron-LM's loop or a Megatron-Bridge callback.

grokmon reads Megatron's router by itself (:mod:`grokmon.engines.megatron`). Two things are left
to adapt, and they are here:

* :class:`MegatronProbeModel`: the probe calls ``model(input_ids)``, a ``GPTModel`` wants
  ``(input_ids, position_ids, attention_mask)``. The wrapper adds positions ``0..S-1`` and no mask
  (the model's causal mask), and returns the logits for the probe loss only without tensor
  parallelism (with it the logits are split over the vocabulary: the loss is then not computed).
* :class:`GrokkingBridgeCallback`: a Megatron-Bridge callback (``pretrain(..., callbacks=[...])``).
  Bridge fires ``on_train_step_end`` after the optimizer step and *before* it advances
  ``state.train_state.step``, so the step passed to grokmon is ``train_state.step + 1`` (updates
  done). It probes ``context.model[0]`` through :class:`MegatronProbeModel` on every rank.

**Untested on a GPU.** Megatron's full model needs CUDA (its default causal mask and its CUDA RNG
tracker) and Transformer Engine, and megatron-bridge cannot be installed beside grokmon on a CPU
(it requires transformer-engine for CUDA, mamba-ssm, and ``transformers<5``). The tests run the
callback's logic and the wrapper on CPU Megatron MoE layers, with a context shaped like Bridge's.
Bridge registers a callback by its method names, so this class needs no Bridge import.

Not supported: pipeline parallelism and virtual pipeline chunks (each holds only its own layers'
routers: with several chunks the callback warns and does not probe), sequence and context
parallelism (a router call then covers a slice of the sequence). Results go to the monitor's
sinks (JSONL by default; add ``WandbSink`` / ``TensorBoardSink``), not to Bridge's loggers, which
live on the last rank while grokmon delivers on rank 0. Stopping: read ``callback.should_stop``.
Checkpoints: ``monitor.save(path)`` beside Bridge's, ``monitor.load(path)`` on restart.

Example (Megatron-LM's own loop, after ``train_step`` of ``iteration``, on every rank)::

    from grokmon.integrations.megatron import MegatronProbeModel
    monitor.step(MegatronProbeModel(model[0]), iteration)

Example (Megatron-Bridge)::

    from grokmon.integrations.megatron import GrokkingBridgeCallback
    pretrain(config, forward_step, callbacks=[GrokkingBridgeCallback(monitor)])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ._common import MonitorAdapter, is_monitor

__all__ = ["GrokkingBridgeCallback", "MegatronProbeModel"]


def _tensor_parallel_size() -> int:
    try:
        from megatron.core import parallel_state
    except ImportError:
        return 1
    try:
        return int(parallel_state.get_tensor_model_parallel_world_size())
    except (AssertionError, RuntimeError, AttributeError):  # model parallelism not initialised
        return 1


class MegatronProbeModel(nn.Module):
    """``model(input_ids)`` for a Megatron ``GPTModel`` (or a DDP / Float16Module around one).

    Args:
        model: the model chunk on this rank, as the training loop holds it (wrappers included:
            their ``module.`` path tokens are dropped from the router names).

    Example::

        monitor.step(MegatronProbeModel(model[0]), iteration)
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"MegatronProbeModel needs the Megatron model chunk (an nn.Module), got "
                              f"{type(model).__name__}: pass one chunk, e.g. MegatronProbeModel(model[0]) for "
                              "the list that Megatron's get_model returns")
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """Logits ``[B, S, V]`` (``None`` under tensor parallelism: vocabulary-split logits)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        logits = self.model(input_ids, positions, None)
        return logits if _tensor_parallel_size() == 1 else None


class GrokkingBridgeCallback(MonitorAdapter):
    """A Megatron-Bridge training callback that runs a :class:`~grokmon.GrokkingMonitor` (module doc).

    Args:
        monitor: the monitor (the same settings and probe on every rank).
        wrap: turns ``context.model[0]`` into something ``model(input_ids)`` can call; default
            :class:`MegatronProbeModel`.
        close_on_train_end: close the monitor in ``on_train_end``.

    Example::

        monitor = GrokkingMonitor(probe, MonitorConfig(every=200))
        pretrain(config, forward_step, callbacks=[GrokkingBridgeCallback(monitor)])
    """

    def __init__(self, monitor: Any, *, wrap: Callable[[nn.Module], nn.Module] = MegatronProbeModel,
                 close_on_train_end: bool = True):
        if not is_monitor(monitor):
            raise ConfigError(f"GrokkingBridgeCallback needs a GrokkingMonitor, got {type(monitor).__name__}: "
                              "pass GrokkingBridgeCallback(monitor)")
        self._attach(monitor, who="GrokkingBridgeCallback", close_on_train_end=close_on_train_end)
        self._wrap = wrap
        self._wrapped: tuple[int, nn.Module] | None = None
        self._warned = False

    @property
    def should_stop(self) -> bool:
        """An alert rule with ``stop_training=True`` fired (the same on every rank)."""
        return bool(self.monitor.should_stop)

    def on_train_start(self, context: Any) -> None:
        """Baseline probe at the starting step (skipped when the monitor's state was restored)."""
        if getattr(self.monitor, "last_probe_step", None) is not None:
            self._restored = True
        model = self._model(context)
        if model is not None:
            self._baseline(model, int(context.state.train_state.step))

    def on_train_step_end(self, context: Any) -> None:
        """``monitor.step`` with the number of updates done (``train_state.step + 1``), every rank."""
        model = self._model(context)
        if model is not None:
            self._step(model, int(context.state.train_state.step) + 1)
            self._drain()  # results are in the monitor's sinks and history

    def on_train_end(self, context: Any) -> None:
        """Deliver the last results and close the monitor."""
        self._finish(lambda items: None)

    def _model(self, context: Any) -> nn.Module | None:
        chunks = list(context.model) if isinstance(context.model, (list, tuple)) else [context.model]
        if len(chunks) != 1:
            if not self._warned:
                self._warned = True
                warnings.warn(f"grokmon: not probing: {len(chunks)} model chunks (pipeline parallelism: each holds "
                              "only its own layers' routers); grokmon probes a model in one chunk: train without "
                              "pipeline parallelism to probe", RuntimeWarning, stacklevel=3)
            return None
        if self._wrapped is None or self._wrapped[0] != id(chunks[0]):
            self._wrapped = (id(chunks[0]), self._wrap(chunks[0]))
        return self._wrapped[1]
