"""ProbeSet: the fixed training samples that every probe routes through the model.

A probe set is built once (seeded), saved with the run and reloaded on resume, so the same samples
are probed before and after a restart. It can come from a Hugging Face ``datasets.Dataset`` (or any
indexable object with ``len()`` whose rows are dicts, tensors or lists of ids), a torch
``Dataset`` / ``DataLoader``, a tensor or list of token ids, or texts plus a tokenizer.

Layout: ``input_ids [N, T]`` int64, right-padded; ``attention_mask [N, T]`` int64 (1 = real token)
or ``None`` when every sample has exactly ``T`` tokens (the cheapest probe); ``groups [N]`` int64
indices into ``group_names`` (e.g. the data domain) or ``None``.

Bad input fails at construction with a :class:`~grokmon.errors.ProbeError` naming the fix: an
empty set, ``n`` larger than the dataset, samples shorter than ``min_length``, non-integer or
negative ids, ids outside the model's vocabulary (:meth:`ProbeSet.validate`), a groups list whose
length differs from the samples, and groups with a single sample (pathway distance compares pairs
of samples within a group).

Sharding (:meth:`ProbeSet.shard`): sample ``i`` goes to rank ``i % world_size``; shards are padded to
the same size by repeating samples of the shard, so every rank runs the same number of forwards
(a collective under FSDP / ZeRO-3). ``sample_index`` holds each row's position in the unsharded
probe and ``-1`` for a padding duplicate (``is_padding`` is the same information as a mask).

Example:
    >>> import torch
    >>> ids = torch.arange(4 * 10).reshape(4, 10)
    >>> probe = ProbeSet.from_token_ids(ids, groups=["web", "web", "code", "code"], min_length=4)
    >>> len(probe), probe.num_tokens, probe.group_names
    (4, 40, ('code', 'web'))
    >>> probe.validate(vocab_size=100)
    >>> shard = probe.shard(rank=1, world_size=3)   # samples 1 and 4 -> [1] padded to 2 rows
    >>> shard.sample_index.tolist()
    [1, -1]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, ProbeError

__all__ = ["ProbeSet", "stratified_counts"]

_FORMAT = "grokmon.probe"
_VERSION = 1

GroupBy = str | int | Callable[[Any], Any] | None


@dataclass(eq=False)
class ProbeSet:
    """A fixed, validated set of probe samples (see the module doc for the layout)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    group_names: tuple[str, ...] = ()
    source: dict = field(default_factory=dict)
    sample_index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        ids = self.input_ids
        if not isinstance(ids, torch.Tensor):
            raise ProbeError("ProbeSet.input_ids must be a tensor: build it with ProbeSet.from_token_ids(...)")
        _check_integer_tensor(ids, "input_ids")
        if ids.dim() != 2:
            raise ProbeError(f"ProbeSet.input_ids must be [N, T], got shape {tuple(ids.shape)}")
        n, t = ids.shape
        if n == 0 or t == 0:
            raise ProbeError(
                f"the probe set is empty (shape {tuple(ids.shape)}): give it samples with at least 1 token each"
            )
        if bool((ids < 0).any()):
            bad = int(ids[ids < 0][0])
            raise ProbeError(
                f"probe has negative token id {bad}: pass real token ids (labels use -100; input_ids must not)"
            )
        self.input_ids = ids.long()
        self.group_names = tuple(str(g) for g in self.group_names)
        self.source = dict(self.source)
        if self.attention_mask is not None:
            m = self.attention_mask
            if tuple(m.shape) != (n, t):
                raise ProbeError(f"attention_mask has shape {tuple(m.shape)} but input_ids has {(n, t)}")
            bad = (m != 0) & (m != 1)  # checked before .long(), which would turn 0.5 into 0
            if bool(bad.any()):
                raise ProbeError(
                    f"attention_mask must hold only 0 and 1 (1 = real token, 0 = padding), got {m[bad][0].item()}"
                )
            m = m.long()
            if bool((m.sum(1) == 0).any()):
                row = int((m.sum(1) == 0).nonzero()[0])
                raise ProbeError(f"probe sample {row} has no real token (all-zero attention_mask): drop it")
            self.attention_mask = m
        if self.groups is not None:
            g = self.groups
            if not isinstance(g, torch.Tensor):
                g = torch.as_tensor(g)
            _check_integer_tensor(g, "groups")
            if tuple(g.shape) != (n,):
                raise ProbeError(
                    f"groups has {tuple(g.shape)} entries but the probe has {n} samples: pass one label per sample"
                )
            if not self.group_names:
                self.group_names = tuple(str(i) for i in range(int(g.max()) + 1))
            if bool((g < 0).any()) or int(g.max()) >= len(self.group_names):
                raise ProbeError(f"group ids must lie in [0, {len(self.group_names)}) to index group_names")
            self.groups = g.long()
            if self.sample_index is None:  # a shard may hold one sample of a group; the full probe may not
                counts = torch.bincount(self.groups, minlength=len(self.group_names))
                for name, c in zip(self.group_names, counts.tolist()):
                    if c == 1:
                        raise ProbeError(
                            f"group {name!r} has 1 sample: pathway distance needs pairs; add samples or merge the group"
                        )
        if self.sample_index is not None:
            s = self.sample_index
            _check_integer_tensor(s, "sample_index")
            if tuple(s.shape) != (n,):
                raise ProbeError(f"sample_index must be [N]={n}, got {tuple(s.shape)}")
            self.sample_index = s.long()

    # ------------------------------------------------------------------ constructors

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
            >>> p = ProbeSet.from_token_ids([[5, 6, 7, 8], [1, 2, 3]], min_length=2)
            >>> p.input_ids.tolist(), p.attention_mask.tolist()
            ([[5, 6, 7, 8], [1, 2, 3, 0]], [[1, 1, 1, 1], [1, 1, 1, 0]])
        """
        rows = _rows_from_ids(ids, attention_mask)
        gids, gnames = _encode_groups(groups, group_names, len(rows))
        src = {"kind": "token_ids"}
        src.update(source or {})
        probe = _pack(rows, gids, gnames, seq_len=seq_len, pad_token_id=pad_token_id, min_length=min_length, source=src)
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
        function ``row -> label``.

        Selection: the same ``seed`` gives the same samples. With ``group_by`` the selection is
        stratified: per-group counts are as equal as possible (a group smaller than its share is
        taken whole and the remainder spread over the others; leftover single samples go to the
        groups first in name order); within a group, samples come in seeded random order.
        A DataLoader is passed on to :meth:`from_dataloader`.

        Example:
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
        _check_n(n, size)
        gen = torch.Generator().manual_seed(int(seed))
        if group_by is None:
            chosen = _sample_indices(size, n, gen)
            labels = None
        else:
            all_labels = _column_labels(ds, group_by, size)
            chosen = _stratified_pick(all_labels, n, gen)
            labels = [all_labels[i] for i in chosen]
        rows = []
        for i in chosen:
            ids, mask = _split_row(ds[i], column, where=f"dataset row {i}")
            rows.append(_to_row(ids, mask, where=f"dataset row {i}"))
        gids, gnames = _encode_groups(labels, None, len(rows))
        src = {"kind": "dataset", "dataset": type(ds).__name__, "dataset_len": size, "n": n, "seed": seed,
               "group_by": _describe(group_by), "column": column, "indices": chosen}
        probe = _pack(rows, gids, gnames, seq_len=seq_len, pad_token_id=pad_token_id, min_length=min_length,
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
        _check_n(n, None)
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
                    ids, mask, labels = _split_batch(batch, column, group_by, where=f"batch {b}")
                    for r in range(len(ids)):
                        pool_ids.append(_to_row(ids[r], None if mask is None else mask[r], where=f"batch {b} row {r}"))
                        if group_by is not None:
                            pool_labels.append(_label(labels[r]))
                    if len(pool_ids) >= want:
                        break
        finally:
            for g, s in zip(gens, states):
                g.set_state(s)
        _check_n(n, len(pool_ids), what="the dataloader")
        if group_by is None:
            chosen = list(range(n))
            labels_out = None
        else:
            chosen = _stratified_pick(pool_labels, n, torch.Generator().manual_seed(int(seed)))
            labels_out = [pool_labels[i] for i in chosen]
        rows = [pool_ids[i] for i in chosen]
        gids, gnames = _encode_groups(labels_out, None, len(rows))
        src = {"kind": "dataloader", "n": n, "seed": seed, "group_by": _describe(group_by), "column": column,
               "drawn": len(pool_ids)}
        probe = _pack(rows, gids, gnames, seq_len=seq_len, pad_token_id=pad_token_id, min_length=min_length,
                      source=src, where=[f"drawn sample {i}" for i in chosen])
        if vocab_size is not None:
            probe.validate(vocab_size)
        return probe

    # ------------------------------------------------------------------ properties

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        """Padded length ``T`` of every row."""
        return int(self.input_ids.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        """Real tokens per sample, ``[N]`` int64."""
        if self.attention_mask is None:
            return torch.full((len(self),), self.seq_len, dtype=torch.long)
        return self.attention_mask.sum(1)

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens in the probe."""
        return int(self.lengths.sum())

    @property
    def is_padding(self) -> torch.Tensor:
        """``[N]`` bool: True for the padding duplicates that :meth:`shard` adds."""
        if self.sample_index is None:
            return torch.zeros(len(self), dtype=torch.bool)
        return self.sample_index < 0

    def group_counts(self) -> dict[str, int]:
        """Samples per group name (empty when the probe has no groups)."""
        if self.groups is None:
            return {}
        counts = torch.bincount(self.groups, minlength=len(self.group_names)).tolist()
        return dict(zip(self.group_names, counts))

    # ------------------------------------------------------------------ checks, io

    def validate(self, vocab_size: int) -> None:
        """Raise :class:`ProbeError` when a token id is outside ``[0, vocab_size)``.

        Example:
            >>> ProbeSet.from_token_ids([[1, 2], [3, 9]], min_length=1).validate(8)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            grokmon.errors.ProbeError: tokenizer/vocab mismatch: probe has token id 9 but the model's vocabulary has 8 ...
        """
        if int(vocab_size) <= 0:
            raise ConfigError(f"vocab_size must be positive, got {vocab_size}")
        top = int(self.input_ids.max())
        if top >= vocab_size:
            raise ProbeError(
                f"tokenizer/vocab mismatch: probe has token id {top} but the model's vocabulary has "
                f"{vocab_size} ids; build the probe with the model's tokenizer"
            )

    def fingerprint(self) -> str:
        """sha256 (hex) of the content: ids, mask (all ones when ``None``), groups, group names.

        Two probes with the same samples have the same fingerprint whatever their source metadata,
        so a resumed run can assert it probes the same samples.
        """
        h = hashlib.sha256()
        n, t = self.input_ids.shape
        h.update(f"{_FORMAT}:{n}x{t}".encode())
        h.update(self.input_ids.to(torch.int64).cpu().contiguous().numpy().astype("<i8").tobytes())
        mask = self.attention_mask if self.attention_mask is not None else torch.ones(n, t, dtype=torch.long)
        h.update(mask.to(torch.uint8).cpu().contiguous().numpy().tobytes())
        if self.groups is not None:
            h.update(b"groups")
            h.update(self.groups.to(torch.int64).cpu().contiguous().numpy().astype("<i8").tobytes())
            h.update(json.dumps(list(self.group_names)).encode())
        if self.sample_index is not None:
            h.update(b"sample_index")
            h.update(self.sample_index.to(torch.int64).cpu().contiguous().numpy().astype("<i8").tobytes())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the probe to ``path`` (``torch.save`` of compact tensors + JSON-able metadata).

        Example:
            >>> probe.save("grokmon_out/probe.pt")   # doctest: +SKIP
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = self.input_ids
        ids = ids.to(torch.int32) if int(ids.max()) < 2**31 else ids
        payload = {
            "format": _FORMAT,
            "version": _VERSION,
            "input_ids": ids.cpu().clone(),
            "attention_mask": None if self.attention_mask is None else self.attention_mask.to(torch.bool).cpu().clone(),
            "groups": None if self.groups is None else self.groups.to(torch.int32).cpu().clone(),
            "group_names": list(self.group_names),
            "sample_index": None if self.sample_index is None else self.sample_index.cpu().clone(),
            "source": json.loads(json.dumps(self.source, default=str)),
            "fingerprint": self.fingerprint(),
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)  # a crash mid-write never leaves a half probe behind
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, expected_fingerprint: str | None = None) -> ProbeSet:
        """Read a probe written by :meth:`save`; check its stored (and an expected) fingerprint."""
        path = Path(path)
        if not path.exists():
            raise ProbeError(f"no probe file at {path}: save one with ProbeSet.save(path) or rebuild the probe")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle / zip errors: name the file
            raise ProbeError(f"{path} is not a readable grokmon probe file ({e}); rebuild the probe") from e
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ProbeError(f"{path} is not a grokmon probe file (written by ProbeSet.save)")
        if d.get("version", 0) > _VERSION:
            raise ProbeError(f"{path} was written by a newer grokmon (format {d['version']}): upgrade grokmon")
        mask = d["attention_mask"]
        probe = cls(
            input_ids=d["input_ids"].long(),
            attention_mask=None if mask is None else mask.long(),
            groups=None if d["groups"] is None else d["groups"].long(),
            group_names=tuple(d["group_names"]),
            source=d["source"],
            sample_index=d["sample_index"],
        )
        fp = probe.fingerprint()
        if fp != d["fingerprint"]:
            raise ProbeError(
                f"{path} is corrupted: its content does not match its stored fingerprint; rebuild the probe"
            )
        if expected_fingerprint is not None and fp != expected_fingerprint:
            raise ProbeError(
                f"{path} holds a different probe ({fp[:12]}) than the run was started with "
                f"({expected_fingerprint[:12]}): restore the run's own probe file so metrics stay comparable"
            )
        return probe

    # ------------------------------------------------------------------ use

    def shard(self, rank: int, world_size: int) -> ProbeSet:
        """This rank's equal-size share: samples ``rank, rank + world, ...``, padded by repetition.

        Every shard has ``ceil(N / world_size)`` rows. Padding rows repeat the shard's own samples
        (sample 0 when the shard is empty) and have ``sample_index == -1``; drop them with
        ``~shard.is_padding`` before computing metrics.
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"shard needs 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if self.sample_index is not None:
            raise ConfigError("this probe is already a shard: shard the full probe instead")
        n = len(self)
        size = math.ceil(n / world_size)
        real = list(range(rank, n, world_size))
        src_rows = real or [0]
        rows = real + [src_rows[i % len(src_rows)] for i in range(size - len(real))]
        idx = torch.tensor(rows, dtype=torch.long)
        sample_index = torch.tensor(real + [-1] * (size - len(real)), dtype=torch.long)
        return ProbeSet(
            input_ids=self.input_ids[idx],
            attention_mask=None if self.attention_mask is None else self.attention_mask[idx],
            groups=None if self.groups is None else self.groups[idx],
            group_names=self.group_names,
            source={**self.source, "shard": {"rank": rank, "world_size": world_size, "of": n}},
            sample_index=sample_index,
        )

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Yield ``(input_ids, attention_mask)`` slices of at most ``batch_size`` rows, in order."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        for s in range(0, len(self), batch_size):
            mask = None if self.attention_mask is None else self.attention_mask[s:s + batch_size]
            yield self.input_ids[s:s + batch_size], mask

    def to(self, device: torch.device | str) -> ProbeSet:
        """A copy with the tensors on ``device`` (metadata shared)."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ProbeSet(mv(self.input_ids), mv(self.attention_mask), mv(self.groups), self.group_names,
                        self.source, mv(self.sample_index))

    def __repr__(self) -> str:
        g = f", groups={self.group_counts()}" if self.groups is not None else ""
        return f"ProbeSet(n={len(self)}, seq_len={self.seq_len}, tokens={self.num_tokens}{g})"


