"""One probe forward with hooks on the routers: the :class:`Pathways` of a set of token ids.

The probe runs in eval mode under ``torch.no_grad()`` with ``use_cache=False`` and
``logits_to_keep=1``; router hooks exist only while it runs, and every module's train/eval mode is
put back afterwards, even when the forward raises. Everything is accumulated on the model's device
without a host sync per batch (one sync at the end, to check for NaN and count tokens).

Example:
    >>> import sys; sys.path.insert(0, "tests")
    >>> from moe_models import tiny_model                        # doctest: +SKIP
    >>> ids = torch.randint(2, 128, (4, 16))
    >>> res = capture_pathways(tiny_model("olmoe"), ids)          # doctest: +SKIP
    >>> res.pathways.mean_weights.shape                           # doctest: +SKIP
    torch.Size([4, 2, 8])
"""

from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, RoutingError
from ..pathways import Pathways
from ..probe.checks import check_model_inputs
from .discovery import find_routers
from .registry import probe_state_guard
from .types import RouterOutput, RouterSite

# Elements of one [B, chunk, V] logits block in the chunked probe loss (128 MiB in float32).
_LOSS_CHUNK_ELEMENTS = 1 << 25


@dataclass
class CaptureResult:
    """What a probe returns: the pathways, each sample's mean next-token loss (``None`` when not
    computed or not computable), the number of non-padding tokens, and the wall time."""

    pathways: Pathways
    loss_per_sample: torch.Tensor | None
    num_tokens: int
    seconds: float


def _unwrap_compiled(model: nn.Module) -> nn.Module:
    while isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = model._orig_mod
    return model


def _force_eager() -> contextlib.AbstractContextManager:
    # Hooks registered after torch.compile do not fire in compiled code (regional compilation
    # included); force_eager runs the same modules eagerly and leaves compiled graphs intact.
    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else contextlib.nullcontext()


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _vocab_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is not None:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        v = getattr(text, "vocab_size", None)
        if isinstance(v, int):
            return v
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            return m.num_embeddings
    return None


