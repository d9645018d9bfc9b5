"""JsonlSink: one JSON object per line, the embedded default sink.

The one record format of grokmon: live runs and ``grokmon scan`` write it through this class, and
``grokmon report`` reads it back with :func:`read_metrics`. Line format (one per
:meth:`JsonlSink.log` / alert)::

    {"step": 200, "time": 1732400000.1, "metrics": {"grokmon/pathway_distance": 3.5, "grokmon/x": null}}
    {"step": 200, "time": 1732400000.2, "alert": {"title": "...", "text": "...", "level": "WARN", ...}}
    {"step": 600, "time": 1732400009.5, "checkpoint": "/abs/ckpts/checkpoint-600", "metrics": {...}}

Metrics are nested under ``"metrics"`` so that keys never collide with ``step`` / ``time``; their
keys carry the monitor's prefix (``grokmon/``). Extra top-level fields describe where a record
comes from (``grokmon scan`` writes ``"checkpoint"``: ``log(..., fields={"checkpoint": path})``).
Non-finite values (NaN, ±inf) are written as ``null``, so every line is strict JSON. Each line is
flushed as it is written.

Resume: opening an existing file appends to it, and metric lines only ever move forward.
``resume_step`` (the step of the checkpoint the run resumed from) first drops every line with a
larger step – those came from the lost part of the previous run. After that, :meth:`log` drops
(with one warning) any step that is not above the last metric step in the file. Together these
keep the file free of duplicate or backwards steps across restarts. A half-written last line
(a crash mid-write) is removed on open. ``ordered=False`` turns the forward-only rule off (``grokmon
scan`` records checkpoints in the order it is given them).

One writer per file: the sink holds an exclusive lock (``<file>.lock``, released when it closes or
its process ends), so a second sink on the same file, in this process or another, raises a
:class:`~grokmon.errors.SinkError` naming the holder instead of mixing two runs' steps into one
record (a monitor with the default path moves to ``grokmon.2.jsonl`` instead, with a warning).

Write errors never lose a record and never leave half a line: each line goes to the file in one
``os.write`` on an ``O_APPEND`` descriptor, and a write that fails (a full disk, a hung or
read-only filesystem) is cut back to the last whole line. The line is kept in memory, in order,
and retried at the next call, so when space returns the missing steps are written in order. The
sink never raises for it (so the monitor never detaches it): it warns once, and counts the lines
waiting in ``pending`` and any it had to give up (more than ``max_pending`` waiting; the oldest go
first, with a warning) in ``lost``.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "grokmon.jsonl")
    >>> with JsonlSink(path) as sink:
    ...     sink.log({"grokmon/pathway_distance": 3.5, "grokmon/nan": float("nan")}, step=200)
    >>> [(r["step"], r["metrics"]) for r in read_jsonl(path)]
    [(200, {'grokmon/pathway_distance': 3.5, 'grokmon/nan': None})]
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import SinkError
from ..keys import unprefixed as _unprefixed_key
from .base import AlertInfo, Sink, _jsonable, to_float

__all__ = ["JsonlSink", "read_jsonl", "read_metrics", "unprefixed"]

_RESERVED = ("step", "time", "metrics", "alert")


def _parse(path: Path) -> tuple[list[dict], bool]:
    """Records of ``path`` and whether its end is damaged (an unterminated or unparsable last line)."""
    raw = path.read_bytes()
    if not raw:
        return [], False
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    records, damaged = [], False
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as e:
            if i == len(lines) - 1 and not tail:
                damaged = True  # last line half-written, then a newline was never reached
                break
            raise SinkError(f"line {i + 1} of {path} is not JSON ({e}): the file is corrupted; move it away") from e
    if tail.strip():
        try:
            records.append(json.loads(tail))
        except ValueError:
            pass
        damaged = True  # no trailing newline: the next append would glue onto this line
    return records, damaged


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a grokmon JSONL file, in order (a half-written last line is skipped).

    Metric records have ``"metrics"``, alert records ``"alert"``; ``null`` metric values are
    non-finite numbers.
    """
    path = Path(path)
    if not path.exists():
        raise SinkError(f"no JSONL file at {path}")
    return _parse(path)[0]


def read_metrics(path: str | os.PathLike) -> list[tuple[int, dict[str, float]]]:
    """The ``(step, metrics)`` pairs of a grokmon JSONL file, in file order; alerts skipped.

    Keys lose the ``grokmon/`` prefix (``pathway_distance``, ``group/<g>/probe_loss``) and ``null``
    values come back as NaN. Keys without the prefix (``eval/accuracy``) come back as they are.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "grokmon.jsonl")
        >>> with JsonlSink(path) as sink:
        ...     sink.log({"grokmon/pathway_distance": 3.5, "grokmon/probe_loss": float("nan")}, step=200)
        >>> read_metrics(path)
        [(200, {'pathway_distance': 3.5, 'probe_loss': nan})]
    """
    return [(int(r["step"]), unprefixed(r["metrics"])) for r in read_jsonl(path) if "metrics" in r]


def unprefixed(metrics: Mapping[str, float | None]) -> dict[str, float]:
    """A record's metrics as :func:`read_metrics` gives them: no ``grokmon/`` prefix, ``None`` as NaN."""
    return {_unprefixed_key(k): (math.nan if v is None else v) for k, v in metrics.items()}


