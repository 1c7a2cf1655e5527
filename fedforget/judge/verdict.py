"""Retrain-referenced verdicts, and a per-sample U-LiRA-style check for benchmarks.

**Verdict against retraining** (:func:`retrain_verdict`). The gold standard of unlearning is a model
retrained without the forget set. For every attack of the judge, the unlearned model's FR and
forget-vs-never-seen AUC are compared with the retrained model's (same forget set, same judge, each
model calibrated on itself)::

    auc-diff = AUC(unlearned) - AUC(retrained)        fr-diff = FR(unlearned) - FR(retrained)

    not-measurable     either side is not measurable (attack at chance, B_T = 0) or lacks an AUC
    over-forgetting    auc-diff < -AUC_TOLERANCE      (the forget set looks *less* member-like than after
                                                       retraining: the "Streisand effect", itself a tell)
    under-forgetting   auc-diff > +AUC_TOLERANCE
    over-forgetting    |auc-diff| <= AUC_TOLERANCE and fr-diff > +FR_TOLERANCE
    under-forgetting   |auc-diff| <= AUC_TOLERANCE and fr-diff < -FR_TOLERANCE
    retrain-equivalent otherwise (FR compared only when both FRs are numbers)

with :data:`AUC_TOLERANCE` = 0.05 and :data:`FR_TOLERANCE` = 0.10. A forget set of ``n`` samples
against ``N`` held-out ones has an AUC standard error of roughly ``sqrt((n + N) / (12 n N))``
(0.06 for ``n = 26``), so on small forget sets "retrain-equivalent" means "not distinguishable at
this size", not "equal".

**U-LiRA-style check** (:func:`ulira_check`; Hayes et al., SaTML 2025). Given the judge's scores of
the ``n`` forget samples on ``m_u`` unlearned models and ``m_r`` retrained models (different seeds),
ask per sample whether a model's score tells which kind of model it came from. Scores are taken on
the logit scale ``t = log(s / (1 - s))`` (clipped to ``±LOGIT_CLIP``). Per sample ``j``:

* ``auc_j``: Mann-Whitney ``P(t_unlearned > t_retrained) + 0.5 P(=)``: 0.5 = indistinguishable,
  > 0.5 = the unlearned models still find the sample more member-like (under-forgetting), < 0.5 =
  less (over-forgetting);
* ``accuracy_j``: leave-one-model-out likelihood-ratio test with two Gaussians of equal variance
  (one per kind; with equal variances the likelihood ratio picks the nearer mean): each model's
  ``t_j`` is classified by the nearer of the two means estimated *without* that model (a tie counts
  one half); balanced accuracy ``(acc_unlearned + acc_retrained) / 2``. 0.5 = indistinguishable,
  1 = every model's kind is told from this one sample.

``accuracy`` and ``auc`` are the means over samples. Leave-one-out makes ``accuracy`` slightly
*below* 0.5 in expectation when the two kinds are identical and the models are few. Needs at least 2
models of each kind.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "AUC_TOLERANCE",
    "FR_TOLERANCE",
    "LOGIT_CLIP",
    "VERDICTS",
    "ULiraResult",
    "retrain_verdict",
    "ulira_check",
]

AUC_TOLERANCE = 0.05
"""Unlearned AUC below retrained AUC minus this: over-forgetting; above plus this: under-forgetting."""
FR_TOLERANCE = 0.10
"""Unlearned FR within this of retrained FR (when the AUCs agree): retrain-equivalent."""
LOGIT_CLIP = 50.0
VERDICTS = ("retrain-equivalent", "under-forgetting", "over-forgetting", "not-measurable")


def _number(value: Any) -> float:
    if value is None:
        return float("nan")
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out


def _fr_auc(judgement: Any) -> dict[str, Any]:
    """``{"fr", "auc", "status"}`` of a mapping or a :class:`~fedforget.judge.calibration.ForgetJudgement`."""
    if isinstance(judgement, Mapping):
        return {
            "fr": _number(judgement.get("fr")),
            "auc": _number(judgement.get("auc")),
            "status": str(judgement.get("status", "measured")),
        }
    return {"fr": _number(judgement.fr), "auc": _number(judgement.auc_after), "status": judgement.status}


def retrain_verdict(
    *, unlearned: Mapping[str, Any], retrained: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per attack ``{fr, auc, fr-retrain, auc-retrain, auc-diff, fr-diff, verdict, reason}`` (module doc).

    ``unlearned`` / ``retrained``: ``{attack: {"fr", "auc"[, "status"]}}`` or ``{attack:
    ForgetJudgement}`` (its FR and forget-vs-never-seen AUC after unlearning). Attacks present on
    one side only get ``not-measurable``.
    """
    out: dict[str, dict[str, Any]] = {}
    for attack in list(unlearned) + [a for a in retrained if a not in unlearned]:
        u = _fr_auc(unlearned[attack]) if attack in unlearned else None
        r = _fr_auc(retrained[attack]) if attack in retrained else None
        nan = float("nan")
        fr_u, auc_u = (u["fr"], u["auc"]) if u else (nan, nan)
        fr_r, auc_r = (r["fr"], r["auc"]) if r else (nan, nan)
        auc_diff, fr_diff = auc_u - auc_r, fr_u - fr_r
        if u is None or r is None:
            verdict, reason = "not-measurable", f"no {'unlearned' if u is None else 'retrained'} judgement"
        elif u["status"] != "measured" or r["status"] != "measured":
            side = "unlearned" if u["status"] != "measured" else "retrained"
            verdict, reason = "not-measurable", f"the {side} model's judgement is not measurable"
        elif not (math.isfinite(auc_u) and math.isfinite(auc_r)):
            verdict, reason = "not-measurable", "an AUC is missing"
        elif auc_diff < -AUC_TOLERANCE:
            verdict, reason = "over-forgetting", f"AUC {auc_u:.3f} < retrained {auc_r:.3f} - {AUC_TOLERANCE}"
        elif auc_diff > AUC_TOLERANCE:
            verdict, reason = "under-forgetting", f"AUC {auc_u:.3f} > retrained {auc_r:.3f} + {AUC_TOLERANCE}"
        elif math.isfinite(fr_diff) and fr_diff > FR_TOLERANCE:
            verdict, reason = "over-forgetting", f"FR {fr_u:.3f} > retrained {fr_r:.3f} + {FR_TOLERANCE}"
        elif math.isfinite(fr_diff) and fr_diff < -FR_TOLERANCE:
            verdict, reason = "under-forgetting", f"FR {fr_u:.3f} < retrained {fr_r:.3f} - {FR_TOLERANCE}"
        else:
            verdict = "retrain-equivalent"
            reason = f"AUC within {AUC_TOLERANCE}" + (
                f", FR within {FR_TOLERANCE}" if math.isfinite(fr_diff) else " (FR not compared)"
            )
        out[attack] = {
            "fr": _none(fr_u),
            "auc": _none(auc_u),
            "fr-retrain": _none(fr_r),
            "auc-retrain": _none(auc_r),
            "auc-diff": _none(auc_diff),
            "fr-diff": _none(fr_diff),
            "verdict": verdict,
            "reason": reason,
        }
    return out


