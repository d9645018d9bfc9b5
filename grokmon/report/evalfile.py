"""Held-out evaluation curves for the report: read a small JSON / JSONL / CSV file of steps and values.

The format is deliberately plain, so any training script can write it:

* **CSV** (``.csv``): a header row with a ``step`` column and one column per curve::

      step,eval/accuracy,eval/loss
      0,0.01,4.2
      500,0.35,2.9

* **JSONL** (``.jsonl``): one object per line, a ``step`` and numbers (a grokmon-style
  ``{"step": ..., "metrics": {...}}`` line works too)::

      {"step": 0, "eval/accuracy": 0.01}
      {"step": 500, "eval/accuracy": 0.35}

* **JSON** (``.json``): either a list of such objects, or ``{"curve name": [[step, value], ...]}``::

      {"eval/accuracy": [[0, 0.01], [500, 0.35]]}

Values that are empty, ``null`` or non-finite are skipped; every other column must be a number.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "eval.csv")
    >>> _ = open(path, "w").write("step,accuracy\\n0,0.1\\n100,0.8\\n")
    >>> read_eval_file(path)
    {'accuracy': [(0, 0.1), (100, 0.8)]}
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["read_eval_file", "Series"]

Series = dict[str, list[tuple[int, float]]]

_FORMAT_HINT = ("write CSV with a 'step' column, JSONL of {\"step\": ..., \"<name>\": value} lines, "
                "or JSON {\"<name>\": [[step, value], ...]} (docs/quickstart.md)")


def read_eval_file(path: str | os.PathLike) -> Series:
    """Curves of an evaluation file: ``{name: [(step, value), ...]}`` sorted by step.

    Raises:
        ConfigError: the file is missing, empty, of an unknown type, or has rows without a
            ``step`` or with a value that is not a number.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"eval_file {str(p)!r} does not exist: pass a CSV, JSON or JSONL file of steps and values")
    suffix = p.suffix.lower()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"eval_file {str(p)!r} is not readable text ({e}): {_FORMAT_HINT}") from e
    if not text.strip():
        raise ConfigError(f"eval_file {str(p)!r} is empty: {_FORMAT_HINT}")
    if suffix == ".csv":
        series = _from_rows(csv.DictReader(text.splitlines()), p)
    elif suffix == ".jsonl":
        series = _from_rows(_jsonl_rows(text, p), p)
    elif suffix == ".json":
        series = _from_json(_json(text, p, None), p)
    else:
        raise ConfigError(f"eval_file {str(p)!r}: unknown file type {suffix or '(none)'!r}; {_FORMAT_HINT}")
    if not series:
        raise ConfigError(f"eval_file {str(p)!r} has no numeric values: {_FORMAT_HINT}")
    return {name: sorted(points) for name, points in sorted(series.items())}


def _json(text: str, path: Path, line: int | None) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        where = f"line {line} of " if line is not None else ""
        raise ConfigError(f"{where}eval_file {str(path)!r} is not JSON ({e}): {_FORMAT_HINT}") from e


def _jsonl_rows(text: str, path: Path) -> Iterable[Mapping[str, Any]]:
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            row = _json(line, path, i)
            if not isinstance(row, Mapping):
                raise ConfigError(f"line {i} of eval_file {str(path)!r} is not a JSON object: {_FORMAT_HINT}")
            if isinstance(row.get("metrics"), Mapping):  # a grokmon-style record
                row = {"step": row.get("step"), **row["metrics"]}
            yield row


def _from_json(data: Any, path: Path) -> Series:
    if isinstance(data, list):
        return _from_rows(data, path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"eval_file {str(path)!r} holds a JSON {type(data).__name__}: {_FORMAT_HINT}")
    out: Series = {}
    for name, points in data.items():
        if not isinstance(points, list):
            raise ConfigError(f"eval_file {str(path)!r}: {name!r} is not a list of [step, value] pairs: {_FORMAT_HINT}")
        for i, pair in enumerate(points):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ConfigError(f"eval_file {str(path)!r}: item {i} of {name!r} is not a [step, value] pair: "
                                  f"{_FORMAT_HINT}")
            _add(out, str(name), pair[0], pair[1], path, f"item {i} of {name!r}")
    return out


def _from_rows(rows: Iterable[Any], path: Path) -> Series:
    out: Series = {}
    for i, row in enumerate(rows, 1):
        if not isinstance(row, Mapping):
            raise ConfigError(f"row {i} of eval_file {str(path)!r} is not an object: {_FORMAT_HINT}")
        if row.get("step") in (None, ""):
            raise ConfigError(f"row {i} of eval_file {str(path)!r} has no 'step' (found {sorted(map(str, row))}): "
                              f"{_FORMAT_HINT}")
        for name, value in row.items():
            if name != "step" and name is not None:
                _add(out, str(name), row["step"], value, path, f"row {i}")
    return out


def _add(out: Series, name: str, step: Any, value: Any, path: Path, where: str) -> None:
    try:
        s = int(float(step))
    except (TypeError, ValueError):
        raise ConfigError(f"{where} of eval_file {str(path)!r}: step {step!r} is not a number") from None
    if value is None or value == "" or isinstance(value, bool):
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} of eval_file {str(path)!r}: {name!r} = {value!r} is not a number; "
                          "keep only numeric columns besides 'step'") from None
    if math.isfinite(v):
        out.setdefault(name, []).append((s, v))
