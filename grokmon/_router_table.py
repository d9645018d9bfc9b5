"""Router classes named by their dotted path, read by an extractor named the same way.

Training engines (torchtitan, Megatron-core) are optional: grokmon must import without them, and
must not import them just to find out whether a model uses them. So an engine's router class is
declared here by *name* (``"package.module.Class"``, matched against ``type(m).__module__`` and
``__qualname__``), with the extractor as ``"module:function"``. Nothing is imported until
:func:`grokmon.routing.find_routers` meets an instance of the class, and then only the extractor's
module (which itself imports only torch and grokmon).

This module imports nothing heavy (no torch), so the package root can fill the table on
``import grokmon``; the routing package reads it. Engines declare themselves in
``grokmon/engines/__init__.py``; the core never names them.

Example:
    >>> declare_router("mypkg.moe.MyRouter", "mypkg.grokmon_support:read_router")
    >>> lookup("mypkg.moe.MyRouter")
    ('mypkg.grokmon_support:read_router', 'mlp')
    >>> lookup("mypkg.moe.Other") is None
    True
"""

from __future__ import annotations

from .errors import ConfigError

_NAMED: dict[str, tuple[str, str]] = {}
_STATE: dict[str, tuple[str, ...]] = {}


def declare_router(class_path: str, extractor_path: str, kind: str = "mlp") -> None:
    """Declare the router class ``class_path`` (``"pkg.module.Class"``), read by ``extractor_path``.

    ``extractor_path`` is ``"module:function"``; the function has the extractor signature of
    :func:`grokmon.routing.register_router` and is imported on first use. A class registered with
    ``register_router`` (by class object) takes precedence over a declaration here.

    Raises:
        ConfigError: (a ``ValueError``) a path of the wrong form, or a kind other than
            ``"mlp"`` / ``"attention"``.
    """
    if not (isinstance(class_path, str) and "." in class_path):
        raise ConfigError(f"declare_router: class_path must be the router's dotted path 'package.module.Class', "
                          f"got {class_path!r}")
    if not (isinstance(extractor_path, str) and extractor_path.count(":") == 1):
        raise ConfigError(f"declare_router: extractor_path must be 'module:function' (one colon), "
                          f"got {extractor_path!r}")
    if kind not in ("mlp", "attention"):
        raise ConfigError(f"declare_router: kind must be 'mlp' or 'attention', got {kind!r}")
    _NAMED[class_path] = (extractor_path, kind)


def lookup(class_path: str) -> tuple[str, str] | None:
    """``(extractor_path, kind)`` declared for ``class_path``, or ``None``."""
    return _NAMED.get(class_path)


def declare_probe_state(class_path: str, *attributes: str) -> None:
    """Attributes of the class ``class_path`` that a probe forward must leave as they were.

    The by-path twin of :func:`grokmon.routing.register_probe_state` (DeepSpeed's ``MOELayer`` keeps
    the last forward's ``l_aux`` and ``exp_counts``, which the training step reads).

    Example:
        >>> declare_probe_state("mypkg.moe.MyLayer", "aux_loss")
        >>> probe_state("mypkg.moe.MyLayer")
        ('aux_loss',)
    """
    if not (isinstance(class_path, str) and "." in class_path):
        raise ConfigError(f"declare_probe_state: class_path must be 'package.module.Class', got {class_path!r}")
    if not attributes or not all(isinstance(a, str) and a for a in attributes):
        raise ConfigError(f"declare_probe_state: give one or more attribute names, got {attributes!r}")
    known = _STATE.get(class_path, ())
    _STATE[class_path] = known + tuple(a for a in attributes if a not in known)


def probe_state(class_path: str) -> tuple[str, ...]:
    """The attributes declared with :func:`declare_probe_state` for ``class_path`` (may be empty)."""
    return _STATE.get(class_path, ())


def has_probe_state() -> bool:
    """Whether any class has declared probe state (the guard is free otherwise)."""
    return bool(_STATE)