def _full_tensor(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` as a plain tensor: a DTensor (tensor parallelism) is all-gathered with ``full_tensor()``."""
    if t is None:
        return None
    full = getattr(t, "full_tensor", None)
    return full() if callable(full) else t


class _Collector:
    """Forward hooks on the router sites; per batch, keep each router's (ids, weights).

    ``weight_hook`` copies each router's ``[E, H]`` weight rows at its first call, while the
    forward holds them unsharded: FSDP2 (``fully_shard``) reshards them into DTensors, FSDP1
    (``use_orig_params``) into flat 1-D shards and DeepSpeed ZeRO-3 into empty partitions once the
    forward is over. Every rank copies at the same point of the same forward, so the all-gather of
    a weight that stays a DTensor inside the forward (tensor parallelism) is in step on all ranks.
    """

    def __init__(self, sites: Sequence[RouterSite]):
        self.sites = sites
        self.outputs: list[list[RouterOutput]] = [[] for _ in sites]
        self.bad = None  # device bool: some router produced NaN/inf
        self.bad_ids = None  # device bool: some router gave expert ids outside [0, E)
        self.router_weights: list[torch.Tensor | None] = [None] * len(sites)
        self.weights_seen = [False] * len(sites)

    def weight_hook(self, i: int):
        site = self.sites[i]

        def fn(module: nn.Module, args: tuple, output: Any) -> None:
            if not self.weights_seen[i]:
                self.weights_seen[i] = True
                w = _full_tensor(site.router_weight())
                # a copy: the unsharded storage is freed (or reused) when the parameters reshard
                self.router_weights[i] = None if w is None else w.detach().clone()

        return fn

    def hook(self, i: int):
        site = self.sites[i]

        def fn(module: nn.Module, args: tuple, output: Any) -> None:
            out = site.extractor(module, args, output)
            if not isinstance(out, RouterOutput):
                raise RoutingError(
                    f"router {site.name} (layer {site.layer}): its extractor returned {type(out).__name__}, "
                    "not a RouterOutput: an extractor(module, args, output) must return "
                    "grokmon.routing.RouterOutput(expert_ids, weights, logits, num_experts) "
                    "(grokmon.routing.extract.finish builds one)"
                )
            self.outputs[i].append(out)
            # weights only: NaN/inf logits reach the weights in every family (softmax/sigmoid of NaN)
            self.bad[i] |= ~torch.isfinite(out.weights).all()

        return fn

    def reset(self) -> None:
        for o in self.outputs:
            o.clear()


def _call_model(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None, kwargs: dict) -> Any:
    if mask is not None and "attention_mask" in kwargs:
        kwargs = {**kwargs, "attention_mask": mask}
    return model(ids, **kwargs)


def _forward_kwargs(model: nn.Module, has_mask: bool) -> dict:
    """The probe keyword arguments the model's forward accepts."""
    wanted = {"use_cache": False, "logits_to_keep": 1}
    if has_mask:
        wanted["attention_mask"] = None
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {k: v for k, v in wanted.items() if k == "attention_mask"}
    return {k: v for k, v in wanted.items() if k in params}


def _decoder(model: nn.Module) -> nn.Module | None:
    """The module whose output holds the final hidden states (the base model of a ``*ForCausalLM``)."""
    prefix = getattr(model, "base_model_prefix", None)
    candidates = [getattr(model, prefix, None) if isinstance(prefix, str) and prefix else None,
                  getattr(model, "model", None), getattr(model, "transformer", None)]
    get = getattr(model, "get_decoder", None)
    if callable(get):
        candidates.append(get())
    for c in candidates:
        if isinstance(c, nn.Module) and c is not model:
            return c
    return None


def _last_hidden(output: Any) -> torch.Tensor | None:
    h = getattr(output, "last_hidden_state", None)
    if h is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        h = output[0]
    if h is None and isinstance(output, torch.Tensor):
        h = output
    return h if isinstance(h, torch.Tensor) and h.dim() == 3 else None


def _logit_transform(model: nn.Module):
    """What the model's forward applies to ``lm_head`` output (Granite divides by logits_scaling)."""
    config = getattr(model, "config", None)
    scale = getattr(config, "logits_scaling", None)
    cap = getattr(config, "final_logit_softcapping", None)

    def apply(logits: torch.Tensor) -> torch.Tensor:
        if isinstance(scale, (int, float)) and scale != 1:
            logits = logits / scale
        if isinstance(cap, (int, float)) and cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return apply


def _loss_from_hidden(hidden: torch.Tensor, head: nn.Module, transform, ids: torch.Tensor,
                      valid: torch.Tensor) -> torch.Tensor:
    """Per-sample mean next-token CE, the lm_head applied to a few positions at a time."""
    b, s, _ = hidden.shape
    vocab = getattr(head, "out_features", None) or head.weight.shape[0]
    chunk = max(1, _LOSS_CHUNK_ELEMENTS // max(1, b * vocab))
    total = torch.zeros(b, device=hidden.device, dtype=torch.float32)
    for c in range(0, s - 1, chunk):
        e = min(c + chunk, s - 1)
        logits = transform(head(hidden[:, c:e])).float()
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, c + 1:e + 1].reshape(-1), reduction="none")
        total += (ce.view(b, e - c) * valid[:, c:e]).sum(dim=1)
    return total


def _loss_from_logits(logits: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    b = ids.shape[0]
    ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    return (ce.view(b, -1) * valid).sum(dim=1)


def capture_pathways(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    batch_size: int = 32,
    keep_token_ids: bool = False,
    keep_router_weights: bool = True,
    compute_loss: bool = True,
    groups: torch.Tensor | Sequence[int] | None = None,
    group_names: Sequence[str] = (),
    progress: bool = False,
) -> CaptureResult:
    """Run ``input_ids`` through ``model`` in eval mode and record every router's choices.

    Args:
        model: an MoE model (transformers ``*ForCausalLM``, compiled or not, or a custom model whose
            router class was registered with :func:`grokmon.routing.register_router`).
        input_ids: ``[N, T]`` token ids.
        attention_mask: ``[N, T]``, 0 at padding (padding positions are dropped everywhere).
        batch_size: samples per forward.
        keep_token_ids: also keep every token's experts (``Pathways.token_ids [N, T, L, k]`` int16).
        keep_router_weights: keep the routers' ``[L, E, H]`` weight rows (for pathway consistency),
            copied during the forward, so full plain tensors under FSDP / FSDP2 / ZeRO-3 too.
        compute_loss: compute each sample's mean next-token cross-entropy (chunked over positions,
            never the full ``[B, T, V]`` logits at once).
        groups / group_names: per-sample group ids and their names, stored in the Pathways.
        progress: show a tqdm bar over batches.

    Returns:
        :class:`CaptureResult`. ``Pathways.mean_weights[n, l]`` sums to 1 over experts; routers with
        fewer experts than the widest are zero-padded.

    Raises:
        ProbeError: input_ids not 2-D, empty, or with ids outside the model's vocabulary.
        RouterNotFoundError: no router in the model.
        RoutingError: a router did not run, or produced NaN/inf logits or weights.
    """
    start_time = time.perf_counter()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    target = _unwrap_compiled(model)
    check_model_inputs(input_ids, attention_mask, _vocab_size(target))
    sites = find_routers(target)
    device = _model_device(target)
    if device.type == "meta":
        raise ConfigError("the model's weights are on the meta device (not loaded yet): probe a model whose weights "
                          "are materialised, e.g. after from_pretrained / load_state_dict / accelerator.prepare")
    ids_all = input_ids.to(device=device, dtype=torch.long)
    n, seq = ids_all.shape
    mask_all = None if attention_mask is None else attention_mask.to(device=device).bool()

    num_routers = len(sites)
    collector = _Collector(sites)
    collector.bad = torch.zeros(num_routers, dtype=torch.bool, device=device)
    collector.bad_ids = torch.zeros(num_routers, dtype=torch.bool, device=device)
    sums: list[torch.Tensor | None] = [None] * num_routers  # [N, E_l] weight sums per sample
    counts: list[torch.Tensor | None] = [None] * num_routers
    token_ids: list[torch.Tensor | None] = [None] * num_routers
    loss = torch.full((n,), float("nan"), device=device) if compute_loss else None
    loss_ok = compute_loss
    tokens_per_sample = (mask_all.sum(dim=1) if mask_all is not None
                         else torch.full((n,), seq, device=device)).float()

    k_seen: set[int] = set()
    modes = [(m, m.training) for m in target.modules()]
    handles = []
    hidden_box: list[torch.Tensor] = []
    state_guard = probe_state_guard(target)  # state a forward leaves that training reads (DeepSpeed's l_aux)
    state_guard.__enter__()
    try:
        target.eval()
        handles = [s.module.register_forward_hook(collector.hook(i)) for i, s in enumerate(sites)]
        if keep_router_weights:
            # prepended: it must run before a hook that releases the gathered parameters (ZeRO-3)
            handles += [s.module.register_forward_hook(collector.weight_hook(i), prepend=True)
                        for i, s in enumerate(sites)]
        decoder = _decoder(target) if compute_loss else None
        head = target.get_output_embeddings() if compute_loss and hasattr(target, "get_output_embeddings") else None
        if decoder is not None and isinstance(head, nn.Module):
            handles.append(decoder.register_forward_hook(
                lambda _m, _a, out: hidden_box.append(_last_hidden(out))))
        kwargs = _forward_kwargs(target, mask_all is not None)
        transform = _logit_transform(target)
        starts = range(0, n, batch_size)
        if progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="grokmon probe", unit="batch")
        with torch.no_grad(), _force_eager():
            for b0 in starts:
                b1 = min(b0 + batch_size, n)
                ids = ids_all[b0:b1]
                mask = mask_all[b0:b1] if mask_all is not None else None
                collector.reset()
                hidden_box.clear()
                out = _call_model(target, ids, mask, kwargs)
                _accumulate(collector, sites, ids.shape, mask, b0, n, sums, counts,
                            token_ids if keep_token_ids else None, device, k_seen)
                if loss_ok:
                    valid = torch.ones(ids.shape[0], seq - 1, dtype=torch.float32, device=device)
                    if mask is not None:
                        valid = (mask[:, :-1] & mask[:, 1:]).float()
                    hidden = hidden_box[-1] if hidden_box else None
                    logits = getattr(out, "logits", out if isinstance(out, torch.Tensor) else None)
                    if hidden is not None and hidden.shape[:2] == ids.shape:
                        total = _loss_from_hidden(hidden, head, transform, ids, valid)
                    elif isinstance(logits, torch.Tensor) and logits.dim() == 3 and logits.shape[1] == seq:
                        total = _loss_from_logits(logits, ids, valid)
                    else:
                        loss_ok = False
                        continue
                    loss[b0:b1] = total / valid.sum(dim=1)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
        collector.reset()
        state_guard.__exit__(None, None, None)

    bad, bad_ids = torch.stack([collector.bad, collector.bad_ids]).tolist()  # the one host sync of the probe
    for i, flag in enumerate(bad_ids):
        if flag:
            s = sites[i]
            raise RoutingError(
                f"router {s.name} (layer {s.layer}) gave expert ids outside [0, {sums[i].shape[1]}) during the "
                "probe: its extractor must return the indices of the experts the block dispatches to"
            )
    for i, flag in enumerate(bad):
        if flag:
            s = sites[i]
            raise RoutingError(
                f"router {s.name} (layer {s.layer}) produced NaN/inf logits or weights during the probe: "
                "the model's weights have diverged (check the loss and learning rate)"
            )
    e_max = max(t.shape[1] for t in sums)
    mean = torch.stack([F.pad(t, (0, e_max - t.shape[1])) for t in sums], dim=1) / tokens_per_sample[:, None, None]
    expert_counts = torch.stack([F.pad(c, (0, e_max - c.shape[0])) for c in counts])
    tok = None
    if keep_token_ids:
        k_max = max(t.shape[-1] for t in token_ids)
        tok = torch.stack([F.pad(t, (0, k_max - t.shape[-1]), value=-1) for t in token_ids], dim=2)
    rw = None
    if keep_router_weights:
        ws = collector.router_weights  # copied during the forward, unsharded (see _Collector)
        if all(w is not None for w in ws) and len({tuple(w.shape) for w in ws}) == 1 and ws[0].shape[0] == e_max:
            rw = torch.stack([w.float() for w in ws]).to(device)
    ks = sorted(k_seen)
    group_tensor = None if groups is None else torch.as_tensor(groups, dtype=torch.long)
    pathways = Pathways(
        mean_weights=mean.float(),
        layers=tuple(s.layer for s in sites),
        router_names=tuple(s.name for s in sites),
        num_experts=e_max,
        expert_counts=expert_counts,
        token_ids=tok,
        token_mask=(mask_all if mask_all is not None else torch.ones(n, seq, dtype=torch.bool, device=device))
        if keep_token_ids else None,
        router_weights=rw,
        groups=group_tensor,
        group_names=tuple(group_names),
        meta={
            "top_k": ks[-1] if ks else None,
            "model_class": type(target).__name__,
            "router_kinds": [s.kind for s in sites],
        },
    )
    num_tokens = int(tokens_per_sample.sum().item())
    return CaptureResult(pathways=pathways, loss_per_sample=loss if loss_ok else None,
                         num_tokens=num_tokens, seconds=time.perf_counter() - start_time)


def _accumulate(collector: _Collector, sites, shape, mask, b0, n, sums, counts, token_ids, device, k_seen) -> None:
    """Fold one batch's router outputs into the per-sample sums, expert counts and token ids."""
    b, seq = shape
    rows = b * seq
    flat_mask = mask.reshape(rows) if mask is not None else None
    for i, site in enumerate(sites):
        outs = collector.outputs[i]
        if len(outs) != 1:
            what = "did not run" if not outs else f"ran {len(outs)} times"
            raise RoutingError(
                f"router {site.name} (layer {site.layer}) {what} during one probe forward: a fused kernel "
                "may have replaced the MoE block (load the model with use_kernels=False for the probe)"
                if not outs else
                f"router {site.name} (layer {site.layer}) {what} during one probe forward; grokmon expects "
                "one call per forward: register a custom extractor for this model"
            )
        out = outs[0]
        ids, w = out.expert_ids, out.weights
        if (not isinstance(ids, torch.Tensor) or not isinstance(w, torch.Tensor) or ids.dim() != 2
                or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool or w.shape != ids.shape):
            raise RoutingError(
                f"router {site.name} (layer {site.layer}): its extractor must return integer expert_ids "
                f"[tokens, k] and weights of the same shape, got {getattr(ids, 'dtype', type(ids).__name__)} "
                f"{tuple(getattr(ids, 'shape', ()))} and {tuple(getattr(w, 'shape', ()))}"
            )
        if ids.shape[0] != rows:
            raise RoutingError(
                f"router {site.name} (layer {site.layer}) gave {ids.shape[0]} token rows for a batch of "
                f"{b}x{seq}={rows} tokens: its extractor must return one row per token"
            )
        e = max(out.num_experts, site.num_experts or 0, 0 if sums[i] is None else sums[i].shape[1])
        k = ids.shape[1]
        if e < 1 or k < 1:
            raise RoutingError(f"router {site.name} (layer {site.layer}) reported {e} experts and {k} per token: its "
                               "extractor must return expert_ids [tokens, k] with k >= 1 and num_experts >= 1")
        # ids outside [0, E) are flagged on the device (reported at the probe's one host sync) and
        # clamped meanwhile, so the scatters below stay in bounds (on CUDA a bad index is fatal)
        collector.bad_ids[i] |= ((ids < 0) | (ids >= e)).any()
        ids = ids.long().clamp(0, e - 1)
        w = w.float()
        k_seen.add(k)
        routed = getattr(out, "routed", None)
        if routed is not None:  # slots the block did not dispatch (capacity drops): no weight, no load
            if not isinstance(routed, torch.Tensor) or routed.shape != ids.shape:
                raise RoutingError(
                    f"router {site.name} (layer {site.layer}): its extractor returned routed "
                    f"{tuple(getattr(routed, 'shape', ()))} for expert_ids {tuple(ids.shape)}: routed must be a bool "
                    "mask shaped like the ids, or None"
                )
            routed = routed.to(device=device, dtype=torch.bool)
            w = w * routed
        if mask is not None:
            w = w * flat_mask[:, None]
        # scatter straight into [B, E]: slot (token's sample) * E + expert
        slot = (torch.arange(rows, device=device) // seq)[:, None] * e + ids
        per_sample = torch.zeros(b * e, device=device, dtype=torch.float32).scatter_add_(
            0, slot.reshape(-1), w.reshape(-1)).view(b, e)
        if sums[i] is None or sums[i].shape[1] != e:
            sums[i] = torch.zeros(n, e, device=device) if sums[i] is None else F.pad(sums[i], (0, e - sums[i].shape[1]))
            counts[i] = torch.zeros(e, dtype=torch.long, device=device) if counts[i] is None else F.pad(counts[i], (0, e - counts[i].shape[0]))
        sums[i][b0:b0 + b] = per_sample
        ones = (flat_mask[:, None].expand(rows, k) if mask is not None
                else torch.ones(rows, k, dtype=torch.bool, device=device))
        if routed is not None:
            ones = ones & routed
        counts[i].scatter_add_(0, ids.reshape(-1), ones.long().reshape(-1))
        if token_ids is not None:
            tid = ids.reshape(b, seq, k)
            if routed is not None:
                tid = torch.where(routed.reshape(b, seq, k), tid, torch.full_like(tid, -1))
            if mask is not None:
                tid = torch.where(mask[:, :, None], tid, torch.full_like(tid, -1))
            if token_ids[i] is None:
                token_ids[i] = torch.full((n, seq, k), -1, dtype=torch.int16, device=device)
            token_ids[i][b0:b0 + b] = tid.to(torch.int16)
