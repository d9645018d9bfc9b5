"""The step grokmon logs: the host's optimizer step, checked, and kept moving forward.

A step counter that restarts (one that counts per epoch, say) would otherwise stop all probing,
since a step is probed only once and never before the last probed step. :class:`StepClock` warns
once and continues on its own count: from then on the logged step is the host's step plus an
offset that puts it after the last probed step. Steps that were not probed constrain nothing.

Example:
    >>> clock = StepClock()
    >>> [clock.resolve(s, last_probed=None) for s in (0, 5, 9)]
    [0, 5, 9]
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     [clock.resolve(s, last_probed=9) for s in (0, 5)]   # restarted after probing 9: 10, 15
    [10, 15]
"""

from __future__ import annotations

import operator
import warnings
from typing import Any, Mapping

from .errors import ConfigError


class StepClock:
    """Checks each step and maps it to a logged step that never goes backwards (see the module doc)."""

    def __init__(self) -> None:
        self.offset = 0

    def resolve(self, step: Any, *, last_probed: int | None, on_error: str = "warn") -> int:
        """The logged step for the host's ``step`` (an int, a numpy int or a 0-d integer tensor).

        ``last_probed`` is the last logged step that was probed: a step before it is a counter
        that went backwards (the same step again is not: it is simply not probed twice).
        """
        try:
            raw = operator.index(step)
        except TypeError:
            raise ConfigError(f"step must be an integer optimizer step, got {step!r} ({type(step).__name__}): "
                              "pass int(step)") from None
        if raw < 0:
            raise ConfigError(f"step must be >= 0, got {raw}: pass the optimizer step (0 before the first update)")
        value = raw + self.offset
        if last_probed is not None and value < last_probed:
            message = (f"the step went backwards, from {last_probed} to {value} (a counter that restarts each "
                       "epoch?): a step is probed once, so probing would stop")
            if on_error == "raise":
                raise ConfigError(message + ": pass a step that only grows (e.g. the global optimizer step)")
            self.offset = last_probed + 1 - raw
            value = raw + self.offset
            warnings.warn(f"grokmon: {message}; grokmon goes on with its own count: this step is logged as "
                          f"{value}, and later ones as the host's step + {self.offset}", RuntimeWarning, stacklevel=3)
        return value

    def state_dict(self) -> dict[str, Any]:
        return {"offset": self.offset}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        self.offset = int((state or {}).get("offset", 0))
