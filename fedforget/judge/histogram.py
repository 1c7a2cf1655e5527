"""Score histograms on fixed bins, and an attack's power computed from two of them.

The judge never sees client samples or per-sample scores of retained / held-out data: a client bins
its scores on the fixed bins below and sends the **counts**. The server adds the counts of all
clients (merge = add) and computes everything from the two merged histograms (members,
non-members).

**Bins** (shared by client and server; :data:`BINS_ID` names them in every state). A score
``s in [0, 1]`` (higher = more member-like) is binned on its logit ``log(s / (1 - s))``:
:data:`NUM_BINS` = 200 bins, inner edges ``e_j = sigmoid(t_j)`` with ``t_1 .. t_199`` evenly spaced
from ``-LOGIT_RANGE`` to ``+LOGIT_RANGE`` (20; a step of 0.203 in logit), and::

    bin(s) = #{ j : e_j <= s }        in 0 .. 199

so bin 0 is ``s < sigmoid(-20)`` and bin 199 is ``s >= sigmoid(20) = 1 - 2.1e-9``. Equal steps in
logit resolve the tails where low-FPR decisions are made (a confidence of 0.999 vs 0.9999 is three
logit units, 15 bins). Score ``0`` and ``1`` are valid (bins 0 and 199); NaN or a score outside
``[0, 1]`` is a ValueError.

**Decision rule at a bin edge.** "member iff ``bin >= k``" (equivalently ``s >= e_k``) for
``k = 0 .. NUM_BINS``; ``k = 0`` calls everything a member, ``k = NUM_BINS`` nothing. With member
counts ``m_i`` (total ``M``) and non-member counts ``n_i`` (total ``N``)::

    TPR(k) = sum_{i >= k} m_i / M,      FPR(k) = sum_{i >= k} n_i / N

**ROC** = the points ``(FPR(k), TPR(k))`` for ``k = NUM_BINS .. 0`` (from (0, 0) to (1, 1)).

**AUC** = ``sum_i (m_i / M) (N_{<i} + n_i / 2) / N`` with ``N_{<i} = sum_{j < i} n_j``: the
Mann-Whitney ``P(bin_member > bin_nonmember) + 0.5 P(same bin)``, which is exactly the trapezoid
area under the ROC above. It equals the AUC of the raw scores up to the pairs that fall in the same
bin (those count one half here); see :func:`auc_from_counts`.

**TPR at FPR alpha** (1% and 0.1%): linear interpolation on the ROC
(:func:`fedforget.mia.strength.tpr_at_fpr`, the same rule as the other oracles' strength).

**Threshold** (Youden): the bin edge ``k*`` in ``1 .. NUM_BINS - 1`` maximising
``J(k) = TPR(k) - FPR(k)`` (the strictest among ties), the same rule as
:func:`fedforget.mia.strength.youden_threshold`, restricted to bin edges; its score ``e_{k*}``, its
TPR / FPR and balanced accuracy ``(TPR + 1 - FPR) / 2`` are reported.

**Measurable** (the significance rule): the attack's power on this model is distinguishable from
chance when the one-sided lower 95% bound of its AUC is above 0.5::

    AUC - 1.645 SE > 0.5,
    SE^2 = (A(1-A) + (M-1)(Q1 - A^2) + (N-1)(Q2 - A^2)) / (M N),
    Q1 = A / (2 - A),  Q2 = 2 A^2 / (1 + A)                    (Hanley & McNeil 1982)

and both histograms hold at least :data:`MIN_SAMPLES` samples. Otherwise the attack cannot tell the
model's members from its non-members, so its member / non-member decisions on a forget set say
nothing about memorisation: FR under it is reported as *not measurable*. (The threshold is chosen
on the same counts its balanced accuracy is reported on, so J and balanced accuracy are optimistic
by a little; AUC and TPR at fixed FPR do not depend on the threshold.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from fedforget.mia.strength import tpr_at_fpr

__all__ = [
    "BINS_ID",
    "INNER_EDGES",
    "LOGIT_RANGE",
    "MIN_SAMPLES",
    "NUM_BINS",
    "Z_95",
    "JudgePower",
    "ScoreHistogram",
    "auc_from_counts",
    "auc_lower_bound",
    "bin_scores",
    "hanley_mcneil_se",
    "power_from_histograms",
]

NUM_BINS = 200
"""Number of score bins."""
LOGIT_RANGE = 20.0
"""Inner bin edges span ``logit(s)`` in ``[-LOGIT_RANGE, LOGIT_RANGE]``."""
INNER_EDGES = 1.0 / (1.0 + np.exp(-np.linspace(-LOGIT_RANGE, LOGIT_RANGE, NUM_BINS - 1)))
"""``e_1 .. e_{NUM_BINS-1}`` in score space (float64, increasing)."""
BINS_ID = f"logit-{NUM_BINS}-{LOGIT_RANGE:g}"
"""Names the binning; a state or histogram made with other bins is refused."""
Z_95 = 1.6448536269514722
"""One-sided 95% standard-normal quantile."""
MIN_SAMPLES = 10
"""Fewest members and non-members a power estimate accepts as measurable."""


def bin_scores(scores: Any) -> np.ndarray:
    """The bin (int16, ``0 .. NUM_BINS - 1``) of every score in ``[0, 1]`` (module docstring)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size and (not np.all(np.isfinite(s)) or s.min() < 0.0 or s.max() > 1.0):
        raise ValueError("judge scores must be finite numbers in [0, 1]")
    return np.searchsorted(INNER_EDGES, s, side="right").astype(np.int16)


