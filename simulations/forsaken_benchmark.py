"""Forsaken against retraining from scratch, side by side, in one run (the paper's claims, measured).

    python -m simulations.forsaken_benchmark                    # every dataset, IID + Dirichlet(0.5)
    python -m simulations.forsaken_benchmark --quick            # digits + location, IID only (a few min)
    python -m simulations.forsaken_benchmark --datasets letter adult --out results/x.json

For each case (dataset, partitioning, model, withdrawn fraction), with the federation of
``--clients`` / ``--rounds`` / ``--local-epochs`` (default 5 clients, 10 FedAvg rounds x 2 local epochs,
the same for the original model and for retraining) and the run config's defaults otherwise
(``fedforget.config.RunConfig``; per-dataset changes in :data:`DATASET_SETTINGS`):

1. **Original model**: ``fedforget.federated.fedavg(config)`` (the federation's FedAvg rounds, in one
   process, same seeds and math as the Flower apps).
2. **Oracle**: :func:`fedforget.mia.recipe.fit_oracle_for` on the server's auxiliary split, the recipe
   of ``server/evaluator.py`` (shadows with the global model's architecture and recipe, seed = run seed),
   round-tripped through ``to_state`` / ``oracle_from_state`` as it is shipped to the client. Its
   training time is reported apart: both arms need it to be judged, neither needs it to run.
3. **Withdrawal**: client 0 withdraws a seeded random ``fraction`` of its training samples
   (``resolve_ids`` of the request ``ROUND:0:samples:FRACTION`` with ``ROUND = num-rounds + 1``: the
   request arrives after the last training round). ``B`` = the oracle's decisions on the forget set
   with the original model.
4. **Forsaken**, exactly as ``clients/app.py`` ``unlearn`` and ``server/unlearning.py``: reference =
   client 0's held-out data, retain = a seeded ``retain-samples`` subset of its remaining training
   data, ``ForsakenConfig(target=unlearn-target, target_fr=target-fr, max_steps=forsaken-steps,
   seed=seed * 7_919 + ROUND)``; the mask is validated (``validate_mask``, ``max-mask-ratio``) and
   added to the global model (the sum of one mask); up to ``unlearn-rounds`` rounds until FR >= 0.9
   (or until a round's mask is zero: the server stops there, the next round would repeat it).
   Timed: wall seconds of every unlearning round including the oracle's decisions (``B`` and after
   each round), excluding the oracle's training and the test-set evaluation.
5. **Retrain**: ``fedavg(config, exclude={0: forget ids})`` from the same initial model, same rounds
   and seeds; timed (training rounds only, no evaluation); judged by the same oracle against ``B``.

Reported per case: FR of both, test accuracy (original, Forsaken, retrain), accuracy loss (original -
Forsaken, absolute), forget-vs-reference attack AUC (original, Forsaken, retrain), seconds and the
speed-up retrain / Forsaken; then the averages and the paper's bar (FR >= 0.9, accuracy loss <= 5
points, >= 10x faster than retraining) per row and overall. Writes ``--out`` (JSON) and the markdown
table next to it (same name, ``.md``). ``--threads`` defaults to 1 (torch's intra-op threads only
slow these small models down, and badly so on a shared machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fedforget import data, forsaken, models
from fedforget.attempt_rules import AUC_TOLERANCE, target_met
from fedforget.client_data import ClientData, split_for
from fedforget.config import RunConfig
from fedforget.federated import fedavg
from fedforget.forsaken import ForsakenConfig
from fedforget.metrics import attack_auc, forgetting_rate_from_arrays
from fedforget.mia import MembershipOracle, oracle_from_state
from fedforget.mia.recipe import fit_oracle_for, oracle_model_factory
from fedforget.withdrawals import WithdrawalRequest, resolve_ids
from simulations.forsaken_rounds import unlearn_like_the_federation

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("mnist", "fashion-mnist", "location", "letter", "adult", "digits")
QUICK_DATASETS = ("digits", "location")
PARTITIONINGS = ("iid", "dirichlet")
DATASET_SETTINGS: dict[str, dict[str, Any]] = {
    # 6,000 of the 60,000 training images keep the run within its time budget; LeNet with the
    # default learning rate 0.05 is unstable on so few samples, 0.02 trains it to ~97% (mnist).
    "mnist": {"max_train_samples": 6000, "learning_rate": 0.02},
    "fashion-mnist": {"max_train_samples": 6000, "learning_rate": 0.02},
}
"""Changes to ``RunConfig``'s defaults per dataset (everything else: the defaults)."""
NUM_CLIENTS, NUM_ROUNDS, LOCAL_EPOCHS = 5, 10, 2
"""The federation of every case (the same for training and retraining): 5 clients, 10 FedAvg rounds of
2 local epochs each (20 passes over the data), every client in every round."""
DEFAULT_FRACTION = 0.05
EXTRA_FRACTIONS = {("letter", "iid", "auto"): (0.01, 0.05, 0.10)}
"""Cases that withdraw other fractions of client 0's training samples too."""
EXTRA_MODELS = {"adult": ("logreg", "svm")}
"""Extra models, IID only."""
BAR_FR, BAR_ACCURACY_LOSS, BAR_SPEEDUP = 0.9, 0.05, 10.0
"""The paper's bar: FR >= 0.9, accuracy loss <= 5 points (absolute), >= 10x faster than retraining."""


