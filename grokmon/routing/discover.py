"""Find the MoE routers of a model: transformers' own recording specs first, then registered
custom routers, then name/attribute heuristics.

Example:
    >>> from grokmon.routing import find_routers
    >>> [site.name for site in find_routers(model)]          # doctest: +SKIP
    ['model.layers.0.mlp.gate', 'model.layers.1.mlp.gate']
"""

from __future__ import annotations

import functools
import re
from typing import Any

from torch import nn

from ..errors import RouterNotFoundError
from .normalise import default_extractor
from .types import Extractor, RouterKind, RouterOutput, RouterSite

_WRAPPERS = ("_fsdp_wrapped_module.", "_orig_mod.", "_checkpoint_wrapped_module.", "module.")
_LAYER = re.compile(r"(?:^|\.)(?:layers|blocks|h|layer)\.(\d+)(?:\.|$)")
_REGISTRY: dict[type, tuple[Extractor | None, RouterKind]] = {}


def register_router(module_class: type, extractor: Extractor | None = None, *, kind: RouterKind = "mlp") -> None:
    """Teach grokmon a custom router class.

    ``extractor(module, args, output) -> RouterOutput`` turns one forward call of the router into
    expert ids ``[T, k]`` and weights ``[T, k]``. Without one, grokmon reads ``(logits, weights, ids)``
    tuples, or logits alone (then it takes the ``module.top_k`` experts of their softmax).

    Example:
        >>> import torch
        >>> class MyRouter(torch.nn.Linear):
        ...     top_k = 2
        >>> register_router(MyRouter)      # forward returns logits [T, E]
        >>> def extract(module, args, out):   # forward returns (ids, probs)
        ...     ids, probs = out
        ...     return RouterOutput(ids, probs, None, num_experts=module.out_features)
        >>> register_router(MyRouter, extract)
    """
    if not isinstance(module_class, type) or not issubclass(module_class, nn.Module):
        raise TypeError(f"register_router needs an nn.Module subclass, got {module_class!r}")
    _REGISTRY[module_class] = (extractor, kind)


def unregister_router(module_class: type) -> None:
    """Forget a class registered with :func:`register_router`."""
    _REGISTRY.pop(module_class, None)


def canonical_name(name: str) -> str:
    """Module path without wrapper tokens: ``_orig_mod.model.layers.3.mlp.gate`` -> ``model.layers.3.mlp.gate``."""
    for token in _WRAPPERS:
        name = name.replace(token, "")
    return name


def layer_index(name: str) -> int:
    match = _LAYER.search(name)
    return int(match.group(1)) if match else -1


def _recorded_specs(model: nn.Module) -> list[Any]:
    """Union of the ``router_logits`` recording specs of every PreTrainedModel inside ``model``."""
    specs: list[Any] = []
    for module in model.modules():
        table = getattr(type(module), "_can_record_outputs", None)
        if not isinstance(table, dict) or "router_logits" not in table:
            continue
        entry = table["router_logits"]
        for spec in entry if isinstance(entry, (list, tuple)) else [entry]:
            if spec not in specs:
                specs.append(spec)
    return specs


def _matches_spec(module: nn.Module, name: str, spec: Any) -> bool:
    target = getattr(spec, "target_class", spec)
    if isinstance(target, str):
        if not type(module).__name__.endswith(target):
            return False
    elif not (isinstance(target, type) and isinstance(module, target)):
        return False
    layer_name = getattr(spec, "layer_name", None)
    return layer_name is None or name.endswith(layer_name)


def _looks_like_router(module: nn.Module, name: str) -> bool:
    cls = type(module).__name__
    if "Router" in cls or "Gating" in cls:
        return True
    return name.rsplit(".", 1)[-1] in ("gate", "router") and (
        hasattr(module, "num_experts") or hasattr(module, "top_k")
    )


def _num_experts(module: nn.Module) -> int | None:
    for attr in ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    for inner in (module, getattr(module, "layer", None)):
        if isinstance(inner, nn.Linear):
            return inner.out_features
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else None


def find_routers(model: nn.Module) -> list[RouterSite]:
    """Every MoE router of ``model``, ordered by layer and then execution order within the layer.

    Raises:
        RouterNotFoundError: the model has no router grokmon knows (the message names the class).
    """
    specs = _recorded_specs(model)
    named = dict(model.named_modules())
    sites: list[RouterSite] = []
    seen: set[int] = set()
    for order, (raw_name, module) in enumerate(model.named_modules()):
        if id(module) in seen:
            continue
        registered = next((v for cls, v in _REGISTRY.items() if isinstance(module, cls)), None)
        recorded = any(_matches_spec(module, raw_name, spec) for spec in specs)
        if registered is None and not recorded and not (not specs and _looks_like_router(module, raw_name)):
            continue
        seen.add(id(module))
        parent = named.get(raw_name.rsplit(".", 1)[0]) if "." in raw_name else None
        extractor, kind = registered if registered is not None else (None, "mlp")
        name = canonical_name(raw_name)
        if ".self_attention." in name or ".attn." in name or ".attention." in name:
            kind = "attention"
        if extractor is None:
            extractor = functools.partial(default_extractor, parent=parent)
        sites.append(RouterSite(name, layer_index(name), kind, module, extractor, _num_experts(module)))
    # A recording spec can name a block that merely passes a router's logits on (JetMoe's attention
    # records its inner router's logits): keep the innermost router only.
    sites = [s for s in sites if not any(o is not s and o.name.startswith(s.name + ".") for o in sites)]
    if not sites:
        raise RouterNotFoundError(
            f"{type(model).__name__} has no MoE router grokmon can find. grokmon reads the routers of "
            "transformers MoE models (OLMoE, Mixtral, Qwen-MoE, DeepSeek, GPT-OSS, Granite-MoE, JetMoe, "
            "PhiMoE, DBRX, Llama 4); for your own MoE, call grokmon.register_router(YourRouterClass) first"
        )
    rank = {"attention": 0, "mlp": 1}
    sites.sort(key=lambda s: (s.layer, rank[s.kind]))
    return sites
