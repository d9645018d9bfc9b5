"""PNG plots of grokmon records: metric curves against step, per group, and expert-load heatmaps.

Input is any iterable of ``(step, metrics)`` pairs, read once: a JSONL record read back with
:func:`grokmon.sinks.read_metrics` or streamed with :func:`grokmon.sinks.iter_metrics` (keys without
the prefix), or ``monitor.history`` (keys with it: the ``grokmon/`` prefix is removed on the way in).
Only the plotted points are kept, never the records. Needs matplotlib (``pip install grokmon[plot]``).

Example:
    >>> records = [(0, {"pathway_distance": 0.8}), (100, {"pathway_distance": 0.6})]
    >>> paths = plot_metrics(records, "out_dir")          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import ConfigError
from .keys import PREFIX, unprefixed

Record = tuple[int, Mapping[str, float]]

_GROUP_KEY = re.compile(r"^group/(?P<group>[^/]+)/(?P<metric>.+)$")
_LOAD_KEY = re.compile(r"^layer/(?P<layer>\d+)/expert/(?P<expert>\d+)/load$")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("plots need matplotlib: pip install 'grokmon[plot]'") from exc
    return plt


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_NAME = 100  # characters of a metric name kept in its PNG's file name


def png_name(metric: str) -> str:
    """A safe file name for ``metric``'s PNG: ``/`` and other unsafe characters (a NUL, a space) become
    ``_``; a name that had any, or is longer than ``MAX_NAME``, gets a short hash so that two never meet.

    Example:
        >>> png_name("group/code/pathway_distance")
        'group_code_pathway_distance.png'
        >>> len(png_name("x" * 300)) <= MAX_NAME + 14
        True
    """
    safe = _UNSAFE.sub("_", metric.replace("/", "_")).lstrip(".") or "_"
    if safe == metric.replace("/", "_") and len(safe) <= MAX_NAME:
        return safe + ".png"
    digest = hashlib.sha1(metric.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe[:MAX_NAME]}-{digest}.png"


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def split_series(records: Iterable[Record]) -> tuple[dict, dict]:
    """Split records into ``{metric: [(step, v)]}`` and ``{metric: {group: [(step, v)]}}``."""
    overall: dict[str, list[tuple[int, float]]] = defaultdict(list)
    grouped: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for step, metrics in records:
        for key, value in metrics.items():
            if not _finite(value):
                continue
            key = unprefixed(key)
            match = _GROUP_KEY.match(key)
            if match:
                grouped[match["metric"]][match["group"]].append((step, float(value)))
            elif "/" not in key:
                overall[key].append((step, float(value)))
    return dict(overall), {m: dict(g) for m, g in grouped.items()}


def plot_metrics(
    records: Iterable[Record],
    out_dir: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    marks: Mapping[str, int] | None = None,
    reference: Mapping[str, Sequence[tuple[int, float]]] | None = None,
) -> list[Path]:
    """Write one PNG per metric (``<metric>.png``, groups as separate lines) into ``out_dir``.

    Args:
        records: ``(step, metrics)`` pairs (``read_metrics``/``iter_metrics`` output or ``monitor.history``),
            read once.
        out_dir: folder for the PNGs (created).
        metrics: only these metric names (default: every scalar and per-group metric found).
        marks: vertical lines to draw, e.g. ``{"memorized": 300, "generalized": 1200}``.
        reference: extra curves drawn on a second axis of every plot, e.g. held-out accuracy.

    Returns:
        The paths written, sorted.
    """
    overall, grouped = split_series(records)
    if not overall and not grouped:
        raise ConfigError("no metric values to plot: the JSONL file is empty, or has no metric lines with a "
                          "finite value")
    plt = _pyplot()
    with plt.rc_context({"text.parse_math": False, "text.usetex": False}):  # a "$" in a name is text
        return _plot_metrics(plt, overall, grouped, Path(out_dir), metrics, marks, reference)


def _plot_metrics(plt: Any, overall: dict, grouped: dict, out: Path, metrics: Sequence[str] | None,
                  marks: Mapping[str, int] | None, reference: Mapping[str, Sequence[tuple[int, float]]] | None,
                  ) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(set(overall) | set(grouped)) if metrics is None else list(metrics)
    written = []
    for name in names:
        if name not in overall and name not in grouped:
            raise ConfigError(f"metric {name!r} is not in the records; found: {sorted(set(overall) | set(grouped))}")
        fig, ax = plt.subplots(figsize=(7, 3.8))
        if name in overall:
            steps, values = zip(*overall[name])
            ax.plot(steps, values, marker="o", markersize=3, label="all samples", color="black")
        for group, series in sorted(grouped.get(name, {}).items()):
            steps, values = zip(*series)
            ax.plot(steps, values, marker=".", markersize=3, label=group, alpha=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(PREFIX + name)
        for label, step in (marks or {}).items():
            ax.axvline(step, linestyle="--", color="grey")
            ax.annotate(label, (step, 1.0), xycoords=("data", "axes fraction"), fontsize=8,
                        rotation=90, va="top", ha="right")
        if reference:
            twin = ax.twinx()
            for ref_name, series in reference.items():
                if series:
                    steps, values = zip(*series)
                    twin.plot(steps, values, linestyle=":", label=ref_name, color="tab:red")
            twin.set_ylabel(", ".join(reference))
            twin.legend(loc="lower right", fontsize=8)
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / png_name(name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return sorted(written)


def plot_expert_load(records: Iterable[Record], out_dir: str | Path) -> Path | None:
    """Heatmap of the last record's per-layer expert load (``layer/<i>/expert/<e>/load`` keys).

    ``records`` is read once, front to back, holding one record's load at a time. Returns the PNG
    path, or None when the records carry no per-expert keys (enable them with
    ``MetricConfig(per_expert=True)``).
    """
    last: tuple[int, dict[tuple[int, int], float]] | None = None
    for step, metrics in records:
        cells = {}
        for key, value in metrics.items():
            match = _LOAD_KEY.match(unprefixed(key))
            if match and _finite(value):
                cells[int(match["layer"]), int(match["expert"])] = float(value)
        if cells:
            last = step, cells
    if last is None:
        return None
    step, cells = last
    plt = _pyplot()
    import numpy as np

    layers = sorted({l for l, _ in cells})
    experts = max(e for _, e in cells) + 1
    grid = np.full((len(layers), experts), np.nan)
    for (layer, expert), value in cells.items():
        grid[layers.index(layer), expert] = value
    fig, ax = plt.subplots(figsize=(min(14, 2 + experts * 0.15), 1.5 + len(layers) * 0.3))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(layers)), [str(l) for l in layers])
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.set_title(f"expert load (fraction of tokens), step {step}")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "expert_load.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
