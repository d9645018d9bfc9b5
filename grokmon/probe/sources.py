"""Where probe sets come from: token ids, texts and a tokenizer, an indexable dataset, a dataloader.

:class:`ProbeSources` holds the ``from_*`` constructors; :class:`~grokmon.probe.ProbeSet` inherits
them, so ``ProbeSet.from_dataset(...)`` is the way to call them. Parsing of rows and batches is in
:mod:`grokmon.probe.parsing`, seeded selection in :mod:`grokmon.probe.sampling`, the checks in
:mod:`grokmon.probe.checks`.

Example:
    >>> from grokmon import ProbeSet
    >>> rows = [{"input_ids": list(range(i, i + 16)), "domain": "ab"[i % 2]} for i in range(40)]
    >>> ProbeSet.from_dataset(rows, n=8, seq_len=12, seed=0, group_by="domain").group_counts()
    {'a': 4, 'b': 4}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ProbeError
from .checks import check_n, warn_if_supervision_unseen
from .parsing import (GroupBy, column_labels, describe, encode_groups, label, pack, rows_from_ids, split_batch,
                      split_row, to_row)
from .sampling import sample_indices, stratified_pick

if TYPE_CHECKING:  # pragma: no cover
    from .probeset import ProbeSet

__all__ = ["ProbeSources"]


class ProbeSources:
    """The ``from_*`` constructors of :class:`~grokmon.probe.ProbeSet` (a mixin: ``cls`` is the probe type)."""

    @classmethod
    def from_token_ids(
        cls,
        ids: torch.Tensor | Sequence[Sequence[int]] | Sequence[torch.Tensor],
        *,
        attention_mask: torch.Tensor | None = None,
        groups: Sequence[Any] | torch.Tensor | None = None,
        group_names: Sequence[str] | None = None,
        seq_len: int | None = None,
        pad_token_id: int | None = 0,
        min_length: int = 8,
        vocab_size: int | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> ProbeSet:
        """Build a probe from token ids: an ``[N, T]`` tensor or a list of (ragged) id lists.

        Samples are truncated to ``seq_len``; shorter ones are right-padded with ``pad_token_id``
        (masked out) up to the longest kept sample. A sample with fewer than ``min_length`` tokens
        raises. With ``attention_mask``, only the masked-in tokens of each row are kept (left or
        right padding both work). ``groups`` is one label per sample (str or int) or an int tensor
        indexing ``group_names``.

        Example:
            >>> from grokmon.probe import ProbeSet
            >>> p = ProbeSet.from_token_ids([[5, 6, 7, 8], [1, 2, 3]], min_length=2)
            >>> p.input_ids.tolist(), p.attention_mask.tolist()
            ([[5, 6, 7, 8], [1, 2, 3, 0]], [[1, 1, 1, 1], [1, 1, 1, 0]])
        """
        rows = rows_from_ids(ids, attention_mask)
        gids, gnames = encode_groups(groups, group_names, len(rows))
        src = {"kind": "token_ids"}
        src.update(source or {})
        probe = pack(cls, rows, gids, gnames, seq_len=seq_len, pad_token_id=pad_token_id, min_length=min_length, source=src)
        if vocab_size is not None:
            probe.validate(vocab_size)
        return probe

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        tokenizer: Any,
        *,
        seq_len: int,
        groups: Sequence[Any] | None = None,
        min_length: int = 8,
        add_special_tokens: bool = True,
        vocab_size: int | None = None,
    ) -> ProbeSet:
        """Tokenize ``texts`` with a Hugging Face tokenizer and build a probe from the ids.

        The pad id is the tokenizer's ``pad_token_id`` (else its ``eos_token_id``, else 0); padded
        positions are masked out, so its value does not change the routing of real tokens.

        Example:
            >>> probe = ProbeSet.from_texts(texts, tokenizer, seq_len=128)   # doctest: +SKIP
        """
        if isinstance(texts, str):
            raise ProbeError("from_texts takes a list of texts, got one string: wrap it in a list")
        texts = list(texts)
        if not texts:
            raise ProbeError("the probe set is empty: pass at least one text")
        if not callable(tokenizer):
            raise ProbeError(
                f"from_texts needs a Hugging Face tokenizer, got {type(tokenizer).__name__}: "
                "pass AutoTokenizer.from_pretrained(...) or use ProbeSet.from_token_ids"
            )
        enc = tokenizer(texts, add_special_tokens=add_special_tokens, truncation=True, max_length=seq_len)
        try:
            ids = enc["input_ids"]
        except (KeyError, TypeError, IndexError):
            raise ProbeError(
                f"from_texts needs a Hugging Face tokenizer: calling {type(tokenizer).__name__} gave "
                f"{type(enc).__name__}, not an encoding with 'input_ids'; pass AutoTokenizer.from_pretrained(...)"
            ) from None
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        src = {
            "kind": "texts",
            "tokenizer": str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__),
            "tokenizer_vocab_size": len(tokenizer) if hasattr(tokenizer, "__len__") else None,
        }
        return cls.from_token_ids(
            [list(r) for r in ids], groups=groups, seq_len=seq_len, pad_token_id=0 if pad is None else int(pad),
            min_length=min_length, vocab_size=vocab_size, source=src,
        )

    @classmethod
    def from_dataset(
        cls,
        ds: Any,
        n: int,
        seq_len: int | None = None,
        seed: int = 0,
        group_by: GroupBy = None,
        column: str = "input_ids",
        *,
        pad_token_id: int | None = 0,
        min_length: int = 8,
        vocab_size: int | None = None,
    ) -> ProbeSet:
        """Draw ``n`` samples (seeded) from an indexable dataset.

        ``ds`` is anything with ``len()`` and ``ds[i]``: a Hugging Face ``datasets.Dataset`` (rows are
        dicts), a torch ``Dataset`` returning dicts, id tensors / lists, or tuples whose first item is
        the ids (``TensorDataset``). ``column`` names the ids in dict rows; an ``attention_mask`` in a
        row is honoured. ``group_by`` is a row key (dict rows), a tuple position (tuple rows) or a
        function ``row -> label``. Dict rows with ``labels`` (``-100`` = unsupervised) are checked: a
        ``RuntimeWarning`` says how many chosen rows keep none of their supervised tokens within
        ``seq_len`` (the probe loss, which the stages read, would not see the task).

        Selection: the same ``seed`` gives the same samples. With ``group_by`` the selection is
        stratified: per-group counts are as equal as possible (a group smaller than its share is
        taken whole and the remainder spread over the others; leftover single samples go to the
        groups first in name order); within a group, samples come in seeded random order.
        A DataLoader is passed on to :meth:`from_dataloader`.

        Example:
            >>> from grokmon.probe import ProbeSet
            >>> rows = [{"input_ids": list(range(i, i + 16)), "domain": "ab"[i % 2]} for i in range(40)]
            >>> p = ProbeSet.from_dataset(rows, n=8, seq_len=12, seed=0, group_by="domain")
            >>> p.input_ids.shape, p.group_counts()
            (torch.Size([8, 12]), {'a': 4, 'b': 4})
        """
        if isinstance(ds, torch.utils.data.DataLoader):
            return cls.from_dataloader(ds, n, seed=seed, seq_len=seq_len, group_by=group_by, column=column,
                                       pad_token_id=pad_token_id, min_length=min_length, vocab_size=vocab_size)
        try:
            size = len(ds)
        except TypeError:
            raise ProbeError(
                f"{type(ds).__name__} has no len(): use ProbeSet.from_dataloader for iterable datasets"
            ) from None
        check_n(n, size)
        gen = torch.Generator().manual_seed(int(seed))
        if group_by is None:
            chosen = sample_indices(size, n, gen)
            labels = None
        else:
            all_labels = column_labels(ds, group_by, size)
            chosen = stratified_pick(all_labels, n, gen)
            labels = [all_labels[i] for i in chosen]
        rows, raw = [], []
        for i in chosen:
            raw.append(ds[i])
            ids, mask = split_row(raw[-1], column, where=f"dataset row {i}")
            rows.append(to_row(ids, mask, where=f"dataset row {i}"))
        warn_if_supervision_unseen(raw, seq_len)
        gids, gnames = encode_groups(labels, None, len(rows))
        src = {"kind": "dataset", "dataset": type(ds).__name__, "dataset_len": size, "n": n, "seed": seed,
               "group_by": describe(group_by), "column": column, "indices": chosen}
        probe = pack(cls, rows, gids, gnames, seq_len=seq_len, pad_token_id=pad_token_id, min_length=min_length,
                      source=src, where=[f"dataset row {i}" for i in chosen])
        if vocab_size is not None:
            probe.validate(vocab_size)
        return probe

    @classmethod
    def from_dataloader(
        cls,
        dl: Any,
        n: int,
        seed: int = 0,
        *,
        seq_len: int | None = None,
        group_by: GroupBy = None,
        column: str = "input_ids",
        pad_token_id: int | None = 0,
        min_length: int = 8,
        vocab_size: int | None = None,
        oversample: int = 4,
    ) -> ProbeSet:
        """Draw batches from ``dl`` until ``n`` samples are collected.

        Batches may be dicts (``input_ids`` [+ ``attention_mask``, group column]), id tensors, or
        tuples whose first item is the ids. The draw runs under ``seed`` with the global torch RNG
        and the loader's own generator saved and restored, so the same seed gives the same samples
        and the training data order is not disturbed. With ``group_by``, up to ``oversample * n``
        samples are drawn and the stratified selection of :meth:`from_dataset` picks ``n``.
        """
        check_n(n, None)
        want = n * max(1, oversample) if group_by is not None else n
        pool_ids: list[torch.Tensor] = []
        pool_labels: list[Any] = []
        gens = [g for g in (getattr(dl, "generator", None), getattr(getattr(dl, "sampler", None), "generator", None))
                if isinstance(g, torch.Generator)]
        states = [g.get_state() for g in gens]
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                for g in gens:
                    g.manual_seed(int(seed))
                for b, batch in enumerate(dl):
                    ids, mask, labels = split_batch(batch, column, group_by, where=f"batch {b}")
                    for r in range(len(ids)):
                        pool_ids.append(to_row(ids[r], None if mask is None else mask[r], where=f"batch {b} row {r}"))
                        if group_by is not None:
                            pool_labels.append(label(labels[r]))
                    if len(pool_ids) >= want:
                        break
        finally:
            for g, s in zip(gens, states):
                g.set_state(s)
        check_n(n, len(pool_ids), what="the dataloader")
        if group_by is None:
            chosen = list(range(n))
            labels_out = None
        else:
            chosen = stratified_pick(pool_labels, n, torch.Generator().manual_seed(int(seed)))
            labels_out = [pool_labels[i] for i in chosen]
        rows = [pool_ids[i] for i in chosen]
        gids, gnames = encode_groups(labels_out, None, len(rows))
        src = {"kind": "dataloader", "n": n, "seed": seed, "group_by": describe(group_by), "column": column,
               "drawn": len(pool_ids)}
        probe = pack(cls, rows, gids, gnames, seq_len=seq_len, pad_token_id=pad_token_id, min_length=min_length,
                      source=src, where=[f"drawn sample {i}" for i in chosen])
        if vocab_size is not None:
            probe.validate(vocab_size)
        return probe