def _check_counts(counts: Any, what: str) -> np.ndarray:
    c = np.asarray(counts)
    if c.shape != (NUM_BINS,):
        raise ValueError(f"{what}: {c.shape} counts, expected ({NUM_BINS},) (bins {BINS_ID})")
    if c.dtype.kind not in "iu":
        if c.dtype.kind == "f" and np.all(np.isfinite(c)) and np.all(c == np.round(c)):
            c = c.astype(np.int64)
        else:
            raise ValueError(f"{what}: counts must be whole numbers, got dtype {c.dtype}")
    if c.size and c.min() < 0:
        raise ValueError(f"{what}: negative count")
    return c.astype(np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class ScoreHistogram:
    """Counts of scores per bin (:data:`NUM_BINS` int64 entries); ``a + b`` adds the counts."""

    counts: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", _check_counts(self.counts, "histogram"))

    @classmethod
    def empty(cls) -> ScoreHistogram:
        return cls(np.zeros(NUM_BINS, dtype=np.int64))

    @classmethod
    def of_scores(cls, scores: Any) -> ScoreHistogram:
        """The histogram of scores in ``[0, 1]``."""
        return cls.of_bins(bin_scores(scores))

    @classmethod
    def of_bins(cls, bins: Any) -> ScoreHistogram:
        """The histogram of bin indices (``0 .. NUM_BINS - 1``)."""
        b = np.asarray(bins).reshape(-1)
        if b.size and (b.dtype.kind not in "iu" or b.min() < 0 or b.max() >= NUM_BINS):
            raise ValueError(f"bin indices must be integers in [0, {NUM_BINS})")
        return cls(np.bincount(b.astype(np.int64), minlength=NUM_BINS))

    @classmethod
    def merge(cls, histograms: Iterable[ScoreHistogram]) -> ScoreHistogram:
        """The sum of ``histograms`` (empty when there are none)."""
        total = np.zeros(NUM_BINS, dtype=np.int64)
        for h in histograms:
            total += h.counts
        return cls(total)

    def __add__(self, other: ScoreHistogram) -> ScoreHistogram:
        return ScoreHistogram(self.counts + other.counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def at_or_above(self, k: int) -> int:
        """How many scores fall in bins ``>= k`` (decided member by the rule ``bin >= k``)."""
        return int(self.counts[max(0, int(k)) :].sum())

    def to_list(self) -> list[int]:
        return [int(c) for c in self.counts]


def auc_from_counts(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """``P(bin_m > bin_n) + 0.5 P(bin_m == bin_n)`` (NaN when a side is empty)."""
    m = np.asarray(members, dtype=np.float64)
    n = np.asarray(nonmembers, dtype=np.float64)
    total_m, total_n = m.sum(), n.sum()
    if total_m == 0 or total_n == 0:
        return float("nan")
    below = np.concatenate([[0.0], np.cumsum(n)[:-1]])
    return float(np.sum(m * (below + 0.5 * n)) / (total_m * total_n))


def hanley_mcneil_se(auc: float, num_members: int, num_nonmembers: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC from ``num_members`` x ``num_nonmembers`` pairs."""
    a, m, n = float(auc), int(num_members), int(num_nonmembers)
    if m < 1 or n < 1 or not math.isfinite(a):
        return float("nan")
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1.0 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n)
    return math.sqrt(max(var, 0.0))


def auc_lower_bound(auc: float, num_members: int, num_nonmembers: int) -> float:
    """One-sided lower 95% bound ``AUC - 1.645 SE`` (Hanley-McNeil SE)."""
    return float(auc) - Z_95 * hanley_mcneil_se(auc, num_members, num_nonmembers)


@dataclasses.dataclass(frozen=True, eq=False)
class JudgePower:
    """One attack's power on one model, from member / non-member histograms (module docstring).

    ``threshold_bin`` ``k*``: decide member iff ``bin >= k*`` (score ``>= threshold``).
    ``measurable``: AUC's lower 95% bound > 0.5 with enough samples; ``reason`` says why in one line.
    """

    attack: str
    members: ScoreHistogram
    nonmembers: ScoreHistogram
    auc: float
    auc_lower: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    threshold_bin: int
    threshold: float
    tpr_at_threshold: float
    fpr_at_threshold: float
    balanced_accuracy: float
    measurable: bool
    reason: str

    @property
    def num_members(self) -> int:
        return self.members.total

    @property
    def num_nonmembers(self) -> int:
        return self.nonmembers.total

    def is_member(self, bins: Any) -> np.ndarray:
        """The decisions ``bin >= threshold_bin`` (True = member) for bin indices."""
        return np.asarray(bins).reshape(-1) >= self.threshold_bin

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers without the histograms (what a metrics row carries)."""
        return {
            "attack": self.attack,
            "auc": _none_if_nan(self.auc),
            "auc-lower-95": _none_if_nan(self.auc_lower),
            "tpr-at-1pct-fpr": _none_if_nan(self.tpr_at_1pct_fpr),
            "tpr-at-0.1pct-fpr": _none_if_nan(self.tpr_at_01pct_fpr),
            "tpr-at-0.1pct-fpr-resolved": bool(0.001 * self.num_nonmembers >= 1),
            "balanced-accuracy": _none_if_nan(self.balanced_accuracy),
            "threshold": self.threshold,
            "threshold-bin": self.threshold_bin,
            "tpr-at-threshold": _none_if_nan(self.tpr_at_threshold),
            "fpr-at-threshold": _none_if_nan(self.fpr_at_threshold),
            "num-members": self.num_members,
            "num-nonmembers": self.num_nonmembers,
            "measurable": self.measurable,
            "reason": self.reason,
        }

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary` plus both histograms' counts (``from_dict`` recomputes the rest)."""
        return {
            **self.summary(),
            "bins": BINS_ID,
            "members": self.members.to_list(),
            "nonmembers": self.nonmembers.to_list(),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> JudgePower:
        """Rebuild from :meth:`to_dict` (everything is recomputed from the counts)."""
        if doc.get("bins") != BINS_ID:
            raise ValueError(f"judge power made with bins {doc.get('bins')!r}; this version uses {BINS_ID}")
        return power_from_histograms(
            str(doc["attack"]), ScoreHistogram(doc["members"]), ScoreHistogram(doc["nonmembers"])
        )


def _none_if_nan(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def power_from_histograms(attack: str, members: ScoreHistogram, nonmembers: ScoreHistogram) -> JudgePower:
    """The attack's power from merged member / non-member histograms (all rules in the module docstring)."""
    m, n = members.counts, nonmembers.counts
    total_m, total_n = int(m.sum()), int(n.sum())
    nan = float("nan")
    if total_m == 0 or total_n == 0:
        which = "members" if total_m == 0 else "non-members"
        return JudgePower(
            attack, members, nonmembers, nan, nan, nan, nan, NUM_BINS, 1.0, nan, nan, nan, False,
            f"no {which} to calibrate on",
        )  # fmt: skip
    # rule "bin >= k" for k = NUM_BINS .. 0: counts at or above k
    tp = np.concatenate([np.cumsum(m[::-1])[::-1], [0]])  # tp[k] = sum_{i >= k} m_i, k = 0..NUM_BINS
    fp = np.concatenate([np.cumsum(n[::-1])[::-1], [0]])
    tpr_k, fpr_k = tp / total_m, fp / total_n
    fpr_curve, tpr_curve = fpr_k[::-1], tpr_k[::-1]  # from (0, 0) to (1, 1)
    auc = auc_from_counts(m, n)
    lower = auc_lower_bound(auc, total_m, total_n)
    j = tpr_k[1:NUM_BINS] - fpr_k[1:NUM_BINS]  # k = 1 .. NUM_BINS - 1
    k_star = 1 + int(np.flatnonzero(j == j.max())[-1])  # strictest among ties
    tpr_t, fpr_t = float(tpr_k[k_star]), float(fpr_k[k_star])
    if min(total_m, total_n) < MIN_SAMPLES:
        measurable, reason = (
            False,
            f"too few samples ({total_m} members, {total_n} non-members; need {MIN_SAMPLES} each)",
        )
    elif lower > 0.5:
        measurable, reason = True, f"AUC {auc:.3f}, lower 95% bound {lower:.3f} > 0.5"
    else:
        measurable, reason = (
            False,
            f"at chance: AUC {auc:.3f}, lower 95% bound {lower:.3f} <= 0.5 "
            f"({total_m} members, {total_n} non-members)",
        )
    return JudgePower(
        attack=attack,
        members=members,
        nonmembers=nonmembers,
        auc=auc,
        auc_lower=lower,
        tpr_at_1pct_fpr=tpr_at_fpr(fpr_curve, tpr_curve, 0.01),
        tpr_at_01pct_fpr=tpr_at_fpr(fpr_curve, tpr_curve, 0.001),
        threshold_bin=k_star,
        threshold=float(INNER_EDGES[k_star - 1]),
        tpr_at_threshold=tpr_t,
        fpr_at_threshold=fpr_t,
        balanced_accuracy=(tpr_t + 1.0 - fpr_t) / 2.0,
        measurable=measurable,
        reason=reason,
    )
