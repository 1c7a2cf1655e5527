"""The two rules of an unlearning attempt over rounds: when it has met its target, and which round it keeps.

An *attempt* unlearns one batch of withdrawal requests over up to ``unlearn-rounds`` rounds, each
measured by the membership oracle (``server/unlearning.py`` in the federation; the benchmarks mirror
it). Two stopping targets (``docs/forsaken.md``):

* ``"fr"``: met when the forgetting rate ``FR = (A_F - B_F) / B_T >= target_fr``;
* ``"retrain"``: met when the attack AUC of forget-set scores against never-seen reference scores is
  within :data:`AUC_TOLERANCE` of 0.5 (the forget set looks like data the model never saw).

Each device returns its own best state, so one withdrawing device never makes its forget set look
*more* member-like from round to round; but several devices' masks are summed, and one's can undo
another's. The attempt therefore keeps the round judged best (:class:`BestRound`): the highest FR
with ``"fr"``, the AUC closest to 0.5 with ``"retrain"``, the latest of equals. A node that fails takes
all its masks out of the model, so the rounds measured before the failure are models the server can no
longer return to: the best round is chosen among the rounds measured since the last failure.

No Flower here: the model of a round is any value (a Flower ``ArrayRecord`` on the server, a torch
module in the simulations).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Set
from typing import Any, Generic, TypeVar

from fedforget.config import UNLEARN_TARGETS as TARGETS

__all__ = ["AUC_TOLERANCE", "TARGETS", "BestRound", "judged", "target_met"]

AUC_TOLERANCE = 0.03
"""``"retrain"`` is met when ``|AUC - 0.5| <= AUC_TOLERANCE``."""

Model = TypeVar("Model")


def _check_target(config_target: str) -> None:
    if config_target not in TARGETS:
        raise ValueError(f"an unlearning target is one of {', '.join(TARGETS)}; got {config_target!r}")


def _finite(measured: Mapping[str, Any], key: str) -> float | None:
    value = measured.get(key)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(value) else None


def target_met(config_target: str, target_fr: float, measured: Mapping[str, Any]) -> bool:
    """Whether a round measured as ``measured`` (keys ``"fr"`` / ``"attack-auc"``) meets the target:
    ``FR >= target_fr`` for ``"fr"``, ``|AUC - 0.5| <= AUC_TOLERANCE`` for ``"retrain"``. A missing
    or non-finite measurement never meets it."""
    _check_target(config_target)
    if config_target == "fr":
        fr = _finite(measured, "fr")
        return fr is not None and fr >= target_fr
    auc = _finite(measured, "attack-auc")
    return auc is not None and abs(auc - 0.5) <= AUC_TOLERANCE


def judged(config_target: str, measured: Mapping[str, Any]) -> float | None:
    """What the best round maximises: FR (``"fr"``) or ``-|AUC - 0.5|`` (``"retrain"``); ``None`` when
    the round has no such measurement (an owner failed to judge)."""
    _check_target(config_target)
    if config_target == "fr":
        return _finite(measured, "fr")
    auc = _finite(measured, "attack-auc")
    return None if auc is None else -abs(auc - 0.5)


@dataclasses.dataclass(frozen=True)
class _Round(Generic[Model]):
    number: int
    value: float
    model: Model
    row: dict[str, Any]
    failed: frozenset[int]


class BestRound(Generic[Model]):
    """Offered every measured round of an attempt; says which earlier round to keep at its end.

    >>> best = BestRound[str]("fr")
    >>> best.offer(1, {"fr": 0.5}, "model after round 1")
    >>> best.offer(2, {"fr": 0.25}, "model after round 2")
    >>> best.earlier(2)
    (1, 'model after round 1', {'fr': 0.5})
    """

    def __init__(self, config_target: str) -> None:
        _check_target(config_target)
        self.config_target = config_target
        self.best: _Round[Model] | None = None

    def offer(
        self, number: int, row: Mapping[str, Any], model: Model, failed: Set[int] = frozenset()
    ) -> None:
        """Round ``number`` was measured as ``row`` on ``model``; ``failed``: the nodes that had failed
        by then (their masks are not in ``model``)."""
        value = judged(self.config_target, row)
        if value is None:
            return
        failed = frozenset(failed)
        best = self.best
        # a round measured before a node failed is no longer a model the server can go back to
        if best is None or best.failed != failed or value >= best.value:
            self.best = _Round(number, value, model, dict(row), failed)

    def earlier(self, last: int, failed: Set[int] = frozenset()) -> tuple[int, Model, dict[str, Any]] | None:
        """``(round, model, row)`` of the best round when it is not ``last`` and no node failed since
        (``failed``: the nodes failed by the end of the attempt); ``None`` when the last round stays."""
        best = self.best
        if best is None or best.number == last or best.failed != frozenset(failed):
            return None
        return best.number, best.model, best.row
