"""Custom router classes: tell grokmon about an MoE router transformers does not describe.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class MyRouter(nn.Module):
    ...     def __init__(self, hidden=8, experts=4, k=2):
    ...         super().__init__()
    ...         self.proj, self.top_k = nn.Linear(hidden, experts, bias=False), k
    ...     def forward(self, x):
    ...         return self.proj(x)               # logits only: top-k comes from self.top_k
    >>> register_router(MyRouter)
    >>> out = registered(MyRouter())[0](MyRouter(), (), torch.randn(5, 4))
    >>> tuple(out.expert_ids.shape)
    (5, 2)
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .. import _router_table
from ..errors import ConfigError
from .extract import standard_extractor
from .types import Extractor, RouterKind

_REGISTRY: dict[type, tuple[Extractor, RouterKind]] = {}
_PROBE_STATE: dict[type, tuple[str, ...]] = {}
_MISSING = object()


def register_router(
    module_class: type[nn.Module], extractor: Extractor | None = None, *, kind: RouterKind = "mlp"
) -> None:
    """Register ``module_class`` as an MoE router, read by ``extractor``.

    Every instance of the class (or a subclass) in a model becomes a router site for
    :func:`grokmon.routing.find_routers` and :func:`grokmon.routing.capture_pathways`.

    The extractor API: ``extractor(module, args, output) -> RouterOutput``, called from a forward
    hook with the router module, its positional forward arguments and its forward output. It must
    return a :class:`grokmon.routing.RouterOutput` with ``expert_ids [T, k]`` (int64, the experts
    the block really dispatches to, best first), ``weights [T, k]`` (float, rows summing to 1),
    ``logits [T, E]`` or ``None``, and ``num_experts``; ``T`` rows in ``batch * seq`` row-major
    order. ``grokmon.routing.extract.finish(ids, weights, logits, E)`` sorts and normalises for you.
    Do no host syncs (``.item()``, ``.cpu()``) in it: it runs once per router per batch.

    The default extractor reads a router returning ``(logits, weights, idx)`` (in any order: ids
    are the integer tensor) or logits only (then it takes ``topk(logits, module.top_k or module.k)``
    with softmax weights).

    Args:
        module_class: the router's ``nn.Module`` subclass.
        extractor: reads one forward output; ``None`` for the default.
        kind: ``"mlp"`` (expert FFNs) or ``"attention"`` (mixture-of-attention heads).

    Example (a router returning ``(probs, ids)``)::

        from grokmon.routing import register_router
        from grokmon.routing.extract import finish

        def read(module, args, out):
            probs, ids = out                                  # [T, E] float, [T, k] int
            return finish(ids, probs.gather(-1, ids), None, probs.shape[-1])

        register_router(MyRouter, read)
    """
    if not (isinstance(module_class, type) and issubclass(module_class, nn.Module)):
        raise ConfigError(f"register_router needs an nn.Module subclass, got {module_class!r}")
    if kind not in ("mlp", "attention"):
        raise ConfigError(f"kind must be 'mlp' or 'attention', got {kind!r}")
    if extractor is not None and not callable(extractor):
        raise ConfigError("extractor must be callable as extractor(module, args, output) -> RouterOutput")
    _REGISTRY[module_class] = (extractor or standard_extractor, kind)


def unregister_router(module_class: type[nn.Module]) -> None:
    """Forget a class registered with :func:`register_router` (no error if it was not)."""
    _REGISTRY.pop(module_class, None)


def registered(module: nn.Module) -> tuple[Callable, RouterKind] | None:
    """``(extractor, kind)`` registered for the module's class (the most specific match), or None.

    A class registered here by object wins; otherwise a class declared by dotted path in
    :mod:`grokmon._router_table` (the optional training engines: torchtitan, Megatron-core) is
    matched by ``module.qualname``, its extractor imported once and cached.
    """
    mro = type(module).__mro__
    for cls in mro:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    for cls in mro:
        declared = _router_table.lookup(f"{cls.__module__}.{cls.__qualname__}")
        if declared is not None:
            return _load_declared(*declared)
    return None


def register_probe_state(module_class: type[nn.Module], *attributes: str) -> None:
    """Attributes of ``module_class`` that a forward overwrites and the training step may read.

    A probe forward (the hooked capture and the padding forwards of distributed probes) would
    otherwise leave its own values there: DeepSpeed's ``MOELayer`` keeps the last forward's
    ``l_aux`` (the load-balancing loss a training step adds) and ``exp_counts``, AutoEP's MoE layer
    adds every forward's token counts into its ``tokens_per_expert`` buffer. Inside
    :func:`probe_state_guard` every listed attribute of every instance is saved before the probe and
    put back after it: rebound attributes get their old object back (the very tensor in the
    training graph), a tensor changed in place (its version counter moved) gets its old values.

    Args:
        module_class: the module class (subclasses included).
        attributes: attribute names; ones an instance lacks are skipped (and removed again if the
            probe created them).

    Example:
        >>> class Gate(nn.Module):
        ...     def forward(self, x):
        ...         self.aux = x.sum()
        ...         return x
        >>> register_probe_state(Gate, "aux")
        >>> gate = Gate(); _ = gate(torch.ones(2)); before = gate.aux
        >>> with probe_state_guard(gate):
        ...     _ = gate(torch.zeros(2))
        >>> gate.aux is before
        True
    """
    if not (isinstance(module_class, type) and issubclass(module_class, nn.Module)):
        raise ConfigError(f"register_probe_state needs an nn.Module subclass (the class, not an instance), got "
                          f"{module_class!r}: register_probe_state(ModuleClass, 'attribute', ...)")
    if not attributes or not all(isinstance(a, str) and a for a in attributes):
        raise ConfigError(f"register_probe_state needs one or more attribute names (non-empty strings), got "
                          f"{attributes!r}: pass them after the class, e.g. "
                          "register_probe_state(MOELayer, 'l_aux', 'exp_counts')")
    known = _PROBE_STATE.get(module_class, ())
    _PROBE_STATE[module_class] = known + tuple(a for a in attributes if a not in known)


def _state_attributes(module: nn.Module) -> tuple[str, ...]:
    names: list[str] = []
    for cls in type(module).__mro__:
        declared = _router_table.probe_state(f"{cls.__module__}.{cls.__qualname__}")
        names += [a for a in (*_PROBE_STATE.get(cls, ()), *declared) if a not in names]
    return tuple(names)


@contextlib.contextmanager
def probe_state_guard(model: nn.Module) -> Iterator[None]:
    """Save the :func:`register_probe_state` attributes of ``model``'s modules; restore them on exit.

    Restores on errors too. Costs nothing for a model without such modules; no host sync.

    Example:
        >>> with probe_state_guard(nn.Linear(2, 2)):   # nothing registered: a no-op
        ...     pass
    """
    saved: list[tuple[nn.Module, str, Any, Any, int]] = []
    if _PROBE_STATE or _router_table.has_probe_state():
        for module in model.modules():
            for name in _state_attributes(module):
                value = module.__dict__.get(name, _MISSING)
                if value is _MISSING:
                    value = getattr(module, name, _MISSING)  # parameters and buffers live in _buffers
                if isinstance(value, torch.Tensor):
                    saved.append((module, name, value, value.detach().clone(), value._version))
                else:
                    saved.append((module, name, value, None, 0))
    try:
        yield
    finally:
        for module, name, value, copy, version in reversed(saved):
            if value is _MISSING:
                if name in module.__dict__:
                    delattr(module, name)
                continue
            if copy is not None and value._version != version:
                with torch.no_grad():
                    value.copy_(copy)  # changed in place by the probe (a counting buffer)
            if getattr(module, name, _MISSING) is not value:
                setattr(module, name, value)


_LOADED: dict[str, Callable] = {}


def _load_declared(extractor_path: str, kind: str) -> tuple[Callable, RouterKind]:
    """The extractor ``"module:function"`` of a router declared by name (imported once)."""
    fn = _LOADED.get(extractor_path)
    if fn is None:
        module_name, _, attr = extractor_path.partition(":")
        fn = getattr(importlib.import_module(module_name), attr)
        _LOADED[extractor_path] = fn
    return fn, kind  # type: ignore[return-value]
