"""Levenshtein through rapidfuzz (C++, multi-threaded): the fast path on CPU.

Sequences are handed over as lists of Python ints (rapidfuzz compares any hashables, so ids of
any range are exact). Full matrices use ``process.cdist(x, x, workers=-1)`` with the same list
object on both sides, which rapidfuzz computes as one triangle for a symmetric scorer; pair lists
use ``process.cpdist`` (row-wise, multi-threaded), or ``Levenshtein.distance`` per pair on
rapidfuzz versions without it. Results come back as int32 tensors on the inputs' device.

Example:
    >>> import torch
    >>> ids = torch.tensor([[0, 1, 2], [0, 2, -1]])
    >>> rapidfuzz_full_matrix(ids, torch.tensor([3, 2])).tolist()
    [[0, 1], [1, 0]]
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

try:  # rapidfuzz is a dependency, but the torch backend must work without it
    from rapidfuzz import process as _process
    from rapidfuzz.distance import Levenshtein as _Levenshtein
except ImportError:  # pragma: no cover - exercised only where rapidfuzz is missing
    _process = None
    _Levenshtein = None


_PAIRS_PER_CALL = 1 << 20


def rapidfuzz_available() -> bool:
    """Whether ``rapidfuzz`` can be imported."""
    return _process is not None


def _require() -> None:
    if _process is None:
        raise ConfigError(
            "backend='rapidfuzz' needs the rapidfuzz package: pip install rapidfuzz, "
            "or use backend='torch'"
        )


def to_lists(ids: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Rows of a padded ``[N, M]`` id tensor cut to their lengths, as lists of ints."""
    rows = ids.detach().cpu().tolist()
    return [row[:n] for row, n in zip(rows, lengths.detach().cpu().tolist())]


def rapidfuzz_pair_distances(
    a_ids: torch.Tensor,
    a_len: torch.Tensor,
    b_ids: torch.Tensor,
    b_len: torch.Tensor,
    a_index: torch.Tensor,
    b_index: torch.Tensor,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Distance of ``a[a_index[p]]`` to ``b[b_index[p]]`` for every ``p``: ``[P]`` int32 on ``a_ids.device``.

    Pairs go to rapidfuzz ``chunk_size`` at a time (default 2**20), which bounds the pair lists.
    """
    _require()
    a = to_lists(a_ids, a_len)
    b = a if b_ids is a_ids and b_len is a_len else to_lists(b_ids, b_len)
    ia, ib = a_index.tolist(), b_index.tolist()
    step = chunk_size or _PAIRS_PER_CALL
    parts = []
    for start in range(0, len(ia), step):
        left = [a[i] for i in ia[start : start + step]]
        right = [b[j] for j in ib[start : start + step]]
        if hasattr(_process, "cpdist"):  # rapidfuzz >= 3.6: row-wise pairs, multi-threaded
            d = _process.cpdist(left, right, scorer=_Levenshtein.distance, workers=-1, dtype=np.int32)
        else:  # pragma: no cover - older rapidfuzz
            d = [_Levenshtein.distance(x, y) for x, y in zip(left, right)]
        parts.append(np.asarray(d, dtype=np.int32).reshape(-1))
    out = np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
    return torch.from_numpy(out).to(a_ids.device)


def rapidfuzz_full_matrix(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """All-pairs ``[N, N]`` int32 matrix on ``ids.device`` (one ``cdist`` call; the output is the memory)."""
    _require()
    seqs = to_lists(ids, lengths)
    n = len(seqs)
    if n == 0:
        return torch.zeros((0, 0), dtype=torch.int32, device=ids.device)
    d = _process.cdist(seqs, seqs, scorer=_Levenshtein.distance, workers=-1, dtype=np.int32)
    return torch.from_numpy(d).to(ids.device)
