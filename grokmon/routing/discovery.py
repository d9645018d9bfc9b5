"""Find the MoE routers of a model: transformers' own records first, then registered classes,
then name/class heuristics.

Example:
    >>> import sys; sys.path.insert(0, "tests")
    >>> from moe_models import tiny_model               # doctest: +SKIP
    >>> [(s.name, s.layer) for s in find_routers(tiny_model("deepseek_v3"))]   # doctest: +SKIP
    [('model.layers.1.mlp.gate', 1)]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import RouterNotFoundError
from .extract import _num_experts_attr, _top_k_attr, standard_extractor
from .registry import registered
from .types import RouterKind, RouterSite, canonical_name, parse_layer


@dataclass(frozen=True)
class _Spec:
    target_class: type | None
    class_name: str | None
    layer_name: str | None
    index: int | None

    def matches(self, name: str, module: nn.Module) -> bool:
        hit = self.target_class is not None and isinstance(module, self.target_class)
        if not hit and self.class_name:
            hit = type(module).__name__.endswith(self.class_name) or name.endswith(self.class_name)
        if hit and self.layer_name:
            hit = "." + self.layer_name.strip(".") + "." in "." + name + "."
        return hit


def _router_specs(model: nn.Module) -> list[_Spec]:
    """The union of ``_can_record_outputs["router_logits"]`` over every submodule that declares it.

    Read by duck-typing: transformers moved ``OutputRecorder`` between 5.x releases.
    """
    specs: list[_Spec] = []
    for module in model.modules():
        table = getattr(type(module), "_can_record_outputs", None)
        if not isinstance(table, dict) or "router_logits" not in table:
            continue
        entries = table["router_logits"]
        for entry in entries if isinstance(entries, (list, tuple)) else [entries]:
            target = getattr(entry, "target_class", entry)
            spec = _Spec(
                target_class=target if isinstance(target, type) else None,
                class_name=target if isinstance(target, str) else getattr(entry, "class_name", None),
                layer_name=getattr(entry, "layer_name", None),
                index=getattr(entry, "index", None),
            )
            if spec not in specs:
                specs.append(spec)
    return specs


def _looks_like_router(name: str, module: nn.Module) -> bool:
    cls = type(module).__name__
    if "Router" in cls or "Gating" in cls:
        return True
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("gate", "router") and (hasattr(module, "num_experts") or hasattr(module, "top_k"))


def _innermost(found: dict[str, Any]) -> dict[str, Any]:
    """Drop matches that contain another match (JetMoe records its attention module *and* its gating)."""
    names = list(found)
    return {n: v for n, v in found.items() if not any(o != n and o.startswith(n + ".") for o in names)}


def _kind(name: str) -> RouterKind:
    parts = canonical_name(name).split(".")
    return "attention" if any("attn" in p or "attention" in p for p in parts) else "mlp"


def find_routers(model: nn.Module) -> list[RouterSite]:
    """Every MoE router of ``model``, ordered by (layer, attention before mlp, module order).

    Discovery: the router classes a transformers model declares in ``_can_record_outputs``, the
    classes registered with :func:`grokmon.routing.register_router` (DeepSpeed's ``TopKGate`` and
    AutoEP router are registered by themselves once DeepSpeed is imported), and, only when both find
    nothing, modules named ``*.gate`` / ``*.router`` with ``num_experts``/``top_k`` or a class named
    ``*Router*`` / ``*Gating*``.

    Raises:
        RouterNotFoundError: no router in the model.
    """
    named = dict(model.named_modules())
    specs = _router_specs(model)
    found: dict[str, tuple[nn.Module, Any, RouterKind | None]] = {}
    for name, module in named.items():
        reg = registered(module)
        if reg is not None:
            found[name] = (module, reg[0], reg[1])
            continue
        for spec in specs:
            if spec.matches(name, module):
                found[name] = (module, spec, None)
                break
    if not found:
        found = {n: (m, None, None) for n, m in named.items() if n and _looks_like_router(n, m)}
    found = _innermost(found)
    if not found:
        raise RouterNotFoundError(
            f"no MoE router found in {type(model).__name__}: it declares no router_logits recorder and no "
            "module looks like a router. Register your router class with "
            "grokmon.routing.register_router(RouterClass, extractor) before capturing."
        )
    sites = []
    for order, (name, (module, how, kind)) in enumerate(found.items()):
        parent = named.get(name.rsplit(".", 1)[0] if "." in name else "")
        if callable(how):
            extractor = how
        else:
            route_fn = getattr(parent, "route_tokens_to_experts", None) if parent is not module else None
            extractor = functools.partial(
                standard_extractor,
                top_k=_top_k_attr(module) or _top_k_attr(parent),
                logits_index=how.index if isinstance(how, _Spec) else None,
                route_fn=route_fn if callable(route_fn) else None,
            )
        e = _num_experts_attr(module, 0) or _num_experts_attr(getattr(module, "layer", None), 0)
        canon = canonical_name(name)
        layer = parse_layer(canon)
        sites.append((
            layer if layer is not None else order,
            order,
            RouterSite(name=canon, layer=layer if layer is not None else order, kind=kind or _kind(name),
                       module=module, extractor=extractor, num_experts=e or None),
        ))
    sites.sort(key=lambda s: (s[0], s[2].kind != "attention", s[1]))
    return [s[2] for s in sites]
