"""Every check of probe input in one place: token-id tensors, masks, groups, sizes, vocabulary.

Used where probe input enters: :class:`~grokmon.probe.ProbeSet` (construction, ``validate``), its
sources (``from_*`` parsing) and :func:`grokmon.routing.capture_pathways` (raw tensors handed to a
capture). Each check raises a :class:`~grokmon.errors.ProbeError` (a ``ConfigError`` for a bad
argument) whose message names the fix; docs/errors.md lists them.

Example:
    >>> import torch
    >>> check_vocab(torch.tensor([[1, 2], [3, 9]]), 8)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    grokmon.errors.ProbeError: tokenizer/vocab mismatch: probe has token id 9 but the model's vocabulary has 8 ...
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import ConfigError, ProbeError

__all__ = [
    "check_groups", "check_integer_tensor", "check_model_inputs", "check_n", "check_negative", "check_probe_tensors",
    "check_vocab", "warn_if_supervision_unseen",
]


def check_integer_tensor(t: torch.Tensor, name: str) -> None:
    """Token ids, groups and indices must be integer tensors (not floats, bools or embeddings)."""
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ProbeError(
            f"{name} must hold integer token ids, got dtype {t.dtype}: pass token ids, not embeddings or floats"
        )


def check_negative(ids: torch.Tensor, where: str) -> None:
    """No negative ids (the label pad ``-100`` is the usual culprit)."""
    if ids.numel() and bool((ids < 0).any()):
        bad = int(ids[ids < 0][0])
        raise ProbeError(f"{where} has negative token id {bad}: pass real token ids (labels use -100; input_ids must not)")


def check_vocab(ids: torch.Tensor, vocab_size: int) -> None:
    """Every id below ``vocab_size`` (a probe built with another tokenizer fails here)."""
    if int(vocab_size) <= 0:
        raise ConfigError(f"vocab_size must be positive, got {vocab_size}")
    top = int(ids.max())
    if top >= vocab_size:
        raise ProbeError(
            f"tokenizer/vocab mismatch: probe has token id {top} but the model's vocabulary has "
            f"{vocab_size} ids; build the probe with the model's tokenizer"
        )


def check_n(n: Any, size: int | None, what: str = "the dataset") -> None:
    """``n`` (the probe size) is a positive int no larger than the ``size`` samples available."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ProbeError(f"n must be a positive int (the probe size), got {n!r}")
    if size is not None and n > size:
        raise ProbeError(f"n={n} is larger than {what} ({size} samples): lower n or use more data")


def check_probe_tensors(ids: Any, mask: torch.Tensor | None) -> None:
    """A :class:`ProbeSet`'s ``input_ids [N, T]`` and optional 0/1 ``attention_mask [N, T]``."""
    if not isinstance(ids, torch.Tensor):
        raise ProbeError("ProbeSet.input_ids must be a tensor: build it with ProbeSet.from_token_ids(...)")
    check_integer_tensor(ids, "input_ids")
    if ids.dim() != 2:
        raise ProbeError(f"ProbeSet.input_ids must be [N, T], got shape {tuple(ids.shape)}")
    n, t = ids.shape
    if n == 0 or t == 0:
        raise ProbeError(f"the probe set is empty (shape {tuple(ids.shape)}): give it samples with at least 1 token each")
    check_negative(ids, "probe")
    if mask is None:
        return
    if tuple(mask.shape) != (n, t):
        raise ProbeError(f"attention_mask has shape {tuple(mask.shape)} but input_ids has {(n, t)}")
    bad = (mask != 0) & (mask != 1)  # checked before .long(), which would turn 0.5 into 0
    if bool(bad.any()):
        raise ProbeError(f"attention_mask must hold only 0 and 1 (1 = real token, 0 = padding), got {mask[bad][0].item()}")
    empty = mask.long().sum(1) == 0
    if bool(empty.any()):
        raise ProbeError(f"probe sample {int(empty.nonzero()[0])} has no real token (all-zero attention_mask): drop it")


