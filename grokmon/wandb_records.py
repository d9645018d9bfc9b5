"""Old import path of :mod:`grokmon.testing.wandb_records` (the W&B run-file reader), kept working.

Example:
    >>> from grokmon.wandb_records import read_wandb_run   # doctest: +SKIP
"""

from __future__ import annotations

from .testing.wandb_records import WandbRunRecords, find_wandb_file, iter_wandb_records, read_wandb_run

__all__ = ["WandbRunRecords", "find_wandb_file", "iter_wandb_records", "read_wandb_run"]
