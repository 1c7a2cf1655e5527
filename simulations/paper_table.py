"""The paper's table: Forsaken and every baseline, on the eight datasets, with seeds, in one command.

    python -m simulations.paper_table --quick           # digits + breast-cancer, seed 0 (under a minute)
    python -m simulations.paper_table                   # all 8 datasets x seeds 0 1 2
    python -m simulations.paper_table --datasets adult letter --methods forsaken retrain pga --seeds 0

Writes ``results/paper_table.csv`` and ``.json`` (one row per dataset x seed x method), the generated
``docs/results.md`` (with the command that produced it) and three small plots beside it
(``docs/results_fr_vs_accuracy.png``, ``docs/results_time.png``, ``docs/results_rounds.png``).

**One setting** (dataset, seed): 5 clients, IID, the run config's defaults otherwise (per-dataset
changes in :data:`DATASET_SETTINGS`, the benchmark's memorising federations).

1. The **original** federation: ``fedforget.baselines.train_original`` (FedAvg, ``num-rounds``
   rounds, recording the last round for PGA and FedEraser's store every round).
2. The **withdrawal**: client 0 withdraws a seeded 5% of its training samples (``resolve_ids`` of
   ``samples:0.05``).
3. The server's **judge** (:class:`simulations.withdrawal_judge.WithdrawalJudge`, i.e.
   :func:`fedforget.judge.for_run.fit_run_judge` as ``server/evaluator.py`` fits it): the attacks
   ``loss`` (headline), ``shokri`` and ``lira``, shadow federations on the judge's half of the
   auxiliary data trained like the target; nothing an unlearning method sees (Forsaken steers by its
   device's own oracle). Every model is calibrated on every client's retained (member) and held-out
   (non-member) samples; ``B`` = the forget set's decisions on the original model under its own
   calibration.
4. **Federated methods** from the same original model, each timed and counted on its own (wall
   seconds and sample-passes, :mod:`fedforget.cost`, of the unlearning only): ``forsaken`` as the
   federation runs it (:func:`simulations.forsaken_rounds.unlearn_like_the_federation`), ``retrain``,
   ``finetune`` (1 round), ``gradient-ascent`` and ``pga`` (1 repair round each), ``federaser``
   (Δ = 1, calibration epochs = local epochs // 2).
5. **Centralized methods** (one data owner holding the union of the 5 clients' training data, the
   same forget ids and test set): ``sisa`` (5 shards x 3 slices) and ``amnesiac`` (tracking the
   batches of the ids to be withdrawn). Each has its own original model (SISA's ensemble, or plain
   SGD for Amnesiac, ``num-rounds x local-epochs`` epochs) and its own retrain reference (the same
   training from scratch without the ids). They are judged by the **same federated judge**: the
   union's data are the clients' retained samples (members) and the clients' held-out samples are
   never seen (non-members), so the calibration is the same; only the judge's shadow federations
   were trained like the federated target, not like SISA or plain SGD.

Per row, under every attack (:func:`simulations.withdrawal_judge.judgement_fields`, arm ``method``
and arm ``retrain``): FR = (A_F - B_F) / B_T of the method and of its retrained reference (None with
status ``not-measurable`` where the attack is at chance on a model or B_T = 0), the forget-vs-never-
seen AUC of the original, unlearned and retrained models, the verdict against retraining and the
attack's power (AUC) on the original model; then test accuracy and its loss, accuracy on the forget
set, wall seconds, sample-passes and their ratios to retraining's, client compute seconds, bytes
sent and storage bytes. ``rounds``: the headline attack's FR, AUC and test accuracy after each
unlearning round of a federated method (untimed, uncounted).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedforget import baselines, data, models, training
from fedforget.baselines import Original, UnlearnResult
from fedforget.client_data import ClientData, split_for
from fedforget.config import RunConfig
from fedforget.cost import SamplePasses, count_sample_passes, not_counted
from fedforget.federated import state_nbytes
from fedforget.judge import (
    AUC_TOLERANCE,
    DEFAULT_ATTACKS,
    DEFAULT_HEADLINE,
    FR_TOLERANCE,
    ForgetJudgement,
    Judge,
)
from fedforget.withdrawals import WithdrawalRequest, resolve_ids
from simulations.forsaken_benchmark import DATASET_SETTINGS as BENCHMARK_SETTINGS
from simulations.forsaken_benchmark import unlearn_bytes
from simulations.forsaken_rounds import unlearn_like_the_federation
from simulations.withdrawal_judge import ModelLook, WithdrawalJudge, judgement_fields

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("mnist", "fashion-mnist", "cifar10", "adult", "location", "letter", "digits", "breast-cancer")
QUICK_DATASETS = ("digits", "breast-cancer")
FEDERATED = ("forsaken", "retrain", "finetune", "gradient-ascent", "pga", "federaser")
CENTRALIZED = ("sisa", "amnesiac")
METHODS = FEDERATED + CENTRALIZED
DATASET_SETTINGS: dict[str, dict[str, Any]] = BENCHMARK_SETTINGS
"""Changes to ``RunConfig``'s defaults per dataset: the benchmark's federations
(``simulations.forsaken_benchmark.DATASET_SETTINGS``: rounds, local epochs and sample caps with
which the model memorises where the data allows), so both tables judge the same originals."""
FRACTION = 0.05
SISA_SHARDS, SISA_SLICES = 5, 3
HEADLINE, ATTACKS = DEFAULT_HEADLINE, DEFAULT_ATTACKS
"""The judge's attacks (the run config's default ``judge-attacks``), the headline first."""
ARM = "method"
"""The arm name of a row's own method in its judgement columns (``fr-method-loss``, ...)."""
VERDICT_SHORT = {
    "retrain-equivalent": "equivalent",
    "under-forgetting": "under",
    "over-forgetting": "over",
    "not-measurable": "n/m",
}
CSV_COLUMNS = (
    "dataset",
    "seed",
    "method",
    "setting",
    "model",
    "num-forget",
    "judge",
    f"judge-auc-{HEADLINE}",
    f"judge-measurable-{HEADLINE}",
    f"b-t-{HEADLINE}",
    f"fr-{ARM}-{HEADLINE}",
    f"fr-status-{ARM}-{HEADLINE}",
    f"fr-retrain-{HEADLINE}",
    f"fr-status-retrain-{HEADLINE}",
    f"auc-original-{HEADLINE}",
    f"auc-{ARM}-{HEADLINE}",
    f"auc-retrain-{HEADLINE}",
    *(f"verdict-{ARM}-{a}" for a in ATTACKS),
    "acc-original",
    "acc",
    "acc-retrain",
    "acc-loss",
    "forget-acc",
    "seconds",
    "seconds-retrain",
    "speedup",
    "passes",
    "passes-retrain",
    "pass-ratio",
    "client-seconds",
    "bytes-sent",
    "storage-bytes",
)
"""The CSV: the headline attack's FR / AUC / power and every attack's verdict (the JSON has every
attack's columns)."""


# ------------------------------------------------------------------------------------------- setup
def make_config(dataset: str, seed: int, args: argparse.Namespace) -> RunConfig:
    """The setting's run config (5 clients, IID, per-dataset settings, ``--rounds``)."""
    settings: dict[str, Any] = dict(DATASET_SETTINGS.get(dataset, {}))
    if args.rounds is not None:
        settings["num_rounds"] = args.rounds
    if args.local_epochs is not None:
        settings["local_epochs"] = args.local_epochs
    if args.forsaken_steps is not None:
        settings["forsaken_steps"] = args.forsaken_steps
    config = RunConfig(dataset=dataset, num_clients=5, partitioning="iid", seed=seed, **settings)
    config.validate()
    info = data.info(config.dataset, config.data_dir or None)
    return config.replace(model=models.resolve_model_name(config.model, info))


