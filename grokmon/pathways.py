"""Pathways: the only thing a probe keeps, and the expert-id sequences the metrics compare.

A :class:`Pathways` holds, for ``N`` probe samples and the ``L`` routers of a model:

* ``mean_weights [N, L, E]`` – each sample's routing weight per expert, averaged over its tokens
  (per-token weights are first divided by their sum, so every ``[n, l]`` row sums to 1 and the
  weight conventions of the families – renormalised, scaled, sigmoid – become comparable);
* ``expert_counts [L, E]`` – how many probe tokens each expert received (load);
* optionally ``token_ids [N, T, L, k]`` – every token's experts (int16, ``-1`` on padding), for the
  per-token pathway form;
* optionally ``router_weights [L, E, H]`` – the router weight rows (expert embeddings) used by
  pathway consistency.

:func:`pathway_sequences` turns them into padded integer sequences in one of three forms
(``docs/metrics.md``):

* ``"threshold"`` (the paper's): per layer, experts ranked by mean weight, kept until their cumulative
  weight passes ``threshold`` (0.7), layers joined by a separator symbol (``E``);
* ``"topk"``: the ``top_k`` experts of each layer by mean weight (``L * top_k`` ids);
* ``"token"``: every token's experts at every layer, ordered layer by layer (``order="layer"``)
  or token by token (``order="token"``).

Example:
    >>> import torch
    >>> w = torch.tensor([[[0.5, 0.3, 0.2, 0.0], [0.1, 0.1, 0.8, 0.0]]])  # N=1, L=2, E=4
    >>> p = Pathways(mean_weights=w, layers=(0, 1), router_names=("l0", "l1"), num_experts=4,
    ...              expert_counts=torch.zeros(2, 4, dtype=torch.long))
    >>> seq = pathway_sequences(p, "threshold", threshold=0.7)
    >>> seq.ids[0, : seq.lengths[0]].tolist()   # layer 0: 0,1 (0.5+0.3 passes 0.7); sep 4; layer 1: 2
    [0, 1, 4, 2]
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal, Sequence

import torch

from .errors import ConfigError, GrokmonError

PathwayForm = Literal["threshold", "topk", "token"]
PAD = -1


@dataclass
class Pathways:
    """Routing of ``N`` probe samples through the ``L`` routers of an MoE model (see module doc)."""

    mean_weights: torch.Tensor
    layers: tuple[int, ...]
    router_names: tuple[str, ...]
    num_experts: int
    expert_counts: torch.Tensor
    token_ids: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None
    router_weights: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    group_names: tuple[str, ...] = ()
    sample_index: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mean_weights.dim() != 3:
            raise ConfigError(
                f"Pathways.mean_weights must be [N, L, E], got shape {tuple(self.mean_weights.shape)}"
            )
        n, l, e = self.mean_weights.shape
        if len(self.layers) != l or len(self.router_names) != l:
            raise ConfigError(
                f"Pathways has {l} routers in mean_weights but {len(self.layers)} layer indices and "
                f"{len(self.router_names)} router names: pass one of each per router"
            )
        if e != self.num_experts:
            raise ConfigError(f"mean_weights has {e} experts but num_experts={self.num_experts}")
        if self.groups is not None and self.groups.shape != (n,):
            raise ConfigError(f"groups must be [N]={n}, got {tuple(self.groups.shape)}")

    @property
    def num_samples(self) -> int:
        return self.mean_weights.shape[0]

    @property
    def num_routers(self) -> int:
        return self.mean_weights.shape[1]

    def to(self, device: torch.device | str) -> "Pathways":
        """Return a copy with every tensor moved to ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    def select(self, index: torch.Tensor | Sequence[int]) -> "Pathways":
        """Keep only the samples at ``index`` (per-sample tensors are indexed, the rest shared)."""
        index = torch.as_tensor(index, dtype=torch.long)
        per_sample = ("mean_weights", "token_ids", "token_mask", "groups", "sample_index")
        picked = {
            name: getattr(self, name)[index.to(getattr(self, name).device)]
            for name in per_sample
            if getattr(self, name) is not None
        }
        return replace(self, **picked)

    def state_dict(self) -> dict:
        """Plain dict of tensors and Python values (what :meth:`save` writes)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Pathways":
        state = dict(state)
        for key in ("layers", "router_names", "group_names"):
            state[key] = tuple(state.get(key, ()))
        return cls(**state)

    def save(self, path: str | Path) -> None:
        """Write to ``path`` with ``torch.save`` (tensors moved to CPU first)."""
        torch.save(self.to("cpu").state_dict(), Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "Pathways":
        """Read what :meth:`save` wrote (tensors and plain data only; see :mod:`grokmon.torchfile`)."""
        from .torchfile import load_torch_file

        state = load_torch_file(path, what="grokmon pathways", fix="pass a file written by Pathways.save")
        if not isinstance(state, dict) or "mean_weights" not in state:
            raise GrokmonError(f"{path} is not a grokmon pathways file: write one with Pathways.save")
        return cls.from_state_dict(state)


@dataclass
class PathwaySequences:
    """Padded expert-id sequences: ``ids [N, M]`` (``-1`` after each row's length), ``lengths [N]``.

    ``alphabet_size`` is the number of distinct symbols (experts plus the separator when used).
    """

    ids: torch.Tensor
    lengths: torch.Tensor
    alphabet_size: int


def threshold_keep(mean_weights: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's threshold rule: ``(experts [N, L, E] ranked by weight, keep [N, L, E] bool)``.

    Experts are ranked by mean weight (ties: lower id first) and kept while the cumulative weight
    *before* them is ``< threshold - 1e-6``: the expert whose weight reaches or passes the
    threshold is kept, so landing exactly on 0.7 counts as passing. The top expert is always
    kept and zero weights never are.

    The cumulative sum is a float64 matmul with a strictly-upper-triangular ones matrix: a matmul
    is deterministic on CUDA (cumsum is not), and float64 is never rounded by TF32
    (``allow_tf32`` / ``set_float32_matmul_precision("high")``), which would otherwise swamp the
    1e-6 tolerance and change pathways from one device setting to another.

    Example:
        >>> experts, keep = threshold_keep(torch.tensor([[[0.2, 0.5, 0.3, 0.0]]]), 0.7)
        >>> experts[keep].tolist()   # 0.5 then 0.3 reaches 0.7: both kept
        [1, 2]
    """
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"threshold must be in (0, 1], got {threshold}")
    w = mean_weights.double()
    values, experts = torch.sort(w, dim=-1, descending=True, stable=True)
    e = w.shape[-1]
    before = values @ torch.ones(e, e, dtype=torch.float64, device=w.device).triu(diagonal=1)
    keep = (before < threshold - 1e-6) & (values > 0)
    keep[..., 0] = True
    return experts, keep


