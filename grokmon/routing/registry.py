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

import importlib
import sys
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from .extract import standard_extractor
from .types import Extractor, RouterKind

_REGISTRY: dict[type, tuple[Extractor, RouterKind]] = {}
_WEIGHT_FNS: dict[type, Callable[[nn.Module], torch.Tensor | None]] = {}

# Training engines whose router classes grokmon reads without the user registering them: when the
# engine's module (key) has been imported, grokmon's reader module (value) is imported once, and
# registers them. Nothing is imported for an engine that is not in use.
_ENGINE_READERS: dict[str, str] = {
    "olmo_core.nn.moe.router": "grokmon.routing.olmo_core",
}
_ENGINES_LOADED: set[str] = set()


def load_engine_readers() -> None:
    """Register the router readers of the training engines already imported (OLMo-core, ...)."""
    for engine, reader in _ENGINE_READERS.items():
        if engine in sys.modules and reader not in _ENGINES_LOADED:
            _ENGINES_LOADED.add(reader)
            importlib.import_module(reader)


def register_router(
    module_class: type[nn.Module], extractor: Extractor | None = None, *, kind: RouterKind = "mlp",
    weight_fn: Callable[[nn.Module], torch.Tensor | None] | None = None,
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
        weight_fn: ``weight_fn(module) -> [E, H]`` tensor, the router's weight rows (the expert
            embeddings of pathway consistency), called inside the probe forward; for a router that
            does not keep them as a 2-D parameter (OLMo-core's flat ``(E*H,)`` weight). ``None``:
            the first 2-D parameter with ``E`` rows.

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
    if weight_fn is not None and not callable(weight_fn):
        raise ConfigError("weight_fn must be callable as weight_fn(module) -> [experts, hidden] tensor")
    _REGISTRY[module_class] = (extractor or standard_extractor, kind)
    if weight_fn is None:
        _WEIGHT_FNS.pop(module_class, None)
    else:
        _WEIGHT_FNS[module_class] = weight_fn


def unregister_router(module_class: type[nn.Module]) -> None:
    """Forget a class registered with :func:`register_router` (no error if it was not)."""
    _REGISTRY.pop(module_class, None)
    _WEIGHT_FNS.pop(module_class, None)


def registered(module: nn.Module) -> tuple[Callable, RouterKind] | None:
    """``(extractor, kind)`` registered for the module's class (the most specific match), or None."""
    for cls in type(module).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def registered_weight_fn(module: nn.Module) -> Callable[[nn.Module], torch.Tensor | None] | None:
    """The ``weight_fn`` registered for the module's class (the most specific match), or None."""
    for cls in type(module).__mro__:
        if cls in _REGISTRY:
            return _WEIGHT_FNS.get(cls)
    return None
