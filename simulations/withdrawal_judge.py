"""The server's judge on one withdrawal, in one process: what the benchmarks score every method with.

The benchmarks judge exactly as the federation does (``server/evaluator.py``), without Flower:

* the judge is :func:`fedforget.judge.for_run.fit_run_judge` of the run config (its own shadow
  federations, seeds and half of the auxiliary data; never seen by any unlearning method, which
  steers by its device's own oracle, :mod:`fedforget.steer`);
* each model is calibrated on every client's retained (member) and held-out (non-member) samples
  (:func:`fedforget.judge.for_run.calibrate_clients`, the per-round ``query.judge``); after the
  withdrawal the withdrawn samples are no longer the owner's members;
* the forget set is scored on the model before and on the model after, each against its own
  calibrated threshold (:func:`fedforget.judge.judge_forget_set`): per attack FR = (A_F - B_F) / B_T,
  the forget-vs-never-seen AUC, and *not measurable* where the attack is at chance;
* a method is compared with retraining by :func:`fedforget.judge.retrain_verdict` (over-forgetting
  when its AUC is more than 0.05 below the retrained model's).

Usage::

    wj = WithdrawalJudge.fit(config, dataset, split, clients, withdrawn={0: forget_ids})
    before = wj.look(original, withdrawn=False)
    judged = wj.judged(before, wj.look(unlearned))         # {attack: ForgetJudgement}
    verdict = retrain_verdict(unlearned=judged, retrained=wj.judged(before, wj.look(retrained)))
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from fedforget.judge import ForgetJudgement, Judge, JudgePower, judge_forget_set, retrain_verdict
from fedforget.judge.for_run import calibrate_clients, fit_run_judge
from fedforget.judge.histogram import hanley_mcneil_se
from fedforget.metrics import attack_auc

__all__ = ["ModelLook", "WithdrawalJudge", "judgement_fields"]


@dataclasses.dataclass(frozen=True)
class ModelLook:
    """What the judge sees of one model: its power per attack, the forget set's bins per attack."""

    power: dict[str, JudgePower]
    bins: dict[str, np.ndarray]


@dataclasses.dataclass
class WithdrawalJudge:
    """The judge of one withdrawal (module docstring)."""

    judge: Judge
    clients: Sequence[Any]
    withdrawn: Mapping[int, np.ndarray]
    run_seed: int
    fit_seconds: float = 0.0

    @classmethod
    def fit(
        cls,
        config: Any,
        dataset: Any,
        split: Any,
        clients: Sequence[Any],
        *,
        withdrawn: Mapping[int, np.ndarray],
    ) -> WithdrawalJudge:
        start = time.perf_counter()
        judge = fit_run_judge(config, dataset, split)
        return cls(judge, clients, dict(withdrawn), config.seed, time.perf_counter() - start)

    def with_withdrawn(self, withdrawn: Mapping[int, np.ndarray]) -> WithdrawalJudge:
        """The same judge for another withdrawal of the same run."""
        return dataclasses.replace(self, withdrawn=dict(withdrawn))

    @property
    def forget(self) -> tuple[np.ndarray, np.ndarray]:
        """The withdrawn samples of every owner, concatenated in partition order."""
        xs, ys = [], []
        for client in self.clients:
            ids = self.withdrawn.get(client.partition_id)
            if ids is not None and len(ids):
                _, x, y = client.subset(ids)
                xs.append(x)
                ys.append(y)
        if not xs:
            raise ValueError("nothing is withdrawn: no forget set to judge")
        return np.concatenate(xs), np.concatenate(ys)

    def look(self, model: nn.Module, *, withdrawn: bool = True) -> ModelLook:
        """Calibrate on ``model`` (``withdrawn``: the forget set is no longer among the members) and bin
        the forget set."""
        power = calibrate_clients(
            self.judge,
            model,
            self.clients,
            run_seed=self.run_seed,
            withdrawn=self.withdrawn if withdrawn else None,
        )
        return ModelLook(power, self.judge.bins(model, *self.forget))

    def judged(self, before: ModelLook, after: ModelLook) -> dict[str, ForgetJudgement]:
        """FR and AUC under every attack of ``after`` against ``before``."""
        return judge_forget_set(
            before=before.power, after=after.power, before_bins=before.bins, after_bins=after.bins
        )

    def owner_heldout_auc(self, model: nn.Module) -> dict[str, float]:
        """Per attack, the AUC of the forget set's raw scores against the *owners'* held-out samples only
        (the never-seen data a withdrawing device steers by: its reference set), on ``model``.

        A diagnostic beside the judged AUC, whose never-seen side is every client's held-out samples:
        where the two differ, the method matched its device's own sample of never-seen data, not the
        never-seen distribution. Not a verdict: it reads the owner's reference, which the method saw.
        """
        owners = [c for c in self.clients if len(self.withdrawn.get(c.partition_id, ()))]
        x_held = np.concatenate([c.x_holdout for c in owners])
        y_held = np.concatenate([c.y_holdout for c in owners])
        forget = self.judge.scores(model, *self.forget)
        heldout = self.judge.scores(model, x_held, y_held)
        return {a: attack_auc(forget[a], heldout[a]) if len(y_held) else float("nan") for a in forget}

    def forget_scores(self, model: nn.Module) -> dict[str, np.ndarray]:
        """Every attack's score of each forget sample on ``model`` (for the U-LiRA check)."""
        return self.judge.scores(model, *self.forget)


