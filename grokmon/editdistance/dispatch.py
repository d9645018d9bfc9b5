"""Public entry points: validate inputs, pick a backend, return int32 distances on the input device.

Backends:

* ``"torch"`` – bit-parallel Myers/Hyyrö over pairs (:mod:`.torch_bitparallel`), on the inputs'
  device (CPU or CUDA), in chunks sized from a memory budget;
* ``"rapidfuzz"`` – rapidfuzz's C++ kernels on CPU threads (:mod:`.rapidfuzz_backend`);
* ``"triton"`` – the same algorithm as one Triton kernel, one pair per GPU thread with the whole
  text loop on device (:mod:`.triton_kernel`); CUDA tensors, sequences up to
  :data:`~.triton_kernel.MAX_PATTERN_LEN` = 256 symbols (the shorter one of each pair for pair
  lists). On CPU tensors only under ``TRITON_INTERPRET=1`` (Triton's interpreter, for tests);
* ``"auto"`` – CUDA inputs: triton when it is importable and the longest sequence fits the
  kernel, else torch; CPU inputs: rapidfuzz, which measured 12-15x faster than the torch path on
  CPU (docs/performance.md), or torch when rapidfuzz is not installed.

Example:
    >>> import torch
    >>> ids = torch.tensor([[3, 1, 4, 1], [3, 1, 5, -1], [2, 7, -1, -1]], dtype=torch.int32)
    >>> lengths = torch.tensor([4, 3, 2])
    >>> pairwise_edit_distance(ids, lengths).tolist()
    [[0, 2, 4], [2, 0, 3], [4, 3, 0]]
    >>> pairwise_edit_distance(ids, lengths, torch.tensor([[0, 1], [2, 0]]), backend="torch").tolist()
    [2, 4]
"""

from __future__ import annotations

from typing import Literal

import torch

from ..errors import ConfigError
from .rapidfuzz_backend import rapidfuzz_available, rapidfuzz_full_matrix, rapidfuzz_pair_distances
from .torch_bitparallel import torch_full_matrix, torch_pair_distances
from .triton_kernel import (
    MAX_PATTERN_LEN,
    require_triton,
    triton_available,
    triton_full_matrix,
    triton_pair_distances,
)

Backend = Literal["auto", "torch", "rapidfuzz", "triton"]
BACKENDS = ("auto", "torch", "rapidfuzz", "triton")


def resolve_backend(backend: str, device: torch.device, max_len: int = 0) -> str:
    """The concrete backend (``"torch"``, ``"rapidfuzz"`` or ``"triton"``) ``backend`` means on ``device``.

    ``max_len`` is the longest sequence to compare: ``"auto"`` picks triton on CUDA only when it
    fits the kernel (:data:`~.triton_kernel.MAX_PATTERN_LEN`). An explicit ``"triton"`` that cannot
    run on ``device`` raises :class:`ConfigError` naming the fix.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown edit-distance backend {backend!r}: use one of {BACKENDS}")
    if backend == "auto":
        if device.type == "cpu" and rapidfuzz_available():
            return "rapidfuzz"
        if device.type == "cuda" and max_len <= MAX_PATTERN_LEN and triton_available(device):
            return "triton"
        return "torch"
    if backend == "triton":
        require_triton(device)
    return backend


def _longest(*lengths: torch.Tensor) -> int:
    return max([int(t.max().item()) for t in lengths if t.numel()] + [0])


def _as_int_tensor(name: str, x, dims: int) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ConfigError(f"{name} must be an integer tensor, got dtype {t.dtype}")
    if t.dim() != dims:
        raise ConfigError(f"{name} must have {dims} dimension(s), got shape {tuple(t.shape)}")
    return t


def _check_sequences(name: str, ids, lengths) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a padded ``[N, M]`` id tensor and its ``[N]`` lengths; lengths moved to ids' device."""
    ids = _as_int_tensor(name, ids, 2)
    lengths = _as_int_tensor(f"{name} lengths", lengths, 1).to(ids.device)
    n, width = ids.shape
    if lengths.shape[0] != n:
        raise ConfigError(
            f"{name} has {n} rows but {lengths.shape[0]} lengths: pass one length per row"
        )
    if n == 0:
        return ids, lengths
    lo, hi = int(lengths.min().item()), int(lengths.max().item())
    if lo < 0 or hi > width:
        raise ConfigError(
            f"{name} lengths must be in [0, {width}] (the padded width), got values in [{lo}, {hi}]"
        )
    inside = torch.arange(width, device=ids.device)[None, :] < lengths[:, None]
    if bool((ids.lt(0) & inside).any()):
        row = int((ids.lt(0) & inside).any(dim=1).nonzero()[0].item())
        raise ConfigError(
            f"{name} row {row} has a negative id inside its length {int(lengths[row])}: ids must be "
            f">= 0 (-1 is padding and belongs after the length)"
        )
    return ids, lengths


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ConfigError(f"chunk_size must be a positive number of pairs or None, got {chunk_size!r}")


