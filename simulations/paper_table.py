"""The paper's table: Forsaken and every baseline, on the eight datasets, with seeds, in one command.

    python -m simulations.paper_table --quick           # digits + breast-cancer, seed 0 (a few minutes)
    python -m simulations.paper_table                   # all 8 datasets x seeds 0 1 2
    python -m simulations.paper_table --datasets adult letter --methods forsaken retrain pga --seeds 0

Writes ``results/paper_table.csv`` and ``.json`` (one row per dataset x seed x method), the generated
``docs/results.md`` (with the command that produced it) and two small plots beside it
(``docs/results_fr_vs_accuracy.png``, ``docs/results_time.png``).

**One setting** (dataset, seed): 5 clients, IID, the run config's defaults otherwise (per-dataset
changes in :data:`DATASET_SETTINGS`), so the same federation as ``simulations.forsaken_benchmark``.

1. The **original** federation: ``fedforget.baselines.train_original`` (FedAvg, ``num-rounds``
   rounds, recording the last round for PGA and FedEraser's store every round).
2. The server's **oracle** (``fedforget.mia.recipe.fit_oracle_for``: shadows on the aux split).
3. The **withdrawal**: client 0 withdraws a seeded 5% of its training samples (``resolve_ids`` of
   ``samples:0.05``). ``B`` = the oracle's decisions on them with the original model.
4. **Federated methods** from the same original model, each timed on its own (wall seconds of the
   unlearning only): ``forsaken`` (client 0 computes masks with ``fedforget.forsaken.unlearn``, the
   server adds them; up to ``unlearn-rounds`` rounds until FR >= ``target-fr``, as the Flower flow),
   ``retrain``, ``finetune`` (1 round), ``gradient-ascent`` and ``pga`` (1 repair round each),
   ``federaser`` (Δ = 1, calibration epochs = local epochs // 2).
5. **Centralized methods** (one data owner holding the union of the 5 clients' training data, the
   same forget ids, test set and oracle): ``sisa`` (5 shards x 3 slices) and ``amnesiac`` (tracking
   the batches of the ids to be withdrawn). Each has its own original model (SISA's ensemble, or
   plain SGD for Amnesiac, ``num-rounds x local-epochs`` epochs) and its own retrain reference
   (the same training from scratch without the ids), against which its FR, AUC and speed-up are given.

Per row: FR = (A_F - B_F) / B_T of the method, FR of the retrained model (the reference), gap to
retrain, test accuracy and accuracy loss (original - unlearned), attack AUC forget vs client 0's
never-seen held-out data (method and retrain), accuracy on the forget set, wall seconds, the retrain's
seconds and the speed-up (retrain / method), client compute seconds, bytes sent, storage bytes.
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
from fedforget.federated import state_nbytes
from fedforget.metrics import attack_auc, forgetting_rate_from_arrays
from fedforget.mia import MembershipOracle
from fedforget.mia.recipe import fit_oracle_for
from fedforget.withdrawals import WithdrawalRequest, resolve_ids
from simulations.forsaken_rounds import unlearn_like_the_federation

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("mnist", "fashion-mnist", "cifar10", "adult", "location", "letter", "digits", "breast-cancer")
QUICK_DATASETS = ("digits", "breast-cancer")
FEDERATED = ("forsaken", "retrain", "finetune", "gradient-ascent", "pga", "federaser")
CENTRALIZED = ("sisa", "amnesiac")
METHODS = FEDERATED + CENTRALIZED
DATASET_SETTINGS: dict[str, dict[str, Any]] = {
    "mnist": {"max_train_samples": 6000, "learning_rate": 0.02},
    "fashion-mnist": {"max_train_samples": 6000, "learning_rate": 0.02},
    "cifar10": {"max_train_samples": 5000, "learning_rate": 0.02},
}
"""Changes to ``RunConfig``'s defaults per dataset (as ``simulations.forsaken_benchmark``; cifar10
capped at 5,000 training images to keep the CPU run within hours)."""
FRACTION = 0.05
SISA_SHARDS, SISA_SLICES = 5, 3
CSV_COLUMNS = (
    "dataset",
    "seed",
    "method",
    "setting",
    "model",
    "num-forget",
    "b-t",
    "fr",
    "fr-retrain",
    "fr-gap",
    "acc-original",
    "acc",
    "acc-retrain",
    "acc-loss",
    "auc",
    "auc-retrain",
    "forget-acc",
    "seconds",
    "seconds-retrain",
    "speedup",
    "client-seconds",
    "bytes-sent",
    "storage-bytes",
)


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


def fit_oracle(config: RunConfig) -> MembershipOracle:
    """The server's oracle for ``config`` (the recipe of ``fedforget.mia.recipe``, as the server uses)."""
    return fit_oracle_for(config, data.load(config), split_for(config))


