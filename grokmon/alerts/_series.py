"""Building blocks shared by the rules and the stage tracker: a smoother and a plateau counter.

Both are deterministic functions of the values pushed into them, and their state is JSON-able, so
every rank that sees the same metric values reaches the same decisions, before and after a resume.

Example:
    >>> s = Smoother("median", window=3)
    >>> [s.push(v) for v in (1.0, 9.0, 2.0, 3.0)]
    [1.0, 5.0, 2.0, 3.0]
    >>> c = PlateauCounter("min", min_delta=0.1, threshold_mode="abs")
    >>> [c.update(v) for v in (1.0, 0.8, 0.75, 0.7)], c.best, c.num_bad
    ([True, True, False, True], 0.7, 0)
"""

from __future__ import annotations

import math
from statistics import median
from typing import Any, Literal

from ..errors import ConfigError

Mode = Literal["min", "max", "any"]
ThresholdMode = Literal["rel", "abs"]
SmoothKind = Literal["mean", "median", "ema"]


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(repr(c) for c in choices)}")
    return value


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum} (it counts probes)")
    return value


def check_number(name: str, value: Any, minimum: float = 0.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} must be a number >= {minimum}") from None
    if not math.isfinite(v) or v < minimum:
        raise ConfigError(f"{name}={value!r} must be a finite number >= {minimum}")
    return v


class Smoother:
    """Smooths a stream: ``None`` (raw), ``"mean"`` / ``"median"`` of the last ``window`` values, or
    an exponential moving average ``s = alpha * v + (1 - alpha) * s`` (seeded with the first value).

    Before ``window`` values have arrived the mean / median runs over those there are.
    The median of 3 removes a single outlier entirely; a mean or EMA only dilutes it.
    """

    def __init__(self, kind: SmoothKind | None = None, window: int = 3, alpha: float = 0.3) -> None:
        self.kind = check_choice("smooth", kind, (None, "mean", "median", "ema"))
        self.window = check_int("smooth_window", window, 1)
        self.alpha = check_number("ema_alpha", alpha)
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"ema_alpha={alpha!r} must be in (0, 1]; 1 means no smoothing")
        self.reset()

    def reset(self) -> None:
        self.values: list[float] = []
        self.ema: float | None = None

    def push(self, v: float) -> float:
        """Add a finite value and return the smoothed value."""
        self.values.append(v)
        del self.values[: -self.window]
        self.ema = v if self.ema is None else self.alpha * v + (1.0 - self.alpha) * self.ema
        if self.kind == "mean":
            return sum(self.values) / len(self.values)
        if self.kind == "median":
            return float(median(self.values))
        if self.kind == "ema":
            return self.ema
        return v

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "ema": self.ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = [float(v) for v in state.get("values", [])][-self.window:]
        ema = state.get("ema")
        self.ema = None if ema is None else float(ema)


class PlateauCounter:
    """ReduceLROnPlateau's ``best`` / ``num_bad_epochs`` bookkeeping, counted in probes.

    ``mode="min"``: a value improves when ``v < best - delta``; ``"max"``: ``v > best + delta``;
    ``"any"``: when ``|v - best| > delta`` (the curve *moved*, whatever the direction; ``best`` is
    then the last value it moved to). ``delta`` is ``min_delta`` (``threshold_mode="abs"``) or
    ``min_delta * |best|`` (``"rel"``; PyTorch uses ``best * (1 - threshold)``, which is the same
    for positive values and wrong-signed for negative ones). The first value always improves.
    """

    def __init__(self, mode: Mode = "min", min_delta: float = 0.0, threshold_mode: ThresholdMode = "rel") -> None:
        self.mode = check_choice("mode", mode, ("min", "max", "any"))
        self.min_delta = check_number("min_delta", min_delta)
        self.threshold_mode = check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.reset()

    def reset(self) -> None:
        self.best: float | None = None
        self.num_bad = 0

    def delta(self, ref: float) -> float:
        return self.min_delta * abs(ref) if self.threshold_mode == "rel" else self.min_delta

    def is_better(self, v: float) -> bool:
        if self.best is None:
            return True
        d = self.delta(self.best)
        if self.mode == "min":
            return v < self.best - d
        if self.mode == "max":
            return v > self.best + d
        return abs(v - self.best) > d

    def update(self, v: float) -> bool:
        """Count one value; True when it improved (then ``best = v`` and ``num_bad = 0``)."""
        if self.is_better(v):
            self.best, self.num_bad = v, 0
            return True
        self.num_bad += 1
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "num_bad": self.num_bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best = state.get("best")
        self.best = None if best is None else float(best)
        self.num_bad = int(state.get("num_bad", 0))
