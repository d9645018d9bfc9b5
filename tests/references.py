"""Plain-Python references shared by the metric tests (independent of grokmon.editdistance)."""

from __future__ import annotations

import torch

from grokmon.pathways import PathwaySequences


def lev(a: list[int], b: list[int]) -> int:
    """Textbook dynamic-programming Levenshtein distance."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def seqs_from(rows: list[list[int]], vocab: int = 10) -> PathwaySequences:
    """Ragged id lists as a padded :class:`PathwaySequences` (pad -1)."""
    width = max([1, *(len(r) for r in rows)])
    ids = torch.full((len(rows), width), -1, dtype=torch.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.int32)
    return PathwaySequences(ids, torch.tensor([len(r) for r in rows]), vocab)
