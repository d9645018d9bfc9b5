"""Turning what users hand to ``ProbeSet.from_*`` into rows of token ids, group ids and one packed probe.

Rows come as tensors, lists of ids, dicts (``datasets`` rows, collated batches) or tuples
(``TensorDataset``); group labels as strings, ints, 0-d tensors or a function of the row.
:func:`pack` is the one place rows become an ``[N, T]`` probe (truncate, check lengths, right-pad).

Example:
    >>> to_row([5, 6, 7], None, where="sample 0").tolist()
    [5, 6, 7]
    >>> encode_groups(["web", "code", "web"], None, 3)
    (tensor([1, 0, 1]), ('code', 'web'))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..errors import ConfigError, ProbeError
from .checks import check_integer_tensor, check_negative
from .sampling import sort_labels

__all__ = ["GroupBy", "column_labels", "describe", "encode_groups", "label", "pack", "rows_from_ids", "split_batch",
           "split_row", "to_row"]

GroupBy = str | int | Callable[[Any], Any] | None


def to_row(ids: Any, mask: Any, where: str) -> torch.Tensor:
    """One sample as a 1-D int64 tensor of its real tokens."""
    if isinstance(ids, torch.Tensor):
        t = ids
    else:
        try:
            seq = list(ids)
        except TypeError:
            raise ProbeError(f"{where}: token ids must be a sequence of ints, got {type(ids).__name__}") from None
        for v in seq:
            if isinstance(v, bool) or not hasattr(v, "__index__"):  # ints and numpy ints; not floats
                raise ProbeError(f"{where}: token ids must be integers, got {v!r}: pass token ids, not text or floats")
        t = torch.tensor([int(v) for v in seq], dtype=torch.long)
    check_integer_tensor(t, f"{where}: input_ids")
    if t.dim() != 1:
        t = t.squeeze(0) if t.dim() == 2 and t.shape[0] == 1 else t
    if t.dim() != 1:
        raise ProbeError(f"{where}: one sample's ids must be 1-D, got shape {tuple(t.shape)}")
    t = t.long()
    if mask is not None:
        m = torch.as_tensor(mask)
        if m.shape != t.shape:
            raise ProbeError(f"{where}: attention_mask shape {tuple(m.shape)} differs from input_ids {tuple(t.shape)}")
        t = t[m.bool()]
    check_negative(t, where)
    return t


def rows_from_ids(ids: Any, attention_mask: Any) -> list[torch.Tensor]:
    """The rows of an ``[N, T]`` tensor or a list of (ragged) id lists, masked-out tokens dropped."""
    if isinstance(ids, torch.Tensor):
        check_integer_tensor(ids, "input_ids")
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise ProbeError(f"token ids must be [N, T], got shape {tuple(ids.shape)}")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(ids.shape):
            raise ProbeError(f"attention_mask shape {tuple(attention_mask.shape)} differs from ids {tuple(ids.shape)}")
        return [to_row(ids[i], None if attention_mask is None else attention_mask[i], f"sample {i}")
                for i in range(ids.shape[0])]
    if isinstance(ids, (str, bytes)):
        raise ProbeError("from_token_ids got a string: use ProbeSet.from_texts(texts, tokenizer, ...)")
    rows = list(ids)
    masks = [None] * len(rows) if attention_mask is None else list(attention_mask)
    if len(masks) != len(rows):
        raise ProbeError(f"attention_mask has {len(masks)} rows but there are {len(rows)} samples")
    return [to_row(r, m, f"sample {i}") for i, (r, m) in enumerate(zip(rows, masks))]


def pack(cls: type, rows: list[torch.Tensor], gids: torch.Tensor | None, gnames: tuple[str, ...], *,
         seq_len: int | None, pad_token_id: int | None, min_length: int, source: dict,
         where: list[str] | None = None) -> Any:
    """Truncate, check lengths, right-pad: the one place samples become an ``[N, T]`` probe of type ``cls``."""
    if not rows:
        raise ProbeError("the probe set is empty: pass at least one sample (two per group for pathway distance)")
    if seq_len is not None and seq_len < 1:
        raise ConfigError(f"seq_len must be >= 1, got {seq_len}")
    if seq_len is not None and seq_len < min_length:
        raise ConfigError(f"seq_len={seq_len} is below min_length={min_length}: raise seq_len or lower min_length")
    rows = [r[:seq_len] if seq_len is not None else r for r in rows]
    for i, r in enumerate(rows):
        if r.numel() < max(1, min_length):
            name = where[i] if where else f"sample {i}"
            raise ProbeError(
                f"{name} has {r.numel()} tokens, fewer than min_length={min_length}: drop short samples, "
                f"lower min_length, or use longer texts"
            )
    t = max(r.numel() for r in rows)
    ragged = any(r.numel() != t for r in rows)
    if ragged and pad_token_id is None:
        raise ProbeError(
            "samples have different lengths and pad_token_id=None: pass pad_token_id (padding is masked out) "
            "or a seq_len no longer than the shortest sample"
        )
    ids = torch.full((len(rows), t), int(pad_token_id or 0), dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long) if ragged else None
    for i, r in enumerate(rows):
        ids[i, : r.numel()] = r
        if mask is not None:
            mask[i, : r.numel()] = 1
    source = {**source, "seq_len": seq_len, "min_length": min_length, "pad_token_id": pad_token_id}
    return cls(ids, mask, gids, gnames, source)


def label(x: Any) -> Any:
    """A group label as a plain value (a one-element tensor becomes its item)."""
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ProbeError(f"a group label must be one value per sample, got a tensor of shape {tuple(x.shape)}")
        return x.item()
    return x


def encode_groups(groups: Any, group_names: Sequence[str] | None, n: int) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """Per-sample labels (or int ids with ``group_names``) as ``(group ids [N], names in sorted order)``."""
    if groups is None:
        return None, ()
    if isinstance(groups, torch.Tensor):
        if groups.dim() != 1:
            raise ProbeError(f"groups must be 1-D (one label per sample), got shape {tuple(groups.shape)}")
        if group_names is not None:
            check_integer_tensor(groups, "groups")
            if groups.numel() != n:
                raise ProbeError(f"groups has {groups.numel()} labels but there are {n} samples: pass one per sample")
            return groups.long(), tuple(str(g) for g in group_names)
        groups = groups.tolist()
    labels = [label(g) for g in groups]
    if len(labels) != n:
        raise ProbeError(f"groups has {len(labels)} labels but there are {n} samples: pass one label per sample")
    if any(x is None for x in labels):
        raise ProbeError("a group label is None: give every sample a group (or put the unlabelled ones in 'other')")
    names = sort_labels(labels)
    if group_names is not None:
        raise ProbeError("group_names goes with integer group ids in a tensor; with labels, the names are the labels")
    index = {g: i for i, g in enumerate(names)}
    return torch.tensor([index[x] for x in labels], dtype=torch.long), tuple(str(g) for g in names)


def _row_label(row: Any, group_by: GroupBy, where: str) -> Any:
    if callable(group_by):
        return label(group_by(row))
    if isinstance(row, Mapping):
        if group_by not in row:
            raise ProbeError(f"{where} has no field {group_by!r} to group by; its fields are {sorted(row)}")
        return label(row[group_by])
    if isinstance(row, (tuple, list)) and isinstance(group_by, int):
        return label(row[group_by])
    raise ProbeError(
        f"group_by={group_by!r} needs dict rows, tuple rows with an int position, or a function row -> label"
    )


def column_labels(ds: Any, group_by: GroupBy, size: int) -> list[Any]:
    """Every row's group label (one column read for a Hugging Face dataset, else row by row)."""
    if isinstance(group_by, str):
        try:  # Hugging Face datasets: a column read is one fast call
            col = ds[group_by]
            if not isinstance(col, (str, bytes, Mapping)) and len(col) == size:
                return [label(x) for x in col]
        except Exception:  # noqa: BLE001 - not a column-indexable dataset: read rows
            pass
    return [_row_label(ds[i], group_by, f"dataset row {i}") for i in range(size)]


