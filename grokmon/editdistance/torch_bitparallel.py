"""Bit-parallel Levenshtein (Myers 1999, block form) vectorised over many pairs in torch.

For a pair (pattern ``a`` of length ``m``, text ``b`` of length ``n``) the DP matrix
``D[i][j]`` is never stored: column ``j`` is kept as two bit vectors over the rows, ``Pv`` (bits
where ``D[i][j] - D[i-1][j] = +1``) and ``Mv`` (``-1``), and one text symbol advances the whole
column with a dozen word operations. Rows are cut into words of :data:`WORD_BITS` = 62 bits held
in int64 tensors: ``(Eq & Pv) + Pv`` of two 62-bit values stays below ``2**63``, so no step
relies on signed overflow. Words are chained by the horizontal delta leaving each word's top row
(``hout``), which is the next word's ``hin`` (Myers' ``advance_block``).

Word ``w`` of text position ``j`` depends on word ``w - 1`` at ``j`` and on word ``w`` at
``j - 1``, so all words of one anti-diagonal ``s = j + w`` are advanced at once: a pair costs
``n + W - 1`` vector steps over ``[pairs, W]`` tensors instead of ``n * W``. A pair whose text
is shorter than the chunk's longest just stops updating (its state is frozen), and the distance
is read from the final column: ``D[m][n] = n + popcount(Pv) - popcount(Mv)`` over rows ``< m``.

The per-pattern match table ``Peq[symbol, word]`` (bits of the positions holding ``symbol``) is
built with one ``scatter_add`` over a dense re-coding of the alphabet, never a loop over symbols.

Example:
    >>> import torch
    >>> ids = torch.tensor([[0, 1, 2, -1], [0, 2, 2, 3]])
    >>> torch_pair_distances(ids, torch.tensor([3, 4]), ids, torch.tensor([3, 4]),
    ...                      torch.tensor([0, 0]), torch.tensor([1, 0])).tolist()
    [2, 0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

WORD_BITS = 62
_MASK = (1 << WORD_BITS) - 1
_TOP = WORD_BITS - 1

# Bytes held per pair in a chunk, beyond its text: Pv, Mv, hout, Eq and ~12 temporaries of [W].
_STATE_TENSORS = 18


def default_budget_bytes(device: torch.device) -> int:
    """Working memory one chunk may use: a quarter of free GPU memory (at most 4 GiB); 128 MiB on CPU.

    The CPU figure is small on purpose: chunks of ~25k pairs keep the step buffers in cache and
    ran 2x faster than 130k-pair chunks (docs/performance.md).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(free // 4, 4 << 30))
    return 128 << 20


def num_words(max_len: int) -> int:
    """How many 62-bit words a pattern of ``max_len`` symbols needs (at least one)."""
    return max(1, -(-max_len // WORD_BITS))


def chunk_pairs(text_width: int, words: int, budget_bytes: int) -> int:
    """Pairs per chunk so that texts, state and temporaries fit ``budget_bytes``."""
    per_pair = 8 * (2 * text_width + _STATE_TENSORS * words)
    return max(1, budget_bytes // per_pair)


def dense_codes(*id_tensors: torch.Tensor) -> tuple[list[torch.Tensor], int]:
    """Re-code the symbols of all tensors jointly as ``0..A-1`` (order kept); returns codes and ``A``.

    Padding (``-1``) is a symbol like any other here; callers never read it. Keeps the ``Peq``
    table as small as the symbols actually used, whatever the ids' range.
    """
    flat = torch.cat([t.reshape(-1) for t in id_tensors])
    if flat.numel() == 0:
        return [t.long() for t in id_tensors], 1
    symbols, inverse = torch.unique(flat, sorted=True, return_inverse=True)
    codes, start = [], 0
    for t in id_tensors:
        codes.append(inverse[start : start + t.numel()].reshape(t.shape).long())
        start += t.numel()
    return codes, int(symbols.numel())


def build_peq(codes: torch.Tensor, lengths: torch.Tensor, alphabet: int, words: int) -> torch.Tensor:
    """Match masks of every pattern: ``[U * alphabet * words]`` int64, flat.

    Entry ``(u * alphabet + c) * words + w`` has bit ``i`` set when position ``62 * w + i`` of
    pattern ``u`` holds symbol ``c``. Every (pattern, position) owns a distinct bit, so a sum
    (``scatter_add``) is the same as an OR.
    """
    u, width = codes.shape
    width = min(width, words * WORD_BITS)
    codes = codes[:, :width]
    pos = torch.arange(width, device=codes.device)
    valid = pos[None, :] < lengths[:, None]
    rows = torch.arange(u, device=codes.device)[:, None]
    index = (rows * alphabet + codes) * words + pos // WORD_BITS
    bits = torch.ones((), dtype=torch.int64, device=codes.device) << (pos % WORD_BITS)
    peq = torch.zeros(u * alphabet * words, dtype=torch.int64, device=codes.device)
    peq.scatter_add_(0, index[valid], bits.expand(u, width)[valid])
    return peq


_POPCOUNT8 = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def _popcount(x: torch.Tensor) -> torch.Tensor:
    """Set bits of each int64 in ``x [P, W]`` summed over ``W`` (a byte lookup table)."""
    table = _POPCOUNT8.to(x.device)
    as_bytes = x.contiguous().view(torch.uint8).reshape(x.shape[0], -1)
    return table[as_bytes.long()].sum(dim=1)


def run_chunk(
    peq: torch.Tensor,
    alphabet: int,
    words: int,
    pattern_row: torch.Tensor,
    pattern_len: torch.Tensor,
    text: torch.Tensor,
    text_len: torch.Tensor,
) -> torch.Tensor:
    """Distances of one chunk of pairs (all tensors on one device).

    Args:
        peq: flat match table from :func:`build_peq` over ``U`` patterns.
        alphabet, words: the table's ``A`` and ``W``.
        pattern_row: ``[C]`` row of each pair's pattern in the table.
        pattern_len: ``[C]`` its length.
        text: ``[C, n]`` symbol codes of each pair's text (anything after its length).
        text_len: ``[C]``.

    Returns:
        ``[C]`` int64 distances.
    """
    c = pattern_row.shape[0]
    device = text.device
    n = int(text_len.max().item()) if c else 0
    text = text[:, :n]
    # Index of (pattern, symbol) in peq for every text position; + w selects the word.
    text_index = (pattern_row[:, None] * alphabet + text) * words
    warange = torch.arange(words, device=device)
    shape, i64 = (c, words), dict(dtype=torch.int64, device=device)
    pv = torch.full(shape, _MASK, **i64)
    mv = torch.zeros(shape, **i64)
    # Horizontal delta entering each word from below (+1 / -1 flags): word 0 sees DP row 0,
    # 0, 1, 2, ..., whose delta is always +1; word w sees the hout of word w - 1.
    pos_in = torch.zeros(shape, **i64)
    pos_in[:, 0] = 1
    neg_in = torch.zeros(shape, **i64)
    eq, xv, xh, ph, mh, hp, hm, new_pv, new_mv, index = (torch.empty(shape, **i64) for _ in range(10))
    shortest = int(text_len.min().item()) if c else 0
    # Steps are done in place on preallocated buffers: allocating [C, W] tensors at every step
    # costs more than the arithmetic on CPU.
    for s in range(n + words - 1 if n else 0):  # anti-diagonals s = j + w
        j = s - warange  # text position each word handles at this step
        torch.index_select(text_index, 1, j.clamp(0, n - 1), out=index)
        index += warange
        torch.take(peq, index, out=eq)
        torch.bitwise_or(eq, mv, out=xv)
        eq |= neg_in  # a -1 entering from below acts as a match on the word's first row
        torch.bitwise_and(eq, pv, out=xh)
        xh += pv  # both < 2**62: no overflow
        xh ^= pv
        xh |= eq
        torch.bitwise_or(xh, pv, out=ph)
        ph ^= _MASK
        ph |= mv
        torch.bitwise_and(pv, xh, out=mh)
        torch.bitwise_right_shift(ph, _TOP, out=hp)
        hp &= 1
        torch.bitwise_right_shift(mh, _TOP, out=hm)
        hm &= 1
        ph <<= 1
        ph &= _MASK
        ph |= pos_in
        mh <<= 1
        mh &= _MASK
        mh |= neg_in
        pos_in[:, 1:] = hp[:, :-1]
        neg_in[:, 1:] = hm[:, :-1]
        torch.bitwise_or(xv, ph, out=new_pv)
        new_pv ^= _MASK
        new_pv |= mh
        torch.bitwise_and(ph, xv, out=new_mv)
        if words - 1 <= s < shortest:  # every word of every pair is inside its text
            pv, new_pv = new_pv, pv
            mv, new_mv = new_mv, mv
        else:  # freeze words before their text starts and pairs whose text has ended
            live = (j >= 0)[None, :] & (j[None, :] < text_len[:, None])
            pv = torch.where(live, new_pv, pv)
            mv = torch.where(live, new_mv, mv)
    # Rows < m of the last column: D[m][n] = n + (#(+1) - #(-1)) down the column.
    bits = (pattern_len[:, None] - WORD_BITS * warange[None, :]).clamp(0, WORD_BITS)
    rows = (torch.ones((), dtype=torch.int64, device=device) << bits) - 1
    return text_len + _popcount(pv & rows) - _popcount(mv & rows)


@dataclass
class _Prepared:
    """Re-coded inputs, table sizes and (when it fits) the match table of every pattern."""

    a_codes: torch.Tensor
    a_len: torch.Tensor
    b_codes: torch.Tensor
    b_len: torch.Tensor
    alphabet: int
    words: int
    peq_all: torch.Tensor | None
    budget: int
    chunk_size: int


def _prepare(a_ids, a_len, b_ids, b_len, chunk_size, budget_bytes) -> _Prepared:
    device = a_ids.device
    a_len, b_len = a_len.to(device).long(), b_len.to(device).long()
    same = a_ids is b_ids
    if same:
        (a_codes,), alphabet = dense_codes(a_ids)
        b_codes = a_codes
    else:
        (a_codes, b_codes), alphabet = dense_codes(a_ids, b_ids.to(device))
    words = num_words(int(a_len.max().item()) if a_len.numel() else 0)
    budget = budget_bytes or default_budget_bytes(device)
    if chunk_size is None:
        chunk_size = chunk_pairs(b_codes.shape[1], words, budget // 2)
    table_bytes = a_codes.shape[0] * alphabet * words * 8
    peq_all = build_peq(a_codes, a_len, alphabet, words) if table_bytes <= budget // 2 else None
    return _Prepared(a_codes, a_len, b_codes, b_len, alphabet, words, peq_all, budget, chunk_size)


def _distances(pr: _Prepared, a_index: torch.Tensor, b_index: torch.Tensor) -> torch.Tensor:
    p = a_index.shape[0]
    out = torch.empty(p, dtype=torch.int32, device=pr.a_codes.device)
    if pr.peq_all is not None:  # one table for every pattern, built once
        for start in range(0, p, pr.chunk_size):
            ia = a_index[start : start + pr.chunk_size]
            ib = b_index[start : start + pr.chunk_size]
            d = run_chunk(pr.peq_all, pr.alphabet, pr.words, ia, pr.a_len[ia], pr.b_codes[ib], pr.b_len[ib])
            out[start : start + pr.chunk_size] = d.to(torch.int32)
        return out
    # Large alphabet x many patterns: per chunk, a table of the chunk's own patterns only
    # (pairs sorted by pattern so that a chunk holds few of them).
    order = torch.argsort(a_index, stable=True)
    per_pattern = pr.alphabet * pr.words * 8
    step = max(1, min(pr.chunk_size, (pr.budget // 2) // per_pattern))
    for start in range(0, p, step):
        sel = order[start : start + step]
        ia, ib = a_index[sel], b_index[sel]
        patterns, row = torch.unique(ia, return_inverse=True)
        peq = build_peq(pr.a_codes[patterns], pr.a_len[patterns], pr.alphabet, pr.words)
        d = run_chunk(peq, pr.alphabet, pr.words, row, pr.a_len[ia], pr.b_codes[ib], pr.b_len[ib])
        out[sel] = d.to(torch.int32)
    return out


def torch_pair_distances(
    a_ids: torch.Tensor,
    a_len: torch.Tensor,
    b_ids: torch.Tensor,
    b_len: torch.Tensor,
    a_index: torch.Tensor,
    b_index: torch.Tensor,
    *,
    chunk_size: int | None = None,
    budget_bytes: int | None = None,
) -> torch.Tensor:
    """Distance of ``a_ids[a_index[p]]`` to ``b_ids[b_index[p]]`` for every ``p``: ``[P]`` int32.

    Inputs are assumed validated (see :mod:`grokmon.editdistance.dispatch`); everything runs on
    the device of ``a_ids``. Pairs are processed in chunks of ``chunk_size`` pairs (default: from
    ``budget_bytes``, itself from :func:`default_budget_bytes`).
    """
    device = a_ids.device
    if a_index.shape[0] == 0:
        return torch.empty(0, dtype=torch.int32, device=device)
    pr = _prepare(a_ids, a_len, b_ids, b_len, chunk_size, budget_bytes)
    return _distances(pr, a_index.to(device).long(), b_index.to(device).long())


def upper_pair_blocks(
    n: int, max_pairs: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Index pairs ``(i, j)``, ``i < j < n``, in row blocks of at most ``max_pairs`` (one row at least)."""
    row = 0
    cols = torch.arange(n, device=device)
    while row < n - 1:
        end, count = row, 0
        while end < n - 1 and (count == 0 or count + (n - 1 - end) <= max_pairs):
            count += n - 1 - end
            end += 1
        rows = torch.arange(row, end, device=device)
        i, j = (cols[None, :] > rows[:, None]).nonzero(as_tuple=True)
        yield rows[i], j
        row = end


def torch_full_matrix(
    ids: torch.Tensor,
    lengths: torch.Tensor,
    *,
    chunk_size: int | None = None,
    budget_bytes: int | None = None,
) -> torch.Tensor:
    """All-pairs ``[N, N]`` int32 distance matrix: upper triangle in chunks, mirrored, zero diagonal."""
    n = ids.shape[0]
    device = ids.device
    out = torch.zeros((n, n), dtype=torch.int32, device=device)
    if n < 2:
        return out
    pr = _prepare(ids, lengths, ids, lengths, chunk_size, budget_bytes)
    for i, j in upper_pair_blocks(n, pr.chunk_size, device):
        d = _distances(pr, i, j)
        out[i, j] = d
        out[j, i] = d
    return out
