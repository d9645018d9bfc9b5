"""Helpers for testing grokmon and the code that uses it; nothing here runs during training.

* :mod:`grokmon.testing.wandb_records`: read a W&B run file back (history rows, metric definitions,
  alerts), to check exactly what reached W&B, offline runs included.

Example:
    >>> from grokmon.testing import read_wandb_run                   # doctest: +SKIP
    >>> read_wandb_run("wandb/latest-run").column("grokmon/pathway_distance")  # doctest: +SKIP
"""

from __future__ import annotations

from .wandb_records import WandbRunRecords, find_wandb_file, iter_wandb_records, read_wandb_run

__all__ = ["WandbRunRecords", "find_wandb_file", "iter_wandb_records", "read_wandb_run"]