def _none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclasses.dataclass(frozen=True, eq=False)
class ULiraResult:
    """Per-sample and overall distinguishability of unlearned from retrained models (module docstring)."""

    per_sample_accuracy: np.ndarray
    per_sample_auc: np.ndarray
    accuracy: float
    auc: float
    num_unlearned: int
    num_retrained: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "auc": self.auc,
            "num-unlearned-models": self.num_unlearned,
            "num-retrained-models": self.num_retrained,
            "num-samples": len(self.per_sample_auc),
            "per-sample-accuracy": self.per_sample_accuracy.tolist(),
            "per-sample-auc": self.per_sample_auc.tolist(),
        }


def _logit(scores: Any, what: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"{what} must be models x forget samples, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or s.min() < 0 or s.max() > 1:
        raise ValueError(f"{what} must be scores in [0, 1]")
    with np.errstate(divide="ignore"):
        t = np.log(s) - np.log1p(-s)
    return np.clip(t, -LOGIT_CLIP, LOGIT_CLIP)


def ulira_check(unlearned_scores: Any, retrained_scores: Any) -> ULiraResult:
    """How well one forget sample's score tells an unlearned model from a retrained one (module doc).

    ``unlearned_scores``: ``m_u x n`` judge scores in ``[0, 1]`` of the ``n`` forget samples on
    ``m_u`` unlearned models; ``retrained_scores``: ``m_r x n`` on retrained models (same samples,
    same order). ``m_u, m_r >= 2``.
    """
    u = _logit(unlearned_scores, "unlearned_scores")
    r = _logit(retrained_scores, "retrained_scores")
    if u.shape[1] != r.shape[1] or u.shape[1] == 0:
        raise ValueError(f"{u.shape[1]} forget samples scored on unlearned models, {r.shape[1]} on retrained")
    m_u, m_r = len(u), len(r)
    if m_u < 2 or m_r < 2:
        raise ValueError(f"need at least 2 unlearned and 2 retrained models, got {m_u} and {m_r}")
    sum_u, sum_r = u.sum(axis=0), r.sum(axis=0)
    mean_u, mean_r = sum_u / m_u, sum_r / m_r

    def correct(own: np.ndarray, own_sum: np.ndarray, m_own: int, other_mean: np.ndarray) -> np.ndarray:
        loo = (own_sum[None, :] - own) / (m_own - 1)  # own kind's mean without this model
        d_own, d_other = np.abs(own - loo), np.abs(own - other_mean[None, :])
        return np.where(d_own < d_other, 1.0, np.where(d_own == d_other, 0.5, 0.0)).mean(axis=0)

    accuracy = 0.5 * (correct(u, sum_u, m_u, mean_r) + correct(r, sum_r, m_r, mean_u))
    greater = (u[:, None, :] > r[None, :, :]).mean(axis=(0, 1))
    equal = (u[:, None, :] == r[None, :, :]).mean(axis=(0, 1))
    auc = greater + 0.5 * equal
    return ULiraResult(
        per_sample_accuracy=accuracy,
        per_sample_auc=auc,
        accuracy=float(accuracy.mean()),
        auc=float(auc.mean()),
        num_unlearned=m_u,
        num_retrained=m_r,
    )