# ---------------------------------------------------------------------- helpers


def stratified_counts(available: Sequence[int], n: int) -> list[int]:
    """Per-group sample counts that add up to ``n`` and are as equal as possible.

    Water-filling: a group with fewer samples than its share is taken whole and the rest is spread
    over the others; leftover single samples go to the first groups (in the given order).

    Example:
        >>> stratified_counts([10, 2, 10], 12)
        [5, 2, 5]
        >>> stratified_counts([10, 10, 10], 8)
        [3, 3, 2]
    """
    if n > sum(available):
        raise ProbeError(f"n={n} is larger than the dataset ({sum(available)} samples): lower n")
    counts = [0] * len(available)
    open_ = list(range(len(available)))
    left = n
    while open_:  # take whole every group no larger than an equal share of what is left
        small = [i for i in open_ if available[i] <= left // len(open_)]
        if not small:
            break
        for i in small:
            counts[i] = available[i]
            left -= available[i]
        open_ = [i for i in open_ if i not in small]
    if open_:  # every open group has more than `share`, so share + 1 always fits
        share, extra = divmod(left, len(open_))
        for j, i in enumerate(open_):
            counts[i] = share + (1 if j < extra else 0)
    return counts


def _check_n(n: int, size: int | None, what: str = "the dataset") -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ProbeError(f"n must be a positive int (the probe size), got {n!r}")
    if size is not None and n > size:
        raise ProbeError(f"n={n} is larger than {what} ({size} samples): lower n or use more data")


def _check_integer_tensor(t: torch.Tensor, name: str) -> None:
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ProbeError(
            f"{name} must hold integer token ids, got dtype {t.dtype}: pass token ids, not embeddings or floats"
        )


def _to_row(ids: Any, mask: Any, where: str) -> torch.Tensor:
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
    _check_integer_tensor(t, f"{where}: input_ids")
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
    if t.numel() and bool((t < 0).any()):
        raise ProbeError(f"{where}: negative token id {int(t[t < 0][0])}: pass real token ids (not labels with -100)")
    return t


def _rows_from_ids(ids: Any, attention_mask: Any) -> list[torch.Tensor]:
    if isinstance(ids, torch.Tensor):
        _check_integer_tensor(ids, "input_ids")
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise ProbeError(f"token ids must be [N, T], got shape {tuple(ids.shape)}")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(ids.shape):
            raise ProbeError(f"attention_mask shape {tuple(attention_mask.shape)} differs from ids {tuple(ids.shape)}")
        return [_to_row(ids[i], None if attention_mask is None else attention_mask[i], f"sample {i}")
                for i in range(ids.shape[0])]
    if isinstance(ids, (str, bytes)):
        raise ProbeError("from_token_ids got a string: use ProbeSet.from_texts(texts, tokenizer, ...)")
    rows = list(ids)
    masks = [None] * len(rows) if attention_mask is None else list(attention_mask)
    if len(masks) != len(rows):
        raise ProbeError(f"attention_mask has {len(masks)} rows but there are {len(rows)} samples")
    return [_to_row(r, m, f"sample {i}") for i, (r, m) in enumerate(zip(rows, masks))]


def _pack(rows: list[torch.Tensor], gids: torch.Tensor | None, gnames: tuple[str, ...], *, seq_len: int | None,
          pad_token_id: int | None, min_length: int, source: dict, where: list[str] | None = None) -> ProbeSet:
    """Truncate, check lengths, right-pad: the one place samples become an ``[N, T]`` probe."""
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
    return ProbeSet(ids, mask, gids, gnames, source)


def _sort_labels(labels: Sequence[Any]) -> list[Any]:
    uniq = set(labels)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in uniq):
        return sorted(uniq)
    return sorted(uniq, key=str)


