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

One writer per file: the sink holds an exclusive lock (``<file>.lock`` beside the file the path
resolves to, so two symlinks to one file share one lock; released when it closes or its process
ends), so a second sink on the same file, in this process or another, raises a
:class:`~grokmon.errors.SinkError` naming the holder instead of mixing two runs' steps into one
record (a monitor with the default path moves to ``grokmon.2.jsonl`` instead, with a warning).
Its descriptors are ``O_CLOEXEC`` and a forked child (a DataLoader worker) closes its copies at
once, so a child that outlives a killed parent never keeps the lock (the child cannot write).

A record whose file (or folder) is deleted while the run writes it is noticed at the next write:
the folder and file are made again, the lines written so far are copied back from the deleted file
(still open), and the sink warns once and counts it in ``recreated``. Repairing a torn last line
rewrites the file the path resolves to, so a symlink stays a symlink.

Write errors never lose a record and never leave half a line: each line goes to the file in one
``os.write`` on an ``O_APPEND`` descriptor, and a write that fails (a full disk, a hung or
read-only filesystem) is cut back to the last whole line. The line is kept in memory, in order,
and retried at the next call, so when space returns the missing steps are written in order. The
sink never raises for it (so the monitor never detaches it): it warns once, and counts the lines
waiting in ``pending`` and any it had to give up (more than ``max_pending`` lines or
``max_pending_bytes`` bytes waiting, 100,000 lines and 64 MiB by default; the oldest go first, with a
warning) in ``lost``.

Opening a file reads it one line at a time (memory does not grow with the file).

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "grokmon.jsonl")
    >>> with JsonlSink(path) as sink:
    ...     _ = sink.log({"grokmon/pathway_distance": 3.5, "grokmon/nan": float("nan")}, step=200)
    >>> [(r["step"], r["metrics"]) for r in read_jsonl(path)]
    [(200, {'grokmon/pathway_distance': 3.5, 'grokmon/nan': None})]
"""

from __future__ import annotations

import collections
import json
import math
import os
import time
import warnings
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import SinkError
from ..keys import unprefixed as _unprefixed_key
from .base import AlertInfo, Sink, _jsonable, to_float

__all__ = ["JsonlSink", "iter_jsonl", "read_jsonl", "read_metrics", "unprefixed"]

_RESERVED = ("step", "time", "metrics", "alert")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a grokmon JSONL file, in order (a half-written last line is skipped).

    Metric records have ``"metrics"``, alert records ``"alert"``; ``null`` metric values are
    non-finite numbers.
    """
    return list(iter_jsonl(path))


def iter_jsonl(path: str | os.PathLike) -> Iterator[Any]:
    """The records of :func:`read_jsonl`, read one line at a time (memory does not grow with the file).

    Example:
        >>> for record in iter_jsonl("grokmon_out/grokmon.jsonl"):   # doctest: +SKIP
        ...     print(record["step"])
    """
    path = Path(path)
    if not path.exists():
        raise SinkError(f"no JSONL file at {path}")
    with open(path, "rb") as f:
        for number, line, last_line in _numbered_lines(f):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError as e:
                if last_line:
                    return  # a half-written last line
                raise SinkError(f"line {number} of {path} is not JSON ({e}): the file is corrupted; "
                                "move it away") from e


def _numbered_lines(f: Any) -> Iterator[tuple[int, bytes, bool]]:
    """``(number, line, is_last)`` for each line of the binary file ``f``, read one line ahead."""
    previous: bytes | None = None
    number = 0
    for line in f:
        if previous is not None:
            number += 1
            yield number, previous, False
        previous = line
    if previous is not None:
        yield number + 1, previous, True


def read_metrics(path: str | os.PathLike) -> list[tuple[int, dict[str, float]]]:
    """The ``(step, metrics)`` pairs of a grokmon JSONL file, in file order; alerts skipped.

    Keys lose the ``grokmon/`` prefix (``pathway_distance``, ``group/<g>/probe_loss``) and ``null``
    values come back as NaN. Keys without the prefix (``eval/accuracy``) come back as they are.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "grokmon.jsonl")
        >>> with JsonlSink(path) as sink:
        ...     _ = sink.log({"grokmon/pathway_distance": 3.5, "grokmon/probe_loss": float("nan")}, step=200)
        >>> read_metrics(path)
        [(200, {'pathway_distance': 3.5, 'probe_loss': nan})]
    """
    return list(iter_metrics(path))


def iter_metrics(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, float]]]:
    """The pairs of :func:`read_metrics`, read one line at a time (for records too large to hold).

    Example:
        >>> last = None
        >>> for step, metrics in iter_metrics("grokmon_out/grokmon.jsonl"):   # doctest: +SKIP
        ...     last = metrics.get("pathway_distance")
    """
    return ((int(r["step"]), unprefixed(r["metrics"])) for r in iter_jsonl(path) if "metrics" in r)