@dataclasses.dataclass
class Judged:
    """One model seen by the judge against an original model: per attack FR / AUC, and its accuracies."""

    attacks: dict[str, ForgetJudgement]
    acc: float
    forget_acc: float


@dataclasses.dataclass
class Reference:
    """What the rows of one original model are compared with: the judge's look at the original, its
    test accuracy, and its retraining without the forget set (judged, timed and counted)."""

    before: ModelLook
    acc_original: float
    retrained: Judged
    seconds: float
    passes: SamplePasses


@dataclasses.dataclass
class Setting:
    """Everything one (dataset, seed) shares: config, the judge, the forget set and the test data."""

    config: RunConfig
    judge: WithdrawalJudge
    client: ClientData
    forget_ids: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def headline(self) -> str:
        return self.judge.judge.headline

    @property
    def attacks(self) -> list[str]:
        return list(self.judge.judge.names)

    def model(self, state: dict[str, torch.Tensor], factory: Callable[[], torch.nn.Module] | None = None):
        model = factory() if factory else baselines.base.build_model(self.config)
        model.load_state_dict(state)
        return model

    def accuracy(self, model: torch.nn.Module) -> tuple[float, float]:
        """``(test accuracy, accuracy on the forget set)`` of ``model``."""
        acc = training.evaluate(model, self.x_test, self.y_test).accuracy
        return acc, training.evaluate(model, *self.judge.forget).accuracy

    def look_at_original(self, model: torch.nn.Module) -> ModelLook:
        """The judge's look at an original model (the forget set still among client 0's members)."""
        with not_counted():
            return self.judge.look(model, withdrawn=False)

    def judged(self, model: torch.nn.Module, before: ModelLook) -> Judged:
        """``model`` under every attack against the original's look ``before`` (not counted)."""
        with not_counted():
            attacks = self.judge.judged(before, self.judge.look(model))
            acc, forget_acc = self.accuracy(model)
        return Judged(attacks, acc, forget_acc)

    def headline_judge(self) -> WithdrawalJudge:
        """The same judge with its headline attack only (the per-round record: one attack is enough,
        and its calibration is the full judge's for that attack: same subsamples, same bins)."""
        attack = self.judge.judge.attacks[self.headline]
        return dataclasses.replace(self.judge, judge=Judge({self.headline: attack}, self.headline))


class Trace:
    """A method's per-round record: the judge's headline FR (None where not measurable, with its
    status), the forget-vs-never-seen AUC and the test accuracy after each unlearning round.

    Passed as a baseline's ``observe`` (:class:`fedforget.baselines.base.Observation` leaves its time
    out of the method's seconds; its forwards are not counted as the method's sample-passes); ``rows``
    go to the JSON (``rounds`` of each row) and the per-round plot.
    """

    def __init__(self, setting: Setting, before: ModelLook) -> None:
        self.setting = setting
        self.judge = setting.headline_judge()
        self.before = ModelLook(
            {setting.headline: before.power[setting.headline]},
            {setting.headline: before.bins[setting.headline]},
        )
        self.rows: list[dict[str, Any]] = []

    def __call__(self, round_: int, state: Mapping[str, torch.Tensor]) -> None:
        with not_counted():
            model = self.setting.model(dict(state))
            judged = self.judge.judged(self.before, self.judge.look(model))[self.setting.headline]
            acc = training.evaluate(model, self.setting.x_test, self.setting.y_test).accuracy
        self.rows.append(
            {
                "round": round_,
                "fr": _finite(judged.fr),
                "fr-status": judged.status,
                "auc": _finite(judged.auc_after),
                "acc": acc,
            }
        )


# ------------------------------------------------------------------------------------------ methods
def counted(run: Callable[[], UnlearnResult]) -> tuple[UnlearnResult, SamplePasses]:
    """``run()`` and the sample-passes it took (:mod:`fedforget.cost`)."""
    with count_sample_passes() as passes:
        result = run()
    return result, passes


def run_forsaken(
    setting: Setting, original: Original, observe: Trace | None = None
) -> tuple[UnlearnResult, SamplePasses]:
    """Forsaken as the Flower flow runs it (:func:`simulations.forsaken_rounds.unlearn_like_the_federation`:
    masks from client 0 steered by its device's own oracle, validated and added by the server; round
    1's guard baseline in the later rounds; a zero mask ends the attempt; the attempt keeps its best
    round), with its sample-passes (the device's steering oracle included).

    ``observe`` (not timed, not counted) sees the model after each round, as the baselines' ``observe``.
    """
    config = setting.config
    observation = baselines.base.Observation(observe)
    attempt = unlearn_like_the_federation(
        config,
        setting.model(original.state_dict),
        setting.client,
        setting.forget_ids,
        config.num_rounds + 1,
        observe=lambda unlearn_round, model: observation(unlearn_round, model.state_dict()),
    )
    compute = sum(r.get("forsaken-seconds", 0.0) for r in attempt["rounds"])
    state = {k: v.detach().clone() for k, v in attempt["model"].state_dict().items()}
    sent = unlearn_bytes(
        len(attempt["rounds"]), state_nbytes(state), attempt["mask-bytes"], attempt["lent-bytes"]
    )
    extra = {
        "unlearn-rounds": len(attempt["rounds"]),
        "forsaken-steps": sum(r.get("steps", 0) for r in attempt["rounds"]),
        "mask-bytes": attempt["mask-bytes"],
        "steer-target-met": attempt["steer-target-met"],
    }
    result = UnlearnResult(
        "forsaken", state, attempt["seconds"], compute, sent, 0, attempt["rounds"], extra=extra
    )
    return result, attempt["sample-passes"]