def _lock(path: Path) -> Any:
    """Hold ``<path>.lock`` exclusively (a file object: closing it, or the process ending, releases it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): one writer per file is up to the user
        return contextlib.nullcontext()
    lock_path = path.with_name(path.name + ".lock")
    try:
        handle = open(lock_path, "a+")
    except OSError as error:
        raise SinkError(f"cannot create the lock file {lock_path} of the JSONL record ({error}): pass a path in a "
                        "writable folder (jsonl=... / output_dir=...), or jsonl=False") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        error = SinkError(f"{path} is already being written by another grokmon monitor or sink (process {holder}): "
                          "two runs would mix their steps in one record. Give each run its own output_dir (or "
                          "jsonl= path), or close the other monitor first")
        error.in_use = True  # type: ignore[attr-defined]
        raise error from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class JsonlSink(Sink):
    """Append probe metrics and alerts to a JSON-lines file (see module doc for format and resume)."""

    name = "jsonl"

    def __init__(self, path: str | os.PathLike, *, resume_step: int | None = None, ordered: bool = True,
                 max_pending: int = 100_000) -> None:
        self.path = Path(path)
        self.ordered = ordered
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SinkError(f"cannot create the folder of the JSONL record {self.path} ({error}): pass a path in a "
                            "writable folder (jsonl=... / output_dir=...), or jsonl=False") from None
        self.dropped = 0
        self.lost = 0
        self.max_pending = max_pending
        self._pending: collections.deque[bytes] = collections.deque()
        self._warned_write = False
        self._fd: int | None = None
        self._lock = _lock(self.path)
        records: list[dict] = []
        if self.path.exists():
            records, damaged = _parse(self.path)
            kept = records
            if resume_step is not None:
                kept = [r for r in records if r.get("step") is None or r["step"] <= resume_step]
            if damaged or len(kept) != len(records):
                self._rewrite(kept)
            records = kept
        steps = [r["step"] for r in records if "metrics" in r and r.get("step") is not None]
        self.last_step: int | None = max(steps) if steps else None
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            self._lock.close()
            raise SinkError(f"cannot open the JSONL record {self.path} for writing ({error}): pass a path in a "
                            "writable folder (jsonl=... / output_dir=...), or jsonl=False") from None

    @property
    def pending(self) -> int:
        """Lines waiting for the file to take them (after a write error)."""
        return len(self._pending)

    def _rewrite(self, records: list[dict]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, allow_nan=False) + "\n")
        os.replace(tmp, self.path)

    def _write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            raise SinkError(f"JsonlSink({self.path}) is closed: create a new sink to log again")
        self._pending.append((json.dumps(record, allow_nan=False) + "\n").encode("utf-8"))
        if len(self._pending) > self.max_pending:
            self._pending.popleft()
            self.lost += 1
            if self.lost == 1:
                warnings.warn(f"JsonlSink({self.path}): more than {self.max_pending} lines could not be written; "
                              "the oldest are given up (counted in .lost)", RuntimeWarning, stacklevel=3)
        self._drain()

    def _drain(self) -> None:
        """Write the waiting lines in order, each whole or not at all; stop at the first error."""
        assert self._fd is not None
        while self._pending:
            line = self._pending[0]
            start = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
            except OSError as error:
                try:  # never leave half a line for a reader or the next append
                    os.ftruncate(self._fd, start)
                except OSError:
                    pass
                if not self._warned_write:
                    self._warned_write = True
                    warnings.warn(f"JsonlSink({self.path}): write failed ({error}); the lines are kept in memory "
                                  "and written, in order, once the file takes them again", RuntimeWarning, stacklevel=4)
                return
            self._pending.popleft()
        self._warned_write = False

    def log(self, metrics: Mapping[str, float], step: int, *, fields: Mapping[str, Any] | None = None) -> None:
        """Append one metric record; ``fields`` are extra top-level JSON fields (e.g. the checkpoint)."""
        step = int(step)
        clash = [k for k in fields or {} if k in _RESERVED]
        if clash:
            raise SinkError(f"fields {clash} would overwrite the record's own keys {_RESERVED}: rename them")
        if self.ordered and self.last_step is not None and step <= self.last_step:
            self.dropped += 1
            if self.dropped == 1:
                warnings.warn(
                    f"JsonlSink({self.path}): step {step} is not after step {self.last_step} already in the file; "
                    "dropped (JSONL steps only move forward). Pass resume_step= when resuming from a checkpoint",
                    RuntimeWarning, stacklevel=2,
                )
            return
        values = {}
        for k, v in metrics.items():
            f = to_float(v, k)
            values[str(k)] = f if math.isfinite(f) else None
        self._write({"step": step, "time": time.time(), **_jsonable(dict(fields or {})), "metrics": values})
        self.last_step = step if self.last_step is None else max(step, self.last_step)

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Append the record's configuration line ``{"time": ..., "config": {...}}`` (:mod:`grokmon.runinfo`).

        Readers of metrics skip it; ``grokmon report`` shows it.
        """
        self._write({"time": time.time(), "config": _jsonable(dict(config))})

    def _alert(self, alert: AlertInfo) -> None:
        step = alert.step if alert.step is not None else self.last_step
        self._write({"step": step, "time": time.time(), "alert": _jsonable(alert.to_dict())})

    def flush(self) -> None:
        """Try the waiting lines again now."""
        if self._fd is not None:
            self._drain()

    def close(self) -> None:
        """Write what can be written, then close the file; lines still waiting are counted in ``lost``."""
        if self._fd is None:
            return
        self._drain()
        if self._pending:
            self.lost += len(self._pending)
            warnings.warn(f"JsonlSink({self.path}): closed with {len(self._pending)} lines the file would not take "
                          "(counted in .lost)", RuntimeWarning, stacklevel=2)
            self._pending.clear()
        os.close(self._fd)
        self._fd = None
        self._lock.close()

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r}, last_step={self.last_step})"
