"""grokmon.editdistance: every backend against the plain-Python reference and rapidfuzz."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein

from grokmon.editdistance import edit_distance, levenshtein, pairwise_edit_distance, resolve_backend
from grokmon.editdistance import rapidfuzz_backend
from grokmon.editdistance.torch_bitparallel import WORD_BITS, torch_full_matrix, torch_pair_distances
from grokmon.errors import ConfigError

BACKENDS = ["torch", "rapidfuzz", "auto"]


def pad(seqs: list[list[int]], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded int32 ids (``-1`` after each length) and int64 lengths."""
    width = max([len(s) for s in seqs] + [0]) if width is None else width
    ids = torch.full((len(seqs), width), -1, dtype=torch.int32)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.int32)
    return ids, torch.tensor([len(s) for s in seqs], dtype=torch.int64)


def random_seqs(rng: random.Random, count: int, max_len: int, alphabet: int) -> list[list[int]]:
    return [[rng.randrange(alphabet) for _ in range(rng.randint(0, max_len))] for _ in range(count)]


def mixed_pairs(seed: int, count: int = 60) -> tuple[list[list[int]], list[list[int]]]:
    """Pairs over several alphabets and lengths 0..200 (1 to 4 words), some equal, some related."""
    rng = random.Random(seed)
    a, b = [], []
    for k in range(count):
        alphabet = rng.choice([1, 2, 4, 65, 1025])
        x = [rng.randrange(alphabet) for _ in range(rng.randint(0, 200))]
        if k % 6 == 0:
            y = list(x)
        elif k % 6 == 1:  # a few edits of x: small distances, long common runs
            y = list(x)
            for _ in range(rng.randint(1, 5)):
                if y and rng.random() < 0.5:
                    del y[rng.randrange(len(y))]
                else:
                    y.insert(rng.randint(0, len(y)), rng.randrange(alphabet))
        else:
            y = [rng.randrange(alphabet) for _ in range(rng.randint(0, 200))]
        a.append(x)
        b.append(y)
    return a, b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_edit_distance_equals_reference_and_rapidfuzz(backend: str, seed: int) -> None:
    a, b = mixed_pairs(seed)
    a_ids, a_len = pad(a)
    b_ids, b_len = pad(b, width=max(map(len, b)) + 3)  # a different, wider padding
    got = edit_distance(a_ids, a_len, b_ids, b_len, backend=backend)
    assert got.dtype == torch.int32 and got.shape == (len(a),)
    expected = [levenshtein(x, y) for x, y in zip(a, b)]
    assert got.tolist() == expected
    assert expected == [Levenshtein.distance(x, y) for x, y in zip(a, b)]


