"""Adapters from a :class:`~grokmon.monitor.GrokkingMonitor` to training frameworks.

* :class:`~grokmon.integrations.hf.GrokkingCallback`: Hugging Face ``transformers.Trainer``.
* :class:`~grokmon.integrations.lightning.GrokmonLightningCallback`: Lightning
  (``pip install grokmon[lightning]``).

Plain Accelerate loops and frameworks without callbacks call ``monitor.step(model, step)``
themselves (``docs/integrations.md``). Integrations only schedule, route logs and keep state;
they never compute metrics.

Names are imported lazily, so importing this package pulls in neither transformers nor Lightning.

Example:
    >>> from grokmon.integrations import GrokkingCallback       # doctest: +SKIP
    >>> trainer = Trainer(..., callbacks=[GrokkingCallback(monitor)])  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["GrokkingCallback", "GrokmonLightningCallback"]

_EXPORTS = {
    "GrokkingCallback": "grokmon.integrations.hf",
    "GrokmonLightningCallback": "grokmon.integrations.lightning",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'grokmon.integrations' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