def judgement_fields(
    judged: Mapping[str, ForgetJudgement], *, arm: str, retrained: Mapping[str, ForgetJudgement] | None = None
) -> dict[str, Any]:
    """Flat results columns of one arm (``forsaken``, ``retrain``, ...) under every attack ``a``:
    ``fr-<arm>-<a>`` (None when not measurable), ``fr-status-<arm>-<a>``, ``b-t-<a>``, ``auc-<arm>-<a>``,
    ``auc-original-<a>``, ``judge-auc-<a>`` (the attack's power on the original model),
    ``auc-se-<arm>-<a>`` (the Hanley-McNeil standard error of the arm's AUC: forget samples x the
    model's held-out samples; a few forget samples make it large) and, with ``retrained``,
    ``verdict-<arm>-<a>``, ``auc-diff-<arm>-<a>`` and ``auc-diff-se-<arm>-<a>`` (the two AUCs' standard
    errors combined) (:func:`retrain_verdict`)."""
    out: dict[str, Any] = {}
    for attack, j in judged.items():
        d = j.to_dict()
        out[f"fr-{arm}-{attack}"] = d["fr"]
        out[f"fr-status-{arm}-{attack}"] = j.status
        out[f"b-t-{attack}"] = d["b-t"]
        out[f"auc-{arm}-{attack}"] = d["auc-after"]
        out[f"auc-original-{attack}"] = d["auc-before"]
        out[f"judge-auc-{attack}"] = j.power_before.auc
        out[f"judge-measurable-{attack}"] = bool(j.power_before.measurable)
        out[f"auc-se-{arm}-{attack}"] = _none(auc_se(j))
    if retrained is not None:
        for attack, v in retrain_verdict(unlearned=judged, retrained=retrained).items():
            out[f"verdict-{arm}-{attack}"] = v["verdict"]
            out[f"auc-diff-{arm}-{attack}"] = v["auc-diff"]
            out[f"fr-diff-{arm}-{attack}"] = v["fr-diff"]
            if attack in judged and attack in retrained:
                se = math.hypot(auc_se(judged[attack]), auc_se(retrained[attack]))
                out[f"auc-diff-se-{arm}-{attack}"] = _none(se)
    return out


def auc_se(judgement: ForgetJudgement) -> float:
    """Hanley-McNeil standard error of the forget-vs-never-seen AUC after unlearning."""
    return hanley_mcneil_se(judgement.auc_after, judgement.counts.n, judgement.power_after.num_nonmembers)


def _none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
