"""Calibrating the judge on the real global model from aggregates, and judging a forget set with it.

**Client side** (runs where the data is; returns counts and bin indices, never samples or scores):

* :func:`client_calibration`: the client scores its own *retained* training samples (members of the
  current global model) and its *held-out* samples (never trained on: non-members) with every
  attack of the judge, and returns one member and one non-member
  :class:`~fedforget.judge.histogram.ScoreHistogram` per attack -- counts per fixed bin.
* :func:`forget_bins`: the bin index of every forget sample under every attack, in the forget set's
  order (they travel with the device's sample ids, as today's per-sample decisions do; a bin index
  is the decision at *every* threshold, so the server can apply the threshold it calibrates).

**Server side**:

* :func:`calibrate`: adds the clients' histograms (per attack) and computes each attack's
  :class:`~fedforget.judge.histogram.JudgePower` on the current global model: AUC, TPR at 1% / 0.1%
  FPR, balanced accuracy and the Youden threshold (a bin edge), and whether the power is
  distinguishable from chance (``measurable``).
* :func:`judge_forget_set`: per attack, the forget set's decisions before unlearning (bins on the
  model before, against *that* model's calibrated threshold) and after (bins on the model after,
  against *its* threshold), and from them::

      FR = (A_F - B_F) / B_T        (fedforget.metrics.forgetting_rate)

  and the forget-vs-never-seen AUC of each model (the forget set's bins against the merged held-out
  histogram of the same model; 0.5 = the forget set looks like data the model never saw). The status
  is ``"not-measurable"`` -- FR is NaN, the counts and both powers still reported -- when the attack
  is at chance on the model before or after unlearning (``JudgePower.measurable`` is False) or
  ``B_T = 0``; otherwise ``"measured"``.

Why each model gets its own threshold: after exact unlearning the forget samples score like the
model's held-out samples, and the threshold that separates that model's members from its
non-members is the one that should call them non-members. A threshold frozen on the model before
would drift with the model's overall confidence (e.g. more training rounds).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from torch import nn

from fedforget.judge.attacks import Judge
from fedforget.judge.histogram import (
    NUM_BINS,
    JudgePower,
    ScoreHistogram,
    auc_from_counts,
    power_from_histograms,
)
from fedforget.judge.shadow_federation import judge_rng
from fedforget.metrics import ForgettingRate, forgetting_rate_from_arrays
from fedforget.mia.features import check_inputs

__all__ = [
    "MAX_CALIBRATION_SAMPLES",
    "ClientCalibration",
    "ForgetJudgement",
    "calibrate",
    "client_calibration",
    "forget_auc",
    "forget_bins",
    "judge_forget_set",
]

MAX_CALIBRATION_SAMPLES = 2000
"""Default cap on the retained (and on the held-out) samples a client scores per calibration."""

Pair = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True, eq=False)
class ClientCalibration:
    """One client's member / non-member histograms per attack (counts only)."""

    members: dict[str, ScoreHistogram]
    nonmembers: dict[str, ScoreHistogram]

    def __post_init__(self) -> None:
        if set(self.members) != set(self.nonmembers):
            raise ValueError("a calibration needs member and non-member histograms for the same attacks")

    @property
    def attacks(self) -> tuple[str, ...]:
        return tuple(self.members)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``{"members/<attack>": counts, "nonmembers/<attack>": counts}`` (int64, :data:`NUM_BINS` each)."""
        out = {f"members/{a}": h.counts.copy() for a, h in self.members.items()}
        out.update({f"nonmembers/{a}": h.counts.copy() for a, h in self.nonmembers.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> ClientCalibration:
        """The inverse of :meth:`to_arrays`; ValueError (one line) on anything else (a bad peer's reply)."""
        members, nonmembers = {}, {}
        for key, value in arrays.items():
            side, _, attack = str(key).partition("/")
            if side not in ("members", "nonmembers") or not attack:
                raise ValueError(f"unexpected calibration entry {key!r}")
            (members if side == "members" else nonmembers)[attack] = ScoreHistogram(np.asarray(value))
        if not members:
            raise ValueError("the calibration holds no histograms")
        return cls(members, nonmembers)


def _cap(pair: Pair, limit: int, seed: int, tag: int, what: str) -> Pair:
    x, y = check_inputs(*pair, what=what)
    if limit and len(x) > limit:
        keep = np.sort(judge_rng(seed, 5, tag).choice(len(x), size=limit, replace=False))
        return x[keep], y[keep]
    return x, y


def client_calibration(
    judge: Judge,
    model: nn.Module,
    *,
    retained: Pair,
    heldout: Pair,
    max_samples: int = MAX_CALIBRATION_SAMPLES,
    seed: int = 0,
) -> ClientCalibration:
    """Per attack, the histogram of the scores of ``retained`` (members) and of ``heldout`` (non-members).

    ``retained``: the client's training samples the current ``model`` was trained on (not the forget
    set); ``heldout``: its samples no model was trained on. Each side is subsampled (seeded by
    ``seed``) to at most ``max_samples`` (0 = all); an empty side gives empty histograms.
    """

    def histograms(pair: Pair, tag: int, what: str) -> dict[str, ScoreHistogram]:
        if len(pair[1]) == 0:  # e.g. a device that withdrew all its data: it adds nothing to that side
            return {a: ScoreHistogram.of_bins(np.empty(0, dtype=np.int64)) for a in judge.names}
        x, y = _cap(pair, max_samples, seed, tag, what)
        return {a: ScoreHistogram.of_bins(b) for a, b in judge.bins(model, x, y).items()}

    members = histograms(retained, 0, "retained samples")
    nonmembers = histograms(heldout, 1, "held-out samples")
    return ClientCalibration(members, nonmembers)


def forget_bins(judge: Judge, model: nn.Module, *, forget: Pair) -> dict[str, np.ndarray]:
    """``{attack: bin index per forget sample}`` (int16, in the order of ``forget``)."""
    return judge.bins(model, *check_inputs(*forget, what="forget set"))


def calibrate(calibrations: Iterable[ClientCalibration]) -> dict[str, JudgePower]:
    """Merge the clients' histograms and compute each attack's power on the model they scored.

    Every calibration must cover the same attacks (ValueError otherwise); none at all is a ValueError.
    """
    items = list(calibrations)
    if not items:
        raise ValueError("no client calibration to calibrate the judge on")
    attacks = items[0].attacks
    for c in items[1:]:
        if set(c.attacks) != set(attacks):
            raise ValueError(f"client calibrations cover different attacks: {attacks} vs {c.attacks}")
    return {
        a: power_from_histograms(
            a,
            ScoreHistogram.merge(c.members[a] for c in items),
            ScoreHistogram.merge(c.nonmembers[a] for c in items),
        )
        for a in attacks
    }


def forget_auc(power: JudgePower, bins: Any) -> float:
    """AUC of the forget set's bins against ``power``'s non-member (held-out) histogram of the same model."""
    return auc_from_counts(ScoreHistogram.of_bins(np.asarray(bins)).counts, power.nonmembers.counts)


@dataclasses.dataclass(frozen=True, eq=False)
class ForgetJudgement:
    """What one attack of the judge says about one forget set (see the module docstring)."""

    attack: str
    status: str
    """``"measured"`` or ``"not-measurable"``."""
    reason: str
    counts: ForgettingRate
    """B_T, B_F, A_F, A_T, n (and the raw FR) from the calibrated decisions, whatever the status."""
    auc_before: float
    """Forget vs never-seen AUC on the model before unlearning."""
    auc_after: float
    """Forget vs never-seen AUC on the model after unlearning."""
    power_before: JudgePower
    power_after: JudgePower

    @property
    def measured(self) -> bool:
        return self.status == "measured"

    @property
    def fr(self) -> float:
        """FR when measured, else NaN."""
        return self.counts.fr if self.measured else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; every number names the attack that judged it (``"attack"``)."""

        def num(v: float) -> float | None:
            return None if not math.isfinite(v) else float(v)

        return {
            "attack": self.attack,
            "status": self.status,
            "reason": self.reason,
            "fr": num(self.fr),
            "b-t": self.counts.b_t,
            "b-f": self.counts.b_f,
            "a-f": self.counts.a_f,
            "a-t": self.counts.a_t,
            "num-forget": self.counts.n,
            "auc-before": num(self.auc_before),
            "auc-after": num(self.auc_after),
            "power-before": self.power_before.summary(),
            "power-after": self.power_after.summary(),
        }


def judge_forget_set(
    *,
    before: Mapping[str, JudgePower],
    after: Mapping[str, JudgePower],
    before_bins: Mapping[str, Any],
    after_bins: Mapping[str, Any],
    ids: Any = None,
) -> dict[str, ForgetJudgement]:
    """FR and forget-vs-never-seen AUC under every attack in both calibrations (module docstring).

    ``before`` / ``after``: :func:`calibrate` on the model before / after unlearning;
    ``before_bins`` / ``after_bins``: :func:`forget_bins` of the same forget samples (same order; for
    several clients' forget sets, concatenated in the same order). ``ids``: the samples' ids
    (default positions); repeated ids are a ValueError.
    """
    out: dict[str, ForgetJudgement] = {}
    for attack in before:
        if attack not in after or attack not in before_bins or attack not in after_bins:
            continue
        b = np.asarray(before_bins[attack]).reshape(-1)
        a = np.asarray(after_bins[attack]).reshape(-1)
        if len(b) != len(a) or len(b) == 0:
            raise ValueError(f"{attack}: {len(b)} forget bins before but {len(a)} after unlearning")
        if b.min() < 0 or a.min() < 0 or b.max() >= NUM_BINS or a.max() >= NUM_BINS:
            raise ValueError(f"{attack}: forget bins outside [0, {NUM_BINS})")
        pb, pa = before[attack], after[attack]
        sample_ids = np.arange(len(b)) if ids is None else np.asarray(ids).reshape(-1)
        counts = forgetting_rate_from_arrays(sample_ids, pb.is_member(b), pa.is_member(a))
        if not pb.measurable:
            status, reason = "not-measurable", f"before unlearning: {pb.reason}"
        elif not pa.measurable:
            status, reason = "not-measurable", f"after unlearning: {pa.reason}"
        elif counts.b_t == 0:
            status, reason = "not-measurable", "B_T = 0: no forget sample judged a member before unlearning"
        else:
            status, reason = "measured", f"{pb.reason}; after: {pa.reason}"
        out[attack] = ForgetJudgement(
            attack=attack,
            status=status,
            reason=reason,
            counts=counts,
            auc_before=forget_auc(pb, b),
            auc_after=forget_auc(pa, a),
            power_before=pb,
            power_after=pa,
        )
    return out
