"""Direct forgetting by fine-tuning every parameter: a reference point for Forsaken, not a method.

    python -m simulations.direct_forgetting                        # the tuning panel's cases
    python -m simulations.direct_forgetting --cases letter/iid adult/iid/svm --fraction 0.1

For each case of ``simulations.forsaken_panel`` (the benchmark's federation and withdrawal of
``--fraction`` of client 0's samples, default 5 %; the original model, the server's judge and the
retrained model from the panel's cache), every parameter of the original model is fine-tuned with
full-batch Adam (learning rate ``--lr``) on

    L(w) = CE( f_w(x), y ) over all of client 0's retained samples
           + lambda * mean_{i in B_T} CE( f_w(x_i), uniform )

where ``B_T`` are the forget samples **the device's steering oracle** judges members on the original
model (:func:`fedforget.steer.fit_steering_oracle` on client 0's retained and held-out samples, seeded
with :func:`fedforget.steer.steer_seed` as Forsaken's device is): the CE to the uniform vector pushes
them towards "never seen", the retained cross-entropy wins the accuracy back.

**The judge is never the steer.** Every ``--eval-every`` epochs the server's judge
(:mod:`simulations.withdrawal_judge`, as the benchmark judges: each model calibrated on every client's
retained and held-out samples) scores the forget set: per attack the FR = (A_F - B_F) / B_T against
the original model's decisions (*not measurable* where the attack is at chance) and the forget-vs-
never-seen AUC; the steering oracle's own FR (``steer-fr``) and the model's test accuracy are recorded
beside them. Reported per case: the highest FR of the judge's headline attack (loss) whose
test-accuracy loss is at most 3 and at most 5 points, with its AUC and epoch, beside the original and
retrained models' AUC; every attack's FR and AUC along the path are in the JSON.

The epoch is chosen **with the test set**, and the fine-tuning sees all of the client's retained data
and every parameter, which no unlearning method here may do. So the numbers say what this direct kind
of change buys on a case, optimistically; they are not a result to rank methods by, nor a bound (on
Dirichlet clients the retained cross-entropy fits the client's own label distribution). Writes
``--out`` (JSON) and a markdown table next to it.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from simulations import forsaken_benchmark as bench
from simulations import forsaken_panel as panel

BUDGETS = (0.03, 0.05)
"""Test-accuracy losses (fractions) at which the best FR is reported."""


def fine_tune(group: bench.Group, args: argparse.Namespace) -> dict[str, Any]:
    """The fine-tuning path of one case (module docstring) and its best judged FR within each budget."""
    from fedforget.client_data import ClientData
    from fedforget.metrics import forgetting_rate_from_arrays
    from fedforget.models import criterion_for
    from fedforget.steer import fit_steering_oracle, steer_seed

    torch.manual_seed(0)
    case = panel.trained(group, args)
    config, wj, forget_ids = case.config, case.judge, case.forget_ids
    model = copy.deepcopy(case.original)
    client = ClientData.for_partition(config, 0)
    server_round = config.num_rounds + 1
    _, x_forget, y_forget = client.subset(forget_ids)
    retained = client.without(forget_ids)
    steer = fit_steering_oracle(
        model,
        retained=(retained.x_train, retained.y_train),
        heldout=(client.x_holdout, client.y_holdout),
        seed=steer_seed(config.seed, server_round, client.partition_id),
    )
    steer_before = steer.decide(model, x_forget, y_forget)
    before = wj.look(case.original, withdrawn=False)
    on_retrain = wj.judged(before, wj.look(case.retrained))
    headline = wj.judge.names[0]
    x_keep, y_keep = torch.as_tensor(retained.x_train), torch.as_tensor(retained.y_train)
    x_members = torch.as_tensor(x_forget[steer_before])
    criterion = criterion_for(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    path: list[dict[str, Any]] = []
    for epoch in range(args.epochs + 1):
        if epoch % args.eval_every == 0:
            model.eval()
            judged = wj.judged(before, wj.look(model))
            steer_fr = forgetting_rate_from_arrays(
                forget_ids, steer_before, steer.decide(model, x_forget, y_forget)
            ).fr
            attacks = {a: _judgement(j) for a, j in judged.items()}
            path.append(
                {
                    "epoch": epoch,
                    "fr": attacks[headline]["fr"],
                    "auc": attacks[headline]["auc"],
                    "acc-loss": float(case.accuracy - bench.test_accuracy(config, model)),
                    "steer-fr": bench._nan_none(steer_fr),
                    "attacks": attacks,
                }
            )
        if epoch == args.epochs:
            break
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss_keep = criterion(model(x_keep), y_keep)
        loss_forget = (
            -torch.log_softmax(model(x_members), dim=1).mean(dim=1).mean()
            if len(x_members)
            else torch.zeros(())
        )
        (loss_keep + args.forget_weight * loss_forget).backward()
        optimizer.step()
    best: dict[str, Any] = {}
    for budget in BUDGETS:
        within = [p for p in path if p["acc-loss"] <= budget and p["fr"] is not None]
        top = max(within, key=lambda p: (p["fr"], -p["epoch"])) if within else None
        best[f"{budget:g}"] = None if top is None else {k: v for k, v in top.items() if k != "attacks"}
    retrain = _judgement(on_retrain[headline])
    return {
        "case": f"{group.dataset}/{group.partitioning}/{config.model}/{args.fraction:g}",
        "judge": headline,
        "steer-b-t": int(steer_before.sum()),
        "b-t": path[0]["attacks"][headline]["b-t"],
        "judge-auc": before.power[headline].auc,
        "judge-measurable": bool(before.power[headline].measurable),
        "auc-original": path[0]["attacks"][headline]["auc-before"],
        "fr-retrain": retrain["fr"],
        "auc-retrain": retrain["auc"],
        "retrain": {a: _judgement(j) for a, j in on_retrain.items()},
        "num-forget": len(forget_ids),
        "num-retained": len(y_keep),
        "best": best,
        "path": path,
        "seconds": time.perf_counter() - start,
    }


def _judgement(judged: Any) -> dict[str, Any]:
    """One attack's judgement, JSON-ready: ``fr`` (None when not measurable), ``auc`` (after),
    ``auc-before``, ``b-t``, ``status``."""
    d = judged.to_dict()
    return {
        "fr": d["fr"],
        "auc": d["auc-after"],
        "auc-before": d["auc-before"],
        "b-t": d["b-t"],
        "status": d["status"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    judge = rows[0]["judge"] if rows else "loss"
    head = " | ".join(f"best FR, loss <= {100 * b:g} pt (AUC, epoch)" for b in BUDGETS)
    lines = [
        f"Judged by the server's judge (headline attack {judge}; n/m: not measurable); B_T chosen by the "
        "device's steering oracle; the epoch chosen with the test set.",
        "",
        f"| case | steer B_T | judge B_T | judge AUC | retained samples | AUC original | {head} | retrain FR "
        "(AUC) |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(BUDGETS) + "---:|",
    ]
    for row in rows:
        cells = []
        for budget in BUDGETS:
            top = row["best"][f"{budget:g}"]
            cells.append(
                "n/m"
                if top is None
                else f"{top['fr']:.2f} ({100 * top['acc-loss']:+.1f} pt; {bench._fmt(top['auc'], 3)}, "
                f"{top['epoch']})"
            )
        retrain = "n/m" if row["fr-retrain"] is None else f"{row['fr-retrain']:.2f}"
        lines.append(
            f"| {row['case']} | {row['steer-b-t']} | {row['b-t']} | {bench._fmt(row['judge-auc'], 3)}"
            f"{'' if row['judge-measurable'] else ' (chance)'} | {row['num-retained']} "
            f"| {bench._fmt(row['auc-original'], 3)} | "
            + " | ".join(cells)
            + f" | {retrain} ({bench._fmt(row['auc-retrain'], 3)}) |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(panel.PANEL), help="DATASET/PARTITIONING[/MODEL]")
    parser.add_argument("--fraction", type=float, default=panel.FRACTION, help="withdrawn share of client 0")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--forget-weight", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=bench.PROJECT_ROOT / "results" / "direct_forgetting.json")
    parser.add_argument("--cache", type=Path, default=bench.PROJECT_ROOT / "runs" / "forsaken-panel-cache")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--rounds", dest="num_rounds", type=int, help="num-rounds (default: the benchmark's DATASET_SETTINGS)"
    )
    parser.add_argument("--local-epochs", type=int, help="local-epochs (default: DATASET_SETTINGS)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.eval_every < 1 or args.lr <= 0 or args.forget_weight < 0:
        parser.error("--epochs and --eval-every must be >= 1, --lr > 0, --forget-weight >= 0")
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")
    try:
        args.groups = [panel.parse_case(text, args.fraction) for text in args.cases]
    except ValueError as error:
        parser.error(str(error))
    # what forsaken_benchmark.make_config reads (the panel's federation, so its cache is shared)
    args.num_clients, args.max_train_samples = bench.NUM_CLIENTS, None
    args.forsaken_steps = args.unlearn_rounds = None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for group in args.groups:
        row = fine_tune(group, args)
        rows.append(row)
        tops = ", ".join(
            f"<= {100 * float(b):g} pt: "
            + ("n/m" if t is None else f"{row['judge']} FR {t['fr']:.2f} AUC {bench._fmt(t['auc'], 3)}")
            for b, t in row["best"].items()
        )
        print(f"[direct-forgetting] {row['case']}: {tops} ({row['seconds']:.1f}s)", flush=True)
    command = "python -m simulations.direct_forgetting " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = {
        "command": command.strip(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "provenance": bench.provenance(),
        "judge": "the server's judge (simulations/withdrawal_judge.py); B_T by the device's steering oracle",
        "epochs": args.epochs,
        "lr": args.lr,
        "forget-weight": args.forget_weight,
        "seconds-total": time.perf_counter() - start,
        "cases": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench._jsonable(doc), indent=2))
    table = markdown(rows)
    out.with_suffix(".md").write_text(
        f"`{doc['command']}`, {doc['date']}, {doc['seconds-total']:.0f} s.\n\n{table}\n"
    )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