def split_row(row: Any, column: str, where: str) -> tuple[Any, Any]:
    """``(ids, attention_mask or None)`` of one dataset row."""
    if isinstance(row, Mapping):
        if column not in row:
            raise ProbeError(
                f"{where} has no {column!r} field (fields: {sorted(row)}): tokenize the dataset or pass column="
            )
        return row[column], row.get("attention_mask")
    if isinstance(row, tuple) and row and isinstance(row[0], (torch.Tensor, list, tuple)):
        return row[0], None
    if isinstance(row, str):
        raise ProbeError(f"{where} is text, not token ids: tokenize it or use ProbeSet.from_texts")
    return row, None


def split_batch(batch: Any, column: str, group_by: GroupBy, where: str) -> tuple[Any, Any, Any]:
    """``(ids, attention_mask or None, group labels or None)`` of one dataloader batch."""
    labels = None
    if isinstance(batch, Mapping):
        if column not in batch:
            raise ProbeError(f"{where} has no {column!r} key (keys: {sorted(batch)}): pass column=")
        ids, mask = batch[column], batch.get("attention_mask")
        if group_by is not None:
            if callable(group_by):
                labels = group_by(batch)
            elif group_by not in batch:
                raise ProbeError(f"{where} has no {group_by!r} key to group by (keys: {sorted(batch)})")
            else:
                labels = batch[group_by]
    elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        ids, mask = batch[0], None
        if group_by is not None:
            labels = group_by(batch) if callable(group_by) else batch[group_by]
    else:
        ids, mask = batch, None
        if group_by is not None:
            labels = group_by(batch) if callable(group_by) else None
            if labels is None:
                raise ProbeError(f"group_by={group_by!r} needs dict or tuple batches, or a function batch -> labels")
    if isinstance(ids, torch.Tensor) and ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if labels is not None and len(labels) != len(ids):
        raise ProbeError(f"{where}: {len(labels)} group labels for {len(ids)} samples")
    return ids, mask, labels


def describe(group_by: GroupBy) -> Any:
    """``group_by`` as JSON-able source metadata (a function by its name)."""
    if callable(group_by):
        return getattr(group_by, "__name__", "function")
    return group_by