@dataclasses.dataclass
class Setting:
    """Everything one (dataset, seed) shares: config, oracle, the forget set and how to judge a model."""

    config: RunConfig
    oracle: MembershipOracle
    client: ClientData
    forget_ids: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def forget(self) -> tuple[np.ndarray, np.ndarray]:
        _, x, y = self.client.subset(self.forget_ids)
        return x, y

    def model(self, state: dict[str, torch.Tensor], factory: Callable[[], torch.nn.Module] | None = None):
        model = factory() if factory else baselines.base.build_model(self.config)
        model.load_state_dict(state)
        return model

    def judge(self, model: torch.nn.Module, before: np.ndarray | None) -> dict[str, Any]:
        """Oracle decisions, FR against ``before``, attack AUC, test and forget accuracy of ``model``."""
        x_f, y_f = self.forget
        scores_forget = self.oracle.scores(model, x_f, y_f)
        scores_reference = self.oracle.scores(model, self.client.x_holdout, self.client.y_holdout)
        member = scores_forget >= self.oracle.threshold
        out = {
            "member": member,
            "auc": attack_auc(scores_forget, scores_reference),
            "acc": training.evaluate(model, self.x_test, self.y_test).accuracy,
            "forget-acc": training.evaluate(model, x_f, y_f).accuracy,
        }
        if before is not None:
            fr = forgetting_rate_from_arrays(self.forget_ids, before, member)
            out["fr"], out["b-t"] = fr.fr, fr.b_t
        return out


class Trace:
    """A method's per-round record: the oracle's FR, test accuracy and AUC after each unlearning round.

    Passed as a baseline's ``observe`` (:class:`fedforget.baselines.base.Observation` leaves its time
    out of the method's seconds); ``rows`` go to the JSON (``rounds`` of each row) and the per-round plot.
    """

    def __init__(self, setting: Setting, before: np.ndarray) -> None:
        self.setting, self.before = setting, before
        self.rows: list[dict[str, Any]] = []

    def __call__(self, round_: int, state: Mapping[str, torch.Tensor]) -> None:
        judged = self.setting.judge(self.setting.model(dict(state)), self.before)
        self.rows.append(
            {"round": round_, "fr": _finite(judged.get("fr")), "acc": judged["acc"], "auc": judged["auc"]}
        )


# ------------------------------------------------------------------------------------------ forsaken
def run_forsaken(
    setting: Setting, original: Original, before: np.ndarray, observe: Trace | None = None
) -> UnlearnResult:
    """Forsaken as the Flower flow runs it (:func:`simulations.forsaken_rounds.unlearn_like_the_federation`:
    masks from client 0, validated and added by the server, judged each round; round 1's guard
    baseline in the later rounds; a zero mask ends the attempt; the attempt keeps its best round).

    ``observe`` (not timed) sees the model after each round, as the baselines' ``observe``.
    """
    config = setting.config
    observation = baselines.base.Observation(observe)
    attempt = unlearn_like_the_federation(
        config,
        setting.model(original.state_dict),
        setting.oracle,
        setting.client,
        setting.forget_ids,
        config.num_rounds + 1,
        observe=lambda unlearn_round, model: observation(unlearn_round, model.state_dict()),
    )
    if not np.array_equal(attempt["before"], before):
        raise RuntimeError("the oracle's decisions on the original model changed between two calls")
    history = [
        {"unlearn-round": r["unlearn-round"], "steps": r["steps"], "fr": r.get("fr", float("nan"))}
        for r in attempt["rounds"]
    ]
    compute = sum(r["forsaken-seconds"] for r in attempt["rounds"])
    state = {k: v.detach().clone() for k, v in attempt["model"].state_dict().items()}
    size = state_nbytes(state)
    return UnlearnResult("forsaken", state, attempt["seconds"], compute, 2 * size * len(history), 0, history)


