"""Unlearning metrics: the forgetting rate, accuracy, forget-vs-reference AUC, the retrain reference.

**Forgetting rate** (Ma et al., "Learn to Forget", TDSC 2022). A membership oracle judges every
sample of the forget set ``D_u`` on the model *before* unlearning and on the model *after* it:

* ``B_T``: samples judged **members** before unlearning,
* ``B_F``: samples judged **non-members** before unlearning (``B_T + B_F = n``),
* ``A_F``: samples judged non-members after unlearning (``A_T``: members after; ``A_T + A_F = n``),

    FR = (A_F - B_F) / B_T

the net share of the samples the model had memorised (as far as the oracle can tell) that it no
longer gives away. ``FR = 1``: every sample judged a member before is judged a non-member after;
``FR = 0``: no net change. FR is a *net* count: a sample flipping member -> non-member and another
flipping non-member -> member cancel, so FR can be negative (down to ``-B_F / B_T``, unlearning made
the oracle see more members than before) and is at most 1.

Edge cases of :func:`forgetting_rate`: ``B_T = 0`` gives ``fr = NaN`` (undefined: the oracle saw
nothing memorised, so there was nothing to forget) -- not an exception, the counts are still
reported; ``before`` and ``after`` over different ids is a ValueError naming some missing / extra
ids; an empty forget set is a ValueError; a decision that is not a bool (or 0 / 1) is a TypeError.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from torch import nn

from fedforget.mia import MembershipOracle
from fedforget.mia.shadow import build_seeded
from fedforget.mia.strength import auc
from fedforget.training import evaluate, train

__all__ = [
    "ForgettingRate",
    "OracleReport",
    "RetrainReference",
    "accuracy",
    "attack_auc",
    "decisions_by_id",
    "forgetting_rate",
    "forgetting_rate_from_arrays",
    "oracle_report",
    "retrain_reference",
]


@dataclasses.dataclass(frozen=True)
class ForgettingRate:
    """FR = (A_F - B_F) / B_T and its counts (see the module docstring); ``fr`` is NaN when B_T = 0."""

    fr: float
    b_t: int
    b_f: int
    a_f: int
    a_t: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``fr`` is None when undefined)."""
        out = dataclasses.asdict(self)
        out["fr"] = None if math.isnan(self.fr) else self.fr
        return out


def _as_id(key: Any) -> int:
    if isinstance(key, bool):
        raise TypeError(f"sample id {key!r} is a bool, expected an integer id")
    if isinstance(key, int | np.integer):
        return int(key)
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():  # ids that went through JSON
        return int(key)
    raise TypeError(f"sample id {key!r} is not an integer id")