def _compact(ids: torch.Tensor, keep: torch.Tensor) -> PathwaySequences:
    """Move the kept entries of each row to the front (order preserved) and pad the rest."""
    n = ids.shape[0]
    ids = ids.reshape(n, -1)
    keep = keep.reshape(n, -1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    packed = torch.gather(ids, 1, order)
    lengths = keep.sum(dim=1)
    width = int(lengths.max().item()) if n else 0
    packed = packed[:, :width]
    positions = torch.arange(width, device=ids.device).expand(n, width)
    packed = torch.where(positions < lengths[:, None], packed, torch.full_like(packed, PAD))
    return PathwaySequences(ids=packed.to(torch.int32), lengths=lengths, alphabet_size=0)


def pathway_sequences(
    pathways: Pathways,
    form: PathwayForm = "threshold",
    *,
    threshold: float = 0.7,
    top_k: int | None = None,
    order: Literal["layer", "token"] = "layer",
    separator: bool | None = None,
) -> PathwaySequences:
    """Expert-id sequences of every sample in one pathway ``form`` (see the module docstring).

    Args:
        pathways: the captured routing.
        form: ``"threshold"`` (paper), ``"topk"`` or ``"token"``.
        threshold: cumulative mean weight at which a layer's list stops (``"threshold"`` form).
        top_k: experts per layer (``"topk"`` form; defaults to the router's k when known, else 2).
        order: ``"layer"`` or ``"token"``, the nesting of the per-token form.
        separator: put the symbol ``E`` between layers (tokens, for ``order="token"``). Defaults to
            True for ``"threshold"``, whose per-layer lists vary in length, and False otherwise.

    Returns:
        :class:`PathwaySequences` with int32 ids, ``-1`` padding.
    """
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be a positive number of experts or None (the router's k), got {top_k}")
    if separator is None:
        separator = form == "threshold"
    e = pathways.num_experts
    sep = e
    if form in ("threshold", "topk"):
        w = pathways.mean_weights
        n, l, _ = w.shape
        if form == "threshold":
            experts, keep = threshold_keep(w, threshold)
        else:
            # the default (the router's k, else 2) never asks for more experts than the layer has
            k = top_k if top_k is not None else min(int(pathways.meta.get("top_k", 2)), e)
            if not 1 <= k <= e:
                raise ConfigError(f"top_k must be in [1, {e}], got {k}")
            experts = torch.sort(w.float(), dim=-1, descending=True, stable=True).indices
            keep = torch.zeros_like(experts, dtype=torch.bool)
            keep[..., :k] = True
        if separator:
            experts = torch.cat([experts, torch.full((n, l, 1), sep, device=w.device)], dim=-1)
            sep_keep = torch.ones(n, l, 1, dtype=torch.bool, device=w.device)
            sep_keep[:, -1] = False
            keep = torch.cat([keep, sep_keep], dim=-1)
        seq = _compact(experts, keep)
    elif form == "token":
        if pathways.token_ids is None:
            raise ConfigError(
                "the 'token' pathway form needs per-token expert ids: capture with keep_token_ids=True "
                "(MonitorConfig(keep_token_ids=True))"
            )
        ids = pathways.token_ids.long()  # [N, T, L, k]
        n, t, l, k = ids.shape
        valid = ids >= 0
        if order == "layer":
            ids, valid = ids.permute(0, 2, 1, 3), valid.permute(0, 2, 1, 3)  # [N, L, T, k]
            outer, inner = l, t * k
        elif order == "token":
            outer, inner = t, l * k
        else:
            raise ConfigError(f"order must be 'layer' or 'token', got {order!r}")
        ids, valid = ids.reshape(n, outer, inner), valid.reshape(n, outer, inner)
        if separator:
            ids = torch.cat([ids, torch.full((n, outer, 1), sep, device=ids.device)], dim=-1)
            unit_used = valid.any(dim=-1, keepdim=True)
            # no separator after the last non-empty unit of a row
            last_used = torch.cumsum(unit_used.flip(1).long(), dim=1).flip(1) > 1
            valid = torch.cat([valid, unit_used & last_used], dim=-1)
        seq = _compact(ids, valid)
    else:
        raise ConfigError(f"form must be 'threshold', 'topk' or 'token', got {form!r}")
    seq.alphabet_size = e + (1 if separator else 0)
    return seq
