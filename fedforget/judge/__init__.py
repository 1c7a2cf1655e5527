"""The server's judge of unlearning: attacks fitted apart from anything a method sees, calibrated on
the federated target from clients' score histograms, and verdicts against retraining.

Flower-free; ``server/`` and the in-process benchmarks call it. The design and its rules are in
``docs/forgetting-rate.md`` ("Judge vs steer", "Calibration"). In one picture::

    server (once)   judge = fit_judge(model_factory, x_aux_judge, y_aux_judge,
                                      ShadowFederationRecipe.for_run(config, split))
                    arrays, config = judge.to_state()            # sent in judge queries only
    each client     cal = client_calibration(judge, model, retained=(x, y), heldout=(x, y))
                    cal.to_arrays()                              # counts per bin, never samples
                    forget_bins(judge, model, forget=(x, y))     # per forget sample, with its id
    server          power = calibrate([ClientCalibration.from_arrays(a) for a in replies])
                    power["loss"].summary()                      # AUC, TPR@1%/0.1%, bal. acc., measurable
                    judged = judge_forget_set(before=p0, after=p1, before_bins=b0, after_bins=b1)
                    judged["loss"].to_dict()                     # FR, B_T.., AUCs, status, powers
    benchmarks      retrain_verdict(unlearned=judged, retrained=judged_retrain)
                    ulira_check(unlearned_scores, retrained_scores)

The *steering* oracle an unlearning method may use lives apart, in
:mod:`fedforget.mia.device_oracle` (fitted on the device's own data, a different attack family from
the headline).
"""

from fedforget.judge.attacks import (
    ATTACKS,
    DEFAULT_ATTACKS,
    DEFAULT_HEADLINE,
    Attack,
    Judge,
    LiraAttack,
    LossAttack,
    ShokriAttack,
    fit_judge,
)
from fedforget.judge.calibration import (
    ClientCalibration,
    ForgetJudgement,
    calibrate,
    client_calibration,
    forget_auc,
    forget_bins,
    judge_forget_set,
)
from fedforget.judge.histogram import BINS_ID, NUM_BINS, JudgePower, ScoreHistogram, bin_scores
from fedforget.judge.shadow_federation import (
    ShadowFederation,
    ShadowFederationRecipe,
    judge_aux_half,
    train_shadow_federations,
)
from fedforget.judge.verdict import AUC_TOLERANCE, FR_TOLERANCE, ULiraResult, retrain_verdict, ulira_check

__all__ = [
    "ATTACKS",
    "AUC_TOLERANCE",
    "BINS_ID",
    "DEFAULT_ATTACKS",
    "DEFAULT_HEADLINE",
    "FR_TOLERANCE",
    "NUM_BINS",
    "Attack",
    "ClientCalibration",
    "ForgetJudgement",
    "Judge",
    "JudgePower",
    "LiraAttack",
    "LossAttack",
    "ScoreHistogram",
    "ShadowFederation",
    "ShadowFederationRecipe",
    "ShokriAttack",
    "ULiraResult",
    "bin_scores",
    "calibrate",
    "client_calibration",
    "fit_judge",
    "forget_auc",
    "forget_bins",
    "judge_aux_half",
    "judge_forget_set",
    "retrain_verdict",
    "train_shadow_federations",
    "ulira_check",
]