def _as_decision(value: Any, key: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and int(value) in (0, 1):
        return bool(value)
    raise TypeError(f"decision for id {key!r} is {value!r}; expected a bool (True = judged a member)")


def _normalise(decisions: Mapping[Any, Any], which: str) -> dict[int, bool]:
    if not isinstance(decisions, Mapping):
        raise TypeError(f"{which} must be a mapping id -> bool, got {type(decisions).__name__}")
    out: dict[int, bool] = {}
    for key, value in decisions.items():
        gid = _as_id(key)
        if gid in out:
            raise ValueError(f"{which} holds sample id {gid} twice (as {key!r} and another spelling)")
        out[gid] = _as_decision(value, key)
    return out


def _some(ids: Iterable[int], limit: int = 5) -> str:
    ordered = sorted(ids)
    text = ", ".join(str(i) for i in ordered[:limit])
    return text + (", ..." if len(ordered) > limit else "")


def forgetting_rate(before: Mapping[int, bool], after: Mapping[int, bool]) -> ForgettingRate:
    """FR of the forget set from the oracle's decisions per sample id (True = judged a member).

    ``before``: decisions on the model before unlearning; ``after``: on the model after it; both over
    the same ids. Ids may be ints, numpy ints or digit strings (JSON keys). See the module docstring
    for the definition and the edge cases.
    """
    b = _normalise(before, "before")
    a = _normalise(after, "after")
    if not b and not a:
        raise ValueError("the forget set is empty: no decisions before or after unlearning")
    if b.keys() != a.keys():
        missing, extra = b.keys() - a.keys(), a.keys() - b.keys()
        parts = []
        if missing:
            parts.append(f"{len(missing)} id(s) judged before but not after ({_some(missing)})")
        if extra:
            parts.append(f"{len(extra)} id(s) judged after but not before ({_some(extra)})")
        raise ValueError("before and after must judge the same samples: " + "; ".join(parts))
    n = len(b)
    b_t = sum(b.values())
    a_t = sum(a.values())
    b_f, a_f = n - b_t, n - a_t
    fr = (a_f - b_f) / b_t if b_t else float("nan")
    return ForgettingRate(fr=fr, b_t=b_t, b_f=b_f, a_f=a_f, a_t=a_t, n=n)


def decisions_by_id(ids: Any, decisions: Any) -> dict[int, bool]:
    """``{id: decision}`` from two aligned arrays (ValueError on different lengths or repeated ids)."""
    ids = np.asarray(ids).reshape(-1)
    decisions = np.asarray(decisions).reshape(-1)
    if len(ids) != len(decisions):
        raise ValueError(f"{len(ids)} ids but {len(decisions)} decisions")
    if len(np.unique(ids)) != len(ids):
        values, counts = np.unique(ids, return_counts=True)
        raise ValueError(f"repeated sample ids: {_some(int(v) for v in values[counts > 1])}")
    return {_as_id(i): _as_decision(d, i) for i, d in zip(ids.tolist(), decisions.tolist(), strict=True)}


def forgetting_rate_from_arrays(ids: Any, before: Any, after: Any) -> ForgettingRate:
    """:func:`forgetting_rate` from aligned arrays: ``before[i]``, ``after[i]`` judge sample ``ids[i]``."""
    return forgetting_rate(decisions_by_id(ids, before), decisions_by_id(ids, after))


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` (:func:`fedforget.training.evaluate`; NaN when empty)."""
    return evaluate(model, x, y).accuracy


def attack_auc(scores_forget: Any, scores_reference: Any) -> float:
    """AUC of the forget set's oracle scores against the client's held-out reference scores.

    ``P(score_forget > score_reference) + 0.5 P(=)``: 0.5 = the model treats the forget set like data
    it never saw (the goal of unlearning); towards 1 = the forget set still looks memorised.
    """
    return auc(scores_forget, scores_reference)


@dataclasses.dataclass(frozen=True, eq=False)
class OracleReport:
    """What a membership oracle says about one model on the forget set and the reference set."""

    decisions: dict[int, bool]
    """Forget-set sample id -> judged a member."""
    scores_forget: np.ndarray
    scores_reference: np.ndarray
    attack_auc: float
    member_fraction: float
    """Share of the forget set judged members."""
    forgetting_rate: ForgettingRate | None
    """FR relative to the ``before`` decisions given, else None."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (ids as string keys)."""
        return {
            "decisions": {str(k): v for k, v in self.decisions.items()},
            "attack_auc": self.attack_auc,
            "member_fraction": self.member_fraction,
            "forgetting_rate": None if self.forgetting_rate is None else self.forgetting_rate.to_dict(),
        }


def oracle_report(
    oracle: MembershipOracle,
    model: nn.Module,
    x_forget: np.ndarray,
    y_forget: np.ndarray,
    x_reference: np.ndarray,
    y_reference: np.ndarray,
    *,
    forget_ids: Any = None,
    before: Mapping[int, bool] | None = None,
) -> OracleReport:
    """The oracle's decisions on the forget set, its forget-vs-reference AUC, and FR w.r.t. ``before``.

    ``forget_ids[i]`` is the id of ``x_forget[i]`` (default ``0 .. n-1``); with ``before`` (decisions
    on the model before unlearning, same ids) the report includes the forgetting rate of ``model``.
    """
    ids = np.arange(len(x_forget)) if forget_ids is None else np.asarray(forget_ids).reshape(-1)
    scores_forget = oracle.scores(model, x_forget, y_forget)
    scores_reference = oracle.scores(model, x_reference, y_reference)
    decisions = decisions_by_id(ids, scores_forget >= oracle.threshold)
    return OracleReport(
        decisions=decisions,
        scores_forget=scores_forget,
        scores_reference=scores_reference,
        attack_auc=attack_auc(scores_forget, scores_reference),
        member_fraction=float(np.mean(list(decisions.values()))),
        forgetting_rate=None if before is None else forgetting_rate(before, decisions),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class RetrainReference:
    """A model retrained from scratch without the forget set, and what the oracle says about it."""

    model: nn.Module
    report: OracleReport
    forget_accuracy: float
    reference_accuracy: float

    @property
    def decisions(self) -> dict[int, bool]:
        return self.report.decisions

    @property
    def forgetting_rate(self) -> ForgettingRate | None:
        return self.report.forgetting_rate

    @property
    def attack_auc(self) -> float:
        return self.report.attack_auc

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.report.to_dict(),
            "forget_accuracy": self.forget_accuracy,
            "reference_accuracy": self.reference_accuracy,
        }


def retrain_reference(
    model_factory: Callable[[], nn.Module],
    x_retain: np.ndarray,
    y_retain: np.ndarray,
    x_forget: np.ndarray,
    y_forget: np.ndarray,
    x_reference: np.ndarray,
    y_reference: np.ndarray,
    oracle: MembershipOracle,
    *,
    forget_ids: Any = None,
    before: Mapping[int, bool] | None = None,
    epochs: int = 10,
    learning_rate: float = 0.05,
    batch_size: int = 16,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> RetrainReference:
    """Retrain from scratch on the retained data only and measure the oracle on it (the gold standard).

    The model is ``model_factory()`` initialised with ``torch.manual_seed(seed)`` and trained centrally
    with :func:`fedforget.training.train` and the given recipe on ``(x_retain, y_retain)``, which must
    not contain the forget set. The result holds the model, the oracle's forget-set decisions, the
    forget-vs-reference AUC, the accuracies on the forget and reference sets and -- with ``before``,
    the decisions on the model before unlearning -- the FR the retrained model reaches.
    """
    if len(x_retain) == 0:
        raise ValueError("the retained training data is empty: nothing to retrain on")
    model = build_seeded(model_factory, seed)
    train(
        model,
        x_retain,
        y_retain,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=seed,
    )
    report = oracle_report(
        oracle, model, x_forget, y_forget, x_reference, y_reference, forget_ids=forget_ids, before=before
    )
    return RetrainReference(
        model=model,
        report=report,
        forget_accuracy=accuracy(model, x_forget, y_forget),
        reference_accuracy=accuracy(model, x_reference, y_reference),
    )
