"""Read a W&B run file (``run-<id>.wandb``) back: history rows, metric definitions, alerts, summary.

wandb 0.31 ships no reader for its own run files, and offline runs write no ``wandb-summary.json``.
This reader lets tests (and users of offline runs) check exactly what reached W&B.

File format (wandb-core ``core/pkg/leveldb``): a 7-byte header (``b":W&B"``, magic ``0xBEE1``
little-endian, a version byte), then LevelDB-log framing in 32 KiB blocks: each chunk is
``crc32:u32 LE | length:u16 LE | type:u8 | payload`` with type 1 = full, 2 = first, 3 = middle,
4 = last, and a block tail shorter than 7 bytes is zero padding. The checksum is the standard
(IEEE, ``zlib.crc32``) CRC-32 of the type byte and the payload, unmasked. Each reassembled payload
is a ``wandb.proto.wandb_internal_pb2.Record``.

A chunk cut off at the end of the file (a run still writing, or killed) ends the read quietly;
a bad checksum inside the file raises :class:`~grokmon.errors.SinkError`.

Example:
    >>> runs = read_wandb_run("wandb/latest-run")              # doctest: +SKIP
    >>> [row["grokmon/pathway_distance"] for row in runs.history]   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SinkError

__all__ = ["WandbRunRecords", "read_wandb_run", "iter_wandb_records", "find_wandb_file"]

_HEADER = b":W&B" + struct.pack("<H", 0xBEE1)
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class WandbRunRecords:
    """What a run file holds, decoded.

    * ``history``: one dict per committed row (``_step``, ``_runtime``, ``_timestamp`` included);
      nested keys become nested dicts; values are decoded JSON (``NaN`` stays a float NaN).
    * ``metrics``: one dict per ``define_metric`` record: ``name``, ``glob_name``, ``step_metric``,
      ``step_sync``, ``hidden``, ``summary`` (sorted list of aggregations), ``goal``.
    * ``alerts``: ``title``, ``text``, ``level``, ``wait_duration`` (seconds, as passed to
      ``run.alert``).
    * ``summary`` / ``config``: the final state after every update and removal (``_wandb``
      internals dropped from ``config``).
    * ``visualize``: the custom charts logged (``wandb.plot.line_series`` ...), by key: W&B keeps
      their panel spec in ``config["_wandb"]["visualize"]``; the data is the ``<key>_table`` history
      value (read it with :meth:`table`).
    * ``run``: ``run_id``, ``project``, ``entity``, ``display_name``; ``exit_code`` if the run finished.
    """

    path: Path
    history: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)
    visualize: dict = field(default_factory=dict)
    exit_code: int | None = None

    def column(self, key: str) -> list[Any]:
        """Values of ``key`` in the history rows that have it, in order."""
        return [row[key] for row in self.history if key in row]

    def table(self, value: Any) -> dict:
        """The ``columns`` and ``data`` of a logged ``wandb.Table``, from its history value (or key: the last one).

        Example:
            >>> rec.table("grokmon/stage_timeline")["columns"]          # doctest: +SKIP
            ['group', 'stage', 'stage_code', 'start_step', 'end_step', 'probes']
        """
        if isinstance(value, str):
            found = self.column(value)
            if not found:
                raise SinkError(f"no history value {value!r} in {self.path}: was the table logged under another key?")
            value = found[-1]
        if not isinstance(value, dict) or value.get("_type") not in ("table-file", "table"):
            raise SinkError(f"{value!r} is not a logged wandb.Table (a history value with _type 'table-file')")
        f = self.path.parent / "files" / value["path"]
        if not f.is_file():
            raise SinkError(f"table file {f} is missing: read the run folder W&B wrote, with its files/")
        data = json.loads(f.read_text(encoding="utf-8"))
        return {"columns": data["columns"], "data": data["data"]}


def find_wandb_file(path: str | os.PathLike | None = None) -> Path:
    """The ``run-*.wandb`` file for ``path``: the file itself, a run dir, or the newest under a dir.

    With no ``path``, looks under ``./wandb``.
    """
    p = Path("wandb" if path is None else path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise SinkError(f"no W&B run file or directory at {p}: pass the offline-run-* directory or its .wandb file")
    own = sorted(p.glob("run-*.wandb"))
    if own:
        return own[-1]
    found = sorted(p.rglob("run-*.wandb"), key=lambda f: (f.stat().st_mtime, str(f)))
    if not found:
        raise SinkError(f"no run-*.wandb file under {p}: was wandb.init(dir=...) pointed elsewhere?")
    return found[-1]


def _payloads(data: bytes, path: Path) -> Iterator[bytes]:
    if data[:6] != _HEADER:
        raise SinkError(f"{path} is not a W&B run file (bad header {data[:7]!r})")
    pos, parts = 7, None
    while pos + _CHUNK_HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _CHUNK_HEADER:  # block trailer padding
            pos += room
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if crc == 0 and length == 0 and kind == 0:  # zero padding (preallocated tail)
            pos += room
            continue
        start = pos + _CHUNK_HEADER
        if start + length > len(data):
            return  # cut off mid-chunk: a run still being written
        payload = data[start:start + length]
        if zlib.crc32(bytes([kind]) + payload) != crc:
            raise SinkError(f"{path}: checksum mismatch at byte {pos}: the file is corrupted")
        pos = start + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            parts = [payload]
        elif kind == _MIDDLE and parts is not None:
            parts.append(payload)
        elif kind == _LAST and parts is not None:
            parts.append(payload)
            yield b"".join(parts)
            parts = None
        else:
            raise SinkError(f"{path}: unexpected chunk type {kind} at byte {pos}: the file is corrupted")


def iter_wandb_records(path: str | os.PathLike | None = None) -> Iterator[Any]:
    """Every ``wandb_internal_pb2.Record`` of a run file, in write order."""
    from wandb.proto import wandb_internal_pb2 as pb

    f = find_wandb_file(path)
    for payload in _payloads(f.read_bytes(), f):
        rec = pb.Record()
        rec.ParseFromString(payload)
        yield rec


def _item_value(item: Any) -> Any:
    which = item.WhichOneof("value") if item.DESCRIPTOR.oneofs_by_name.get("value") else None
    if which == "none":
        return None
    if which == "json":
        return json.loads(item.json)
    if which is not None:
        return getattr(item, which)
    return json.loads(item.value_json) if item.value_json else None


def _item_path(item: Any) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _put(target: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        nxt = target.get(k)
        if not isinstance(nxt, dict):
            nxt = target[k] = {}
        target = nxt
    target[keys[-1]] = value


def _drop(target: dict, keys: list[str]) -> None:
    for k in keys[:-1]:
        target = target.get(k)
        if not isinstance(target, dict):
            return
    target.pop(keys[-1], None)


def _apply(target: dict, record: Any) -> None:
    for item in record.update:
        keys = _item_path(item)
        if keys:
            _put(target, keys, _item_value(item))
    for item in record.remove:
        keys = _item_path(item)
        if keys:
            _drop(target, keys)


def _metric(m: Any) -> dict:
    summary = sorted(f.name for f, v in m.summary.ListFields() if v is True)
    return {
        "name": m.name or None,
        "glob_name": m.glob_name or None,
        "step_metric": m.step_metric or None,
        "step_sync": bool(m.options.step_sync),
        "hidden": bool(m.options.hidden),
        "summary": summary,
        "goal": m.DESCRIPTOR.fields_by_name["goal"].enum_type.values_by_number[m.goal].name if m.goal else None,
    }


def read_wandb_run(path: str | os.PathLike | None = None, *, wait: float = 0.0) -> WandbRunRecords:
    """Decode a W&B run file (see :class:`WandbRunRecords`); ``path`` as in :func:`find_wandb_file`.

    ``wait``: seconds to wait for the run's ``exit`` record. In wandb 0.31 ``run.finish()`` of an
    offline run can return while wandb-core is still writing the file's last 32 KiB blocks, so a
    reader started right after ``finish()`` should pass a few seconds here (tests use 10).

    Example:
        >>> import wandb                                                       # doctest: +SKIP
        >>> run = wandb.init(mode="offline", dir="/tmp/r"); run.log({"a": 1}); run.finish()  # doctest: +SKIP
        >>> read_wandb_run("/tmp/r/wandb").history[0]["a"]                     # doctest: +SKIP
        1
    """
    f = find_wandb_file(path)
    deadline = time.monotonic() + wait
    while True:
        out = _read(f)
        if out.exit_code is not None or time.monotonic() >= deadline:
            return out
        time.sleep(0.05)


def _read(f: Path) -> WandbRunRecords:
    out = WandbRunRecords(path=f)
    config: dict = {}
    for rec in iter_wandb_records(f):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row: dict = {}
            for item in rec.history.item:
                keys = _item_path(item)
                if keys:
                    _put(row, keys, _item_value(item))
            out.history.append(row)
        elif kind == "metric":
            out.metrics.append(_metric(rec.metric))
        elif kind == "alert":
            a = rec.alert
            out.alerts.append({"title": a.title, "text": a.text, "level": a.level or None,
                               "wait_duration": a.wait_duration / 1000.0 if a.wait_duration else None})
        elif kind == "summary":
            _apply(out.summary, rec.summary)
        elif kind == "config":
            _apply(config, rec.config)
        elif kind == "run":
            r = rec.run
            out.run = {"run_id": r.run_id, "project": r.project, "entity": r.entity, "display_name": r.display_name}
            _apply(config, r.config)
        elif kind == "exit":
            out.exit_code = int(rec.exit.exit_code)
    internals = config.get("_wandb")
    out.visualize = dict(internals.get("visualize", {})) if isinstance(internals, dict) else {}
    out.config = {k: v for k, v in config.items() if k != "_wandb"}
    return out
