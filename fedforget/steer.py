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

**What "never seen" looks like to a device.** A device holds few held-out samples (a fifth of its
data: 50-130 in the benchmark's federations), too few to tell what never-seen data looks like to
within the 0.05 AUC of a verdict, or to guard accuracy to a point. The server lends it more: with
``steer-reference-samples = N > 0`` every ``train.unlearn`` message carries
:func:`steer_reference`, at most ``N`` samples of the server's auxiliary data *outside the judge's
half* (:func:`fedforget.judge.judge_aux_half`), and the device steers by its held-out samples plus
these (:func:`with_lent_reference`): the steering oracle's non-members, Forsaken's reference set
and the steer report's never-seen side. The judge's shadow federations never see them, and the
judge calibrates on the devices' held-out samples only, so the judge is still not the steer.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from torch import nn

from fedforget.attempt_rules import target_met
from fedforget.judge.shadow_federation import judge_aux_half
from fedforget.metrics import attack_auc, forgetting_rate_from_arrays
from fedforget.mia.device_oracle import DeviceOracle, fit_device_oracle

__all__ = [
    "STEER_KEYS",
    "SteerReport",
    "fit_steering_oracle",
    "steer_reference",
    "steer_report",
    "steer_seed",
    "with_lent_reference",
]

Pair = tuple[np.ndarray, np.ndarray]
STEER_KEYS = ("steer-fr", "steer-auc", "steer-target-met")
"""The metrics every client-side method reports in its ``train.unlearn`` reply."""


def steer_seed(run_seed: int, server_round: int, partition_id: int) -> int:
    """The steering oracle's seed: ``run_seed * 104_729 + server_round * 1_013 + partition_id``."""
    return int(run_seed) * 104_729 + int(server_round) * 1_013 + int(partition_id)


STEER_REFERENCE_STREAM = 0x5354
"""Seeds the choice of the lent reference samples: ``default_rng([run_seed, STEER_REFERENCE_STREAM])``."""


def steer_reference(
    x_train: np.ndarray, y_train: np.ndarray, aux_ids: np.ndarray, *, run_seed: int, limit: int
) -> Pair:
    """The never-seen samples the server lends a withdrawing device (module docstring): at most
    ``limit`` of the auxiliary samples ``aux_ids`` (rows of ``x_train`` / ``y_train``) outside the
    judge's half, chosen once per run (seeded by ``run_seed``) and sorted. Empty when ``limit`` is 0
    or there is no such sample."""
    ids = np.asarray(aux_ids, dtype=np.int64).reshape(-1)
    if limit <= 0 or len(ids) < 2:
        chosen = np.empty(0, dtype=np.int64)
    else:
        _, other = judge_aux_half(ids, run_seed)
        rng = np.random.default_rng([int(run_seed), STEER_REFERENCE_STREAM])
        chosen = np.sort(rng.permutation(other)[: int(limit)])
    return x_train[chosen], y_train[chosen]


def with_lent_reference(heldout: Pair, lent: Pair | None) -> Pair:
    """The device's never-seen samples: its ``heldout`` samples, then the server's ``lent`` ones."""
    if lent is None or len(lent[1]) == 0:
        return heldout
    return np.concatenate([heldout[0], lent[0]]), np.concatenate([heldout[1], lent[1]])


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