def _label(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ProbeError(f"a group label must be one value per sample, got a tensor of shape {tuple(x.shape)}")
        return x.item()
    return x


def _encode_groups(
    groups: Any, group_names: Sequence[str] | None, n: int
) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    if groups is None:
        return None, ()
    if isinstance(groups, torch.Tensor):
        if groups.dim() != 1:
            raise ProbeError(f"groups must be 1-D (one label per sample), got shape {tuple(groups.shape)}")
        if group_names is not None:
            _check_integer_tensor(groups, "groups")
            if groups.numel() != n:
                raise ProbeError(f"groups has {groups.numel()} labels but there are {n} samples: pass one per sample")
            return groups.long(), tuple(str(g) for g in group_names)
        groups = groups.tolist()
    labels = [_label(g) for g in groups]
    if len(labels) != n:
        raise ProbeError(f"groups has {len(labels)} labels but there are {n} samples: pass one label per sample")
    if any(x is None for x in labels):
        raise ProbeError("a group label is None: give every sample a group (or put the unlabelled ones in 'other')")
    names = _sort_labels(labels)
    if group_names is not None:
        raise ProbeError("group_names goes with integer group ids in a tensor; with labels, the names are the labels")
    index = {g: i for i, g in enumerate(names)}
    return torch.tensor([index[x] for x in labels], dtype=torch.long), tuple(str(g) for g in names)


def _row_label(row: Any, group_by: GroupBy, where: str) -> Any:
    if callable(group_by):
        return _label(group_by(row))
    if isinstance(row, Mapping):
        if group_by not in row:
            raise ProbeError(f"{where} has no field {group_by!r} to group by; its fields are {sorted(row)}")
        return _label(row[group_by])
    if isinstance(row, (tuple, list)) and isinstance(group_by, int):
        return _label(row[group_by])
    raise ProbeError(
        f"group_by={group_by!r} needs dict rows, tuple rows with an int position, or a function row -> label"
    )


def _column_labels(ds: Any, group_by: GroupBy, size: int) -> list[Any]:
    if isinstance(group_by, str):
        try:  # Hugging Face datasets: a column read is one fast call
            col = ds[group_by]
            if not isinstance(col, (str, bytes, Mapping)) and len(col) == size:
                return [_label(x) for x in col]
        except Exception:  # noqa: BLE001 - not a column-indexable dataset: read rows
            pass
    return [_row_label(ds[i], group_by, f"dataset row {i}") for i in range(size)]


def _sample_indices(size: int, n: int, gen: torch.Generator) -> list[int]:
    """``n`` distinct indices in ``[0, size)``, sorted, seeded; O(n) memory for huge datasets."""
    if size <= (1 << 22) or n > size // 4:
        return sorted(torch.randperm(size, generator=gen)[:n].tolist())
    picked: dict[int, None] = {}
    while len(picked) < n:  # rejection sampling: few repeats when n << size
        for i in torch.randint(size, (2 * (n - len(picked)),), generator=gen).tolist():
            picked.setdefault(i)
            if len(picked) == n:
                break
    return sorted(picked)


def _stratified_pick(labels: Sequence[Any], n: int, gen: torch.Generator) -> list[int]:
    perm = torch.randperm(len(labels), generator=gen).tolist()
    names = _sort_labels(labels)
    by_group: dict[Any, list[int]] = {g: [] for g in names}
    for i in perm:
        by_group[labels[i]].append(i)
    counts = stratified_counts([len(by_group[g]) for g in names], n)
    chosen = [i for g, c in zip(names, counts) for i in by_group[g][:c]]
    return sorted(chosen)


def _split_row(row: Any, column: str, where: str) -> tuple[Any, Any]:
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


def _split_batch(batch: Any, column: str, group_by: GroupBy, where: str) -> tuple[Any, Any, Any]:
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


def _describe(group_by: GroupBy) -> Any:
    if callable(group_by):
        return getattr(group_by, "__name__", "function")
    return group_by
