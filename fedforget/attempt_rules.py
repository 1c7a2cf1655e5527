"""When an unlearning target is met: one rule, read by devices for their steer and by receipts.

Two targets (``unlearn-target``, ``docs/forsaken.md``):

* ``"fr"``: met when the forgetting rate ``FR = (A_F - B_F) / B_T >= target_fr``;
* ``"retrain"``: met when the attack AUC of forget-set scores against never-seen reference scores is
  within :data:`AUC_TOLERANCE` of 0.5 (the forget set looks like data the model never saw).

Who measures decides what the answer means. A device applies the rule to its *own* oracle's numbers
(:mod:`fedforget.steer`: ``steer-target-met``), and an unlearning attempt stops on that
(:mod:`fedforget.unlearning_attempt`). A receipt applies it to the server's judge's numbers
(``target-met``): a score, never a stopping rule (the judge is never the steer).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from fedforget.config import UNLEARN_TARGETS as TARGETS

__all__ = ["AUC_TOLERANCE", "TARGETS", "target_met"]

AUC_TOLERANCE = 0.03
"""``"retrain"`` is met when ``|AUC - 0.5| <= AUC_TOLERANCE``."""


def _check_target(config_target: str) -> None:
    if config_target not in TARGETS:
        raise ValueError(f"an unlearning target is one of {', '.join(TARGETS)}; got {config_target!r}")


def _finite(measured: Mapping[str, Any], key: str) -> float | None:
    value = measured.get(key)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(value) else None


def target_met(config_target: str, target_fr: float, measured: Mapping[str, Any]) -> bool:
    """Whether numbers ``measured`` (keys ``"fr"`` / ``"attack-auc"``) meet the target:
    ``FR >= target_fr`` for ``"fr"``, ``|AUC - 0.5| <= AUC_TOLERANCE`` for ``"retrain"``. A missing
    or non-finite measurement never meets it."""
    _check_target(config_target)
    if config_target == "fr":
        fr = _finite(measured, "fr")
        return fr is not None and fr >= target_fr
    auc = _finite(measured, "attack-auc")
    return auc is not None and abs(auc - 0.5) <= AUC_TOLERANCE
