"""Plain-Python Levenshtein distance: the reference every fast backend is tested against.

Example:
    >>> levenshtein([1, 2, 3], [1, 3])
    1
    >>> levenshtein([], [7, 7])
    2
"""

from __future__ import annotations

from typing import Hashable, Sequence


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Unit-cost edit distance (insertions, deletions, substitutions) between two sequences.

    The textbook dynamic programme over one row, ``O(len(a) * len(b))`` time. Slow on purpose:
    it is the definition, not a kernel (use :func:`grokmon.editdistance.edit_distance`).

    Example:
        >>> levenshtein([0, 1, 2, 4, 3], [0, 2, 1, 4, 3])
        2
    """
    a, b = list(a), list(b)
    previous = list(range(len(b) + 1))  # row 0: D[0][j] = j
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(
                min(
                    previous[j] + 1,  # delete x
                    current[j - 1] + 1,  # insert y
                    previous[j - 1] + (x != y),  # substitute (or match)
                )
            )
        previous = current
    return previous[-1]