# ------------------------------------------------------------------------------------- centralized
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
        result = baselines.sisa_unlearn(trained, setting.forget_ids)
        start = time.perf_counter()
        again = baselines.sisa_train(factory, x[keep], y[keep], ids[keep], sisa_config)
        retrain_seconds = time.perf_counter() - start
        retrain_model = again.ensemble
        unlearned = result.extra["sisa"].ensemble
    else:
        original_model = factory()
        record = baselines.amnesiac_train(
            original_model, x, y, ids, epochs=epochs, seed=config.seed, track=setting.forget_ids, **recipe
        )
        result = baselines.amnesiac_unlearn(
            original_model,
            record,
            setting.forget_ids,
            repair=(x[keep], y[keep]),
            repair_epochs=1,
            seed=config.seed,
            **recipe,
        )
        result.extra["storage-bytes-all-batches"] = (
            len(ids) // config.batch_size * epochs * state_nbytes(result.state_dict)
        )
        retrain_model = factory()
        start = time.perf_counter()
        training.train(retrain_model, x[keep], y[keep], epochs=epochs, seed=config.seed, **recipe)
        retrain_seconds = time.perf_counter() - start
        unlearned = setting.model(result.state_dict, factory)
    on_original = setting.judge(original_model, None)
    before = on_original["member"]
    return make_row(
        setting,
        method,
        "centralized",
        result,
        setting.judge(unlearned, before),
        setting.judge(retrain_model, before),
        on_original["acc"],
        retrain_seconds,
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
    judged: dict[str, Any],
    reference: dict[str, Any],
    acc_original: float,
    retrain_seconds: float,
) -> dict[str, Any]:
    fr, fr_retrain = _finite(judged.get("fr")), _finite(reference.get("fr"))
    return {
        "dataset": setting.config.dataset,
        "seed": setting.config.seed,
        "method": method,
        "setting": kind,
        "model": setting.config.model,
        "num-forget": len(setting.forget_ids),
        "b-t": judged.get("b-t"),
        "fr": fr,
        "fr-retrain": fr_retrain,
        "fr-gap": None if fr is None or fr_retrain is None else fr - fr_retrain,
        "acc-original": acc_original,
        "acc": judged["acc"],
        "acc-retrain": reference["acc"],
        "acc-loss": acc_original - judged["acc"],
        "auc": judged["auc"],
        "auc-retrain": reference["auc"],
        "forget-acc": judged["forget-acc"],
        "seconds": result.seconds,
        "seconds-retrain": retrain_seconds,
        "speedup": retrain_seconds / result.seconds if result.seconds > 0 else None,
        "client-seconds": result.client_seconds,
        "bytes-sent": result.bytes_sent,
        "storage-bytes": result.storage_bytes,
        "details": {k: v for k, v in result.summary().items() if k not in {"method"}},
    }