@dataclasses.dataclass(frozen=True)
class Group:
    """One trained original model (dataset, partitioning, model) and the withdrawals made from it."""

    dataset: str
    partitioning: str
    model: str = "auto"
    fractions: tuple[float, ...] = (DEFAULT_FRACTION,)


def plan(datasets: Sequence[str], partitionings: Sequence[str], extras: bool) -> list[Group]:
    """The groups of cases to run, in order (``extras``: the extra fractions and models)."""
    groups = []
    for name in datasets:
        for partitioning in partitionings:
            fractions = EXTRA_FRACTIONS.get((name, partitioning, "auto"), (DEFAULT_FRACTION,))
            groups.append(Group(name, partitioning, "auto", fractions if extras else (DEFAULT_FRACTION,)))
        if extras and "iid" in partitionings:
            groups += [Group(name, "iid", model) for model in EXTRA_MODELS.get(name, ())]
    return groups


def make_config(group: Group, args: argparse.Namespace) -> RunConfig:
    settings: dict[str, Any] = dict(DATASET_SETTINGS.get(group.dataset, {}))
    if args.max_train_samples is not None and "max_train_samples" in settings:
        settings["max_train_samples"] = args.max_train_samples
    settings.setdefault("num_rounds", args.num_rounds)
    settings.setdefault("local_epochs", args.local_epochs)
    for name in ("forsaken_steps", "unlearn_rounds"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    config = RunConfig(
        dataset=group.dataset,
        model=group.model,
        num_clients=args.num_clients,
        partitioning=group.partitioning,
        alpha=0.5,
        seed=args.seed,
        unlearn_target=getattr(args, "target", "fr"),  # the panel's arguments have no --target
        target_fr=BAR_FR,
        **settings,
    )
    config.validate()
    info = data.info(config.dataset, config.data_dir or None)
    return config.replace(model=models.resolve_model_name(config.model, info))


def fit_server_oracle(config: RunConfig) -> tuple[MembershipOracle, float]:
    """The server's oracle (:func:`fedforget.mia.recipe.fit_oracle_for`, as ``server/evaluator.py`` builds
    it), round-tripped through its state as the client receives it; and its training time."""
    dataset = data.load(config)
    start = time.perf_counter()
    oracle = fit_oracle_for(config, dataset, split_for(config))
    seconds = time.perf_counter() - start
    arrays, state_config = oracle.to_state()  # only numbers travel to the client
    return oracle_from_state(arrays, state_config, oracle_model_factory(config, dataset)), seconds


def model_from_state(config: RunConfig, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = models.build_model(config.model, data.load(config).info, seed=config.seed)
    model.load_state_dict(state)
    return model


def test_accuracy(config: RunConfig, model: torch.nn.Module) -> float:
    from fedforget.training import evaluate

    dataset = data.load(config)
    return evaluate(model, dataset.x_test, dataset.y_test).accuracy


def forget_accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    from fedforget.training import evaluate

    return evaluate(model, x, y).accuracy


def judge(
    oracle: MembershipOracle,
    model: torch.nn.Module,
    client: ClientData,
    forget_ids: np.ndarray,
    before: np.ndarray | None,
) -> dict[str, Any]:
    """Decisions, FR against ``before``, forget-vs-reference AUC and forget-set accuracy of ``model``."""
    _, x_forget, y_forget = client.subset(forget_ids)
    scores_forget = oracle.scores(model, x_forget, y_forget)
    scores_reference = oracle.scores(model, client.x_holdout, client.y_holdout)
    member = scores_forget >= oracle.threshold
    out: dict[str, Any] = {
        "member": member,
        "member-fraction": float(member.mean()),
        "attack-auc": attack_auc(scores_forget, scores_reference),
        "forget-accuracy": forget_accuracy(model, x_forget, y_forget),
    }
    if before is not None:
        out["fr"] = forgetting_rate_from_arrays(forget_ids, before, member)
    return out


def run_group(group: Group, args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    """Train the original model and the oracle once, then run every withdrawal of ``group``."""
    config = make_config(group, args)
    name = f"{group.dataset}/{group.partitioning}/{config.model}"
    log(
        f"{name}: training the original model ({config.num_rounds} FedAvg rounds x "
        f"{config.local_epochs} local epochs, {config.num_clients} clients)"
    )
    original = fedavg(config, progress=args.progress)
    original_model = model_from_state(config, original.state_dict)
    log(f"{name}: original test accuracy {original.test_accuracy:.4f} ({original.seconds:.1f}s); oracle")
    oracle, oracle_seconds = fit_server_oracle(config)
    client = ClientData.for_partition(config, 0)
    server_round = config.num_rounds + 1
    cases = []
    for fraction in group.fractions:
        request = WithdrawalRequest(server_round, 0, "samples", fraction)
        forget_ids = resolve_ids(request, client.train_ids, client.y_train, config.seed)
        # ---------------------------------------------------------------- Forsaken
        unlearned = unlearn_like_the_federation(
            config, original_model, oracle, client, forget_ids, server_round, args.forsaken
        )
        before = unlearned["before"]
        # ---------------------------------------------------------------- retrain from scratch
        retrain = fedavg(config, exclude={0: forget_ids}, evaluate=False)
        retrain_model = model_from_state(config, retrain.state_dict)
        # ---------------------------------------------------------------- measurements (untimed)
        on_original = judge(oracle, original_model, client, forget_ids, None)
        on_forsaken = judge(oracle, unlearned["model"], client, forget_ids, before)
        on_retrain = judge(oracle, retrain_model, client, forget_ids, before)
        acc_forsaken = test_accuracy(config, unlearned["model"])
        case = {
            "case": f"{name}/{fraction:g}",
            "target": config.unlearn_target,
            "dataset": group.dataset,
            "partitioning": group.partitioning,
            "model": config.model,
            "fraction": fraction,
            "num-forget": len(forget_ids),
            "client-0-train": len(client.train_ids),
            "client-0-holdout": len(client.holdout_ids),
            "b-t": on_forsaken["fr"].b_t,
            "b-f": on_forsaken["fr"].b_f,
            "oracle-threshold": float(oracle.threshold),
            "fr-forsaken": _nan_none(on_forsaken["fr"].fr),
            "fr-retrain": _nan_none(on_retrain["fr"].fr),
            "acc-original": original.test_accuracy,
            "acc-forsaken": acc_forsaken,
            "acc-retrain": retrain.test_accuracy,
            "acc-loss": original.test_accuracy - acc_forsaken,
            "forget-acc-original": on_original["forget-accuracy"],
            "forget-acc-forsaken": on_forsaken["forget-accuracy"],
            "forget-acc-retrain": on_retrain["forget-accuracy"],
            "auc-original": on_original["attack-auc"],
            "auc-forsaken": on_forsaken["attack-auc"],
            "auc-retrain": on_retrain["attack-auc"],
            "seconds-unlearn": unlearned["seconds"],
            "seconds-retrain": retrain.seconds,
            "speedup": retrain.seconds / unlearned["seconds"],
            "seconds-original": original.seconds,
            "seconds-oracle": oracle_seconds,
            "training": training_recipe(config),
            "unlearn-rounds": len(unlearned["rounds"]),
            "forsaken-steps": sum(r["steps"] for r in unlearned["rounds"]),
            "unlearning": unlearned["rounds"],
            "steer-target-met": unlearned["steer-target-met"],
            "original-history": original.history,
        }
        case["bar"] = row_bar(case)
        cases.append(case)
        log(
            f"{case['case']}: n={case['num-forget']} B_T={case['b-t']} "
            f"FR forsaken {_fmt(case['fr-forsaken'])} retrain {_fmt(case['fr-retrain'])} | "
            f"acc {case['acc-original']:.4f} -> {acc_forsaken:.4f} (retrain {case['acc-retrain']:.4f}) | "
            f"{case['seconds-unlearn']:.2f}s vs {case['seconds-retrain']:.2f}s = {case['speedup']:.1f}x"
        )
    return cases


def training_recipe(config: RunConfig) -> dict[str, Any]:
    """The federation and training recipe of a case (the same for the original model and retraining)."""
    keys = (
        "num_clients",
        "num_rounds",
        "local_epochs",
        "learning_rate",
        "momentum",
        "weight_decay",
        "batch_size",
        "max_train_samples",
        "aux_fraction",
        "holdout_fraction",
        "oracle",
        "num_shadows",
        "forsaken_steps",
        "unlearn_rounds",
        "retain_samples",
    )
    return {key.replace("_", "-"): getattr(config, key) for key in keys}


def row_bar(case: dict[str, Any]) -> dict[str, bool | None]:
    """The paper's bar on one case, and whether Forsaken met the case's stopping ``target``:
    ``FR >= 0.9`` with ``"fr"``, ``|AUC - 0.5| <= AUC_TOLERANCE`` with ``"retrain"``
    (:func:`fedforget.attempt_rules.target_met`); ``target-all`` = target, accuracy and speed."""
    fr = case["fr-forsaken"]
    out = {
        "fr": None if fr is None else fr >= BAR_FR,
        "accuracy": case["acc-loss"] <= BAR_ACCURACY_LOSS,
        "speed": case["speedup"] >= BAR_SPEEDUP,
    }
    out["all"] = bool(out["fr"]) and out["accuracy"] and out["speed"]
    measured = {"fr": fr, "attack-auc": case["auc-forsaken"]}
    out["target"] = target_met(case.get("target", "fr"), BAR_FR, measured)
    out["target-all"] = out["target"] and out["accuracy"] and out["speed"]
    return out


def summarise(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Averages over the cases and the paper's bar on them (FR cases with B_T = 0 are left out)."""

    def mean_of(values: list[float | None]) -> float | None:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    def mean(key: str) -> float | None:
        return mean_of([c[key] for c in cases])

    speedups = [c["speedup"] for c in cases]
    summary = {
        "cases": len(cases),
        "fr-undefined": sum(1 for c in cases if c["fr-forsaken"] is None),
        **{
            key: mean(key)
            for key in (
                "fr-forsaken",
                "fr-retrain",
                "acc-original",
                "acc-forsaken",
                "acc-retrain",
                "acc-loss",
                "auc-original",
                "auc-forsaken",
                "auc-retrain",
                "seconds-unlearn",
                "seconds-retrain",
            )
        },
        "speedup-mean": float(np.mean(speedups)) if speedups else None,
        "speedup-geomean": float(np.exp(np.mean(np.log(speedups)))) if speedups else None,
        "speedup-of-totals": (
            sum(c["seconds-retrain"] for c in cases) / sum(c["seconds-unlearn"] for c in cases)
            if cases
            else None
        ),
        "rows-meeting": {
            key: sum(1 for c in cases if c["bar"][key])
            for key in ("fr", "accuracy", "speed", "all", "target", "target-all")
        },
        **{
            f"auc-gap-{arm}": mean_of([abs(c[f"auc-{arm}"] - 0.5) for c in cases])
            for arm in ("original", "forsaken", "retrain")
        },
    }
    fr, loss, speed = summary["fr-forsaken"], summary["acc-loss"], summary["speedup-geomean"]
    summary["bar"] = {
        "fr": fr is not None and fr >= BAR_FR,
        "accuracy": loss is not None and loss <= BAR_ACCURACY_LOSS,
        "speed": speed is not None and speed >= BAR_SPEEDUP,
    }
    summary["bar"]["all"] = all(summary["bar"].values())
    return summary


def markdown_table(cases: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    head = (
        "| case | n (B_T) | FR forsaken | FR retrain | acc original | acc forsaken | acc retrain | acc loss "
        "| AUC original | AUC forsaken | AUC retrain | s unlearn | s retrain | speed-up | bar FR/acc/10x |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"
    )
    lines = [head]
    for c in cases:
        bar = "/".join(_mark(c["bar"][k]) for k in ("fr", "accuracy", "speed"))
        lines.append(
            f"| {c['case']} | {c['num-forget']} ({c['b-t']}) | {_fmt(c['fr-forsaken'])} "
            f"| {_fmt(c['fr-retrain'])} | {c['acc-original']:.4f} | {c['acc-forsaken']:.4f} "
            f"| {c['acc-retrain']:.4f} | {100 * c['acc-loss']:+.2f} pt | {c['auc-original']:.3f} "
            f"| {c['auc-forsaken']:.3f} | {c['auc-retrain']:.3f} | {c['seconds-unlearn']:.2f} "
            f"| {c['seconds-retrain']:.2f} | {c['speedup']:.1f}x | {bar} |"
        )
    s = summary
    bar = "/".join(_mark(s["bar"][k]) for k in ("fr", "accuracy", "speed"))
    lines.append(
        f"| **mean** ({s['cases']} cases) | | **{_fmt(s['fr-forsaken'])}** | {_fmt(s['fr-retrain'])} "
        f"| {_fmt(s['acc-original'], 4)} | {_fmt(s['acc-forsaken'], 4)} | {_fmt(s['acc-retrain'], 4)} "
        f"| **{100 * (s['acc-loss'] or 0):+.2f} pt** | {_fmt(s['auc-original'], 3)} "
        f"| {_fmt(s['auc-forsaken'], 3)} | {_fmt(s['auc-retrain'], 3)} | {_fmt(s['seconds-unlearn'])} "
        f"| {_fmt(s['seconds-retrain'])} | **{_fmt(s['speedup-geomean'], 1)}x** (geo) | {bar} |"
    )
    met = s["rows-meeting"]
    lines += [
        "",
        f"Rows meeting the bar: FR >= {BAR_FR}: {met['fr']}/{s['cases']}; accuracy loss <= "
        f"{100 * BAR_ACCURACY_LOSS:.0f} pt: {met['accuracy']}/{s['cases']}; >= {BAR_SPEEDUP:.0f}x faster: "
        f"{met['speed']}/{s['cases']}; all three: {met['all']}/{s['cases']}. Overall (means; speed-up as "
        f"geometric mean, arithmetic {_fmt(s['speedup-mean'], 1)}x, ratio of total seconds "
        f"{_fmt(s['speedup-of-totals'], 1)}x): FR {_mark(s['bar']['fr'])}, accuracy "
        f"{_mark(s['bar']['accuracy'])}, speed {_mark(s['bar']['speed'])}."
        + (f" FR undefined (B_T = 0) in {s['fr-undefined']} case(s)." if s["fr-undefined"] else ""),
    ]
    targets = sorted({c.get("target", "fr") for c in cases})
    if targets != ["fr"]:
        lines += [
            "",
            f"Stopping target: {', '.join(targets)}. Rows where Forsaken met it (retrain: |AUC - 0.5| <= "
            f"{AUC_TOLERANCE}): {met['target']}/{s['cases']}; target, accuracy and 10x together: "
            f"{met['target-all']}/{s['cases']}. Mean |AUC - 0.5|: original {_fmt(s['auc-gap-original'], 3)}, "
            f"Forsaken {_fmt(s['auc-gap-forsaken'], 3)}, retrain {_fmt(s['auc-gap-retrain'], 3)}.",
        ]
    return "\n".join(lines)


def run_in_parallel(args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    """Run every (dataset, partitioning) as its own process, ``args.jobs`` at a time, and collect their
    cases in the order of :func:`plan`. Each process is this script with one dataset and partitioning
    (one torch thread each, timed on its own); its JSON goes to a temporary folder."""
    import concurrent.futures
    import tempfile

    parts_dir = Path(tempfile.mkdtemp(prefix="forsaken-benchmark-"))
    units = [(d, p) for d in args.datasets for p in args.partitionings]
    passed = ["--seed", str(args.seed), "--clients", str(args.num_clients), "--rounds", str(args.num_rounds)]
    passed += ["--local-epochs", str(args.local_epochs), "--threads", str(args.threads), "--no-bar"]
    passed += ["--target", args.target]
    for name in ("forsaken_steps", "unlearn_rounds", "max_train_samples"):
        if getattr(args, name) is not None:
            passed += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.quick:
        passed.append("--quick")
    if args.forsaken:
        passed += ["--forsaken", *(f"{k}={v}" for k, v in args.forsaken.items())]

    def run_unit(unit: tuple[str, str]) -> Path:
        out = parts_dir / f"{unit[0]}-{unit[1]}.json"
        command = [sys.executable, "-m", "simulations.forsaken_benchmark", "--datasets", unit[0]]
        command += ["--partitionings", unit[1], "--out", str(out), *passed]
        done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        for line in done.stderr.splitlines():
            if line.startswith("[forsaken-benchmark") and "done in" not in line:
                log(f"{unit[0]}/{unit[1]}: {line.split('] ', 1)[-1]}")
        return out

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outputs = list(
            tqdm(pool.map(run_unit, units), total=len(units), desc="forsaken-benchmark", disable=args.no_bar)
        )
    cases: list[dict[str, Any]] = []
    for out in outputs:
        cases += json.loads(out.read_text())["cases"]
        out.unlink()
        out.with_suffix(".md").unlink(missing_ok=True)
    parts_dir.rmdir()
    return cases


def warm_up() -> None:
    """One untimed Forsaken step on a tiny random problem: the first call in a process pays one-off
    imports (torch.func, the optimisers), which would otherwise be timed as the first case's unlearning."""
    rng = np.random.default_rng(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

    def pair(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 2, n)

    forsaken.unlearn(
        model, forget=pair(8), reference=pair(16), retain=pair(16), config=ForsakenConfig(max_steps=1)
    )


def forsaken_sources_hash() -> str:
    """SHA-256 (16 hex digits) over ``fedforget/forsaken/*.py``: which Forsaken this run measured."""
    digest = hashlib.sha256()
    for path in sorted((PROJECT_ROOT / "fedforget" / "forsaken").glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def provenance() -> dict[str, Any]:
    """Git commit, uncommitted changes in fedforget/forsaken, its sources' hash and ForsakenConfig defaults.

    Called right after the imports: the hash is that of the code this process runs (a change to the
    files later in the run is reported by ``main`` as ``forsaken-sources-changed-during-run``).
    """
    out: dict[str, Any] = {
        "forsaken-sources-sha256": forsaken_sources_hash(),
        "forsaken-config-defaults": dataclasses.asdict(ForsakenConfig()),
    }
    try:
        git = ["git", "-C", str(PROJECT_ROOT)]
        out["commit"] = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "fedforget/forsaken"], capture_output=True, text=True
        ).stdout
        out["forsaken-uncommitted"] = bool(dirty.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    return out


def machine() -> str:
    cores = os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    text = f"{cores} CPU cores ({platform.machine()}), no GPU used, torch {torch.__version__}"
    text += f", {torch.get_num_threads()} torch thread(s)"
    return text + (f", load average {load[0]:.1f} at start" if load else "")


def _nan_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "no")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def forsaken_overrides(pairs: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``["escalation=0.1", ...]`` -> ``{"escalation": 0.1}``, typed like ForsakenConfig's defaults and
    validated by building a ForsakenConfig with them."""
    fields = {f.name: f for f in dataclasses.fields(ForsakenConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields or key in ("seed", "max_steps", "target", "target_fr"):
            parser.error(
                f"--forsaken {pair!r}: expected KEY=VALUE with KEY a ForsakenConfig field other than seed, "
                f"max_steps, target, target_fr (those come from the run config)"
            )
        default = fields[key].default
        try:
            if isinstance(default, bool):
                value: Any = {"true": True, "1": True, "false": False, "0": False}[raw.strip().lower()]
            elif isinstance(default, int):
                value = int(raw)
            elif isinstance(default, float):
                value = float(raw)
            else:
                value = raw.strip()
        except (KeyError, ValueError):
            parser.error(f"--forsaken {pair!r}: {raw!r} is not of type {type(default).__name__}")
        out[key] = value
    try:
        ForsakenConfig(**out)
    except (TypeError, ValueError) as error:
        parser.error(f"--forsaken: {error}")
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="digits + location, IID only, 5%% only")
    parser.add_argument(
        "--datasets", nargs="+", choices=DATASETS, help="default: all (quick: digits location)"
    )
    parser.add_argument("--partitionings", nargs="+", choices=PARTITIONINGS, help="default: iid dirichlet")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "forsaken_benchmark.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clients",
        dest="num_clients",
        type=int,
        default=NUM_CLIENTS,
        help=f"num-clients (default {NUM_CLIENTS})",
    )
    parser.add_argument(
        "--rounds", dest="num_rounds", type=int, default=NUM_ROUNDS, help=f"num-rounds (default {NUM_ROUNDS})"
    )
    parser.add_argument(
        "--local-epochs", type=int, default=LOCAL_EPOCHS, help=f"local-epochs (default {LOCAL_EPOCHS})"
    )
    parser.add_argument("--forsaken-steps", type=int, help="forsaken-steps (default: the config's, 30)")
    parser.add_argument(
        "--target",
        choices=("fr", "retrain"),
        default="fr",
        help="unlearn-target: stop at FR >= 0.9 (fr, default) or at |attack AUC - 0.5| <= "
        f"{AUC_TOLERANCE} (retrain: the forget set looks never seen)",
    )
    parser.add_argument("--unlearn-rounds", type=int, help="unlearn-rounds (default: the config's, 3)")
    parser.add_argument("--max-train-samples", type=int, help="for mnist / fashion-mnist (default 6000)")
    parser.add_argument(
        "--forsaken",
        nargs="+",
        metavar="KEY=VALUE",
        help="ForsakenConfig fields to change, e.g. --forsaken escalation=0.1 patience=4 (default: none)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--progress", action="store_true", help="tqdm bars over the FedAvg rounds too")
    parser.add_argument("--no-bar", action="store_true", help="no progress bar over the trained models")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="run the (dataset, partitioning) pairs as this many processes at a time (1 torch thread each)",
    )
    args = parser.parse_args(argv)
    args.forsaken = forsaken_overrides(args.forsaken or [], parser)
    if args.datasets is None:
        args.datasets = list(QUICK_DATASETS if args.quick else DATASETS)
    if args.partitionings is None:
        args.partitionings = ["iid"] if args.quick else list(PARTITIONINGS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m simulations.forsaken_benchmark " + " ".join(
        list(argv) if argv is not None else sys.argv[1:]
    )
    command = command.strip()
    started = datetime.datetime.now().astimezone()
    where = machine()
    origin = provenance()
    start = time.perf_counter()

    def log(text: str) -> None:
        tqdm.write(f"[forsaken-benchmark {time.perf_counter() - start:6.0f}s] {text}", file=sys.stderr)

    groups = plan(args.datasets, args.partitionings, extras=not args.quick)
    log(f"{sum(len(g.fractions) for g in groups)} cases in {len(groups)} groups; {where}")
    if args.jobs > 1:
        cases = run_in_parallel(args, log)
    else:
        warm_up()
        cases = []
        bar = tqdm(groups, desc="forsaken-benchmark", unit="model", disable=args.no_bar)
        for group in bar:
            bar.set_postfix_str(f"{group.dataset}/{group.partitioning}/{group.model}")
            cases += run_group(group, args, log)
        bar.close()
    total = time.perf_counter() - start
    summary = summarise(cases)
    table = markdown_table(cases, summary)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if forsaken_sources_hash() != origin["forsaken-sources-sha256"]:
        origin["forsaken-sources-changed-during-run"] = True
        log("warning: fedforget/forsaken changed on disk during the run (the run used the version at start)")
    doc = {
        "command": command,
        "date": started.isoformat(timespec="seconds"),
        "machine": where,
        "load-average-end": load_end,
        "seconds-total": total,
        "quick": args.quick,
        "jobs": args.jobs,
        "federation": {
            "num-clients": args.num_clients,
            "num-rounds": args.num_rounds,
            "local-epochs": args.local_epochs,
        },
        "seed": args.seed,
        "forsaken-overrides": args.forsaken,
        "dataset-settings": {k: v for k, v in DATASET_SETTINGS.items() if k in args.datasets},
        "bar": {"fr": BAR_FR, "accuracy-loss": BAR_ACCURACY_LOSS, "speedup": BAR_SPEEDUP},
        "provenance": origin,
        "summary": summary,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_jsonable(doc), indent=1) + "\n")
    code = f"commit {origin.get('commit', '?')}" + (
        " + uncommitted fedforget/forsaken" if origin.get("forsaken-uncommitted") else ""
    )
    code += f", forsaken sources sha256 {origin['forsaken-sources-sha256']}"
    if origin.get("forsaken-sources-changed-during-run"):
        code += " (changed on disk during the run)"
    federation = (
        f"federation: {args.num_clients} clients, {args.num_rounds} FedAvg rounds x {args.local_epochs} "
        "local epochs, all clients every round, the same for the original model and retraining"
    )
    if args.forsaken:
        federation += "; ForsakenConfig changed: " + ", ".join(f"{k}={v}" for k, v in args.forsaken.items())
    header = (
        f"`{command}`, {started:%Y-%m-%d %H:%M %Z}, {where}; {code}; {federation}; "
        f"whole script {total:.0f} s (wall).\n\n"
    )
    args.out.with_suffix(".md").write_text(header + table + "\n")
    print(table)
    log(f"done in {total:.1f}s; wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