def check_groups(groups: torch.Tensor, group_names: Sequence[str], n: int, *, whole_probe: bool) -> None:
    """One integer group id per sample, each indexing ``group_names``; no group of one sample in a whole probe."""
    check_integer_tensor(groups, "groups")
    if tuple(groups.shape) != (n,):
        raise ProbeError(f"groups has {tuple(groups.shape)} entries but the probe has {n} samples: pass one label per sample")
    if bool((groups < 0).any()) or int(groups.max()) >= len(group_names):
        raise ProbeError(f"group ids must lie in [0, {len(group_names)}) to index group_names")
    if whole_probe:  # a shard may hold one sample of a group; the full probe may not
        counts = torch.bincount(groups.long(), minlength=len(group_names))
        for name, c in zip(group_names, counts.tolist()):
            if c == 1:
                raise ProbeError(f"group {name!r} has 1 sample: pathway distance needs pairs; add samples or merge the group")


def check_model_inputs(input_ids: Any, attention_mask: torch.Tensor | None, vocab: int | None) -> None:
    """Raw ``[samples, seq]`` ids (and mask) handed to a capture, checked against the model's vocabulary."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ProbeError(f"input_ids must be a 2-D [samples, seq] integer tensor, got {shape}")
    if input_ids.numel() == 0:
        raise ProbeError(f"input_ids is empty (shape {tuple(input_ids.shape)}): build a non-empty ProbeSet")
    check_integer_tensor(input_ids, "input_ids")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ProbeError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    lo = int(input_ids.min())
    if lo < 0:
        raise ProbeError(f"input_ids contains a negative id ({lo}): replace padding ids by a real token id "
                         "and mark them with attention_mask=0")
    if vocab is not None:
        check_vocab(input_ids, vocab)
    if attention_mask is not None:
        empty = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ProbeError(f"probe samples {empty[:10]} have no non-padding token: drop them from the ProbeSet")


def _sees_supervision(labels: Any, mask: Any, seq_len: int | None) -> bool:
    """Whether the next-token probe loss of one row predicts at least one supervised token.

    ``labels`` are aligned with the row's ids (Hugging Face causal-LM convention, ``-100`` =
    unsupervised); the probe keeps the masked-in ids, truncated to ``seq_len``, and its loss
    predicts every kept token but the first.
    """
    lab = torch.as_tensor(labels).flatten()
    if mask is not None:
        lab = lab[torch.as_tensor(mask).flatten().bool()]
    if seq_len is not None:
        lab = lab[:seq_len]
    return bool((lab[1:] != -100).any())


def warn_if_supervision_unseen(rows: Sequence[Any], seq_len: int | None) -> int:
    """Warn when probe rows (dicts with ``labels``) keep none of their supervised tokens.

    The stage tracker reads the probe loss; if the probe rows lose every supervised token (the
    answer after a prompt, cut off by ``seq_len``, or rows that are prompts only), that loss cannot
    see what the model is trained on. Returns the number of such rows (rows without ``labels``
    are not checked).

    Example:
        >>> rows = [{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, -100, 4]}]
        >>> warn_if_supervision_unseen(rows, seq_len=4)
        0
    """
    checked = [r for r in rows if isinstance(r, Mapping) and r.get("labels") is not None]
    blind = sum(1 for r in checked if not _sees_supervision(r["labels"], r.get("attention_mask"), seq_len))
    if blind:
        cut = f" within seq_len={seq_len}" if seq_len is not None else ""
        warnings.warn(
            f"grokmon: {blind} of {len(checked)} probe samples keep none of their supervised tokens (labels != -100)"
            f"{cut}: the probe loss cannot see what the model is trained on, so the stages read from it say "
            "nothing about the task; raise seq_len or probe whole training sequences (prompt and answer)",
            RuntimeWarning, stacklevel=3)
    return blind