def run_setting(
    dataset: str, seed: int, methods: Sequence[str], args: argparse.Namespace, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Train the original federation and the oracle once, then run every method on the same withdrawal."""
    config = make_config(dataset, seed, args)
    name = f"{dataset}/seed {seed}/{config.model}"
    log(f"{name}: original federation ({config.num_rounds} rounds x {config.local_epochs} epochs, 5 clients)")
    trained, original = baselines.train_original(config, federaser_every=1, evaluate=False)
    log(f"{name}: original test accuracy {trained.test_accuracy:.4f} ({trained.seconds:.1f}s); oracle")
    oracle = fit_oracle(config)
    client = ClientData.for_partition(config, 0)
    request = WithdrawalRequest(config.num_rounds + 1, 0, "samples", FRACTION)
    forget_ids = resolve_ids(request, client.train_ids, client.y_train, config.seed)
    dataset_arrays = data.load(config)
    setting = Setting(config, oracle, client, forget_ids, dataset_arrays.x_test, dataset_arrays.y_test)
    on_original = setting.judge(setting.model(original.state_dict), None)
    before = on_original["member"]
    forget = {0: forget_ids}
    traces = {method: Trace(setting, before) for method in FEDERATED}
    # retrain first: it is every federated method's reference
    results: dict[str, UnlearnResult] = {
        "retrain": baselines.retrain(original, forget, observe=traces["retrain"])
    }
    failures: dict[str, str] = {}
    for method in methods:
        if method in FEDERATED and method not in results:
            try:
                if method == "forsaken":
                    results[method] = run_forsaken(setting, original, before, traces[method])
                else:
                    results[method] = baselines.get(method).run(original, forget, observe=traces[method])
            except FAILURES as error:  # recorded in the table, not hidden, and the run goes on
                failures[method] = f"{type(error).__name__}: {error}"
    reference = setting.judge(setting.model(results["retrain"].state_dict), before)
    rows = []
    for method in methods:
        if method not in FEDERATED:
            continue
        if method in failures:
            rows.append(failed_row(setting, method, "federated", failures[method]))
            log(describe(rows[-1]))
            continue
        judged = (
            reference
            if method == "retrain"
            else setting.judge(setting.model(results[method].state_dict), before)
        )
        row = make_row(
            setting,
            method,
            "federated",
            results[method],
            judged,
            reference,
            on_original["acc"],
            results["retrain"].seconds,
        )
        row["rounds"] = traces[method].rows
        rows.append(row)
        log(describe(row))
    central = [m for m in methods if m in CENTRALIZED]
    if central:
        rows += run_centralized(setting, central, log)
    return rows


# ------------------------------------------------------------------------------------------ summary
def summarise(rows: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Per method: means over the settings (FR over the rows where it is defined), geometric-mean speed-up."""
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue

        def mean(key: str, rows_: list[dict[str, Any]] = mine) -> float | None:
            values = [r[key] for r in rows_ if r[key] is not None and math.isfinite(r[key])]
            return float(np.mean(values)) if values else None

        speedups = [r["speedup"] for r in mine if r["speedup"]]
        out.append(
            {
                "method": method,
                "setting": mine[0]["setting"],
                "rows": len(mine),
                "failed": sum(1 for r in mine if r.get("error")),
                **{
                    k: mean(k)
                    for k in (
                        "fr",
                        "fr-retrain",
                        "fr-gap",
                        "acc-loss",
                        "auc",
                        "auc-retrain",
                        "seconds",
                        "client-seconds",
                        "bytes-sent",
                        "storage-bytes",
                    )
                },
                "abs-fr-gap": mean("abs-fr-gap", [{**r, "abs-fr-gap": _abs(r["fr-gap"])} for r in mine]),
                "speedup-geomean": float(np.exp(np.mean(np.log(speedups)))) if speedups else None,
            }
        )
    return out


def describe(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"{row['dataset']}/seed {row['seed']} {row['method']:>15}: FAILED ({row['error']})"
    return (
        f"{row['dataset']}/seed {row['seed']} {row['method']:>15}: FR {_fmt(row['fr'])} "
        f"(retrain {_fmt(row['fr-retrain'])}), acc {row['acc']:.4f} (loss {100 * row['acc-loss']:+.2f} pt), "
        f"AUC {row['auc']:.3f}, {row['seconds']:.2f}s = {_fmt(row['speedup'], 1)}x"
    )


# ------------------------------------------------------------------------------------------ outputs
def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})