def edit_distance(
    a_ids: torch.Tensor,
    a_len: torch.Tensor,
    b_ids: torch.Tensor,
    b_len: torch.Tensor,
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Levenshtein distance of each row pair ``(a_ids[p, :a_len[p]], b_ids[p, :b_len[p]])``.

    Args:
        a_ids: ``[P, M1]`` integer ids, padded with ``-1`` after ``a_len``.
        a_len: ``[P]`` lengths.
        b_ids: ``[P, M2]``; b_len: ``[P]``.
        backend: ``"auto"``, ``"torch"``, ``"rapidfuzz"`` or ``"triton"`` (see the module docstring).

    Returns:
        ``[P]`` int32 on the device of ``a_ids``.

    Example:
        >>> import torch
        >>> edit_distance(torch.tensor([[1, 2, 3]]), torch.tensor([3]),
        ...               torch.tensor([[1, 3, -1, -1]]), torch.tensor([2])).tolist()
        [1]
    """
    a_ids, a_len = _check_sequences("a_ids", a_ids, a_len)
    b_ids, b_len = _check_sequences("b_ids", b_ids, b_len)
    if a_ids.shape[0] != b_ids.shape[0]:
        raise ConfigError(
            f"edit_distance compares rows pairwise: a_ids has {a_ids.shape[0]} rows, b_ids "
            f"{b_ids.shape[0]}; use pairwise_edit_distance for all pairs"
        )
    if a_ids.device != b_ids.device:
        raise ConfigError(f"a_ids is on {a_ids.device} but b_ids on {b_ids.device}: move both to one device")
    longest = _longest(a_len, b_len) if backend == "auto" and a_ids.device.type == "cuda" else 0
    which = resolve_backend(backend, a_ids.device, longest)
    index = torch.arange(a_ids.shape[0], device=a_ids.device)
    if which == "rapidfuzz":
        return rapidfuzz_pair_distances(a_ids, a_len, b_ids, b_len, index, index)
    if which == "triton":
        return triton_pair_distances(a_ids, a_len, b_ids, b_len, index, index)
    return torch_pair_distances(a_ids, a_len, b_ids, b_len, index, index)


def pairwise_edit_distance(
    ids: torch.Tensor,
    lengths: torch.Tensor,
    pairs: torch.Tensor | None = None,
    *,
    backend: Backend = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Levenshtein distances between the rows of one padded id tensor.

    Args:
        ids: ``[N, M]`` integer ids (int32 from :func:`grokmon.pathways.pathway_sequences`), ``-1``
            after each row's length.
        lengths: ``[N]``.
        pairs: ``[P, 2]`` row indices to compare, or None for all pairs.
        backend: ``"auto"``, ``"torch"``, ``"rapidfuzz"`` or ``"triton"``.
        chunk_size: pairs per chunk (triton: per kernel launch); default from a memory budget
            (torch: 128 MiB on CPU, a quarter of free GPU memory up to 4 GiB on CUDA; triton: the
            same budget bounds its match tables), so large ``N`` stays in bounded memory.

    Returns:
        ``[P]`` int32 for ``pairs``, else the symmetric ``[N, N]`` int32 matrix with a zero diagonal,
        on the device of ``ids``.

    Example:
        >>> import torch
        >>> pairwise_edit_distance(torch.tensor([[0, 1], [1, 0]]), torch.tensor([2, 2])).tolist()
        [[0, 2], [2, 0]]
    """
    ids, lengths = _check_sequences("ids", ids, lengths)
    _check_chunk_size(chunk_size)
    longest = _longest(lengths) if backend == "auto" and ids.device.type == "cuda" else 0
    which = resolve_backend(backend, ids.device, longest)
    n = ids.shape[0]
    if pairs is None:
        if which == "rapidfuzz":
            return rapidfuzz_full_matrix(ids, lengths)
        if which == "triton":
            return triton_full_matrix(ids, lengths, chunk_size=chunk_size)
        return torch_full_matrix(ids, lengths, chunk_size=chunk_size)

    pairs = _as_int_tensor("pairs", pairs, 2).to(ids.device)
    if pairs.shape[1] != 2:
        raise ConfigError(f"pairs must be [P, 2] row indices, got shape {tuple(pairs.shape)}")
    if pairs.numel() and (int(pairs.min().item()) < 0 or int(pairs.max().item()) >= n):
        raise ConfigError(
            f"pairs index rows of ids: every index must be in [0, {n - 1}], got values in "
            f"[{int(pairs.min().item())}, {int(pairs.max().item())}]"
        )
    pairs = pairs.long()
    if which == "torch":
        return torch_pair_distances(ids, lengths, ids, lengths, pairs[:, 0], pairs[:, 1], chunk_size=chunk_size)
    if which == "triton":
        return triton_pair_distances(ids, lengths, ids, lengths, pairs[:, 0], pairs[:, 1], chunk_size=chunk_size)
    return rapidfuzz_pair_distances(
        ids, lengths, ids, lengths, pairs[:, 0], pairs[:, 1], chunk_size=chunk_size
    )
