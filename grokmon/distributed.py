"""Rank helpers for the monitor: who am I, which module to probe, agreeing, gathering shards.

Every rank probes its equal shard of the probe at the same steps (a forward is a collective under
FSDP and ZeRO-3). Afterwards the ranks agree that every capture succeeded and gather the shards'
pathways, so each rank holds the whole probe's :class:`~grokmon.pathways.Pathways` in probe order
and computes the same metrics; only world rank 0 writes to the sinks.

Without an initialised process group every helper is the single-process identity.

Example:
    >>> rank_and_world()
    (0, 1)
    >>> all_agree(True)
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .pathways import Pathways

__all__ = ["rank_and_world", "is_main_process", "unwrap_for_probe", "collective_device", "all_agree",
           "gather_pathways"]


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(world rank, world size)`` of the default process group; ``(0, 1)`` without one."""
    if _initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on world rank 0 (the only rank that logs)."""
    return rank_and_world()[0] == 0


def unwrap_for_probe(model: nn.Module, accelerator: Any = None) -> nn.Module:
    """The module to run the probe through.

    DDP's inner ``.module`` (calling it skips DDP's gradient-sync collectives and buffer broadcast);
    FSDP and DeepSpeed roots stay wrapped (their forward gathers the sharded parameters);
    ``torch.compile`` wrappers are dropped (hooks need the eager modules).

    Example:
        >>> unwrap_for_probe(nn.Linear(2, 2)).__class__.__name__
        'Linear'
    """
    if accelerator is not None:
        state = getattr(accelerator, "state", None)
        sharded = (getattr(state, "fsdp_plugin", None) is not None
                   or getattr(state, "deepspeed_plugin", None) is not None)
        if not sharded:
            model = accelerator.unwrap_model(model, keep_torch_compile=False)
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


def collective_device() -> torch.device:
    """Where tensors for collectives must live: the current CUDA device under NCCL, else CPU."""
    if _initialized() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_agree(ok: bool) -> bool:
    """True on every rank iff ``ok`` is True on every rank (an all_reduce MIN; a no-op alone)."""
    if not _initialized() or torch.distributed.get_world_size() == 1:
        return bool(ok)
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=collective_device())
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


def gather_pathways(
    shard: Pathways,
    loss: torch.Tensor | None,
    sample_index: torch.Tensor,
    *,
    num_samples: int,
    groups: torch.Tensor | None,
    group_names: tuple[str, ...],
    counts_valid: bool = True,
) -> tuple[Pathways, torch.Tensor | None]:
    """All ranks get the whole probe's pathways (and per-sample loss) in probe order, on CPU.

    ``shard`` holds this rank's captured rows, ``sample_index`` their positions in the full probe
    (``-1`` for rows that are not real samples). Per-sample tensors are padded to the common shard
    width and all-gathered; ``expert_counts`` (token counts, not per sample) are summed with
    all_reduce, so a rank must capture each of its real samples once and nothing else — a rank with
    no real sample passes ``counts_valid=False`` and contributes zero counts. Every rank must call
    this with the same ``loss is None`` and ``token_ids is None`` choices.
    """
    dist = torch.distributed
    world = dist.get_world_size()
    width = math.ceil(num_samples / world)
    device = collective_device()
    n = sample_index.shape[0]
    if n > width:
        raise ValueError(f"a shard has {n} rows but the common width is {width}")

    def pad(t: torch.Tensor, value: float = 0) -> torch.Tensor:
        out = torch.full((width, *t.shape[1:]), value, dtype=t.dtype, device=device)
        out[:n] = t.detach().to(device)
        return out

    pieces = {"index": pad(sample_index.long(), -1), "weights": pad(shard.mean_weights.float())}
    if loss is not None:
        pieces["loss"] = pad(loss.float())
    if shard.token_ids is not None:
        pieces["token_ids"] = pad(shard.token_ids, -1)
        pieces["token_mask"] = pad(shard.token_mask if shard.token_mask is not None
                                   else torch.ones(shard.token_ids.shape[:2], dtype=torch.bool), False)
    gathered = {}
    for key, tensor in pieces.items():
        dtype = tensor.dtype
        if dtype in (torch.bool, torch.int8, torch.int16, torch.uint8):
            tensor = tensor.to(torch.int32)  # gloo gathers neither bool nor small integers
        bucket = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(bucket, tensor)
        gathered[key] = torch.cat(bucket).cpu().to(dtype)
    counts = shard.expert_counts.detach().to(device=device, dtype=torch.int64).clone()
    if not counts_valid:
        counts.zero_()
    dist.all_reduce(counts)
    index = gathered["index"]
    keep = index >= 0
    order = torch.argsort(index[keep])
    found = index[keep][order]
    if not torch.equal(found, torch.arange(num_samples)):
        raise ValueError(f"the gathered shards do not cover samples 0..{num_samples - 1} exactly once")

    def full(key: str) -> torch.Tensor | None:
        return gathered[key][keep][order] if key in gathered else None

    pathways = Pathways(
        mean_weights=full("weights"), layers=shard.layers, router_names=shard.router_names,
        num_experts=shard.num_experts, expert_counts=counts.cpu(), token_ids=full("token_ids"),
        token_mask=full("token_mask"),
        router_weights=None if shard.router_weights is None else shard.router_weights.detach().cpu(),
        groups=groups, group_names=tuple(group_names), sample_index=torch.arange(num_samples), meta=shard.meta,
    )
    return pathways, full("loss")
