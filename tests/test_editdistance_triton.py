"""The Triton edit-distance kernel: exact against the reference and rapidfuzz.

Without a GPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, numpy on CPU
tensors): the same kernel source, slow, so inputs here are small batches that still cover 1 to 4
words, empty sequences, unequal lengths, texts longer than the pattern limit and every host-side
path (full matrix blocks, pair chunks, per-chunk tables). The CUDA tests run where a GPU exists.
Tests that need triton skip where it is not installed; the fallback tests run everywhere.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from optional import need
import torch
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

import grokmon.editdistance.dispatch as dispatch
from grokmon.editdistance import edit_distance, levenshtein, pairwise_edit_distance, resolve_backend
from grokmon.editdistance import triton_kernel
from grokmon.editdistance.torch_bitparallel import dense_codes
from grokmon.editdistance.triton_kernel import (
    MAX_PATTERN_LEN,
    build_peq64,
    triton_available,
    triton_full_matrix,
    triton_pair_distances,
)
from grokmon.errors import ConfigError

from test_editdistance import mixed_pairs, pad, random_seqs

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton installed and its interpreter on for this test (kernels run on CPU tensors)."""
    need("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def rapidfuzz_matrix(seqs: list[list[int]]) -> torch.Tensor:
    return torch.from_numpy(process.cdist(seqs, seqs, scorer=Levenshtein.distance, dtype="int32"))


def test_interpreted_pairs_equal_reference_and_rapidfuzz(interpret: None) -> None:
    # Lengths 0..200 over alphabets 1..1025, some equal or a few edits apart; b wider-padded.
    a, b = mixed_pairs(21, count=120)
    a += [[], [], [3] * 7, list(range(200))]
    b += [[], [4, 4], [], list(range(199, -1, -1))]
    (a_ids, a_len), (b_ids, b_len) = pad(a), pad(b, width=max(map(len, b)) + 5)
    got = edit_distance(a_ids, a_len, b_ids, b_len, backend="triton")
    assert got.dtype == torch.int32 and got.shape == (len(a),)
    expected = [levenshtein(x, y) for x, y in zip(a, b)]
    assert expected == [Levenshtein.distance(x, y) for x, y in zip(a, b)]
    assert got.tolist() == expected


def test_interpreted_word_edges_and_long_texts(interpret: None) -> None:
    # Pattern and text lengths at the 64-bit word edges, up to the 4-word limit, and texts beyond
    # it (the shorter sequence of a pair is the pattern, so only it must fit).
    rng = random.Random(3)
    edges = [0, 1, 63, 64, 65, 128, 129, 192, 255, 256]
    a, b = [], []
    for m in edges:
        for n in edges:
            a.append([rng.randrange(3) for _ in range(m)])
            b.append([rng.randrange(3) for _ in range(n)])
    for m, n in [(256, 300), (10, 290), (300, 64)]:
        a.append([rng.randrange(2) for _ in range(m)])
        b.append([rng.randrange(2) for _ in range(n)])
    (a_ids, a_len), (b_ids, b_len) = pad(a), pad(b)
    index = torch.arange(len(a))
    got = triton_pair_distances(a_ids, a_len, b_ids, b_len, index, index, block=128)
    assert got.tolist() == [Levenshtein.distance(x, y) for x, y in zip(a, b)]


def test_interpreted_full_matrix_blocks_and_budget(interpret: None) -> None:
    # Several column blocks per row (block=4), diagonal blocks skipped, and a budget so small that
    # each launch holds one pattern row.
    rng = random.Random(7)
    seqs = random_seqs(rng, 10, 70, 5) + [[], [1, 2, 3]]
    ids, lengths = pad(seqs)
    expected = rapidfuzz_matrix(seqs)
    got = triton_full_matrix(ids, lengths, block=4)
    assert got.dtype == torch.int32 and torch.equal(got, expected)
    one_row = triton_full_matrix(ids, lengths, block=8, budget_bytes=1)
    assert torch.equal(one_row, expected)
    assert torch.equal(pairwise_edit_distance(ids, lengths, backend="triton", chunk_size=30), expected)


def test_interpreted_pair_lists_chunks_and_per_chunk_tables(interpret: None) -> None:
    rng = random.Random(9)
    seqs = random_seqs(rng, 40, 90, 1025) + [[]]
    ids, lengths = pad(seqs)
    pairs = torch.randint(0, len(seqs), (150, 2), generator=torch.Generator().manual_seed(1))
    expected = [Levenshtein.distance(seqs[i], seqs[j]) for i, j in pairs.tolist()]
    got = pairwise_edit_distance(ids, lengths, pairs, backend="triton", chunk_size=60)
    assert got.tolist() == expected
    # A budget below one table for all 41 rows: pairs sorted by pattern, then chunks of 30 pairs
    # (30 patterns at most), each with a table of its own patterns.
    _, alphabet = dense_codes(ids)
    budget = 2 * 30 * alphabet * 2 * 8  # half of it holds 30 two-word tables
    small = triton_pair_distances(ids, lengths, ids, lengths, pairs[:, 0], pairs[:, 1], budget_bytes=budget)
    assert small.tolist() == expected


def test_interpreted_degenerate_inputs(interpret: None) -> None:
    ids, lengths = pad([[1, 2]])
    assert pairwise_edit_distance(ids, lengths, backend="triton").tolist() == [[0]]
    none, none_len = pad([], width=3)
    assert pairwise_edit_distance(none, none_len, backend="triton").shape == (0, 0)
    assert pairwise_edit_distance(ids, lengths, torch.zeros((0, 2), dtype=torch.long), backend="triton").shape == (0,)
    empty, empty_len = pad([[], [], []], width=0)  # zero-width ids: nothing to read
    assert pairwise_edit_distance(empty, empty_len, backend="triton").tolist() == [[0] * 3] * 3
    big = torch.tensor([[10**12, 5, -1], [5, 10**12, 7]])  # ids of any range are re-coded
    assert pairwise_edit_distance(big, torch.tensor([2, 3]), backend="triton").tolist() == [[0, 2], [2, 0]]


def test_peq_table_bits() -> None:
    codes = torch.tensor([[0, 1, 0] + [1] * 61 + [0], [1, 1, 0] + [0] * 62])
    peq = build_peq64(codes, torch.tensor([65, 2]), alphabet=2, words=2).view(2, 2, 2)
    assert peq[0, 0, 0].item() == 0b101  # positions 0 and 2 of row 0 hold symbol 0
    assert peq[0, 0, 1].item() == 1  # position 64 is bit 0 of word 1
    assert peq[0, 1, 0].item() == (~0b101) & ~0  # every other bit of word 0, bit 63 included
    assert peq[1].tolist() == [[0, 0], [0b11, 0]]  # row 1 stops at its length


def test_triton_backend_refused_where_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ids, lengths = pad([[1, 2], [2]])
    if triton_kernel.triton_importable():
        with pytest.raises(ConfigError, match="TRITON_INTERPRET=1"):
            pairwise_edit_distance(ids, lengths, backend="triton")
    monkeypatch.setattr(triton_kernel, "_import_triton", lambda: None)
    assert not triton_available() and not triton_available("cpu")
    with pytest.raises(ConfigError, match="pip install triton"):
        pairwise_edit_distance(ids, lengths, backend="triton")
    with pytest.raises(ConfigError, match="pip install triton"):
        resolve_backend("triton", torch.device("cuda"))
    # auto never needs triton
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert pairwise_edit_distance(ids, lengths).tolist() == [[0, 1], [1, 0]]


def test_auto_picks_triton_on_cuda_when_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "triton_available", lambda device=None: True)
    cuda = torch.device("cuda")
    assert resolve_backend("auto", cuda) == "triton"
    assert resolve_backend("auto", cuda, MAX_PATTERN_LEN) == "triton"
    assert resolve_backend("auto", cuda, MAX_PATTERN_LEN + 1) == "torch"
    assert resolve_backend("auto", torch.device("cpu"), 10) == "rapidfuzz"
    monkeypatch.setattr(dispatch, "triton_available", lambda device=None: False)
    assert resolve_backend("auto", cuda, 10) == "torch"


