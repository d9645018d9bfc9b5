"""Bit-parallel Levenshtein (Myers 1999 / Hyyrö, multi-word) as a Triton kernel: one pair per lane.

Each lane of a program runs the whole text loop of one pair on device. The DP column over the
pattern's rows is held as ``WORDS`` pairs of 64-bit words ``(Pv, Mv)`` (bits where the vertical
delta is +1 / -1) in registers; one text symbol advances word 0, whose horizontal delta leaving
the top row (``hout``) enters word 1 in the same step, and so on (Myers' ``advance_block``). Words
are full 64-bit unsigned: the addition ``(Eq & Pv) + Pv`` wraps, and its lost carry is exactly
what ``hout`` hands to the next word. ``WORDS`` is a compile-time constant up to
:data:`MAX_WORDS` (4 words, patterns up to :data:`MAX_PATTERN_LEN` = 256 symbols); texts may be
of any length. The distance is read from the final column:
``D[m][n] = n + popcount(Pv) - popcount(Mv)`` over rows ``< m``.

Match masks come from a table ``Peq[pattern, symbol, word]`` (int64, symbols re-coded densely over
the ids actually used, see :func:`~grokmon.editdistance.torch_bitparallel.dense_codes`), built in
torch with one ``scatter_add``; a lane gathers ``Peq[its pattern, text symbol, w]`` per text
symbol. Text symbols are read from a transposed ``[width, rows]`` int32 copy, so lanes holding
consecutive rows read consecutive addresses.

Two entry points:

* :func:`triton_full_matrix` – all pairs of one id tensor: program ``(i, jb)`` compares pattern row
  ``i`` with the block of rows ``jb * BLOCK ...`` above the diagonal and writes both ``D[i, j]``
  and ``D[j, i]``; every lane of a program shares one pattern (one ``Peq`` row, cache-resident),
  and no pair index list is ever built. Pattern rows go in blocks whose table fits the budget.
* :func:`triton_pair_distances` – a pair list; the shorter sequence of each pair is the pattern,
  so only ``min(m, n) <= 256`` is required. Pairs go in chunks; when one table for every row would
  exceed the budget, pairs are sorted by pattern and each chunk gets a table of its own patterns.

``triton`` is imported lazily: this module imports (and :func:`triton_available` is False)
without triton or without a CUDA device. With ``TRITON_INTERPRET=1`` set before the first kernel
call, the kernels run on CPU tensors in Triton's numpy interpreter (slow; used by the tests). The
kernels are jitted on first use, once per mode, and call only builtins of ``triton.language``
(``tl.full`` and ``tl.reduce``, not the ``@jit`` helpers ``tl.zeros`` / ``tl.max``, which are
bound to the mode triton was imported in): so the interpreter works even when triton was
imported earlier in the process without it.

Example:
    >>> num_words64(128), num_words64(0), num_words64(257)
    (2, 1, 5)
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch

from ..errors import ConfigError
from .torch_bitparallel import default_budget_bytes, dense_codes

WORD_BITS = 64
MAX_WORDS = 4
MAX_PATTERN_LEN = MAX_WORDS * WORD_BITS
BLOCK = 128  # pairs per program on CUDA: one per thread of 4 warps
INTERPRET_BLOCK = 256  # pairs per program under TRITON_INTERPRET=1 (its cost is per op, not per lane)
_PAIRS_PER_LAUNCH = 1 << 24

# Filled by _load(): the kernel bodies below are plain functions until triton is imported, and
# they find ``tl`` and their helpers through this module's globals when Triton compiles them.
tl = None
_advance = None
_popcount = None
_row_mask = None
_lane_distances = None
_larger = None


def num_words64(max_len: int) -> int:
    """How many 64-bit words a pattern of ``max_len`` symbols needs (at least one)."""
    return max(1, -(-max_len // WORD_BITS))


def interpreter_enabled() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set (kernels then run on CPU tensors, in numpy)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@lru_cache(maxsize=1)
def _import_triton():
    try:
        import triton
        import triton.language  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # absent, or a broken install: torch path then
        return None
    return triton


def triton_importable() -> bool:
    """Whether the ``triton`` package can be imported."""
    return _import_triton() is not None


def triton_available(device: torch.device | str | None = None) -> bool:
    """Whether the Triton kernels can run on ``device`` (default: CUDA).

    CUDA: triton importable and a CUDA device present. CPU: triton importable and
    ``TRITON_INTERPRET=1`` (the interpreter). False otherwise, and never an exception.
    """
    dev = torch.device("cuda") if device is None else torch.device(device)
    if not triton_importable():
        return False
    if dev.type == "cuda":
        return torch.cuda.is_available()
    return dev.type == "cpu" and interpreter_enabled()


def require_triton(device: torch.device) -> None:
    """Raise a :class:`ConfigError` that names the fix when the kernels cannot run on ``device``."""
    if not triton_importable():
        raise ConfigError(
            "backend='triton' needs the triton package (`pip install triton`, bundled with CUDA "
            "builds of torch); or use backend='torch'"
        )
    if device.type == "cpu" and not interpreter_enabled():
        raise ConfigError(
            "backend='triton' runs on CUDA tensors: move ids to a GPU, use backend='rapidfuzz' or "
            "'torch' on CPU, or set TRITON_INTERPRET=1 before the first call to run the kernel in "
            "Triton's (slow) CPU interpreter"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"backend='triton' runs on CUDA tensors, got a {device.type} tensor")


def _check_words(longest_pattern: int) -> int:
    words = num_words64(longest_pattern)
    if words > MAX_WORDS:
        raise ConfigError(
            f"backend='triton' handles patterns of at most {MAX_PATTERN_LEN} symbols (the shorter "
            f"sequence of each pair; every sequence for a full matrix), got {longest_pattern}: use "
            f"backend='torch' or 'auto'"
        )
    return words


# ---------------------------------------------------------------------------------------------
# Kernel bodies (compiled by triton.jit in _load()).


def _advance_py(pv, mv, eq, pos_in, neg_in):
    """One text symbol through one 64-bit word (Myers' advance_block).

    ``pos_in`` / ``neg_in`` are 0/1 uint64 flags of the horizontal delta entering the word's first
    row (+1 / -1); returns the new ``(Pv, Mv)`` and the flags leaving its top row.
    """
    xv = eq | mv
    eq = eq | neg_in  # a -1 entering from below acts as a match on the first row
    xh = (((eq & pv) + pv) ^ pv) | eq  # the add wraps at 64 bits: hout carries the lost carry
    ph = mv | ~(xh | pv)
    mh = pv & xh
    pos_out = ph >> 63
    neg_out = mh >> 63
    ph = (ph << 1) | pos_in
    mh = (mh << 1) | neg_in
    return mh | ~(xv | ph), ph & xv, pos_out, neg_out


def _larger_py(a, b):
    return tl.maximum(a, b)


def _popcount_py(x):
    """Set bits of each uint64 (SWAR), as int64."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return ((x * 0x0101010101010101) >> 56).to(tl.int64)


def _row_mask_py(m, w: tl.constexpr, zero):
    """Bits of word ``w`` that are rows ``< m`` of the pattern."""
    bits = tl.minimum(tl.maximum(m - w * 64, 0), 64)
    partial = ((zero + 1) << tl.minimum(bits, 63).to(tl.uint64)) - 1
    return tl.where(bits >= 64, ~zero, partial)


def _lane_distances_py(
    peq_ptr, tab_base, m, codes_ptr, n_rows, trow, n, valid, WORDS: tl.constexpr, BLOCK: tl.constexpr
):
    """Distance of each lane's pair: pattern at ``tab_base`` in ``peq`` (length ``m``), text row
    ``trow`` of the transposed codes (length ``n``). Lanes not ``valid`` return garbage."""
    zero = tl.full([BLOCK], 0, tl.uint64)
    one = zero + 1
    pv0 = ~zero
    mv0 = zero
    pv1 = ~zero
    mv1 = zero
    pv2 = ~zero
    mv2 = zero
    pv3 = ~zero
    mv3 = zero
    n_max = tl.reduce(tl.where(valid, n, 0), 0, _larger)
    for j in range(0, n_max):
        live = valid & (j < n)
        symbol = tl.load(codes_ptr + j * n_rows + trow, mask=live, other=0).to(tl.int64)
        at = peq_ptr + tab_base + symbol * WORDS
        eq = tl.load(at, mask=live, other=0).to(tl.uint64, bitcast=True)
        new_pv, new_mv, pos, neg = _advance(pv0, mv0, eq, one, zero)  # row 0: D[0][j] = j, +1
        pv0 = tl.where(live, new_pv, pv0)
        mv0 = tl.where(live, new_mv, mv0)
        if WORDS > 1:
            eq = tl.load(at + 1, mask=live, other=0).to(tl.uint64, bitcast=True)
            new_pv, new_mv, pos, neg = _advance(pv1, mv1, eq, pos, neg)
            pv1 = tl.where(live, new_pv, pv1)
            mv1 = tl.where(live, new_mv, mv1)
        if WORDS > 2:
            eq = tl.load(at + 2, mask=live, other=0).to(tl.uint64, bitcast=True)
            new_pv, new_mv, pos, neg = _advance(pv2, mv2, eq, pos, neg)
            pv2 = tl.where(live, new_pv, pv2)
            mv2 = tl.where(live, new_mv, mv2)
        if WORDS > 3:
            eq = tl.load(at + 3, mask=live, other=0).to(tl.uint64, bitcast=True)
            new_pv, new_mv, pos, neg = _advance(pv3, mv3, eq, pos, neg)
            pv3 = tl.where(live, new_pv, pv3)
            mv3 = tl.where(live, new_mv, mv3)
    rows = _row_mask(m, 0, zero)
    d = n + _popcount(pv0 & rows) - _popcount(mv0 & rows)
    if WORDS > 1:
        rows = _row_mask(m, 1, zero)
        d += _popcount(pv1 & rows) - _popcount(mv1 & rows)
    if WORDS > 2:
        rows = _row_mask(m, 2, zero)
        d += _popcount(pv2 & rows) - _popcount(mv2 & rows)
    if WORDS > 3:
        rows = _row_mask(m, 3, zero)
        d += _popcount(pv3 & rows) - _popcount(mv3 & rows)
    return d.to(tl.int32)


def _full_kernel_py(
    peq_ptr, codes_ptr, len_ptr, out_ptr, n_rows, row_start, block_start, alphabet,
    WORDS: tl.constexpr, BLOCK: tl.constexpr,
):
    """Program ``(r, b)``: pattern row ``i = row_start + r`` (table row ``r``) against rows
    ``j = (block_start + b) * BLOCK + lane`` with ``i < j < n_rows``; writes ``out[i, j]`` and
    ``out[j, i]``."""
    local = tl.program_id(0).to(tl.int64)
    i = row_start + local
    j = (block_start + tl.program_id(1)).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = (j > i) & (j < n_rows)
    m = tl.load(len_ptr + i).to(tl.int64)
    n = tl.load(len_ptr + j, mask=valid, other=0).to(tl.int64)
    tab_base = local * alphabet * WORDS
    d = _lane_distances(peq_ptr, tab_base, m, codes_ptr, n_rows, j, n, valid, WORDS, BLOCK)
    tl.store(out_ptr + i * n_rows + j, d, mask=valid)
    tl.store(out_ptr + j * n_rows + i, d, mask=valid)


def _pair_kernel_py(
    peq_ptr, codes_ptr, ptab_ptr, plen_ptr, trow_ptr, tlen_ptr, out_ptr, num_pairs, n_rows,
    alphabet, WORDS: tl.constexpr, BLOCK: tl.constexpr,
):
    """Lane ``p``: pattern table row ``ptab[p]`` (length ``plen[p]``) against text row
    ``trow[p]`` (length ``tlen[p]``) of the transposed codes; writes ``out[p]``."""
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = p < num_pairs
    ptab = tl.load(ptab_ptr + p, mask=valid, other=0).to(tl.int64)
    m = tl.load(plen_ptr + p, mask=valid, other=0).to(tl.int64)
    trow = tl.load(trow_ptr + p, mask=valid, other=0).to(tl.int64)
    n = tl.load(tlen_ptr + p, mask=valid, other=0).to(tl.int64)
    d = _lane_distances(peq_ptr, ptab * alphabet * WORDS, m, codes_ptr, n_rows, trow, n, valid, WORDS, BLOCK)
    tl.store(out_ptr + p, d, mask=valid)


@lru_cache(maxsize=2)
def _load(interpret: bool):
    """``(full_kernel, pair_kernel)`` jitted for the current mode (compiled, or interpreted)."""
    global tl, _advance, _popcount, _row_mask, _lane_distances, _larger
    triton = _import_triton()
    import triton.language as language

    tl = language
    _advance = triton.jit(_advance_py)
    _larger = triton.jit(_larger_py)
    _popcount = triton.jit(_popcount_py)
    _row_mask = triton.jit(_row_mask_py)
    _lane_distances = triton.jit(_lane_distances_py)
    # Sizes and offsets vary per call: no value specialisation, so no recompiling per size.
    full = triton.jit(_full_kernel_py, do_not_specialize=["n_rows", "row_start", "block_start", "alphabet"])
    pair = triton.jit(_pair_kernel_py, do_not_specialize=["num_pairs", "n_rows", "alphabet"])
    return full, pair


def _kernels():
    return _load(interpreter_enabled())


# ---------------------------------------------------------------------------------------------
# Host side.


def build_peq64(codes: torch.Tensor, lengths: torch.Tensor, alphabet: int, words: int) -> torch.Tensor:
    """Match masks ``[R * alphabet * words]`` int64 (flat) of the rows of ``codes`` as patterns.

    Entry ``(r * alphabet + c) * words + w`` has bit ``i`` set when position ``64 * w + i`` of row
    ``r`` holds symbol ``c`` (bit 63 is the sign bit of the int64). Every (row, position) owns a
    distinct bit, so ``scatter_add`` is an OR.
    """
    r, width = codes.shape
    width = min(width, words * WORD_BITS)
    codes = codes[:, :width].long()
    pos = torch.arange(width, device=codes.device)
    valid = pos[None, :] < lengths[:, None]
    rows = torch.arange(r, device=codes.device)[:, None]
    index = (rows * alphabet + codes) * words + pos // WORD_BITS
    bits = torch.ones((), dtype=torch.int64, device=codes.device) << (pos % WORD_BITS)
    peq = torch.zeros(max(1, r * alphabet * words), dtype=torch.int64, device=codes.device)
    peq.scatter_add_(0, index[valid], bits.expand(r, width)[valid])
    return peq


def _transposed(codes: torch.Tensor) -> torch.Tensor:
    """``[width, rows]`` int32 copy (at least one column, so the pointer is never null)."""
    if codes.shape[1] == 0:
        codes = torch.zeros((codes.shape[0], 1), dtype=codes.dtype, device=codes.device)
    return codes.to(torch.int32).t().contiguous()


def _cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for positive ints."""
    return -(-a // b)


def _block(block: int | None) -> int:
    if block is not None:
        return block
    return INTERPRET_BLOCK if interpreter_enabled() else BLOCK


def triton_full_matrix(
    ids: torch.Tensor,
    lengths: torch.Tensor,
    *,
    chunk_size: int | None = None,
    budget_bytes: int | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """All-pairs ``[N, N]`` int32 distance matrix (symmetric, zero diagonal) on ``ids.device``.

    Inputs are assumed validated (:mod:`grokmon.editdistance.dispatch`). Every sequence must fit
    :data:`MAX_PATTERN_LEN`. Pattern rows go in blocks whose ``Peq`` table fits half of
    ``budget_bytes`` (default :func:`~grokmon.editdistance.torch_bitparallel.default_budget_bytes`)
    and, with ``chunk_size``, about ``chunk_size`` pairs per launch.
    """
    device = ids.device
    require_triton(device)
    n = ids.shape[0]
    out = torch.zeros((n, n), dtype=torch.int32, device=device)
    if n < 2:
        return out
    lengths = lengths.to(device)
    words = _check_words(int(lengths.max().item()))
    (codes,), alphabet = dense_codes(ids)
    codes_t = _transposed(codes)
    lens32 = lengths.to(torch.int32).contiguous()
    budget = budget_bytes or default_budget_bytes(device)
    rows = max(1, (budget // 2) // (alphabet * words * 8))
    if chunk_size is not None:
        rows = min(rows, max(1, chunk_size // (n - 1)))
    block = _block(block)
    full_kernel, _ = _kernels()
    for start in range(0, n - 1, rows):  # the last row has no pair above the diagonal
        stop = min(n - 1, start + rows)
        peq = build_peq64(codes[start:stop], lengths[start:stop].long(), alphabet, words)
        first = (start + 1) // block  # blocks wholly on or below the diagonal are skipped
        grid = (stop - start, _cdiv(n, block) - first)
        full_kernel[grid](
            peq, codes_t, lens32, out, n, start, first, alphabet,
            WORDS=words, BLOCK=block, num_warps=max(1, min(8, block // 32)),
        )
    return out


def triton_pair_distances(
    a_ids: torch.Tensor,
    a_len: torch.Tensor,
    b_ids: torch.Tensor,
    b_len: torch.Tensor,
    a_index: torch.Tensor,
    b_index: torch.Tensor,
    *,
    chunk_size: int | None = None,
    budget_bytes: int | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Distance of ``a_ids[a_index[p]]`` to ``b_ids[b_index[p]]`` for every ``p``: ``[P]`` int32.

    Inputs are assumed validated; everything runs on the device of ``a_ids``. The shorter sequence
    of each pair is its pattern and must fit :data:`MAX_PATTERN_LEN`; texts may be longer.
    """
    device = a_ids.device
    require_triton(device)
    p = a_index.shape[0]
    out = torch.empty(p, dtype=torch.int32, device=device)
    if p == 0:
        return out
    a_index, b_index = a_index.to(device).long(), b_index.to(device).long()
    a_len = a_len.to(device).long()
    if a_ids is b_ids:
        (codes,), alphabet = dense_codes(a_ids)
        lens = a_len
    else:  # one row space: a's rows, then b's
        b_ids, b_len = b_ids.to(device), b_len.to(device).long()
        (ca, cb), alphabet = dense_codes(a_ids, b_ids)
        width = max(ca.shape[1], cb.shape[1])
        codes = torch.zeros((ca.shape[0] + cb.shape[0], width), dtype=torch.long, device=device)
        codes[: ca.shape[0], : ca.shape[1]] = ca
        codes[ca.shape[0] :, : cb.shape[1]] = cb
        lens = torch.cat([a_len, b_len])
        b_index = b_index + ca.shape[0]
    la, lb = lens[a_index], lens[b_index]
    swap = la > lb  # the shorter sequence is the pattern: fewer words
    prow = torch.where(swap, b_index, a_index)
    trow = torch.where(swap, a_index, b_index).to(torch.int32)
    plen = torch.minimum(la, lb).to(torch.int32)
    tlen = torch.maximum(la, lb).to(torch.int32)
    words = _check_words(int(plen.max().item()))
    codes_t = _transposed(codes)
    budget = budget_bytes or default_budget_bytes(device)
    per_pattern = alphabet * words * 8
    step = min(chunk_size or _PAIRS_PER_LAUNCH, _PAIRS_PER_LAUNCH)
    block = _block(block)
    _, pair_kernel = _kernels()

    def launch(peq, ptab, sel_plen, sel_trow, sel_tlen, dest):
        count = ptab.shape[0]
        pair_kernel[(_cdiv(count, block),)](
            peq, codes_t, ptab.to(torch.int32).contiguous(), sel_plen.contiguous(),
            sel_trow.contiguous(), sel_tlen.contiguous(), dest, count, codes_t.shape[1], alphabet,
            WORDS=words, BLOCK=block, num_warps=max(1, min(8, block // 32)),
        )

    if codes.shape[0] * per_pattern <= budget // 2:  # one table for every row, built once
        peq = build_peq64(codes, lens, alphabet, words)
        for start in range(0, p, step):
            stop = min(p, start + step)
            launch(peq, prow[start:stop], plen[start:stop], trow[start:stop], tlen[start:stop], out[start:stop])
        return out
    # Large alphabet x many rows: per chunk, a table of the chunk's own patterns (pairs sorted by
    # pattern so that a chunk holds few of them).
    order = torch.argsort(prow, stable=True)
    step = max(1, min(step, (budget // 2) // per_pattern))
    for start in range(0, p, step):
        sel = order[start : start + step]
        patterns, local = torch.unique(prow[sel], return_inverse=True)
        peq = build_peq64(codes[patterns], lens[patterns], alphabet, words)
        got = torch.empty(sel.shape[0], dtype=torch.int32, device=device)
        launch(peq, local, plen[sel], trow[sel], tlen[sel], got)
        out[sel] = got
    return out
