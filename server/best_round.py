"""Which round of an unlearning attempt the server keeps: the best one, not necessarily the last.

Each device returns its own best state (``fedforget.forsaken``), so one withdrawing device never makes
its forget set look *more* member-like from round to round; but several devices' masks are summed, and
one's can undo another's. The attempt therefore keeps the round judged best: the highest FR with
``unlearn-target=fr``, the attack AUC closest to 0.5 with ``retrain`` (the latest of equals). A node
that fails after the best round takes its masks out of the model, which then is not the model measured
in that round: the last round stays.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Set
from typing import Any

from flwr.app import ArrayRecord

__all__ = ["BestRound", "judged"]


def judged(config_target: str, measured: Mapping[str, Any]) -> float | None:
    """What the best round maximises: FR (``"fr"``) or ``-|AUC - 0.5|`` (``"retrain"``); ``None`` when
    the round has no such measurement (an owner failed to judge)."""
    value = measured.get("fr") if config_target == "fr" else measured.get("attack-auc")
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value) if config_target == "fr" else -abs(float(value) - 0.5)


@dataclasses.dataclass(frozen=True)
class _Round:
    number: int
    value: float
    arrays: ArrayRecord
    row: dict[str, Any]
    failed: frozenset[int]


class BestRound:
    """Offered every measured round of an attempt; says which earlier round to keep at its end."""

    def __init__(self, config_target: str) -> None:
        self.config_target = config_target
        self.best: _Round | None = None

    def offer(
        self, number: int, row: Mapping[str, Any], arrays: ArrayRecord, failed: Set[int]
    ) -> None:
        """Round ``number`` was measured as ``row`` on the model ``arrays``; ``failed``: the nodes that
        had failed by then (their masks are not in ``arrays``)."""
        value = judged(self.config_target, row)
        if value is not None and (self.best is None or value >= self.best.value):
            self.best = _Round(number, value, arrays, dict(row), frozenset(failed))

    def earlier(self, last: int, failed: Set[int]) -> tuple[int, ArrayRecord, dict[str, Any]] | None:
        """``(round, model, row)`` of the best round when it is not ``last`` and no node failed since;
        ``None`` when the last round stays."""
        best = self.best
        if best is None or best.number == last or best.failed != frozenset(failed):
            return None
        return best.number, best.arrays, best.row
