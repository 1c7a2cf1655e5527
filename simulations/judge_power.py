"""How strong is the judge on a *federated* target? Power per attack, calibrated from client histograms.

    python -m simulations.judge_power                       # location (if ../shared has it), memorise, digits
    python -m simulations.judge_power --datasets digits --out /tmp/jp.json

For each dataset, in process and without Flower (``fedforget.federated.fedavg`` computes the model a
Flower run with the same config produces):

1. the global model: FedAvg with the run config below (5 clients, IID, 10 rounds x 3 local epochs,
   SGD lr 0.05, batch 16, momentum 0.9, aux-fraction 0.2, holdout-fraction 0.2, seed 0);
2. the judge (``fedforget.judge.for_run.fit_run_judge``, as the server fits it): 4 shadow
   federations with the run's clients (sizes in proportion), rounds and recipe on the judge's half
   of the server's auxiliary data (``judge_aux_half``); attacks ``loss`` (headline), ``shokri``, ``lira``;
3. calibration on the global model from every client's histograms (retained = members, held-out =
   non-members): AUC, its lower 95% bound, TPR at 1% / 0.1% FPR, balanced accuracy at the Youden
   bin edge, measurable or not; the same on the *initial* (untrained) model, where every attack
   should be at chance;
4. a forget set (``--forget-size`` seeded random training samples of client 0): how many of them
   each judge attack calls members, and for comparison the oracle the server ships today
   (``fedforget.mia.recipe.fit_oracle_for``: Shokri on centrally trained shadows, its own threshold)
   and the device's steering oracle (``fedforget.mia.device_oracle``, fitted on client 0's data);
5. retraining without the forget set (FedAvg with client 0 excluding it), calibrated the same way:
   FR and forget-vs-never-seen AUC under each attack (``judge_forget_set``), and the verdict
   (``retrain_verdict``) of *not unlearning at all* (the original model) against that retrain, which
   must come out ``under-forgetting`` wherever the attack is measurable.

Writes ``--out`` (JSON) and the same name with ``.md`` (tables), and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedforget import data, models
from fedforget.client_data import ClientData, split_for
from fedforget.config import RunConfig
from fedforget.federated import fedavg
from fedforget.judge import forget_bins, judge_aux_half, judge_forget_set, retrain_verdict
from fedforget.judge.for_run import calibrate_clients, fit_run_judge
from fedforget.mia.device_oracle import fit_device_oracle
from fedforget.mia.recipe import fit_oracle_for
from fedforget.training import evaluate

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("location", "memorise", "digits")
RUN = {
    "num-clients": 5,
    "num-rounds": 10,
    "local-epochs": 3,
    "learning-rate": 0.05,
    "batch-size": 16,
    "momentum": 0.9,
    "aux-fraction": 0.2,
    "holdout-fraction": 0.2,
    "seed": 0,
}


def _available(name: str) -> str | None:
    """Why ``name`` cannot be run here (None if it can)."""
    if name not in data.available():
        return f"{name} is not a registered dataset in this checkout"
    try:
        data.load(RunConfig.from_mapping({"dataset": name}))
    except Exception as error:  # noqa: BLE001 - a missing data folder: skip with the reason
        return f"{name} not loadable here: {str(error).splitlines()[0]}"
    return None


def _model(config: RunConfig, info: Any, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = models.build_model(config.model, info)
    model.load_state_dict(state)
    return model.eval()


def _calibrate(judge: Any, model: torch.nn.Module, clients: Sequence[ClientData]) -> dict[str, Any]:
    return calibrate_clients(judge, model, clients, run_seed=RUN["seed"])


def run_dataset(name: str, *, forget_size: int, num_federations: int) -> dict[str, Any]:
    start = time.perf_counter()
    config = RunConfig.from_mapping({**RUN, "dataset": name})
    dataset = data.load(config)
    config = config.replace(model=models.resolve_model_name(config.model, dataset.info))
    split = split_for(config)
    clients = [ClientData.for_partition(config, k) for k in range(config.num_clients)]
    target = fedavg(config, evaluate=False)
    model = _model(config, dataset.info, target.state_dict)
    seconds = {"fedavg": target.seconds}

    judge_ids, _ = judge_aux_half(split.aux_ids, config.seed)
    t = time.perf_counter()
    judge = fit_run_judge(config.replace(num_shadows=num_federations), dataset, split)
    seconds["judge-fit"] = time.perf_counter() - t

    t = time.perf_counter()
    power = _calibrate(judge, model, clients)
    initial = models.build_model(config.model, dataset.info, seed=config.seed).eval()
    power_initial = _calibrate(judge, initial, clients)
    seconds["calibration-x2"] = time.perf_counter() - t

    rng = np.random.default_rng([config.seed, 0x6A75, 99])
    owner = clients[0]
    forget_ids = np.sort(rng.choice(owner.train_ids, size=forget_size, replace=False))
    _, x_forget, y_forget = owner.subset(forget_ids)
    bins_before = forget_bins(judge, model, forget=(x_forget, y_forget))
    judged_members = {a: int(power[a].is_member(b).sum()) for a, b in bins_before.items()}

    t = time.perf_counter()
    today = fit_oracle_for(config, dataset, split)
    seconds["todays-oracle-fit"] = time.perf_counter() - t
    kept = owner.without(forget_ids)
    steer = fit_device_oracle(
        model, members=(kept.x_train, kept.y_train), nonmembers=(owner.x_holdout, owner.y_holdout), seed=0
    )
    comparison = {
        "server-oracle-today (shokri, central shadows, own threshold)": int(
            today.decide(model, x_forget, y_forget).sum()
        ),
        "device-steer (device-shokri, client 0's data)": int(steer.decide(model, x_forget, y_forget).sum()),
    }

    t = time.perf_counter()
    retrain = fedavg(config, exclude={0: forget_ids}, evaluate=False)
    seconds["retrain"] = retrain.seconds
    retrained = _model(config, dataset.info, retrain.state_dict)
    power_retrained = _calibrate(judge, retrained, [kept, *clients[1:]])
    bins_retrained = forget_bins(judge, retrained, forget=(x_forget, y_forget))
    judged = judge_forget_set(
        before=power, after=power_retrained, before_bins=bins_before, after_bins=bins_retrained
    )
    unchanged = judge_forget_set(before=power, after=power, before_bins=bins_before, after_bins=bins_before)
    verdict = retrain_verdict(unlearned=unchanged, retrained=judged)
    seconds["retrain-judging"] = time.perf_counter() - t - retrain.seconds

    retained_x = np.concatenate([c.x_train for c in clients])
    retained_y = np.concatenate([c.y_train for c in clients])
    held_x = np.concatenate([c.x_holdout for c in clients])
    held_y = np.concatenate([c.y_holdout for c in clients])
    seconds["total"] = time.perf_counter() - start
    return {
        "dataset": name,
        "model": config.model,
        "config": {**RUN, "model": config.model},
        "clients-train-sizes": [len(c.train_ids) for c in clients],
        "clients-holdout-sizes": [len(c.holdout_ids) for c in clients],
        "aux-samples": len(split.aux_ids),
        "judge-aux-samples": len(judge_ids),
        "num-shadow-federations": num_federations,
        "accuracy": {
            "retained": evaluate(model, retained_x, retained_y).accuracy,
            "held-out": evaluate(model, held_x, held_y).accuracy,
            "test": evaluate(model, dataset.x_test, dataset.y_test).accuracy,
        },
        "power": {a: p.summary() for a, p in power.items()},
        "power-initial-model": {a: p.summary() for a, p in power_initial.items()},
        "forget-size": forget_size,
        "forget-judged-members": judged_members,
        "forget-judged-members-other-oracles": comparison,
        "retrain": {a: j.to_dict() for a, j in judged.items()},
        "no-unlearning-vs-retrain": verdict,
        "seconds": seconds,
    }


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| dataset (model) | retained / held-out acc | attack | AUC (lower 95%) | TPR @ 1% FPR | "
        "TPR @ 0.1% FPR | bal. acc | measurable | initial model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        acc = f"{r['accuracy']['retained']:.3f} / {r['accuracy']['held-out']:.3f}"
        for a, p in r["power"].items():
            p0 = r["power-initial-model"][a]
            star = "" if p["tpr-at-0.1pct-fpr-resolved"] else "*"
            lines.append(
                f"| {r['dataset']} ({r['model']}) | {acc} | {a} | {_f(p['auc'])} ({_f(p['auc-lower-95'])}) | "
                f"{_f(p['tpr-at-1pct-fpr'])} | {_f(p['tpr-at-0.1pct-fpr'])}{star} | "
                f"{_f(p['balanced-accuracy'])} | {'yes' if p['measurable'] else 'no'} | "
                f"AUC {_f(p0['auc'])}, {'measurable' if p0['measurable'] else 'not measurable'} |"
            )
    lines += [
        "",
        "\\* fewer than 1,000 held-out samples: TPR at 0.1% FPR is interpolated below the first one.",
        "",
        "| dataset | forget samples judged members (of n) | FR of retraining (B_T, A_F) | forget AUC "
        "before -> after retraining | no unlearning vs retrain |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        n = r["forget-size"]
        members = ", ".join(f"{a} {m}" for a, m in r["forget-judged-members"].items())
        others = ", ".join(f"{k} {m}" for k, m in r["forget-judged-members-other-oracles"].items())
        fr = ", ".join(
            f"{a} {_f(j['fr'], 2) if j['status'] == 'measured' else 'not measurable'} "
            f"({j['b-t']}, {j['a-f']})"
            for a, j in r["retrain"].items()
        )
        auc = ", ".join(f"{a} {_f(j['auc-before'])} -> {_f(j['auc-after'])}" for a, j in r["retrain"].items())
        verdict = ", ".join(f"{a} {v['verdict']}" for a, v in r["no-unlearning-vs-retrain"].items())
        lines.append(f"| {r['dataset']} | {members} (of {n}); {others} | {fr} | {auc} | {verdict} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--forget-size", type=int, default=26)
    parser.add_argument("--num-federations", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "judge_power.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results, skipped = [], {}
    for name in args.datasets:
        reason = _available(name)
        if reason:
            print(f"skipping {name}: {reason}", file=sys.stderr)
            skipped[name] = reason
            continue
        print(f"{name} ...", file=sys.stderr, flush=True)
        results.append(run_dataset(name, forget_size=args.forget_size, num_federations=args.num_federations))
        print(f"{name} done in {results[-1]['seconds']['total']:.0f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    command = "python -m simulations.judge_power " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = {
        "command": command.strip(),
        "seconds": total,
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "skipped": skipped,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    table = markdown(results)
    args.out.with_suffix(".md").write_text(f"`{command.strip()}` ({total:.0f} s)\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
