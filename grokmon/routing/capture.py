"""Run a probe forward with hooks on the routers and keep only the pathways.

The forward runs in eval mode under ``torch.no_grad()`` (not inference_mode, which breaks FSDP
and ZeRO-3 training afterwards), with ``use_cache=False`` and ``logits_to_keep=1``; hooks live
only for the probe and every module's train/eval flag is restored even when the forward fails.
Statistics accumulate on the model's device with a single host sync at the end.

Example:
    >>> result = capture_pathways(model, probe.input_ids, probe.attention_mask)   # doctest: +SKIP
    >>> result.pathways.mean_weights.shape                                        # doctest: +SKIP
    torch.Size([512, 16, 64])
"""

from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ProbeError, RoutingError
from ..pathways import Pathways
from .discover import find_routers
from .types import RouterSite


@dataclass
class CaptureResult:
    """What a probe forward yields: the pathways, each sample's next-token loss, the cost."""

    pathways: Pathways
    loss_per_sample: torch.Tensor | None
    num_tokens: int
    seconds: float


@contextlib.contextmanager
def probe_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no_grad for the duration; every module's training flag restored afterwards."""
    flags = [(module, module.training) for module in model.modules()]
    stance = contextlib.nullcontext()
    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    if set_stance is not None:
        stance = set_stance("force_eager")  # hooks do not fire inside a compiled graph
    try:
        model.eval()
        with torch.no_grad(), stance:
            yield model
    finally:
        for module, flag in flags:
            module.training = flag


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The eager module behind ``torch.compile(model)`` (hooks on it fire; the graph stays cached)."""
    return getattr(model, "_orig_mod", model)


def _vocab_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "vocab_size", None)


def _check_inputs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ProbeError("input_ids must be a 2-D tensor [samples, tokens]: build the probe with grokmon.ProbeSet")
    if input_ids.numel() == 0:
        raise ProbeError("the probe is empty: it needs at least 2 samples of at least 2 tokens")
    if input_ids.is_floating_point():
        raise ProbeError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ProbeError(
            f"attention_mask {tuple(attention_mask.shape)} does not match input_ids {tuple(input_ids.shape)}"
        )
    vocab = _vocab_size(model)
    top = int(input_ids.max())
    if vocab is not None and top >= vocab:
        raise ProbeError(
            f"tokenizer/vocab mismatch: the probe has token id {top} but the model's vocabulary has {vocab} "
            "ids; build the probe with the model's own tokenizer"
        )
    if int(input_ids.min()) < 0:
        raise ProbeError("the probe has negative token ids: pad with the tokenizer's pad_token_id and a mask")


def _forward_kwargs(model: nn.Module) -> dict:
    params = inspect.signature(model.forward).parameters
    kwargs = {}
    if "use_cache" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs["use_cache"] = False
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    return kwargs


def _final_hidden_module(model: nn.Module) -> nn.Module | None:
    for candidate in (getattr(model, "base_model", None), getattr(model, "model", None), getattr(model, "transformer", None)):
        if isinstance(candidate, nn.Module) and candidate is not model:
            return candidate
    return None


def _per_sample_loss(model: nn.Module, hidden: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor,
                     chunk_tokens: int = 2048) -> torch.Tensor:
    """Mean next-token cross-entropy of each sample, with the lm_head run on chunks of positions."""
    head = model.get_output_embeddings()
    scale = getattr(getattr(model, "config", None), "logits_scaling", None)
    b, s, h = hidden.shape
    valid = (mask[:, 1:] & mask[:, :-1]).reshape(-1)
    states = hidden[:, :-1].reshape(-1, h)
    targets = input_ids[:, 1:].reshape(-1)
    owner = torch.arange(b, device=hidden.device).repeat_interleave(s - 1)
    total = torch.zeros(b, dtype=torch.float32, device=hidden.device)
    for start in range(0, states.shape[0], chunk_tokens):
        piece = slice(start, start + chunk_tokens)
        logits = head(states[piece]).float()
        if scale:
            logits = logits / scale
        ce = F.cross_entropy(logits, targets[piece], reduction="none") * valid[piece]
        total.index_add_(0, owner[piece], ce)
    count = valid.view(b, s - 1).sum(1).clamp(min=1)
    return total / count


class _Recorder:
    """Accumulates one router's statistics over the probe batches (all on the model's device)."""

    def __init__(self, site: RouterSite, n: int, seq: int, keep_token_ids: bool, device: torch.device):
        self.site = site
        self.n, self.seq, self.keep = n, seq, keep_token_ids
        self.device = device
        self.calls = 0
        self.weight_sum: torch.Tensor | None = None  # [N, E]
        self.counts: torch.Tensor | None = None      # [E]
        self.token_ids: torch.Tensor | None = None   # [N, T, k]
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.offset = 0
        self.mask: torch.Tensor | None = None        # [B, S] bool of the current batch

    def hook(self, module: nn.Module, args: tuple, out: object) -> None:
        self.calls += 1
        routed = self.site.extractor(module, args, out)
        b, s = self.mask.shape
        ids, w = routed.expert_ids, routed.weights
        if ids.shape[0] != b * s:
            raise RoutingError(
                f"router {self.site.name} saw {ids.shape[0]} tokens for a batch of {b}x{s}: grokmon expects one "
                "row per token (token dropping / capacity routing is not supported)"
            )
        e, k = routed.num_experts, ids.shape[1]
        if self.weight_sum is None:
            self.weight_sum = torch.zeros(self.n, e, dtype=torch.float32, device=self.device)
            self.counts = torch.zeros(e, dtype=torch.long, device=self.device)
            if self.keep:
                self.token_ids = torch.full((self.n, self.seq, k), -1, dtype=torch.int16, device=self.device)
        elif self.weight_sum.shape[1] != e:
            raise RoutingError(f"router {self.site.name} changed its expert count from {self.weight_sum.shape[1]} to {e}")
        self.nonfinite |= ~torch.isfinite(w).all()
        if routed.logits is not None:
            self.nonfinite |= ~torch.isfinite(routed.logits).all()
        keep = self.mask.reshape(-1)
        dense = torch.zeros(b * s, e, dtype=torch.float32, device=ids.device)
        dense.scatter_add_(1, ids, w * keep[:, None])
        self.weight_sum[self.offset:self.offset + b] += dense.view(b, s, e).sum(1).to(self.device)
        chosen = ids[keep].reshape(-1)
        self.counts.scatter_add_(0, chosen.to(self.device), torch.ones_like(chosen, device=self.device))
        if self.keep:
            token_ids = torch.where(keep[:, None], ids, torch.full_like(ids, -1)).to(torch.int16)
            self.token_ids[self.offset:self.offset + b, :s] = token_ids.view(b, s, k).to(self.device)


def capture_pathways(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    batch_size: int = 32,
    keep_token_ids: bool = False,
    keep_router_weights: bool = True,
    compute_loss: bool = True,
    groups: torch.Tensor | None = None,
    group_names: Sequence[str] = (),
    routers: list[RouterSite] | None = None,
    progress: bool = False,
) -> CaptureResult:
    """Probe ``model`` with ``input_ids`` and return each sample's routing as :class:`Pathways`.

    Args:
        model: a transformers MoE ``*ForCausalLM`` (possibly ``torch.compile``d) or a model with
            routers registered through :func:`grokmon.register_router`.
        input_ids: ``[N, T]`` token ids; ``attention_mask`` ``[N, T]`` marks real tokens (pads dropped).
        batch_size: samples per forward.
        keep_token_ids: also keep every token's experts (``[N, T, L, k]`` int16) for the per-token form.
        keep_router_weights: keep the ``[L, E, H]`` router rows that pathway consistency needs.
        compute_loss: each sample's mean next-token loss (the memorization signal).
        groups, group_names: per-sample group index and names, carried into the Pathways.
        routers: routers to hook (default: :func:`find_routers`).

    Raises:
        ProbeError: malformed probe or token ids outside the model's vocabulary.
        RouterNotFoundError: no router in the model.
        RoutingError: a router produced NaN/inf, nothing, or unreadable output.
    """
    start = time.perf_counter()
    model = unwrap_compiled(model)
    _check_inputs(model, input_ids, attention_mask)
    sites = routers if routers is not None else find_routers(model)
    if batch_size < 1:
        raise ProbeError(f"batch_size must be >= 1, got {batch_size}")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    n, seq = input_ids.shape
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    recorders = [_Recorder(site, n, seq, keep_token_ids, device) for site in sites]
    kwargs = _forward_kwargs(model)
    final_module = _final_hidden_module(model) if compute_loss else None
    captured_hidden: list[torch.Tensor] = []

    def grab_hidden(module: nn.Module, args: tuple, out: object) -> None:
        hidden = getattr(out, "last_hidden_state", None)
        captured_hidden.append(hidden if hidden is not None else out[0])

    losses = torch.zeros(n, dtype=torch.float32, device=device) if final_module is not None else None
    handles = [r.site.module.register_forward_hook(r.hook) for r in recorders]
    if final_module is not None:
        handles.append(final_module.register_forward_hook(grab_hidden))
    batches = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="grokmon probe", unit="batch")
    try:
        with probe_mode(model):
            for offset in batches:
                ids = input_ids[offset:offset + batch_size].to(device)
                batch_mask = mask[offset:offset + batch_size].to(device)
                for r in recorders:
                    r.offset, r.mask = offset, batch_mask
                captured_hidden.clear()
                model(input_ids=ids, attention_mask=batch_mask.long(), **kwargs)
                if losses is not None and captured_hidden:
                    losses[offset:offset + ids.shape[0]] = _per_sample_loss(model, captured_hidden[-1], ids, batch_mask)
    finally:
        for handle in handles:
            handle.remove()
    silent = [r.site.name for r in recorders if r.calls == 0]
    if silent:
        raise RoutingError(
            f"router(s) {', '.join(silent)} never ran during the probe forward (a fused kernel may replace the "
            "MoE block, e.g. use_kernels=True): load the model without kernels for probing"
        )
    bad = [r.site.name for r in recorders if bool(r.nonfinite)]
    if bad:
        raise RoutingError(
            f"router(s) {', '.join(bad)} produced NaN or inf routing values: the model has diverged or "
            "its router weights are corrupt; this probe is skipped"
        )
    return CaptureResult(
        pathways=_assemble(recorders, mask.to(device), keep_token_ids, keep_router_weights, model, groups, group_names),
        loss_per_sample=losses,
        num_tokens=int(mask.sum()),
        seconds=time.perf_counter() - start,
    )


def _assemble(recorders: list[_Recorder], mask: torch.Tensor, keep_token_ids: bool, keep_router_weights: bool,
              model: nn.Module, groups: torch.Tensor | None, group_names: Sequence[str]) -> Pathways:
    e_max = max(r.weight_sum.shape[1] for r in recorders)
    tokens = mask.sum(1).clamp(min=1).float()[:, None]

    def pad(t: torch.Tensor, value: float = 0) -> torch.Tensor:
        return F.pad(t, (0, e_max - t.shape[-1]), value=value)

    mean_weights = torch.stack([pad(r.weight_sum / tokens) for r in recorders], dim=1)
    counts = torch.stack([pad(r.counts) for r in recorders])
    token_ids = torch.stack([r.token_ids for r in recorders], dim=2) if keep_token_ids else None
    router_weights = None
    if keep_router_weights:
        rows = [r.site.router_weight() for r in recorders]
        if all(w is not None for w in rows) and len({tuple(w.shape) for w in rows}) == 1:
            router_weights = torch.stack([w.detach().float() for w in rows]).to(mask.device)
    ks = {r.token_ids.shape[-1] if r.token_ids is not None else None for r in recorders}
    top_k = next((getattr(r.site.module, "top_k", None) for r in recorders if getattr(r.site.module, "top_k", None)), None)
    return Pathways(
        mean_weights=mean_weights,
        layers=tuple(r.site.layer for r in recorders),
        router_names=tuple(r.site.name for r in recorders),
        num_experts=e_max,
        expert_counts=counts,
        token_ids=token_ids,
        token_mask=mask if keep_token_ids else None,
        router_weights=router_weights,
        groups=None if groups is None else torch.as_tensor(groups, dtype=torch.long).to(mask.device),
        group_names=tuple(group_names),
        sample_index=torch.arange(mask.shape[0], device=mask.device),
        meta={
            "top_k": int(top_k) if isinstance(top_k, int) else (ks.pop() if len(ks) == 1 and None not in ks else 2),
            "model_class": type(model).__name__,
            "router_kinds": [r.site.kind for r in recorders],
        },
    )
