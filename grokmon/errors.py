"""The one error type grokmon raises, and its specific kinds.

Every message names the problem and the fix. Catch :class:`GrokmonError` to catch them all.

Example:
    >>> from grokmon.errors import GrokmonError, ProbeError
    >>> issubclass(ProbeError, GrokmonError)
    True
"""

from __future__ import annotations


class GrokmonError(Exception):
    """Base class of every error grokmon raises on purpose."""


class RouterNotFoundError(GrokmonError):
    """The model has no MoE router grokmon can find (register one with ``grokmon.register_router``)."""


class RoutingError(GrokmonError):
    """A router produced output grokmon cannot read (wrong shape, NaN, missing layer)."""


class ProbeError(GrokmonError, ValueError):
    """The probe set is unusable: empty, too short, out-of-vocabulary ids, singleton groups."""


class ConfigError(GrokmonError, ValueError):
    """An argument of a grokmon object is out of range or inconsistent with another."""


class SinkError(GrokmonError):
    """A metrics sink (W&B, TensorBoard, JSONL, user function) failed."""


class UnsafeFileError(GrokmonError):
    """A file handed to grokmon holds objects other than tensors and plain data; it was refused unrun."""
