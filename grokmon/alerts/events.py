"""What a rule or the stage tracker reports: :class:`AlertEvent`, plus the shared argument checks.

An event is plain data. The monitor turns it into actions (W&B ``run.alert``, a log line, a user
function, an optional stop); nothing here talks to W&B.

Example:
    >>> e = AlertEvent(rule="dist_plateau", metric="pathway_distance", step=1200, probe=6,
    ...                kind="plateau", level="WARN", title="grokmon: dist_plateau plateau",
    ...                text="pathway_distance stopped falling", value=0.41)
    >>> e.to_dict()["kind"], e.stop
    ('plateau', False)
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Literal, Mapping

from ..errors import ConfigError
from ..keys import unprefixed
from ..scalars import to_float  # noqa: F401 - the rules and the stage tracker import it from here

Level = Literal["INFO", "WARN", "ERROR"]
Kind = Literal["plateau", "threshold", "divergence", "nonfinite", "stage"]
LEVELS: tuple[str, ...] = ("INFO", "WARN", "ERROR")
MAX_TITLE = 63  # W&B asks for titles under 64 characters
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$")


@dataclass(frozen=True)
class AlertEvent:
    """One decision of a rule (or one stage change of a group).

    ``title`` is stable per rule (it never contains values) because W&B rate-limits alerts per
    title with ``wait_duration``; the values are in ``text`` and ``value``. ``stop`` is True when the
    rule was built with ``stop_training=True``: the monitor then sets ``monitor.should_stop``.
    ``extra`` holds kind-specific data (for ``"stage"``: ``group``, ``previous``, ``stage``).
    """

    rule: str
    metric: str
    step: int
    probe: int
    kind: Kind
    level: Level
    title: str
    text: str
    value: float
    stop: bool = False
    wait_duration: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (non-finite ``value`` becomes ``None``)."""
        d = asdict(self)
        d["extra"] = dict(self.extra)
        if not math.isfinite(self.value):
            d["value"] = None
        return d


def make_title(text: str) -> str:
    """Cut ``text`` to W&B's title limit (63 characters), marking the cut with ``...``."""
    return text if len(text) <= MAX_TITLE else text[: MAX_TITLE - 3] + "..."


def check_level(level: str) -> Level:
    """Normalise an alert level (``"warn"``, ``"WARNING"`` -> ``"WARN"``) or raise ConfigError."""
    up = str(level).upper()
    if up == "WARNING":
        up = "WARN"
    if up not in LEVELS:
        raise ConfigError(f"alert level {level!r} is not one of INFO, WARN, ERROR (W&B's AlertLevel); pick one")
    return up  # type: ignore[return-value]


def check_name(name: str, what: str = "rule name") -> str:
    """Check a rule name (it becomes the metric key ``alert/<name>``)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"{what} {name!r} is not usable in a metric key: use letters, digits and _ . - / "
            "(starting with a letter or digit), e.g. name='dist_plateau'"
        )
    return name


def check_wait(wait_duration: float | timedelta | None) -> float | None:
    """Seconds between W&B alerts of one title (``None``: W&B's default, one minute)."""
    if wait_duration is None:
        return None
    if isinstance(wait_duration, timedelta):
        wait_duration = wait_duration.total_seconds()
    try:
        w = float(wait_duration)
    except (TypeError, ValueError):
        raise ConfigError(f"wait_duration={wait_duration!r} must be seconds (a number) or a timedelta") from None
    if not math.isfinite(w) or w < 0:
        raise ConfigError(f"wait_duration={wait_duration!r} must be a finite number of seconds >= 0")
    return w


def strip_prefix(metric: str) -> str:
    """Rules use unprefixed keys; accept ``"grokmon/pathway_distance"`` for ``"pathway_distance"``."""
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"metric={metric!r} must be a non-empty metric key such as 'pathway_distance'")
    return unprefixed(metric)