def test_patterns_beyond_the_word_limit_are_refused(interpret: None) -> None:
    ids, lengths = pad([[1] * (MAX_PATTERN_LEN + 1), [2] * (MAX_PATTERN_LEN + 3)])
    with pytest.raises(ConfigError, match="at most 256 symbols"):
        pairwise_edit_distance(ids, lengths, backend="triton")
    with pytest.raises(ConfigError, match="at most 256 symbols"):
        pairwise_edit_distance(ids, lengths, torch.tensor([[0, 1]]), backend="triton")


def test_module_imports_without_triton() -> None:
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from grokmon.editdistance import pairwise_edit_distance, triton_available, resolve_backend\n"
        "assert not triton_available()\n"
        "assert resolve_backend('auto', torch.device('cuda')) == 'torch'\n"
        "ids = torch.tensor([[1, 2, 3], [1, 3, -1]])\n"
        "assert pairwise_edit_distance(ids, torch.tensor([3, 2])).tolist() == [[0, 1], [1, 0]]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.gpu
@needs_cuda
def test_cuda_full_matrix_equals_cpu() -> None:
    need("triton")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1025, (512, 128), generator=gen, dtype=torch.int32)
    lengths = torch.full((512,), 128)
    lengths[:40] = torch.randint(0, 128, (40,), generator=gen)  # a few shorter and empty rows
    lengths[0] = 0
    ids[torch.arange(128)[None, :] >= lengths[:, None]] = -1
    cpu = pairwise_edit_distance(ids, lengths, backend="rapidfuzz")
    for backend in ("triton", "auto"):
        gpu = pairwise_edit_distance(ids.cuda(), lengths.cuda(), backend=backend)
        assert gpu.device.type == "cuda" and gpu.dtype == torch.int32
        assert torch.equal(gpu.cpu(), cpu)
    rows = triton_full_matrix(ids.cuda(), lengths.cuda(), chunk_size=5000)  # several launches
    assert torch.equal(rows.cpu(), cpu)