@pytest.mark.parametrize("backend", ["torch", "rapidfuzz"])
def test_word_boundary_lengths(backend: str) -> None:
    # Lengths around the 62-bit word edges, both as pattern and as text.
    rng = random.Random(3)
    edges = [0, 1, WORD_BITS - 1, WORD_BITS, WORD_BITS + 1, 2 * WORD_BITS, 2 * WORD_BITS + 1, 3 * WORD_BITS + 5]
    a, b = [], []
    for m in edges:
        for n in edges:
            a.append([rng.randrange(3) for _ in range(m)])
            b.append([rng.randrange(3) for _ in range(n)])
    a_ids, a_len = pad(a)
    b_ids, b_len = pad(b)
    got = edit_distance(a_ids, a_len, b_ids, b_len, backend=backend).tolist()
    assert got == [levenshtein(x, y) for x, y in zip(a, b)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_identical_sequences(backend: str) -> None:
    seqs = [[], [], [5, 6, 7], [5, 6, 7], list(range(150)), list(range(150))]
    ids, lengths = pad(seqs)
    pairs = torch.tensor([[0, 1], [0, 2], [2, 0], [2, 3], [4, 5], [0, 4], [3, 4]])
    got = pairwise_edit_distance(ids, lengths, pairs, backend=backend).tolist()
    assert got == [0, 3, 3, 0, 0, 150, 147]
    assert got == [levenshtein(seqs[i], seqs[j]) for i, j in pairs.tolist()]
    # all-empty input: the text loop never runs
    e_ids, e_len = pad([[], []], width=4)
    assert edit_distance(e_ids, e_len, e_ids, e_len, backend=backend).tolist() == [0, 0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_sizes(backend: str) -> None:
    ids, lengths = pad([[1, 2]])
    assert pairwise_edit_distance(ids, lengths, backend=backend).tolist() == [[0]]
    none, none_len = pad([], width=3)
    assert pairwise_edit_distance(none, none_len, backend=backend).shape == (0, 0)
    empty_pairs = torch.zeros((0, 2), dtype=torch.int64)
    assert pairwise_edit_distance(ids, lengths, empty_pairs, backend=backend).shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pairwise_matrix_symmetric_and_equal_to_pairs(backend: str) -> None:
    rng = random.Random(7)
    seqs = random_seqs(rng, 24, 140, 9) + [[0] * 10, [0] * 10]
    ids, lengths = pad(seqs)
    matrix = pairwise_edit_distance(ids, lengths, backend=backend)
    assert matrix.dtype == torch.int32 and matrix.shape == (26, 26)
    assert torch.equal(matrix, matrix.T)
    assert matrix.diagonal().eq(0).all()
    assert matrix[24, 25] == 0
    n = len(seqs)
    pairs = torch.tensor([[i, j] for i in range(n) for j in range(n)])
    flat = pairwise_edit_distance(ids, lengths, pairs, backend=backend)
    assert torch.equal(flat.reshape(n, n), matrix)
    for i, j in [(0, 1), (3, 17), (22, 5), (24, 0)]:
        assert matrix[i, j] == levenshtein(seqs[i], seqs[j])


def test_backends_agree_on_full_matrix_with_large_alphabet_and_ids() -> None:
    rng = random.Random(11)
    seqs = random_seqs(rng, 30, 130, 1025)
    # Ids far beyond the alphabet size: the torch backend re-codes them densely.
    big = [[10**9 + 7 * x for x in s] for s in seqs[:5]]
    ids, lengths = pad(seqs)
    assert torch.equal(
        pairwise_edit_distance(ids, lengths, backend="torch"),
        pairwise_edit_distance(ids, lengths, backend="rapidfuzz"),
    )
    big_ids = torch.full((5, 130), -1, dtype=torch.int64)
    for row, s in enumerate(big):
        big_ids[row, : len(s)] = torch.tensor(s)
    big_len = torch.tensor([len(s) for s in big])
    assert torch.equal(
        pairwise_edit_distance(big_ids, big_len, backend="torch"),
        pairwise_edit_distance(ids[:5], lengths[:5], backend="rapidfuzz"),
    )


@pytest.mark.parametrize("chunk_size", [1, 7, 50])
def test_chunking_gives_the_same_answer(chunk_size: int) -> None:
    rng = random.Random(5)
    seqs = random_seqs(rng, 20, 130, 65)
    ids, lengths = pad(seqs)
    whole = pairwise_edit_distance(ids, lengths, backend="torch", chunk_size=10**6)
    assert torch.equal(pairwise_edit_distance(ids, lengths, backend="torch", chunk_size=chunk_size), whole)
    pairs = torch.randint(0, 20, (90, 2), generator=torch.Generator().manual_seed(0))
    one = pairwise_edit_distance(ids, lengths, pairs, backend="torch", chunk_size=10**6)
    assert torch.equal(pairwise_edit_distance(ids, lengths, pairs, backend="torch", chunk_size=chunk_size), one)
    assert torch.equal(pairwise_edit_distance(ids, lengths, pairs, backend="rapidfuzz", chunk_size=chunk_size), one)
    assert torch.equal(one, whole[pairs[:, 0], pairs[:, 1]])


def test_small_memory_budget_uses_per_chunk_tables() -> None:
    # A budget below one table for all patterns switches to per-chunk tables of sorted pairs.
    rng = random.Random(9)
    seqs = random_seqs(rng, 40, 100, 1025)
    ids, lengths = pad(seqs)
    pairs = torch.randint(0, 40, (200, 2), generator=torch.Generator().manual_seed(1))
    expected = [levenshtein(seqs[i], seqs[j]) for i, j in pairs.tolist()]
    got = torch_pair_distances(ids, lengths, ids, lengths, pairs[:, 0], pairs[:, 1], budget_bytes=200_000)
    assert got.tolist() == expected
    full = torch_full_matrix(ids, lengths, budget_bytes=200_000)
    assert torch.equal(full, pairwise_edit_distance(ids, lengths, backend="rapidfuzz"))


sequences = st.lists(st.integers(0, 5), max_size=140)


@settings(max_examples=60, deadline=None)
@given(a=sequences, b=sequences, c=sequences)
def test_metric_axioms(a: list[int], b: list[int], c: list[int]) -> None:
    ids, lengths = pad([a, b, c])
    d = pairwise_edit_distance(ids, lengths, backend="torch").tolist()
    assert d == pairwise_edit_distance(ids, lengths, backend="rapidfuzz").tolist()
    seqs = [a, b, c]
    for i in range(3):
        assert d[i][i] == 0
        for j in range(3):
            assert d[i][j] == d[j][i]
            assert abs(len(seqs[i]) - len(seqs[j])) <= d[i][j] <= max(len(seqs[i]), len(seqs[j]))
            for k in range(3):
                assert d[i][k] <= d[i][j] + d[j][k]
    assert d[0][1] == Levenshtein.distance(a, b)


@settings(max_examples=40, deadline=None)
@given(a=st.lists(st.integers(0, 2000), max_size=70), b=st.lists(st.integers(0, 2000), max_size=70))
def test_torch_equals_reference_property(a: list[int], b: list[int]) -> None:
    a_ids, a_len = pad([a])
    b_ids, b_len = pad([b])
    assert edit_distance(a_ids, a_len, b_ids, b_len, backend="torch").item() == levenshtein(a, b)


def test_auto_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import grokmon.editdistance.dispatch as dispatch

    assert resolve_backend("auto", torch.device("cpu")) == "rapidfuzz"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    # CUDA: the Triton kernel when it can run and the sequences fit it, else the torch path
    monkeypatch.setattr(dispatch, "triton_available", lambda device=None: True)
    assert resolve_backend("auto", torch.device("cuda"), max_len=128) == "triton"
    assert resolve_backend("auto", torch.device("cuda"), max_len=dispatch.MAX_PATTERN_LEN + 1) == "torch"
    monkeypatch.setattr(dispatch, "triton_available", lambda device=None: False)
    assert resolve_backend("auto", torch.device("cuda"), max_len=128) == "torch"

    monkeypatch.setattr(dispatch, "rapidfuzz_available", lambda: False)
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    ids, lengths = pad([[1, 2, 3], [3, 2]])
    assert pairwise_edit_distance(ids, lengths).tolist() == [[0, 2], [2, 0]]


def test_rapidfuzz_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rapidfuzz_backend, "_process", None)
    ids, lengths = pad([[1], [2]])
    with pytest.raises(ConfigError, match="pip install rapidfuzz"):
        pairwise_edit_distance(ids, lengths, backend="rapidfuzz")


def test_errors_name_the_problem() -> None:
    ids, lengths = pad([[1, 2], [3]])
    with pytest.raises(ConfigError, match="unknown edit-distance backend"):
        pairwise_edit_distance(ids, lengths, backend="numba")
    with pytest.raises(ConfigError, match="2 rows but 3 lengths"):
        pairwise_edit_distance(ids, torch.tensor([1, 1, 1]))
    with pytest.raises(ConfigError, match=r"lengths must be in \[0, 2\]"):
        pairwise_edit_distance(ids, torch.tensor([3, 1]))
    with pytest.raises(ConfigError, match=r"lengths must be in \[0, 2\]"):
        pairwise_edit_distance(ids, torch.tensor([-1, 1]))
    with pytest.raises(ConfigError, match="row 1 has a negative id inside its length 2"):
        pairwise_edit_distance(ids, torch.tensor([1, 2]))
    with pytest.raises(ConfigError, match="integer tensor"):
        pairwise_edit_distance(ids.float(), lengths)
    with pytest.raises(ConfigError, match="2 dimension"):
        pairwise_edit_distance(ids[0], lengths)
    with pytest.raises(ConfigError, match=r"pairs must be \[P, 2\]"):
        pairwise_edit_distance(ids, lengths, torch.tensor([[0, 1, 1]]))
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\]"):
        pairwise_edit_distance(ids, lengths, torch.tensor([[0, 2]]))
    with pytest.raises(ConfigError, match="chunk_size"):
        pairwise_edit_distance(ids, lengths, backend="torch", chunk_size=0)
    with pytest.raises(ConfigError, match="compares rows pairwise"):
        edit_distance(ids, lengths, ids[:1], lengths[:1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["torch", "auto", "rapidfuzz"])
def test_cuda_matches_cpu(backend: str) -> None:
    rng = random.Random(13)
    seqs = random_seqs(rng, 64, 200, 1025)
    ids, lengths = pad(seqs)
    cpu = pairwise_edit_distance(ids, lengths, backend="rapidfuzz")
    gpu = pairwise_edit_distance(ids.cuda(), lengths.cuda(), backend=backend)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.int32
    assert torch.equal(gpu.cpu(), cpu)
    pairs = torch.randint(0, 64, (500, 2), generator=torch.Generator().manual_seed(2))
    got = pairwise_edit_distance(ids.cuda(), lengths.cuda(), pairs.cuda(), backend=backend, chunk_size=97)
    assert torch.equal(got.cpu(), cpu[pairs[:, 0], pairs[:, 1]])
    a, b = mixed_pairs(4)
    (a_ids, a_len), (b_ids, b_len) = pad(a), pad(b)
    row = edit_distance(a_ids.cuda(), a_len.cuda(), b_ids.cuda(), b_len.cuda(), backend=backend)
    assert row.cpu().tolist() == [levenshtein(x, y) for x, y in zip(a, b)]
