"""One folder per run: ``run-<n>`` under a root, made atomically so two runs never share one.

A monitor whose ``MonitorConfig.output_dir`` is None writes its record in a new run folder (under
``grokmon_out/``, or under the host's output folder when an adapter names it), so running a
script again starts a new record instead of appending to the last one.

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> new_run_folder(root).name, new_run_folder(root).name
    ('run-1', 'run-2')
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_RUNS_ROOT", "new_run_folder"]

#: Where run folders go when no host names an output folder (relative to the working directory).
DEFAULT_RUNS_ROOT = Path("grokmon_out")


def new_run_folder(root: str | os.PathLike) -> Path:
    """Make and return ``root/run-<n>``, ``n`` one past the highest ``run-<n>`` already there.

    ``mkdir`` without ``exist_ok`` is atomic: two processes that pick the same ``n`` at once get
    different folders (the loser takes the next number).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[4:]) for p in root.iterdir() if p.name.startswith("run-") and p.name[4:].isdigit()]
    n = max(taken, default=0) + 1
    while True:
        folder = root / f"run-{n}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1