def unprefixed(metrics: Mapping[str, float | None]) -> dict[str, float]:
    """A record's metrics as :func:`read_metrics` gives them: no ``grokmon/`` prefix, ``None`` as NaN."""
    return {_unprefixed_key(k): (math.nan if v is None else v) for k, v in metrics.items()}


_OPEN_SINKS: "weakref.WeakSet[JsonlSink]" = weakref.WeakSet()


def _close_in_forked_child() -> None:
    """After ``fork``, in the child: close its copies of every sink's descriptors (never unlock: the
    lock is the parent's), so a child that outlives its parent does not hold the record's lock."""
    for sink in list(_OPEN_SINKS):
        sink._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_forked_child)


class _Lock:
    """``<path>.lock`` held exclusively with ``flock`` on an ``O_CLOEXEC`` descriptor."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def _lock(path: Path) -> _Lock:
    """Hold ``<path>.lock`` exclusively (closing it, or the process ending, releases it). ``path`` is
    the resolved path of the record: two links to one file share one lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): one writer per file is up to the user
        return _Lock(None)
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as error:
        raise SinkError(f"cannot create the lock file {lock_path} of the JSONL record ({error}): pass a path in a "
                        "writable folder (jsonl=... / output_dir=...), or jsonl=False") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        error = SinkError(f"{path} is already being written by another grokmon monitor or sink (process {holder}): "
                          "two runs would mix their steps in one record. Give each run its own output_dir (or "
                          "jsonl= path), or close the other monitor first")
        error.in_use = True  # type: ignore[attr-defined]
        raise error from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return _Lock(fd)


def _scan(path: Path, resume_step: int | None) -> tuple[int | None, bool]:
    """One pass over ``path``, a line at a time: the last metric step kept, and whether the file must
    be rewritten (a damaged last line, or lines after ``resume_step``). Raises for a broken middle line."""
    last: int | None = None
    rewrite = False
    with open(path, "rb") as f:
        for number, line, last_line in _numbered_lines(f):
            kept = _judge(line, number, path, last_line=last_line, resume_step=resume_step)
            if kept is None or (last_line and not line.endswith(b"\n")):
                rewrite = True  # a torn last line that parses is kept, with its newline
            if kept is not None and kept is not True and (last is None or kept > last):
                last = kept
    return last, rewrite


def _judge(line: bytes, number: int, path: Path, *, last_line: bool, resume_step: int | None) -> Any:
    """A line's fate on open: None (dropped: after ``resume_step``, or a torn last line), True (kept,
    no metric step), or its metric step (kept)."""
    if not line.strip():
        return True
    try:
        record = json.loads(line)
    except ValueError as e:
        if last_line:
            return None
        raise SinkError(f"line {number} of {path} is not JSON ({e}): the file is corrupted; move it away") from e
    step = record.get("step") if isinstance(record, dict) else None
    if resume_step is not None and isinstance(step, int) and step > resume_step:
        return None
    if isinstance(record, dict) and "metrics" in record and isinstance(step, int):
        return step
    return True


