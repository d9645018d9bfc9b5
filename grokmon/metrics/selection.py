"""The paper's sample selection (Metric 1): pathway distance over *memorized* samples only.

The paper measures pathway distance only on samples the model has memorized: per-sample training
loss at most ε from some step t* on, and within 0.05 of its final value, with ε chosen per domain so
that about 20-25 % of the domain qualifies; pairs are taken only between samples of the same domain
*and the same memorization step* t*. Live, without the future, grokmon reads this as:

* at each probe, ``ε_g`` is the ``fraction`` quantile of group ``g``'s per-sample probe losses;
* a sample is memorized at this probe when its loss is ``<= ε_g`` **and** moved by at most
  ``tolerance`` since the previous probe (settled; at the first probe nothing is);
* its memorization step is the first probe of its current unbroken memorized run; a sample that
  stops qualifying loses it.

:class:`MemorizationTracker` keeps that per-sample state across probes (``state_dict`` for resume);
:func:`grokmon.metrics.compute_metrics` takes its ``memorized_since`` and pairs within (group,
memorization step). No torch.distributed, W&B or transformers here.

Example:
    >>> import torch
    >>> t = MemorizationTracker(fraction=0.5, tolerance=0.1)
    >>> t.update(0, torch.tensor([2.0, 1.0, 3.0, 0.5])).tolist()        # first probe: nothing settled
    [-1, -1, -1, -1]
    >>> t.update(100, torch.tensor([2.0, 1.05, 3.0, 0.5])).tolist()     # the two lowest, settled
    [-1, 100, -1, 100]
    >>> t.update(200, torch.tensor([2.0, 1.0, 3.0, 0.9])).tolist()      # sample 3 moved: out
    [-1, 100, -1, -1]
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from ..errors import ConfigError
from .info import MetricInfo

#: The keys this module computes (:mod:`grokmon.metrics.info`).
INFO = (MetricInfo("memorized_samples", None, "samples", description="samples memorized at this probe"),)

NOT_MEMORIZED = -1


def check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise ConfigError(f"memorized_fraction must be in (0, 1] (the paper selects about 0.2-0.25 of each "
                          f"group), got {fraction!r}")
    return float(fraction)


class MemorizationTracker:
    """Per-sample memorization steps from per-sample probe losses (see the module doc).

    Args:
        fraction: share of each group whose loss is low enough (the quantile that sets ``ε_g``).
        tolerance: largest change of a sample's loss since the previous probe that counts as settled.
    """

    def __init__(self, fraction: float = 0.2, tolerance: float = 0.05) -> None:
        self.fraction = check_fraction(fraction)
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
            raise ConfigError(f"memorized_tolerance must be a loss change >= 0 (the paper: 0.05), got {tolerance!r}")
        self.tolerance = float(tolerance)
        self.previous_loss: torch.Tensor | None = None
        self.since: torch.Tensor | None = None

    def update(self, step: int, loss: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Feed one probe's per-sample losses ``[N]``; returns ``memorized_since [N]`` (``-1``: not memorized)."""
        loss = loss.detach().double().cpu().flatten()
        n = loss.numel()
        labels = torch.zeros(n, dtype=torch.long) if groups is None else groups.detach().cpu().long().flatten()
        if labels.numel() != n:
            raise ConfigError(f"groups must be one label per sample ({n}), got {labels.numel()}")
        if self.previous_loss is None or self.previous_loss.numel() != n:
            self.previous_loss = torch.full((n,), math.nan, dtype=torch.float64)
            self.since = torch.full((n,), NOT_MEMORIZED, dtype=torch.long)
        assert self.since is not None
        low = torch.zeros(n, dtype=torch.bool)
        for g in torch.unique(labels).tolist():
            members = labels == g
            finite = loss[members][torch.isfinite(loss[members])]
            if finite.numel():
                epsilon = torch.quantile(finite, self.fraction)
                low |= members & (loss <= epsilon)
        settled = (loss - self.previous_loss).abs() <= self.tolerance  # NaN (first probe) compares False
        memorized = low & settled & torch.isfinite(loss)
        self.since = torch.where(memorized, torch.where(self.since >= 0, self.since, torch.full_like(self.since, int(step))),
                                 torch.full_like(self.since, NOT_MEMORIZED))
        self.previous_loss = loss
        return self.since.clone()

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (per-sample lists)."""
        return {
            "type": "MemorizationTracker", "fraction": self.fraction, "tolerance": self.tolerance,
            "previous_loss": None if self.previous_loss is None else [
                None if not math.isfinite(v) else v for v in self.previous_loss.tolist()],
            "since": None if self.since is None else self.since.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("type") != "MemorizationTracker":
            raise ConfigError(f"not a MemorizationTracker state (type={state.get('type')!r})")
        if state.get("since") is None:
            self.previous_loss = self.since = None
            return
        self.previous_loss = torch.tensor([math.nan if v is None else v for v in state["previous_loss"]],
                                          dtype=torch.float64)
        self.since = torch.tensor(state["since"], dtype=torch.long)
