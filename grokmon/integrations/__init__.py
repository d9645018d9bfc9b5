"""Adapters from a :class:`~grokmon.monitor.GrokkingMonitor` to training frameworks.

* :class:`~grokmon.integrations.hf.GrokkingHFCallback`: Hugging Face ``transformers.Trainer``.
* :class:`~grokmon.integrations.lightning.GrokkingLightningCallback`: Lightning
  (``pip install grokmon[lightning]``).
* :class:`~grokmon.integrations.torchtitan.GrokkingMetricsProcessor`: torchtitan's
  ``MetricsProcessor`` (``pip install grokmon[torchtitan]``).
* :class:`~grokmon.integrations.megatron.GrokkingBridgeCallback` (Megatron-Bridge) and
  :class:`~grokmon.integrations.megatron.MegatronProbeModel` (a Megatron ``GPTModel`` for the probe,
  in Megatron-LM's own loop; ``pip install grokmon[megatron]``).
* :class:`~grokmon.integrations.olmo_core.GrokkingOLMoCoreCallbackConfig` (a ``CallbackConfig`` for
  ``TrainerConfig``) and :class:`~grokmon.integrations.olmo_core.GrokkingOLMoCoreCallback` (for a
  built trainer): OLMo-core's ``Trainer`` (``pip install grokmon[olmo-core]``).

Plain Accelerate loops and frameworks without callbacks call ``monitor.step(model, step)``
themselves (``docs/guide-accelerate.md``, ``docs/engines.md``). Integrations only schedule, route logs and keep state;
they never compute metrics. They depend on the core and never the reverse: what every adapter
does with a monitor is written once in ``_common.py``.

Names are imported lazily, so importing this package pulls in neither transformers, Lightning nor OLMo-core.

Example:
    >>> from grokmon.integrations import GrokkingHFCallback     # doctest: +SKIP
    >>> trainer = Trainer(..., callbacks=[GrokkingHFCallback(monitor)])  # doctest: +SKIP
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "GrokkingHFCallback": "grokmon.integrations.hf",
    "GrokkingLightningCallback": "grokmon.integrations.lightning",
    "GrokkingOLMoCoreCallbackConfig": "grokmon.integrations.olmo_core",
    "GrokkingOLMoCoreCallback": "grokmon.integrations.olmo_core",
    "GrokkingMetricsProcessor": "grokmon.integrations.torchtitan",
    "GrokkingBridgeCallback": "grokmon.integrations.megatron",
    "MegatronProbeModel": "grokmon.integrations.megatron",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports("grokmon.integrations", _EXPORTS, globals(), __all__)
