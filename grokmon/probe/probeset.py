"""ProbeSet: the data type of a probe, a fixed set of token-id samples with optional groups.

Layout: ``input_ids [N, T]`` int64, right-padded; ``attention_mask [N, T]`` int64 (1 = real token)
or ``None`` when every sample has exactly ``T`` tokens (the cheapest probe); ``groups [N]`` int64
indices into ``group_names`` (e.g. the data domain) or ``None``. Built by the ``from_*``
constructors (:mod:`grokmon.probe.sources`), checked at construction (:mod:`grokmon.probe.checks`).

This module holds what a built probe does: shard, save / load, fingerprint, validate.
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
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError, GrokmonError, ProbeError, UnsafeFileError
from ..torchfile import load_torch_file
from .checks import check_groups, check_integer_tensor, check_probe_tensors, check_vocab
from .sources import ProbeSources

__all__ = ["ProbeSet"]

_FORMAT = "grokmon.probe"
_VERSION = 1


@dataclass(eq=False)
class ProbeSet(ProbeSources):
    """A fixed, validated set of probe samples (see the module doc for the layout).

    Example:
        >>> ProbeSet.from_token_ids([[5, 6, 7, 8], [1, 2, 3, 4]], min_length=2).seq_len
        4
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    group_names: tuple[str, ...] = ()
    source: dict = field(default_factory=dict)
    sample_index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_probe_tensors(self.input_ids, self.attention_mask)
        n = len(self.input_ids)
        self.input_ids = self.input_ids.long()
        self.group_names = tuple(str(g) for g in self.group_names)
        self.source = dict(self.source)
        if self.attention_mask is not None:
            self.attention_mask = self.attention_mask.long()
        if self.groups is not None:
            g = self.groups if isinstance(self.groups, torch.Tensor) else torch.as_tensor(self.groups)
            check_integer_tensor(g, "groups")
            if not self.group_names and tuple(g.shape) == (n,):
                self.group_names = tuple(str(i) for i in range(int(g.max()) + 1))
            check_groups(g, self.group_names, n, whole_probe=self.sample_index is None)
            self.groups = g.long()
        if self.sample_index is not None:
            s = self.sample_index
            check_integer_tensor(s, "sample_index")
            if tuple(s.shape) != (n,):
                raise ProbeError(f"sample_index must be [N]={n}, got {tuple(s.shape)}")
            self.sample_index = s.long()

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
        check_vocab(self.input_ids, vocab_size)

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
        if path.is_dir():
            raise ProbeError(f"{path} is a folder: pass a file path for the probe (e.g. {path / 'probe.pt'})")
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
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)  # a crash mid-write never leaves a half probe behind
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed save leaves nothing behind
            raise
        return path

    def save_once(self, path: str | os.PathLike) -> bool:
        """Save to ``path`` unless a file is there; True when written.

        An existing file of this probe is left alone; one of another probe (or unreadable) is kept,
        with a warning: a resumed run must probe the samples it started with.

        Example:
            >>> probe.save_once("grokmon_out/probe.pt")   # doctest: +SKIP
            True
        """
        path = Path(path)
        if not path.exists():
            self.save(path)
            return True
        try:
            same = ProbeSet.load(path).fingerprint() == self.fingerprint()
        except Exception:  # noqa: BLE001 - unreadable or another format: keep it, warn below
            same = False
        if not same:
            warnings.warn(f"grokmon: {path} holds another probe than this monitor's; it is kept. A resumed run "
                          f"must probe the same samples: ProbeSet.load({str(path)!r})", RuntimeWarning, stacklevel=2)
        return False

    @classmethod
    def load(cls, path: str | os.PathLike, expected_fingerprint: str | None = None) -> ProbeSet:
        """Read a probe written by :meth:`save`; check its stored (and an expected) fingerprint."""
        path = Path(path)
        if not path.exists():
            raise ProbeError(f"no probe file at {path}: save one with ProbeSet.save(path) or rebuild the probe")
        try:
            d = load_torch_file(path, what="a grokmon probe file", fix="rebuild the probe")
        except UnsafeFileError:
            raise
        except GrokmonError as e:  # pickle / zip errors: name the file
            raise ProbeError(f"{path} is not a readable grokmon probe file ({e.__cause__ or e}); rebuild the probe") from e
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