class JsonlSink(Sink):
    """Append probe metrics and alerts to a JSON-lines file (see module doc for format and resume)."""

    name = "jsonl"

    def __init__(self, path: str | os.PathLike, *, resume_step: int | None = None, ordered: bool = True,
                 max_pending: int = 100_000, max_pending_bytes: int = 64 * 2**20) -> None:
        self.path = Path(path)
        self.ordered = ordered
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SinkError(f"cannot create the folder of the JSONL record {self.path} ({error}): pass a path in a "
                            "writable folder (jsonl=... / output_dir=...), or jsonl=False") from None
        self.real_path = self.path.resolve()  # a symlink's target: one lock, one file, whatever the link
        self.dropped = 0
        self.lost = 0
        self.recreated = 0  # times the file (or its folder) was deleted while open, and made again
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        self._warned_write = False
        self._fd: int | None = None
        self._lock = _lock(self.real_path)
        self.last_step: int | None = None
        try:
            if self.real_path.exists():
                self.last_step, rewrite = _scan(self.real_path, resume_step)
                if rewrite:
                    self._rewrite(resume_step)
            self._fd = self._open()
        except SinkError:
            self._lock.close()
            raise
        except OSError as error:
            self._lock.close()
            raise SinkError(f"cannot open the JSONL record {self.path} for writing ({error}): pass a path in a "
                            "writable folder (jsonl=... / output_dir=...), or jsonl=False") from None
        _OPEN_SINKS.add(self)

    def _open(self) -> int:
        # read and write: after the file is deleted, what it held is read back from this descriptor
        return os.open(self.real_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)

    @property
    def pending(self) -> int:
        """Lines waiting for the file to take them (after a write error)."""
        return len(self._pending)

    def _rewrite(self, resume_step: int | None) -> None:
        """Rewrite the file without its torn last line and the lines after ``resume_step``, a line at a
        time, in place of the file the path resolves to (a symlink stays a symlink)."""
        tmp = self.real_path.with_name(self.real_path.name + ".tmp")
        with open(self.real_path, "rb") as src, open(tmp, "wb") as dst:
            previous: bytes | None = None
            number = 0
            for line in src:
                if previous is not None:
                    number += 1
                    if _judge(previous, number, self.real_path, last_line=False, resume_step=resume_step) is not None:
                        dst.write(previous)
                previous = line
            if previous is not None:
                if _judge(previous, number + 1, self.real_path, last_line=True, resume_step=resume_step) is not None:
                    dst.write(previous if previous.endswith(b"\n") else previous + b"\n")
        os.replace(tmp, self.real_path)

    def _forget_after_fork(self) -> None:
        """In a forked child: close this process's copies of the descriptors (the parent keeps its lock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self._lock.close()
        except OSError:
            pass

    def _recreate_if_deleted(self) -> None:
        """If the file was deleted while open (its folder too), make it again with what it held."""
        assert self._fd is not None
        try:
            if os.fstat(self._fd).st_nlink > 0:
                return
        except OSError:
            return
        try:
            size = os.fstat(self._fd).st_size
            held, offset = [], 0
            while offset < size:
                chunk = os.pread(self._fd, min(1 << 20, size - offset), offset)
                if not chunk:
                    break
                held.append(chunk)
                offset += len(chunk)
            self.real_path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._open()
        except OSError as error:
            if not self._warned_write:
                self._warned_write = True
                warnings.warn(f"JsonlSink({self.path}): the file was deleted and cannot be made again ({error}); "
                              "its lines are kept in memory and written once it can", RuntimeWarning, stacklevel=5)
            return
        data = b"".join(held)
        lines = data.splitlines(keepends=True)
        for line in reversed(lines):  # written first, in order, whole or not at all, like any waiting line
            self._pending.appendleft(line)
            self._pending_bytes += len(line)
        old, self._fd = self._fd, fd
        os.close(old)
        self._lock.close()
        try:
            self._lock = _lock(self.real_path)
        except SinkError:
            self._lock = _Lock(None)
        self.recreated += 1
        warnings.warn(f"JsonlSink({self.path}): the file (or its folder) was deleted while the run wrote it; made "
                      f"again with the {len(lines)} line(s) it held, and the run goes on writing it (counted "
                      "in .recreated)", RuntimeWarning, stacklevel=5)

    def _write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            raise SinkError(f"JsonlSink({self.path}) is closed: create a new sink to log again")
        line = (json.dumps(record, allow_nan=False) + "\n").encode("utf-8")
        self._pending.append(line)
        self._pending_bytes += len(line)
        while len(self._pending) > 1 and (len(self._pending) > self.max_pending
                                          or self._pending_bytes > self.max_pending_bytes):
            self._pending_bytes -= len(self._pending.popleft())
            self.lost += 1
            if self.lost == 1:
                warnings.warn(f"JsonlSink({self.path}): more than {self.max_pending} lines or {self.max_pending_bytes} "
                              "bytes could not be written; the oldest are given up (counted in .lost)",
                              RuntimeWarning, stacklevel=3)
        self._drain()

    def _drain(self) -> None:
        """Write the waiting lines in order, each whole or not at all; stop at the first error."""
        assert self._fd is not None
        if self._pending:
            self._recreate_if_deleted()
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
            self._pending_bytes -= len(self._pending.popleft())
        self._warned_write = False

    def log(self, metrics: Mapping[str, float], step: int, *, fields: Mapping[str, Any] | None = None) -> bool:
        """Append one metric record; ``fields`` are extra top-level JSON fields (e.g. the checkpoint).

        Returns False for a step refused because it is not after the last one in the file (counted in
        ``dropped``; the monitor counts it as ``refused`` in ``sink_status()``), True otherwise.
        """
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
            return False
        values = {}
        for k, v in metrics.items():
            f = to_float(v, k)
            values[str(k)] = f if math.isfinite(f) else None
        self._write({"step": step, "time": time.time(), **_jsonable(dict(fields or {})), "metrics": values})
        self.last_step = step if self.last_step is None else max(step, self.last_step)
        return True

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
            self._pending_bytes = 0
        os.close(self._fd)
        self._fd = None
        self._lock.close()
        _OPEN_SINKS.discard(self)

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r}, last_step={self.last_step})"