def plot(rows: list[dict[str, Any]], summary: list[dict[str, Any]], docs: Path) -> list[Path]:
    """``results_fr_vs_accuracy.png`` (accuracy loss vs FR per row) and ``results_time.png`` (seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [docs / "results_fr_vs_accuracy.png", docs / "results_time.png"]
    methods = [s["method"] for s in summary]
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=90)
    for method in methods:
        pts = [
            (r["fr"], 100 * r["acc-loss"])
            for r in rows
            if r["method"] == method and r["fr"] is not None and r["acc-loss"] is not None
        ]
        if pts:
            ax.scatter(*zip(*pts, strict=True), label=method, color=colours[method], s=22)
    ax.axhline(5, color="grey", lw=0.8, ls="--")
    ax.axvline(0.9, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("forgetting rate FR")
    ax.set_ylabel("accuracy loss (points)")
    ax.set_title("accuracy loss vs FR (one point per dataset x seed)", fontsize=9)
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

    FR at round 0 is 0 by definition (nothing changed); retraining has no round 0 (it starts from a
    fresh model). A mean at a round uses the seeds that reached it (Forsaken may stop early).
    """
    out: dict[str, dict[str, list[tuple[int, float, float]]]] = {}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        per_method: dict[str, dict[int, list[tuple[float, float]]]] = {}
        for r in rows:
            if r["dataset"] != dataset or r.get("error") or not r.get("rounds"):
                continue
            points = per_method.setdefault(r["method"], {})
            if r["method"] != "retrain":
                points.setdefault(0, []).append((0.0, r["acc-original"]))
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
    """``results_rounds.png``: FR and test accuracy after each unlearning round, per dataset and method."""
    import matplotlib.pyplot as plt

    curves = round_curves(rows)
    datasets = list(curves) or ["(no per-round data)"]
    fig, axes = plt.subplots(
        len(datasets), 2, figsize=(7.5, 1.9 * len(datasets) + 0.6), dpi=70, squeeze=False
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
    axes[0][0].set_title("FR after each unlearning round", fontsize=9)
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
        f"rounds {doc['rounds']}; client 0 withdraws {100 * FRACTION:g}% of its training samples after the "
        "last round; the server's oracle (shadow models on its auxiliary data) judges the forget set before "
        "(B) and after. FR = (A_F - B_F) / B_T; *FR retrain* is the same oracle on the model retrained "
        "without the samples, *gap* = FR - FR retrain (0 is ideal: forgetting more than retraining is "
        "detectable too); "
        "accuracy loss = original - unlearned test accuracy; AUC = attack AUC of forget vs never-seen data "
        "(0.5: indistinguishable). Speed-up = retrain seconds / method seconds, measured in the same run. "
        "Centralized methods (SISA, Amnesiac) use one data owner with all clients' data and are compared "
        "with their own retraining.",
        "",
        "## Means per method",
        "",
        "| method | setting | rows | FR | FR retrain | mean abs gap | acc loss | AUC | AUC retrain | seconds "
        "| speed-up (geo) | client s | MB sent | MB stored |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['method']} | {s['setting']} | {_rows(s)} | {_fmt(s['fr'])} | {_fmt(s['fr-retrain'])} "
            f"| {_fmt(s['abs-fr-gap'])} | {_pt(s['acc-loss'])} | {_fmt(s['auc'], 3)} "
            f"| {_fmt(s['auc-retrain'], 3)} "
            f"| {_fmt(s['seconds'])} | {_fmt(s['speedup-geomean'], 1)}x | {_fmt(s['client-seconds'])} "
            f"| {_mb(s['bytes-sent'])} | {_mb(s['storage-bytes'])} |"
        )
    lines += ["", "## Every row", ""]
    lines += [
        "| dataset | seed | method | n (B_T) | FR | FR retrain | gap | acc | acc loss | AUC | AUC retrain "
        "| s | s retrain | speed-up | MB sent | MB stored |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        head = f"| {r['dataset']} | {r['seed']} | {r['method']} | {r['num-forget']} ({_int(r['b-t'])}) "
        if r.get("error"):
            lines.append(head + f"| failed: {r['error'][:90].replace('|', '/')} |" + " |" * 12)
            continue
        lines.append(
            head + f"| {_fmt(r['fr'])} "
            f"| {_fmt(r['fr-retrain'])} | {_fmt(r['fr-gap'])} | {r['acc']:.4f} | {_pt(r['acc-loss'])} "
            f"| {r['auc']:.3f} | {r['auc-retrain']:.3f} | {r['seconds']:.2f} | {r['seconds-retrain']:.2f} "
            f"| {_fmt(r['speedup'], 1)}x | {_mb(r['bytes-sent'])} | {_mb(r['storage-bytes'])} |"
        )
    lines += ["", "## Forsaken per dataset", "", *per_dataset(rows)]
    lines += ["", "## Reading", "", *commentary(summary, doc), ""]
    lines += [
        "## Plots",
        "",
        "![accuracy loss vs FR](results_fr_vs_accuracy.png) ![time per method](results_time.png)",
        "",
        "FR and test accuracy after each unlearning round, per dataset (means over the seeds; federated "
        "methods; round 0 is the trained model; retraining's rounds are its training rounds from a fresh "
        "model; gradient ascent's and PGA's round 1 is the model right after the client's delta, then the "
        "repair rounds; FedEraser's are its calibration rounds):",
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


def _means(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    return float(np.mean(values)) if values else None


def per_dataset(rows: list[dict[str, Any]]) -> list[str]:
    """Forsaken against the federated baselines on each dataset (means over the seeds), and where it loses.

    Lines of a markdown table, then computed sentences: where Forsaken is slower than retraining, where
    another federated method is closer to retraining's FR, where it loses the most accuracy.
    """
    federated = [r for r in rows if r["setting"] == "federated" and not r.get("error")]
    datasets = list(dict.fromkeys(r["dataset"] for r in federated))
    if not any(r["method"] == "forsaken" for r in federated):
        return ["(Forsaken was not run.)"]
    out = [
        "| dataset | Forsaken FR | FR retrain | abs gap | closest to retrain (abs gap) | Forsaken acc loss "
        "| Forsaken speed-up | fastest other (speed-up) |",
        "|---|---:|---:|---:|---|---:|---:|---|",
    ]
    slower, farther, costly = [], [], []
    for dataset in datasets:
        mine = [r for r in federated if r["dataset"] == dataset]
        by: dict[str, list[dict[str, Any]]] = {}
        for r in mine:
            by.setdefault(r["method"], []).append(r)
        if "forsaken" not in by:
            continue
        gaps = {
            m: _means([{"g": _abs(r["fr-gap"])} for r in rs], "g") for m, rs in by.items() if m != "retrain"
        }
        speed = {m: _means(rs, "speedup") for m, rs in by.items() if m != "retrain"}
        loss = {m: _means(rs, "acc-loss") for m, rs in by.items() if m != "retrain"}
        ranked = sorted((g, m) for m, g in gaps.items() if g is not None)
        others = [(v, m) for m, v in speed.items() if m != "forsaken" and v is not None]
        fastest = max(others) if others else None
        f = by["forsaken"]
        out.append(
            f"| {dataset} | {_fmt(_means(f, 'fr'))} | {_fmt(_means(f, 'fr-retrain'))} "
            f"| {_fmt(gaps['forsaken'])} | {ranked[0][1] + f' ({_fmt(ranked[0][0])})' if ranked else 'n/a'} "
            f"| {_pt(loss['forsaken'])} | {_fmt(speed['forsaken'], 1)}x "
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
        out.append(f"- Forsaken is slower than retraining on: {', '.join(slower)}.")
    if farther:
        out.append(
            "- Another federated method lands closer to retraining's FR on: " + ", ".join(farther) + "."
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
        out.append(
            f"- Forsaken: mean FR {_fmt(f['fr'])} against {_fmt(f['fr-retrain'])} for retraining (mean abs "
            f"gap {_fmt(f['abs-fr-gap'])}), accuracy loss {_pt(f['acc-loss'])}, "
            f"speed-up over retraining {_fmt(f['speedup-geomean'], 1)}x (geometric mean; below 1 = slower). "
            "The paper's bar "
            "(FR >= 0.9, loss <= 5 pt, >= 10x) is "
            f"{'met' if _bar(f) else 'not met'} here."
        )
    ranked = [s for s in fed if s["abs-fr-gap"] is not None]
    if ranked:
        best = min(ranked, key=lambda s: s["abs-fr-gap"])
        out.append(
            f"- Closest to retraining in FR among the federated approximations: {best['method']} "
            f"(mean abs gap {_fmt(best['abs-fr-gap'])})."
        )
        losing = [
            s["method"]
            for s in ranked
            if "forsaken" in by
            and s["method"] != "forsaken"
            and by["forsaken"]["abs-fr-gap"] is not None
            and s["abs-fr-gap"] < by["forsaken"]["abs-fr-gap"]
        ]
        if losing:
            out.append(f"- Forsaken is further from retraining than: {', '.join(losing)}.")
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
    undefined = sum(1 for r in doc["rows"] if r["fr"] is None and not r.get("error"))
    if undefined:
        out.append(
            f"- FR is undefined (B_T = 0: the oracle judged no forget sample a member) in {undefined} row(s)."
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


def _bar(s: dict[str, Any]) -> bool:
    return bool(
        s["fr"] is not None
        and s["fr"] >= 0.9
        and (s["acc-loss"] or 0) <= 0.05
        and (s["speedup-geomean"] or 0) >= 10
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
