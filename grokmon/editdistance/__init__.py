"""Batched Levenshtein distance over integer sequences (expert-id pathways).

* :func:`levenshtein` – plain-Python reference;
* :func:`edit_distance` – row-wise pairs of two padded id tensors;
* :func:`pairwise_edit_distance` – a pair list or the full matrix of one padded id tensor.

Backends: ``"torch"`` (bit-parallel, CPU/CUDA), ``"rapidfuzz"`` (CPU), ``"triton"`` (bit-parallel
kernel, CUDA, sequences up to 256), ``"auto"`` (triton, else torch, on CUDA; rapidfuzz on CPU).

Example:
    >>> import torch
    >>> from grokmon.editdistance import pairwise_edit_distance, levenshtein
    >>> ids = torch.tensor([[0, 1, 2], [0, 2, -1]], dtype=torch.int32)
    >>> pairwise_edit_distance(ids, torch.tensor([3, 2]))[0, 1].item() == levenshtein([0, 1, 2], [0, 2])
    True
"""

from .dispatch import BACKENDS, edit_distance, pairwise_edit_distance, resolve_backend
from .reference import levenshtein
from .triton_kernel import triton_available

__all__ = [
    "BACKENDS",
    "edit_distance",
    "levenshtein",
    "pairwise_edit_distance",
    "resolve_backend",
    "triton_available",
]