def run_centralized(
    setting: Setting, methods: Sequence[str], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """SISA and Amnesiac on the union of the clients' data, each against its own retrain."""
    config = setting.config
    dataset = data.load(config)
    split = split_for(config)
    ids = np.sort(np.concatenate([split.client(k).train_ids for k in range(config.num_clients)]))
    x, y = dataset.x_train[ids], dataset.y_train[ids]
    keep = ~np.isin(ids, setting.forget_ids)
    epochs = config.num_rounds * config.local_epochs
    recipe = {
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
    }

    def factory(seed: int = config.seed) -> torch.nn.Module:
        return models.build_model(config.model, dataset.info, seed=seed)

    rows = []
    for method in methods:
        try:
            rows.append(_centralized_row(setting, method, x, y, ids, keep, epochs, recipe, factory))
        except FAILURES as error:
            rows.append(failed_row(setting, method, "centralized", f"{type(error).__name__}: {error}"))
        log(describe(rows[-1]))
    return rows


def _centralized_row(
    setting: Setting,
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    ids: np.ndarray,
    keep: np.ndarray,
    epochs: int,
    recipe: dict[str, Any],
    factory: Callable[..., torch.nn.Module],
) -> dict[str, Any]:
    config = setting.config
    if method == "sisa":
        sisa_config = baselines.SisaConfig(
            shards=SISA_SHARDS,
            slices=SISA_SLICES,
            epochs_per_slice=max(1, epochs // SISA_SLICES),
            seed=config.seed,
            **recipe,
        )
        trained = baselines.sisa_train(factory, x, y, ids, sisa_config)
        original_model = trained.ensemble
        result, passes = counted(lambda: baselines.sisa_unlearn(trained, setting.forget_ids))
        start = time.perf_counter()
        with count_sample_passes() as retrain_passes:
            again = baselines.sisa_train(factory, x[keep], y[keep], ids[keep], sisa_config)
        retrain_seconds = time.perf_counter() - start
        retrain_model = again.ensemble
        unlearned = result.extra["sisa"].ensemble
    else:
        original_model = factory()
        record = baselines.amnesiac_train(
            original_model, x, y, ids, epochs=epochs, seed=config.seed, track=setting.forget_ids, **recipe
        )
        result, passes = counted(
            lambda: baselines.amnesiac_unlearn(
                original_model,
                record,
                setting.forget_ids,
                repair=(x[keep], y[keep]),
                repair_epochs=1,
                seed=config.seed,
                **recipe,
            )
        )
        result.extra["storage-bytes-all-batches"] = (
            len(ids) // config.batch_size * epochs * state_nbytes(result.state_dict)
        )
        retrain_model = factory()
        start = time.perf_counter()
        with count_sample_passes() as retrain_passes:
            training.train(retrain_model, x[keep], y[keep], epochs=epochs, seed=config.seed, **recipe)
        retrain_seconds = time.perf_counter() - start
        unlearned = setting.model(result.state_dict, factory)
    before = setting.look_at_original(original_model)
    with not_counted():
        acc_original = setting.accuracy(original_model)[0]
    reference = Reference(
        before, acc_original, setting.judged(retrain_model, before), retrain_seconds, retrain_passes
    )
    return make_row(
        setting, method, "centralized", result, passes, setting.judged(unlearned, before), reference
    )


# ---------------------------------------------------------------------------------------- one setting
FAILURES = (FloatingPointError, ValueError, RuntimeError)
"""A method failing in one setting (e.g. training diverging after its update) gives a row with its error."""


def failed_row(setting: Setting, method: str, kind: str, error: str) -> dict[str, Any]:
    """A row for a method that failed: identification, the error, and no numbers."""
    row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS)
    row.update(
        {
            "dataset": setting.config.dataset,
            "seed": setting.config.seed,
            "method": method,
            "setting": kind,
            "model": setting.config.model,
            "num-forget": len(setting.forget_ids),
            "judge": setting.headline,
            "attacks": setting.attacks,
            "error": error,
            "details": {},
        }
    )
    return row


def make_row(
    setting: Setting,
    method: str,
    kind: str,
    result: UnlearnResult,
    passes: SamplePasses,
    judged: Judged,
    reference: Reference,
) -> dict[str, Any]:
    """One results row (module docstring): the judge's columns of the method and of its retrained
    reference under every attack, accuracy, time, sample-passes, bytes."""
    retrained = reference.retrained
    return {
        "dataset": setting.config.dataset,
        "seed": setting.config.seed,
        "method": method,
        "setting": kind,
        "model": setting.config.model,
        "num-forget": len(setting.forget_ids),
        "judge": setting.headline,
        "attacks": setting.attacks,
        **judgement_fields(retrained.attacks, arm="retrain"),
        **judgement_fields(judged.attacks, arm=ARM, retrained=retrained.attacks),
        "acc-original": reference.acc_original,
        "acc": judged.acc,
        "acc-retrain": retrained.acc,
        "acc-loss": reference.acc_original - judged.acc,
        "forget-acc": judged.forget_acc,
        "forget-acc-retrain": retrained.forget_acc,
        "seconds": result.seconds,
        "seconds-retrain": reference.seconds,
        "speedup": _ratio(reference.seconds, result.seconds),
        "passes": passes.total,
        "passes-retrain": reference.passes.total,
        "pass-ratio": _ratio(reference.passes.total, passes.total),
        "passes-detail": passes.to_dict(),
        "client-seconds": result.client_seconds,
        "bytes-sent": result.bytes_sent,
        "storage-bytes": result.storage_bytes,
        "seconds-judge-fit": setting.judge.fit_seconds,
        "details": {k: v for k, v in result.summary().items() if k not in {"method"}},
    }


def run_setting(
    dataset: str, seed: int, methods: Sequence[str], args: argparse.Namespace, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Train the original federation and fit the judge once, then run every method on the same withdrawal."""
    config = make_config(dataset, seed, args)
    name = f"{dataset}/seed {seed}/{config.model}"
    log(f"{name}: original federation ({config.num_rounds} rounds x {config.local_epochs} epochs, 5 clients)")
    trained, original = baselines.train_original(config, federaser_every=1, evaluate=False)
    clients = [ClientData.for_partition(config, k) for k in range(config.num_clients)]
    request = WithdrawalRequest(config.num_rounds + 1, 0, "samples", FRACTION)
    forget_ids = resolve_ids(request, clients[0].train_ids, clients[0].y_train, config.seed)
    dataset_arrays = data.load(config)
    judge = WithdrawalJudge.fit(config, dataset_arrays, split_for(config), clients, withdrawn={0: forget_ids})
    setting = Setting(config, judge, clients[0], forget_ids, dataset_arrays.x_test, dataset_arrays.y_test)
    original_model = setting.model(original.state_dict)
    before = setting.look_at_original(original_model)
    power = ", ".join(
        f"{a} {before.power[a].auc:.3f}{'' if before.power[a].measurable else ' (chance)'}"
        for a in setting.attacks
    )
    log(
        f"{name}: original test accuracy {trained.test_accuracy:.4f} ({trained.seconds:.1f}s); judge fitted "
        f"in {judge.fit_seconds:.1f}s, its AUC on the original: {power}"
    )
    forget = {0: forget_ids}
    traces = {method: Trace(setting, before) for method in FEDERATED}
    # retrain first: it is every federated method's reference
    results: dict[str, tuple[UnlearnResult, SamplePasses]] = {
        "retrain": counted(lambda: baselines.retrain(original, forget, observe=traces["retrain"]))
    }
    failures: dict[str, str] = {}
    for method in methods:
        if method in FEDERATED and method not in results:
            try:
                if method == "forsaken":
                    results[method] = run_forsaken(setting, original, traces[method])
                else:
                    run = baselines.get(method).run
                    results[method] = counted(
                        lambda run=run, m=method: run(original, forget, observe=traces[m])
                    )
            except FAILURES as error:  # recorded in the table, not hidden, and the run goes on
                failures[method] = f"{type(error).__name__}: {error}"
    retrain_result, retrain_passes = results["retrain"]
    with not_counted():
        acc_original = setting.accuracy(original_model)[0]
    reference = Reference(
        before,
        acc_original,
        setting.judged(setting.model(retrain_result.state_dict), before),
        retrain_result.seconds,
        retrain_passes,
    )
    rows = []
    for method in methods:
        if method not in FEDERATED:
            continue
        if method in failures:
            rows.append(failed_row(setting, method, "federated", failures[method]))
            log(describe(rows[-1]))
            continue
        result, passes = results[method]
        judged = (
            reference.retrained
            if method == "retrain"
            else setting.judged(setting.model(result.state_dict), before)
        )
        row = make_row(setting, method, "federated", result, passes, judged, reference)
        row["rounds"] = traces[method].rows
        rows.append(row)
        log(describe(row))
    central = [m for m in methods if m in CENTRALIZED]
    if central:
        rows += run_centralized(setting, central, log)
    return rows


# ------------------------------------------------------------------------------------------ summary
def at(row: Mapping[str, Any], key: str, attack: str | None = None) -> Any:
    """``row[f"{key}-{attack}"]``, the row's headline attack by default (None when absent)."""
    return row.get(f"{key}-{attack or row.get('judge') or HEADLINE}")


def measured(row: Mapping[str, Any], arm: str = ARM, attack: str | None = None) -> bool:
    """Whether the row's FR of ``arm`` under ``attack`` (headline) is measured."""
    return at(row, f"fr-status-{arm}", attack) == "measured"


def summarise(rows: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Per method: means over the settings of the judge's headline columns (FR over the rows where it is
    measured, AUCs over every row), verdict counts per attack, costs; geometric-mean speed-up and
    sample-pass ratio."""
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        ok = [r for r in mine if not r.get("error")]
        both = [r for r in ok if measured(r) and measured(r, "retrain")]
        attacks = list(dict.fromkeys(a for r in mine for a in (r.get("attacks") or ATTACKS)))
        speedups = [r["speedup"] for r in ok if r["speedup"]]
        out.append(
            {
                "method": method,
                "setting": mine[0]["setting"],
                "rows": len(mine),
                "failed": len(mine) - len(ok),
                "judge": mine[0].get("judge") or HEADLINE,
                "measured": sum(1 for r in ok if measured(r)),
                "fr": _mean([at(r, f"fr-{ARM}") for r in ok if measured(r)]),
                "fr-retrain": _mean([at(r, "fr-retrain") for r in ok if measured(r, "retrain")]),
                "abs-fr-gap": _mean([_abs(at(r, f"fr-diff-{ARM}")) for r in both]),
                "judge-auc": _mean([at(r, "judge-auc") for r in ok]),
                "auc-original": _mean([at(r, "auc-original") for r in ok]),
                "auc": _mean([at(r, f"auc-{ARM}") for r in ok]),
                "auc-retrain": _mean([at(r, "auc-retrain") for r in ok]),
                "abs-auc-diff": _mean(
                    [
                        _abs(at(r, f"auc-diff-{ARM}"))
                        for r in ok
                        if at(r, f"verdict-{ARM}") != "not-measurable"
                    ]
                ),
                "verdicts": {
                    a: {v: sum(1 for r in ok if at(r, f"verdict-{ARM}", a) == v) for v in VERDICT_SHORT}
                    for a in attacks
                },
                **{
                    k: _mean([r[k] for r in ok])
                    for k in (
                        "acc-loss",
                        "seconds",
                        "client-seconds",
                        "passes",
                        "bytes-sent",
                        "storage-bytes",
                    )
                },
                "speedup-geomean": _geomean(speedups),
                "pass-ratio-geomean": _geomean([r["pass-ratio"] for r in ok]),
            }
        )
    return out


def describe(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"{row['dataset']}/seed {row['seed']} {row['method']:>15}: FAILED ({row['error']})"
    h = row["judge"]
    return (
        f"{row['dataset']}/seed {row['seed']} {row['method']:>15}: {h}: FR {_fr(row, ARM)} (retrain "
        f"{_fr(row, 'retrain')}), AUC {_fmt(at(row, 'auc-original'), 3)} -> {_fmt(at(row, f'auc-{ARM}'), 3)} "
        f"(retrain {_fmt(at(row, 'auc-retrain'), 3)}): {at(row, f'verdict-{ARM}')} | acc {row['acc']:.4f} "
        f"(loss {100 * row['acc-loss']:+.2f} pt) | {row['seconds']:.2f}s = {_fmt(row['speedup'], 1)}x, "
        f"passes {_fmt(row['pass-ratio'], 1)}x fewer than retraining"
    )


# ------------------------------------------------------------------------------------------ outputs
def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})


def plot(rows: list[dict[str, Any]], summary: list[dict[str, Any]], docs: Path) -> list[Path]:
    """``results_fr_vs_accuracy.png`` (accuracy loss vs the judge's headline FR, measured rows only),
    ``results_time.png`` (seconds) and ``results_rounds.png`` (:func:`plot_rounds`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [docs / "results_fr_vs_accuracy.png", docs / "results_time.png"]
    methods = [s["method"] for s in summary]
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=90)
    for method in methods:
        pts = [
            (at(r, f"fr-{ARM}"), 100 * r["acc-loss"])
            for r in rows
            if r["method"] == method and not r.get("error") and measured(r) and r["acc-loss"] is not None
        ]
        if pts:
            ax.scatter(*zip(*pts, strict=True), label=method, color=colours[method], s=22)
    ax.axhline(5, color="grey", lw=0.8, ls="--")
    ax.axvline(0.9, color="grey", lw=0.8, ls="--")
    judge = summary[0]["judge"] if summary else HEADLINE
    ax.set_xlabel(f"forgetting rate FR (server's judge, {judge} attack)")
    ax.set_ylabel("accuracy loss (points)")
    ax.set_title("accuracy loss vs FR (one point per measurable dataset x seed)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(paths[0])
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=90)
    seconds = [s["seconds"] or 0 for s in summary]
    labels = [
        f"{s['method']} (centralized)" if s["setting"] == "centralized" else s["method"] for s in summary
    ]
    ax.barh(labels, seconds, color=[colours[m] for m in methods])
    ax.set_xscale("log")
    ax.set_xlabel("mean wall seconds of unlearning (log)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(paths[1])
    plt.close(fig)
    paths.append(plot_rounds(rows, colours, docs / "results_rounds.png"))
    return paths


def round_curves(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """dataset -> method -> [(round, mean FR, mean accuracy)] over the seeds, round 0 = the original model.

    FR is the judge's headline FR (NaN where not measurable); at round 0 it is 0 by definition (nothing
    changed) where the judge can measure the original model, NaN where it is at chance; retraining has
    no round 0 (it starts from a fresh model). A mean at a round uses the seeds that reached it
    (Forsaken may stop early) and, for FR, measured them.
    """
    out: dict[str, dict[str, list[tuple[int, float, float]]]] = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        per_method: dict[str, dict[int, list[tuple[float, float]]]] = {}
        for r in rows:
            if r["dataset"] != dataset or r.get("error") or not r.get("rounds"):
                continue
            points = per_method.setdefault(r["method"], {})
            if r["method"] != "retrain":
                zero = 0.0 if at(r, "judge-measurable") else float("nan")
                points.setdefault(0, []).append((zero, r["acc-original"]))
            for point in r["rounds"]:
                fr = point["fr"] if point["fr"] is not None else float("nan")
                points.setdefault(point["round"], []).append((fr, point["acc"]))
        out[dataset] = {
            method: [
                (
                    k,
                    float(np.nanmean([p[0] for p in v]))
                    if any(np.isfinite(p[0]) for p in v)
                    else float("nan"),
                    float(np.mean([p[1] for p in v])),
                )
                for k, v in sorted(points.items())
            ]
            for method, points in per_method.items()
        }
    return out


def plot_rounds(rows: list[dict[str, Any]], colours: dict[str, Any], path: Path) -> Path:
    """``results_rounds.png``: the judge's headline FR and test accuracy after each unlearning round, per
    dataset and method (FR gaps where it is not measurable)."""
    import matplotlib.pyplot as plt

    curves = round_curves(rows)
    datasets = list(curves) or ["(no per-round data)"]
    fig, axes = plt.subplots(
        len(datasets), 2, figsize=(7.5, 1.9 * len(datasets) + 0.6), dpi=70, squeeze=False, sharex="row"
    )
    for (ax_fr, ax_acc), dataset in zip(axes, datasets, strict=True):
        for method, points in curves.get(dataset, {}).items():
            rounds, fr, acc = zip(*points, strict=True)
            style = {"color": colours.get(method), "marker": "o", "ms": 3, "lw": 1.2, "label": method}
            ax_fr.plot(rounds, fr, **style)
            ax_acc.plot(rounds, acc, **style)
        ax_fr.axhline(0.9, color="grey", lw=0.7, ls="--")
        ax_fr.set_ylabel(dataset, fontsize=8)
        for ax in (ax_fr, ax_acc):
            ax.tick_params(labelsize=7)
            ax.xaxis.get_major_locator().set_params(integer=True)
    judge = next((r["judge"] for r in rows if r.get("judge")), HEADLINE)
    axes[0][0].set_title(f"judge's FR ({judge}) after each unlearning round", fontsize=9)
    axes[0][1].set_title("test accuracy after each unlearning round", fontsize=9)
    axes[-1][0].set_xlabel("unlearning round (0 = original model)", fontsize=8)
    axes[-1][1].set_xlabel("unlearning round (0 = original model)", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=7)
    fig.tight_layout(rect=(0, 0.04 if handles else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown(doc: dict[str, Any]) -> str:
    """The generated ``docs/results.md``."""
    summary, rows = doc["summary"], doc["rows"]
    attacks = list(dict.fromkeys(a for r in rows for a in (r.get("attacks") or ATTACKS)))
    judge = next((r["judge"] for r in rows if r.get("judge")), HEADLINE)
    lines = [
        "# Results: Forsaken and the baselines",
        "",
        "<!-- generated by simulations/paper_table.py; do not edit by hand -->",
        "",
        f"Produced by `{doc['command']}` on {doc['date']} ({doc['machine']}); whole run "
        f"{doc['seconds-total']:.0f} s wall"
        + (f" with {doc['jobs']} settings at a time" if doc.get("jobs", 1) > 1 else "")
        + f". Raw rows: `{doc['out']}` and `.csv` beside it."
        + (
            f" This page was rendered again from them by `{doc['rendered-by']}`."
            if doc.get("rendered-by")
            else ""
        ),
        "",
        f"Setup (`simulations/paper_table.py`): 5 clients, IID, the run config's defaults (per-dataset "
        f"changes: {', '.join(f'{k} {v}' for k, v in doc['dataset-settings'].items()) or 'none'}); "
        + (
            f"rounds {doc['rounds']} for every dataset"
            if doc.get("rounds-overridden")
            else "rounds and local epochs as listed there, else the config's "
            f"{RunConfig().num_rounds} rounds x {RunConfig().local_epochs} local epochs"
        )
        + f"; client 0 withdraws {100 * FRACTION:g}% of its training samples after the last round.",
        "",
        "**Judged by the server's judge** (`simulations/withdrawal_judge.py`: the judge "
        "`server/evaluator.py` fits, `fedforget.judge.for_run.fit_run_judge`), under the attacks "
        f"{', '.join(f'`{a}`' for a in attacks)} (`{judge}` is the headline): shadow federations on the "
        "judge's half of the auxiliary data, trained like the target, and nothing any unlearning method "
        "sees (Forsaken steers by its device's own oracle). Each model is calibrated on the federated "
        "model itself: every client's retained samples are the members and its held-out samples the "
        "non-members, and after the withdrawal the forget set is no longer among client 0's members. "
        "Per attack, FR = (A_F - B_F) / B_T, B from the original model's calibrated decisions and A from "
        "the unlearned model's; **not measurable** where the attack is at chance on the model before or "
        "after (its AUC is not distinguishable from 0.5) or B_T = 0, and then no number is given. "
        "*judge AUC* = the attack's power on the original model (members vs non-members); *AUC* = the "
        "forget set vs never-seen data on one model (0.5: looks never seen): original -> method, beside "
        "the retrained model's. *Verdict* against the model retrained without the forget set: "
        f"retrain-equivalent, under-forgetting (AUC more than {AUC_TOLERANCE:g} above the retrained "
        f"model's, or FR more than {FR_TOLERANCE:g} below it), over-forgetting (AUC more than "
        f"{AUC_TOLERANCE:g} below, or FR more than {FR_TOLERANCE:g} above), or not measurable. "
        "Accuracy loss = original - unlearned test accuracy. Cost of the unlearning alone (the judge and "
        "the per-round records are neither timed nor counted): wall seconds, speed-up = retrain seconds / "
        "method seconds, and *sample-passes* (forward + backward passes of one sample, counted by the "
        "code, `fedforget.cost`), pass ratio = retrain / method. Centralized methods (SISA, Amnesiac) use "
        "one data owner holding the union of the clients' training data and are compared with their own "
        "original and retrained models; they are judged by the same federated judge (members = the "
        "clients' retained data, non-members = their held-out data; its shadow federations were trained "
        "like the federated target, not like SISA or plain SGD).",
        "",
        "## Means per method",
        "",
        f"FR means are over the rows where it is measurable (*measured*: how many; judge: `{judge}`); AUCs "
        "over every row; *abs AUC diff* = mean |AUC - AUC retrain| over the rows with a verdict; verdicts "
        f"per attack ({', '.join(f'{v}' for v in VERDICT_SHORT.values())}).",
        "",
        "| method | setting | rows | measured | FR | FR retrain | mean abs FR gap | AUC original | AUC "
        "| AUC retrain | abs AUC diff | verdicts | acc loss | seconds | speed-up (geo) | pass ratio (geo) "
        "| MB sent | MB stored |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['method']} | {s['setting']} | {_rows(s)} | {s['measured']} "
            f"| {_fmt_fr(s['fr'])} | {_fmt_fr(s['fr-retrain'])} | {_fmt(s['abs-fr-gap'])} "
            f"| {_fmt(s['auc-original'], 3)} | {_fmt(s['auc'], 3)} | {_fmt(s['auc-retrain'], 3)} "
            f"| {_fmt(s['abs-auc-diff'], 3)} | {_verdict_counts(s['verdicts'])} | {_pt(s['acc-loss'])} "
            f"| {_fmt(s['seconds'])} | {_fmt(s['speedup-geomean'], 1)}x "
            f"| {_fmt(s['pass-ratio-geomean'], 1)}x "
            f"| {_mb(s['bytes-sent'])} | {_mb(s['storage-bytes'])} |"
        )
    lines += ["", "## The judge's power on the original models", "", *power_table(rows, attacks)]
    lines += ["", "## Every row", ""]
    lines += [
        f"Headline attack `{judge}`; verdicts under {' / '.join(attacks)}.",
        "",
        "| dataset | seed | method | n (B_T) | judge AUC | FR | FR retrain | AUC original -> method "
        "| AUC retrain | verdict | acc | acc loss | s | s retrain | speed-up | pass ratio | MB sent "
        "| MB stored |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        head = f"| {r['dataset']} | {r['seed']} | {r['method']} | {r['num-forget']} ({_int(at(r, 'b-t'))}) "
        if r.get("error"):
            lines.append(head + f"| failed: {r['error'][:90].replace('|', '/')} |" + " |" * 14)
            continue
        verdicts = " / ".join(VERDICT_SHORT.get(at(r, f"verdict-{ARM}", a), "-") for a in attacks)
        lines.append(
            head + f"| {_power(r)} | {_fr(r, ARM)} | {_fr(r, 'retrain')} "
            f"| {_fmt(at(r, 'auc-original'), 3)} -> {_fmt(at(r, f'auc-{ARM}'), 3)} "
            f"| {_fmt(at(r, 'auc-retrain'), 3)} | {verdicts} | {r['acc']:.4f} | {_pt(r['acc-loss'])} "
            f"| {r['seconds']:.2f} | {r['seconds-retrain']:.2f} | {_fmt(r['speedup'], 1)}x "
            f"| {_fmt(r['pass-ratio'], 1)}x | {_mb(r['bytes-sent'])} | {_mb(r['storage-bytes'])} |"
        )
    lines += ["", "## Forsaken under every attack", "", *forsaken_attacks(rows, attacks)]
    lines += ["", "## Forsaken per dataset", "", *per_dataset(rows)]
    lines += ["", "## Reading", "", *commentary(summary, doc), ""]
    lines += [
        "## Plots",
        "",
        "![accuracy loss vs FR](results_fr_vs_accuracy.png) ![time per method](results_time.png)",
        "",
        f"The judge's FR (`{judge}`; gaps where it is not measurable) and test accuracy after each "
        "unlearning round, per dataset (means over the seeds; federated methods; round 0 is the trained "
        "model; retraining's rounds are its training rounds from a fresh model; gradient ascent's and "
        "PGA's round 1 is the model right after the client's delta, then the repair rounds; FedEraser's "
        "are its calibration rounds):",
        "",
        "![FR and accuracy per round](results_rounds.png)",
        "",
    ]
    return "\n".join(lines)


def is_full_size(doc: dict[str, Any]) -> bool:
    """Whether a results document is the full size: every dataset, seeds 0 1 2, every method."""
    return (
        not doc.get("quick")
        and set(doc.get("datasets", [])) == set(DATASETS)
        and list(doc.get("seeds", [])) == [0, 1, 2]
        and set(doc.get("methods", [])) == set(METHODS)
    )


def power_table(rows: list[dict[str, Any]], attacks: Sequence[str]) -> list[str]:
    """Per setting, every attack's AUC on the federated original model (members vs non-members); *not
    measurable* where it is at chance (then every FR of that setting under that attack is too)."""
    out = [
        "| dataset | seed | " + " | ".join(f"{a}: judge AUC" for a in attacks) + " |",
        "|---|---:|" + "---:|" * len(attacks),
    ]
    seen = set()
    for r in rows:
        key = (r["dataset"], r["seed"])
        if r["setting"] != "federated" or r.get("error") or key in seen:
            continue
        seen.add(key)
        out.append(f"| {r['dataset']} | {r['seed']} | " + " | ".join(_power(r, a) for a in attacks) + " |")
    return out if seen else ["(no federated row)"]


def forsaken_attacks(rows: list[dict[str, Any]], attacks: Sequence[str]) -> list[str]:
    """Forsaken's rows under every attack of the judge: FR beside the retrained model's, AUC beside the
    retrained AUC, the verdict."""
    mine = [r for r in rows if r["method"] == "forsaken" and not r.get("error")]
    if not mine:
        return ["(Forsaken was not run.)"]
    out = [
        "| dataset | seed | attack | judge AUC | n (B_T) | FR | FR retrain | AUC original | AUC Forsaken "
        "| AUC retrain | verdict |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in mine:
        for a in attacks:
            out.append(
                f"| {r['dataset']} | {r['seed']} | {a} | {_power(r, a)} | {r['num-forget']} "
                f"({_int(at(r, 'b-t', a))}) | {_fr(r, ARM, a)} | {_fr(r, 'retrain', a)} "
                f"| {_fmt(at(r, 'auc-original', a), 3)} | {_fmt(at(r, f'auc-{ARM}', a), 3)} "
                f"| {_fmt(at(r, 'auc-retrain', a), 3)} | {at(r, f'verdict-{ARM}', a) or '-'} |"
            )
    return out


def per_dataset(rows: list[dict[str, Any]]) -> list[str]:
    """Forsaken against the federated baselines on each dataset (means over the seeds), and where it loses.

    Lines of a markdown table, then computed sentences: where Forsaken is slower than retraining, where
    another federated method lands closer to retraining's forget-set AUC, where it loses the most
    accuracy.
    """
    federated = [r for r in rows if r["setting"] == "federated" and not r.get("error")]
    datasets = list(dict.fromkeys(r["dataset"] for r in federated))
    if not any(r["method"] == "forsaken" for r in federated):
        return ["(Forsaken was not run.)"]
    out = [
        "| dataset | judge AUC | Forsaken FR | FR retrain | Forsaken AUC | AUC retrain | Forsaken verdicts "
        "| closest to retrain (abs AUC diff) | Forsaken acc loss | Forsaken speed-up | pass ratio "
        "| fastest other (speed-up) |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|",
    ]
    slower, farther, costly = [], [], []
    for dataset in datasets:
        mine = [r for r in federated if r["dataset"] == dataset]
        by: dict[str, list[dict[str, Any]]] = {}
        for r in mine:
            by.setdefault(r["method"], []).append(r)
        if "forsaken" not in by:
            continue
        diffs = {
            m: _mean(
                [_abs(at(r, f"auc-diff-{ARM}")) for r in rs if at(r, f"verdict-{ARM}") != "not-measurable"]
            )
            for m, rs in by.items()
            if m != "retrain"
        }
        speed = {m: _mean([r["speedup"] for r in rs]) for m, rs in by.items() if m != "retrain"}
        loss = {m: _mean([r["acc-loss"] for r in rs]) for m, rs in by.items() if m != "retrain"}
        ranked = sorted((d, m) for m, d in diffs.items() if d is not None)
        others = [(v, m) for m, v in speed.items() if m != "forsaken" and v is not None]
        fastest = max(others) if others else None
        f = by["forsaken"]
        verdicts = {v: sum(1 for r in f if at(r, f"verdict-{ARM}") == v) for v in VERDICT_SHORT}
        closest = f"{ranked[0][1]} ({_fmt(ranked[0][0], 3)})" if ranked else "not measurable"
        out.append(
            f"| {dataset} | {_fmt(_mean([at(r, 'judge-auc') for r in f]), 3)}{_chance(f)} "
            f"| {_fmt_fr(_mean([at(r, f'fr-{ARM}') for r in f if measured(r)]))} "
            f"| {_fmt_fr(_mean([at(r, 'fr-retrain') for r in f if measured(r, 'retrain')]))} "
            f"| {_fmt(_mean([at(r, f'auc-{ARM}') for r in f]), 3)} "
            f"| {_fmt(_mean([at(r, 'auc-retrain') for r in f]), 3)} "
            f"| {_verdict_counts({'': verdicts})} | {closest} "
            f"| {_pt(loss['forsaken'])} | {_fmt(speed['forsaken'], 1)}x "
            f"| {_fmt(_mean([r['pass-ratio'] for r in f]), 1)}x "
            f"| {fastest[1] + f' ({_fmt(fastest[0], 1)}x)' if fastest else 'n/a'} |"
        )
        if speed["forsaken"] is not None and speed["forsaken"] < 1:
            slower.append(f"{dataset} ({_fmt(speed['forsaken'], 1)}x)")
        if ranked and ranked[0][1] != "forsaken":
            farther.append(f"{dataset} ({ranked[0][1]})")
        worst = max((v, m) for m, v in loss.items() if v is not None)
        if worst[1] == "forsaken":
            costly.append(f"{dataset} ({_pt(worst[0])})")
    out.append("")
    if slower:
        out.append(f"- Forsaken is slower than retraining (wall time) on: {', '.join(slower)}.")
    if farther:
        out.append(
            "- Another federated method lands closer to the retrained model's forget-set AUC (where the "
            "judge can measure) on: " + ", ".join(farther) + "."
        )
    if costly:
        out.append(
            f"- Forsaken loses the most test accuracy of the federated methods on: {', '.join(costly)}."
        )
    return out


def commentary(summary: list[dict[str, Any]], doc: dict[str, Any]) -> list[str]:
    """Sentences computed from the numbers (no hand-written claims)."""
    by = {s["method"]: s for s in summary}
    out = []
    fed = [s for s in summary if s["setting"] == "federated" and s["method"] != "retrain"]
    if "forsaken" in by:
        f = by["forsaken"]
        bar = _bar(f)
        out.append(
            f"- Forsaken under the judge ({f['judge']}): FR measurable in {f['measured']} of "
            f"{f['rows'] - f['failed']} rows, mean FR {_fmt_fr(f['fr'])} against {_fmt_fr(f['fr-retrain'])} "
            f"for retraining; forget-set AUC {_fmt(f['auc-original'], 3)} -> {_fmt(f['auc'], 3)} (retrained "
            f"{_fmt(f['auc-retrain'], 3)}); verdicts {_verdict_counts(f['verdicts'])}; accuracy loss "
            f"{_pt(f['acc-loss'])}; {_fmt(f['speedup-geomean'], 1)}x less wall time and "
            f"{_fmt(f['pass-ratio-geomean'], 1)}x fewer sample-passes than retraining (geometric means; "
            "below 1 = dearer). The paper's bar (FR >= 0.9 under the judge, loss <= 5 pt, >= 10x) is "
            + (
                "not measurable here (no measurable FR)."
                if bar is None
                else f"{'met' if bar else 'not met'} here."
            )
        )
    ranked = [s for s in fed if s["abs-auc-diff"] is not None]
    if ranked:
        best = min(ranked, key=lambda s: s["abs-auc-diff"])
        out.append(
            f"- Closest to the retrained model's forget-set AUC among the federated approximations (rows "
            f"with a verdict): {best['method']} (mean abs AUC diff {_fmt(best['abs-auc-diff'], 3)})."
        )
        losing = [
            s["method"]
            for s in ranked
            if "forsaken" in by
            and s["method"] != "forsaken"
            and by["forsaken"]["abs-auc-diff"] is not None
            and s["abs-auc-diff"] < by["forsaken"]["abs-auc-diff"]
        ]
        if losing:
            out.append(f"- Forsaken is further from retraining than: {', '.join(losing)}.")
    elif fed:
        out.append("- No federated approximation has a measurable verdict against retraining in these rows.")
    fastest = [s for s in fed if s["speedup-geomean"]]
    if fastest:
        top = max(fastest, key=lambda s: s["speedup-geomean"])
        out.append(
            f"- Fastest federated method: {top['method']} ({_fmt(top['speedup-geomean'], 1)}x retraining)."
        )
    storing = [s for s in summary if s["storage-bytes"]]
    if storing:
        out.append(
            "- Storage needed to be able to unlearn: "
            + "; ".join(f"{s['method']} {_mb(s['storage-bytes'])} MB" for s in storing)
            + " (Amnesiac: only the batches of the ids known in advance; recording every batch costs"
            " much more)."
        )
    failed = [r for r in doc["rows"] if r.get("error")]
    for r in failed:
        out.append(f"- {r['method']} failed on {r['dataset']} seed {r['seed']}: {r['error']}")
    unmeasured = sorted(
        {
            r["dataset"]
            for r in doc["rows"]
            if r["setting"] == "federated" and not r.get("error") and at(r, "judge-measurable") is False
        }
    )
    if unmeasured:
        out.append(
            "- The judge's headline attack is at chance on the federated original model of: "
            f"{', '.join(unmeasured)} (in at least one seed): FR there is *not measurable*, not a number."
        )
    if doc.get("quick"):
        out.append(
            "- This is the `--quick` size (small datasets, one seed): small forget sets make FR coarse; the "
            "full size is `python -m simulations.paper_table` (its time is stated below)."
        )
    if is_full_size(doc):
        settings = doc.get("seconds-per-setting", {})
        out.append(
            f"- This is the full size ({len(doc['datasets'])} datasets x {len(doc['seeds'])} seeds = "
            f"{len(settings)} settings): {doc['seconds-total'] / 3600:.2f} h wall on the machine above"
            + (f" with {doc['jobs']} settings at a time" if doc.get("jobs", 1) > 1 else "")
            + f" ({sum(settings.values()) / 3600:.2f} h summed over the settings)."
        )
    elif doc.get("full-size-estimate"):
        out.append(f"- {doc['full-size-estimate']}")
    return out


# -------------------------------------------------------------------------------------------- helpers
def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _rows(s: dict[str, Any]) -> str:
    return f"{s['rows']}" + (f" ({s['failed']} failed)" if s.get("failed") else "")


def _finite(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _abs(value: float | None) -> float | None:
    return None if value is None else abs(value)


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _geomean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    return float(np.exp(np.mean(np.log(finite)))) if finite else None


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _bar(s: dict[str, Any]) -> bool | None:
    """The paper's bar on a method's means (None when the judge measured no FR of it)."""
    if s["fr"] is None:
        return None
    return bool(s["fr"] >= 0.9 and (s["acc-loss"] or 0) <= 0.05 and (s["speedup-geomean"] or 0) >= 10)


def _fr(row: Mapping[str, Any], arm: str, attack: str | None = None) -> str:
    """The row's FR of ``arm`` under ``attack`` (headline), or *not measurable*."""
    return "not measurable" if not measured(row, arm, attack) else _fmt(at(row, f"fr-{arm}", attack))


def _fmt_fr(value: float | None) -> str:
    return "not measurable" if value is None else _fmt(value)


def _power(row: Mapping[str, Any], attack: str | None = None) -> str:
    """The attack's AUC on the row's original model, or *not measurable (AUC x, chance)*."""
    auc = _fmt(at(row, "judge-auc", attack), 3)
    return auc if at(row, "judge-measurable", attack) else f"not measurable ({auc}, chance)"


def _chance(rows: Sequence[Mapping[str, Any]]) -> str:
    """`` (chance in k of n)`` when the headline attack is at chance on k of the rows' original models."""
    k = sum(1 for r in rows if not at(r, "judge-measurable"))
    return f" (chance in {k} of {len(rows)})" if k else ""


def _verdict_counts(verdicts: Mapping[str, Mapping[str, int]]) -> str:
    """``loss: equivalent 2, n/m 1; shokri: ...`` (an empty attack name is left out)."""
    return "; ".join(
        (f"{a}: " if a else "")
        + (", ".join(f"{VERDICT_SHORT[v]} {n}" for v, n in counts.items() if n) or "-")
        for a, counts in verdicts.items()
    )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pt(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.2f} pt"


def _mb(value: float | None) -> str:
    return "0" if not value else f"{value / 1e6:.2f}"


def _int(value: Any) -> str:
    return "-" if value is None else str(int(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    text = f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU, torch {torch.__version__}, "
    text += f"{torch.get_num_threads()} torch thread(s)"
    return text + (f", load average {load:.1f} at start" if load is not None else "")


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="digits + breast-cancer, seed 0")
    parser.add_argument(
        "--datasets", nargs="+", choices=DATASETS, help="default: all (quick: digits breast-cancer)"
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="default: all")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2 (quick: 0)")
    parser.add_argument("--rounds", type=int, help="num-rounds (default: the config's, 5)")
    parser.add_argument("--local-epochs", type=int, help="local-epochs (default: the config's, 3)")
    parser.add_argument("--forsaken-steps", type=int, help="forsaken-steps (default: the config's)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "paper_table.json")
    parser.add_argument(
        "--docs", type=Path, default=PROJECT_ROOT / "docs", help="where results.md and PNGs go"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="settings (dataset x seed) run at once, each in its own process"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the settings an interrupted run finished (<out>.partial.jsonl) and run the rest",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="only write results.md and the plots (into --docs) again from this results file",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    args.datasets = args.datasets or list(QUICK_DATASETS if args.quick else DATASETS)
    args.methods = args.methods or list(METHODS)
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    return args


def full_size_estimate(folder: Path, this_run: dict[str, float], command: str) -> str | None:
    """The full size's time, extrapolated from this run's and saved one-seed timing runs' seed-0 settings.

    A timing run per dataset: ``python -m simulations.paper_table --datasets D --seeds 0
    --out results/paper_table.timing-D.json --docs <scratch dir>``; the full size runs 3 seeds of each
    dataset, so it takes about 3 x the sum of their times.
    """
    per: dict[str, float] = {k: v for k, v in this_run.items() if k.endswith("/0")}
    commands = [f"`{command}` (this run)"] if per else []
    for path in sorted(folder.glob("paper_table.timing-*.json")):
        timing = json.loads(path.read_text())
        per.update(timing.get("seconds-per-setting", {}))
        commands.append(f"`{timing['command']}` ({timing['date']}, {timing['seconds-total']:.0f} s)")
    timed = [d for d in DATASETS if f"{d}/0" in per]
    if not timed:
        return None
    total = 3 * sum(per[f"{d}/0"] for d in timed)
    missing = [d for d in DATASETS if d not in timed]
    text = (
        f"Full size (3 seeds of each dataset): about {total / 3600:.1f} h on this machine for the "
        f"{len(timed)} timed dataset(s) ({', '.join(timed)}), extrapolated as 3 x their seed-0 times in "
        + "; ".join(commands)
    )
    text += f". Not timed: {', '.join(missing)}" if missing else ""
    return text + ". Wall times on a shared machine (each run's load average at start is in its JSON)."


class Log:
    """``[paper-table  123s] text`` on stderr, seconds since the run started (picklable for --jobs)."""

    def __init__(self, started: float) -> None:
        self.started = started

    def __call__(self, text: str) -> None:
        print(f"[paper-table {time.time() - self.started:6.0f}s] {text}", file=sys.stderr, flush=True)


def _one_setting(
    dataset: str, seed: int, args: argparse.Namespace, log: Log
) -> tuple[str, float, list[dict[str, Any]]]:
    """Run one (dataset, seed) setting (in a worker process with --jobs); rows made JSON-ready."""
    if args.threads:
        torch.set_num_threads(args.threads)
    begin = time.perf_counter()
    rows = run_setting(dataset, seed, args.methods, args, log)
    return f"{dataset}/{seed}", time.perf_counter() - begin, _jsonable(rows)


def _partial_key(args: argparse.Namespace) -> dict[str, Any]:
    """What must match for ``--resume`` to reuse finished settings."""
    return {
        "judge": "server-judge",  # rows judged by WithdrawalJudge (not the old shadow oracle)
        "methods": list(args.methods),
        "rounds": args.rounds,
        "local-epochs": args.local_epochs,
        "forsaken-steps": args.forsaken_steps,
    }


def load_partial(path: Path, args: argparse.Namespace) -> dict[str, tuple[float, list[dict[str, Any]]]]:
    """Finished settings saved by an interrupted run (``<out>.partial.jsonl``), for ``--resume``."""
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not lines or lines[0].get("key") != _partial_key(args):
        raise SystemExit(
            f"--resume: {path} was written with other options ({lines[0].get('key') if lines else 'empty'}); "
            f"run without --resume to start again"
        )
    return {line["setting"]: (line["seconds"], line["rows"]) for line in lines[1:]}


def run_settings(
    args: argparse.Namespace, log: Log, partial: Path
) -> tuple[list[dict[str, Any]], dict[str, float], list[str]]:
    """Every (dataset, seed) setting, ``args.jobs`` at a time; each finished one is appended to
    ``partial`` at once, so an interrupted run loses at most the settings in progress."""
    settings = [(d, s) for d in args.datasets for s in args.seeds]
    done = load_partial(partial, args) if args.resume else {}
    resumed = [f"{d}/{s}" for d, s in settings if f"{d}/{s}" in done]
    if resumed:
        log(f"resuming: {len(resumed)} finished setting(s) read from {partial}")
    else:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"key": _partial_key(args)}) + "\n")
    todo = [(d, s) for d, s in settings if f"{d}/{s}" not in done]

    def keep(name: str, seconds: float, rows: list[dict[str, Any]]) -> None:
        done[name] = (seconds, rows)
        with partial.open("a") as handle:
            handle.write(json.dumps({"setting": name, "seconds": seconds, "rows": rows}) + "\n")
        log(f"{name}: finished in {seconds:.0f}s ({len(done)}/{len(settings)} settings)")

    if args.jobs <= 1 or len(todo) <= 1:
        for dataset, seed in todo:
            keep(*_one_setting(dataset, seed, args, log))
    else:
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of a process that has torch threads
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            futures = [pool.submit(_one_setting, d, s, args, log) for d, s in todo]
            for future in concurrent.futures.as_completed(futures):
                keep(*future.result())
    rows = [row for d, s in settings for row in done[f"{d}/{s}"][1]]
    per_setting = {f"{d}/{s}": done[f"{d}/{s}"][0] for d, s in settings}
    return rows, per_setting, resumed


def render(path: Path, docs: Path, command: str) -> int:
    """Write ``results.md`` and the plots again from a results JSON (the numbers are not re-measured)."""
    if not path.exists():
        raise SystemExit(f"--render: {path} does not exist; run the table first")
    doc = json.loads(path.read_text())
    if any("attacks" not in row for row in doc.get("rows", [])):
        raise SystemExit(
            f"--render: {path} was written before the rows were judged by the server's judge (no "
            "per-attack columns); run the table again"
        )
    if doc["command"] != command:
        doc["rendered-by"] = command
    docs.mkdir(parents=True, exist_ok=True)
    plot(doc["rows"], doc["summary"], docs)
    (docs / "results.md").write_text(markdown(doc))
    print(f"rendered {docs / 'results.md'} and its plots from {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    shown = list(argv) if argv is not None else sys.argv[1:]
    if args.render is not None:
        return render(
            args.render, args.docs, ("python -m simulations.paper_table " + " ".join(shown)).strip()
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    command = ("python -m simulations.paper_table " + " ".join(shown)).strip()
    started = datetime.datetime.now().astimezone()
    where = machine()
    start = time.perf_counter()
    log = Log(time.time())
    size = f"{len(args.datasets)} dataset(s) x {len(args.seeds)} seed(s) x {len(args.methods)} method(s)"
    log(f"{size}, {args.jobs} at a time; {where}")
    partial = args.out.with_suffix(".partial.jsonl")
    rows, per_setting, resumed = run_settings(args, log, partial)
    total = time.perf_counter() - start
    summary = summarise(rows, args.methods)
    doc = {
        "command": command,
        "out": _relative(args.out),
        "date": started.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": where,
        "commit": commit(),
        "seconds-total": total,
        "seconds-per-setting": per_setting,
        "jobs": args.jobs,
        "resumed-settings": resumed,
        "quick": args.quick,
        "datasets": args.datasets,
        "seeds": args.seeds,
        "methods": args.methods,
        "rounds": args.rounds or RunConfig().num_rounds,
        "rounds-overridden": args.rounds is not None,
        "judge": {
            "attacks": RunConfig().judge_attacks,
            "num-shadows": RunConfig().num_shadows,
            "fit-seconds": {f"{r['dataset']}/{r['seed']}": r.get("seconds-judge-fit") for r in rows},
        },
        "dataset-settings": {k: v for k, v in DATASET_SETTINGS.items() if k in args.datasets},
        "summary": summary,
        "rows": rows,
    }
    doc["full-size-estimate"] = full_size_estimate(args.out.parent, per_setting, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_jsonable(doc), indent=1) + "\n")
    write_csv(rows, args.out.with_suffix(".csv"))
    args.docs.mkdir(parents=True, exist_ok=True)
    plot(rows, summary, args.docs)
    (args.docs / "results.md").write_text(markdown(_jsonable(doc)))
    partial.unlink(missing_ok=True)  # everything is in the results now
    log(f"done in {total:.1f}s; wrote {args.out}, {args.out.with_suffix('.csv')}, {args.docs / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
