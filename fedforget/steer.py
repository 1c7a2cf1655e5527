"""What a withdrawing device steers by: its own oracle, and whether it says the target is met.

**The judge is never the steer.** The server's judge (:mod:`fedforget.judge`) scores unlearning and
is never sent in an unlearning message. A device that unlearns steers by its *own* oracle instead
(:func:`fedforget.mia.device_oracle.fit_device_oracle`: a learned classifier fitted on the current
model from the device's retained samples as members and its held-out samples as non-members; a
different attack family from the judge's headline loss threshold). Forsaken picks its targets and
stops with it; every client-side method reports with it whether, by its own measure, the round
reached the target:

* ``steer-fr``: ``FR = (A_F - B_F) / B_T`` of the forget set, the steering oracle's decisions on the
  model before the round against those on the model after it (NaN when ``B_T = 0``);
* ``steer-auc``: AUC of the steering oracle's forget-set scores against the device's held-out scores,
  on the model after the round;
* ``steer-target-met``: 1 when :func:`fedforget.attempt_rules.target_met` holds for these two numbers
  (``FR >= target_fr`` with target ``fr``; ``|AUC - 0.5| <= 0.03`` with ``retrain``), else 0.

The server's attempt (:mod:`fedforget.unlearning_attempt`) stops when every live device says
``steer-target-met = 1``; the judge only scores. The oracle is seeded with :func:`steer_seed`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from torch import nn

from fedforget.attempt_rules import target_met
from fedforget.metrics import attack_auc, forgetting_rate_from_arrays
from fedforget.mia.device_oracle import DeviceOracle, fit_device_oracle

__all__ = ["STEER_KEYS", "SteerReport", "fit_steering_oracle", "steer_report", "steer_seed"]

Pair = tuple[np.ndarray, np.ndarray]
STEER_KEYS = ("steer-fr", "steer-auc", "steer-target-met")
"""The metrics every client-side method reports in its ``train.unlearn`` reply."""


def steer_seed(run_seed: int, server_round: int, partition_id: int) -> int:
    """The steering oracle's seed: ``run_seed * 104_729 + server_round * 1_013 + partition_id``."""
    return int(run_seed) * 104_729 + int(server_round) * 1_013 + int(partition_id)


def fit_steering_oracle(
    model: nn.Module, *, retained: Pair, heldout: Pair, seed: int, forget: Pair | None = None
) -> DeviceOracle:
    """The device's steering oracle on ``model`` (module docstring). Members are the retained samples;
    a device left with fewer than 5 (it withdrew everything) takes its ``forget`` samples instead: on
    the model before unlearning they are members too. Without either, half of its held-out samples
    stand in as members (an oracle that cannot see)."""
    if len(retained[1]) < 5 and forget is not None and len(forget[1]) >= 5:
        retained = forget
    elif len(retained[1]) < 5:
        half = max(1, len(heldout[1]) // 2)
        retained = (heldout[0][:half], heldout[1][:half])
    return fit_device_oracle(model, members=retained, nonmembers=heldout, seed=seed)


@dataclasses.dataclass(frozen=True)
class SteerReport:
    """The steering numbers of one round on one device (module docstring)."""

    fr: float
    auc: float
    target_met: bool

    def metrics(self) -> dict[str, float]:
        return {
            "steer-fr": self.fr,
            "steer-auc": self.auc,
            "steer-target-met": 1.0 if self.target_met else 0.0,
        }


def steer_report(
    oracle: DeviceOracle,
    *,
    before: nn.Module,
    after: nn.Module,
    forget: Pair,
    heldout: Pair,
    target: str,
    target_fr: float,
) -> SteerReport:
    """``steer-fr``, ``steer-auc`` and ``steer-target-met`` of the change ``before -> after``."""
    x, y = forget
    decided_before = oracle.decide(before, x, y)
    decided_after = oracle.decide(after, x, y)
    fr = forgetting_rate_from_arrays(np.arange(len(y)), decided_before, decided_after).fr
    auc = float("nan")
    if len(heldout[1]):
        auc = attack_auc(oracle.scores(after, x, y), oracle.scores(after, *heldout))
    measured = {"fr": fr if math.isfinite(fr) else None, "attack-auc": auc}
    return SteerReport(float(fr), float(auc), target_met(target, target_fr, measured))
