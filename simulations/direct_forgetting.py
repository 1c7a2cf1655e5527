"""Direct forgetting by fine-tuning every parameter: a reference point for Forsaken, not a method.

    python -m simulations.direct_forgetting                        # the tuning panel's 9 cases
    python -m simulations.direct_forgetting --cases adult/iid/svm letter/iid --fraction 0.1

For each case of ``simulations.forsaken_panel`` (the benchmark's federation, oracle and withdrawal of
``--fraction`` of client 0's samples, default 5 %; originals and oracles from the panel's cache), every
parameter of the original model is fine-tuned with full-batch Adam (learning rate ``--lr``) on

    L(w) = CE( f_w(x), y ) over all of client 0's retained samples
           + lambda * mean_{i in B_T} CE( f_w(x_i), uniform )

where ``B_T`` are the forget samples the oracle judges members on the original model: the CE to the
uniform vector pushes them towards "never seen", the retained cross-entropy wins the accuracy back.
Every ``--eval-every`` epochs the oracle judges the forget set (FR against the original decisions) and
the model's test accuracy is measured. Reported per case: the highest FR whose test-accuracy loss is at
most 3 and at most 5 points, and at which epoch.

The epoch is chosen **with the test set**, and the fine-tuning sees all of the client's retained data
and every parameter, which no unlearning method here may do. So the numbers say what this direct kind
of change buys on a case, optimistically; they are not a result to rank methods by, nor a bound (on
Dirichlet clients the retained cross-entropy fits the client's own label distribution, and there
Forsaken does better). Where they stay far below FR 0.9 on a linear model, the model class itself
cannot single out its forget samples without moving their neighbours. Writes ``--out`` (JSON) and a
markdown table next to it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulations import forsaken_benchmark as bench
from simulations import forsaken_panel as panel

BUDGETS = (0.03, 0.05)
"""Test-accuracy losses (fractions) at which the best FR is reported."""


def fine_tune(group: bench.Group, args: argparse.Namespace) -> dict[str, Any]:
    """The fine-tuning path of one case (module docstring) and its best FR within each budget."""
    from fedforget.client_data import ClientData
    from fedforget.metrics import forgetting_rate_from_arrays
    from fedforget.models import criterion_for
    from fedforget.withdrawals import WithdrawalRequest, resolve_ids

    torch.manual_seed(0)
    config, blob, oracle = panel._trained(group, args)
    model = bench.model_from_state(config, blob["state"])
    client = ClientData.for_partition(config, 0)
    server_round = config.num_rounds + 1
    request = WithdrawalRequest(server_round, 0, "samples", args.fraction)
    forget_ids = resolve_ids(request, client.train_ids, client.y_train, config.seed)
    _, x_forget, y_forget = client.subset(forget_ids)
    retained = client.without(forget_ids)
    before = oracle.decide(model, x_forget, y_forget)
    x_keep, y_keep = torch.as_tensor(retained.x_train), torch.as_tensor(retained.y_train)
    x_members = torch.as_tensor(x_forget[before])
    criterion = criterion_for(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    path: list[dict[str, float]] = []
    for epoch in range(args.epochs + 1):
        if epoch % args.eval_every == 0:
            model.eval()
            after = oracle.decide(model, x_forget, y_forget)
            fr = forgetting_rate_from_arrays(forget_ids, before, after).fr
            loss = blob["accuracy"] - bench.test_accuracy(config, model)
            path.append({"epoch": epoch, "fr": float(fr), "acc-loss": float(loss)})
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
        within = [p for p in path if p["acc-loss"] <= budget and np.isfinite(p["fr"])]
        top = max(within, key=lambda p: (p["fr"], -p["epoch"])) if within else None
        best[f"{budget:g}"] = top
    return {
        "case": f"{group.dataset}/{group.partitioning}/{config.model}/{args.fraction:g}",
        "b-t": int(before.sum()),
        "num-forget": len(forget_ids),
        "num-retained": len(y_keep),
        "best": best,
        "path": path,
        "seconds": time.perf_counter() - start,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    head = " | ".join(f"best FR, loss <= {100 * b:g} pt (epoch)" for b in BUDGETS)
    lines = [f"| case | B_T | retained samples | {head} |", "|---|---:|---:|" + "---:|" * len(BUDGETS)]
    for row in rows:
        cells = []
        for budget in BUDGETS:
            top = row["best"][f"{budget:g}"]
            cells.append(
                "n/a" if top is None else f"{top['fr']:.2f} ({100 * top['acc-loss']:+.1f} pt, {top['epoch']})"
            )
        lines.append(f"| {row['case']} | {row['b-t']} | {row['num-retained']} | " + " | ".join(cells) + " |")
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
    parser.add_argument("--rounds", dest="num_rounds", type=int, default=bench.NUM_ROUNDS)
    parser.add_argument("--local-epochs", type=int, default=bench.LOCAL_EPOCHS)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.eval_every < 1 or args.lr <= 0 or args.forget_weight < 0:
        parser.error("--epochs and --eval-every must be >= 1, --lr > 0, --forget-weight >= 0")
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")
    try:
        args.groups = [panel.parse_case(text) for text in args.cases]
    except ValueError as error:
        parser.error(str(error))
    # what forsaken_benchmark.make_config reads (the panel's federation, so its cache is shared)
    args.num_clients, args.seed, args.max_train_samples = bench.NUM_CLIENTS, 0, None
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
            f"<= {100 * float(b):g} pt: " + ("n/a" if t is None else f"FR {t['fr']:.2f}")
            for b, t in row["best"].items()
        )
        print(f"[direct-forgetting] {row['case']}: {tops} ({row['seconds']:.1f}s)", flush=True)
    command = "python -m simulations.direct_forgetting " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = {
        "command": command.strip(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "provenance": bench.provenance(),
        "epochs": args.epochs,
        "lr": args.lr,
        "forget-weight": args.forget_weight,
        "seconds-total": time.perf_counter() - start,
        "cases": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    table = markdown(rows)
    out.with_suffix(".md").write_text(
        f"`{doc['command']}`, {doc['date']}, {doc['seconds-total']:.0f} s.\n\n{table}\n"
    )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