@pytest.mark.gpu
@needs_cuda
def test_cuda_pairs_equal_reference() -> None:
    need("triton")
    a, b = mixed_pairs(31, count=300)
    a.append([1] * 40)
    b.append([1, 2] * 400)  # a text far beyond the pattern limit
    (a_ids, a_len), (b_ids, b_len) = pad(a), pad(b)
    got = edit_distance(a_ids.cuda(), a_len.cuda(), b_ids.cuda(), b_len.cuda(), backend="triton")
    assert got.cpu().tolist() == [Levenshtein.distance(x, y) for x, y in zip(a, b)]
    rng = random.Random(5)
    seqs = random_seqs(rng, 200, 256, 65)
    ids, lengths = pad(seqs)
    pairs = torch.randint(0, 200, (20_000, 2), generator=torch.Generator().manual_seed(3))
    expected = pairwise_edit_distance(ids, lengths, pairs, backend="rapidfuzz")
    for chunk_size in (None, 777):
        got = pairwise_edit_distance(ids.cuda(), lengths.cuda(), pairs.cuda(), backend="triton", chunk_size=chunk_size)
        assert torch.equal(got.cpu(), expected)
    small = triton_pair_distances(
        ids.cuda(), lengths.cuda(), ids.cuda(), lengths.cuda(), pairs[:, 0].cuda(), pairs[:, 1].cuda(),
        budget_bytes=1 << 18,  # per-chunk tables of about 60 patterns
    )
    assert torch.equal(small.cpu(), expected)
