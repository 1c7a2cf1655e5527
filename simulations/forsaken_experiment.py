"""Centralized Forsaken experiment (one client = centralized unlearning), the protocol of docs/forsaken.md.

    .venv/bin/python -m simulations.forsaken_experiment --dataset location --model mlp [--target retrain]

Train a target on ``--members`` random training samples (seeded). Forget 5 % of them. The reference is
``--reference`` other training samples the target never saw. The oracle is fitted on the remaining
samples (``loss``: a loss threshold fitted on one shadow model trained like the target; ``shokri`` /
``lira``: :func:`fedforget.mia.fit_oracle` with 4 shadows). Then run Forsaken and, for comparison,
retrain from scratch on the retained members with the same recipe. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from fedforget import forsaken
from fedforget.data import load_dataset
from fedforget.models import build_model
from fedforget.training import evaluate, train


def run(
    dataset: str = "location",
    model_name: str = "mlp",
    members: int = 1000,
    reference: int = 250,
    epochs: int = 30,
    oracle_kind: str = "loss",
    target: str = "fr",
    seed: int = 0,
    retrain: bool = True,
    **config: Any,
) -> dict[str, Any]:
    data = load_dataset(dataset)
    order = np.random.default_rng(seed).permutation(data.num_train)
    mem, ref = order[:members], order[members : members + reference]
    aux = order[members + reference :][:4000]
    x, y = data.x_train, data.y_train
    num_forget = round(0.05 * members)
    forget, retain = mem[:num_forget], mem[num_forget:]
    recipe = {"epochs": epochs, "learning_rate": 0.05, "batch_size": 32, "momentum": 0.9}
    model = build_model(model_name, data.info, seed=seed)
    start = time.perf_counter()
    train(model, x[mem], y[mem], seed=seed, **recipe)
    train_seconds = time.perf_counter() - start
    xt, yt = data.x_test[:2000], data.y_test[:2000]
    if oracle_kind == "loss":
        shadow = build_model(model_name, data.info, seed=seed + 7)
        half = len(aux) // 2
        ins = aux[: min(half, members)]
        outs = aux[half : half + len(ins)]
        train(shadow, x[ins], y[ins], seed=seed + 7, **recipe)
        oracle = forsaken.LossThresholdOracle.fit(shadow, (x[ins], y[ins]), (x[outs], y[outs]))
    else:
        from fedforget.mia import fit_oracle

        pool = aux[: 2 * members]
        oracle = fit_oracle(
            oracle_kind,
            lambda: build_model(model_name, data.info),
            x[pool],
            y[pool],
            num_shadows=4,
            seed=seed,
            **recipe,
        )
    settings = forsaken.ForsakenConfig(target=target, **config)
    start = time.perf_counter()
    result = forsaken.unlearn(
        model,
        forget=(x[forget], y[forget]),
        reference=(x[ref], y[ref]),
        retain=(x[retain], y[retain]),
        config=settings,
        oracle=oracle,
    )
    unlearn_seconds = time.perf_counter() - start
    before = oracle.decide(model, x[forget], y[forget])
    after = oracle.decide(result.model, x[forget], y[forget])

    def test_auc(m: torch.nn.Module) -> float:
        return forsaken.auc(oracle.scores(m, x[forget], y[forget]), oracle.scores(m, xt[:500], yt[:500]))

    out: dict[str, Any] = {
        "dataset": dataset,
        "model": model_name,
        "members": members,
        "oracle": oracle_kind,
        "target": target,
        "seed": seed,
        "num_forget": num_forget,
        "members_before": float(before.mean()),
        "members_after": float(after.mean()),
        "fr": forsaken.forgetting_rate(before, after),
        "acc_before": evaluate(model, xt, yt).accuracy,
        "acc_after": evaluate(result.model, xt, yt).accuracy,
        "test_auc_before": test_auc(model),
        "test_auc_after": test_auc(result.model),
        "stopped_because": result.stopped_because,
        "steps": result.steps,
        "touched_fraction": result.touched_fraction,
        "unlearn_seconds": unlearn_seconds,
        "train_seconds": train_seconds,
    }
    if retrain:
        again = build_model(model_name, data.info, seed=seed + 1)
        start = time.perf_counter()
        train(again, x[retain], y[retain], seed=seed + 1, **recipe)
        out["retrain_seconds"] = time.perf_counter() - start
        out["retrain_acc"] = evaluate(again, xt, yt).accuracy
        out["retrain_fr"] = forsaken.forgetting_rate(before, oracle.decide(again, x[forget], y[forget]))
        out["retrain_test_auc"] = test_auc(again)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="location")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--reference", type=int, default=250)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--oracle", default="loss", choices=("loss", "shokri", "lira"))
    parser.add_argument("--target", default="fr", choices=forsaken.TARGETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (timings used 1)")
    parser.add_argument("--no-retrain", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = run(
        args.dataset,
        args.model,
        args.members,
        args.reference,
        args.epochs,
        args.oracle,
        args.target,
        args.seed,
        retrain=not args.no_retrain,
    )
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
