"""Compare ForsakenConfig variants on a panel of the benchmark's cases, over several Forsaken seeds.

    python -m simulations.forsaken_panel --variant default --variant focus=1 --variant inner_updates=2
    python -m simulations.forsaken_panel --cases digits/iid letter/iid --seeds 3 \
        --variant default --variant escalation=0.1,patience=4

Forsaken's outcome is chaotic in its input (``docs/forsaken.md``, Determinism): one run of one case says
little about a hyper-parameter. The panel runs every variant on the same cases with several Forsaken
seeds and reports the means. Each case is one of ``simulations.forsaken_benchmark``'s (the same
federation, oracle, withdrawal of 5 % of client 0's samples and federated unlearning rounds, through
:func:`simulations.forsaken_benchmark.unlearn_like_the_federation`); its original model and oracle are
trained once and cached in ``--cache`` (default ``runs/forsaken-panel-cache``; delete it after a change
to training or to the oracle). Seed 0 is the benchmark's own Forsaken seed; seed ``s > 0`` is
``1000 + s``.

A variant is ``default`` or comma-separated ``KEY=VALUE`` ForsakenConfig fields (typed and checked as
``forsaken_benchmark --forsaken``). Writes ``--out`` (JSON: every run) and a markdown table next to it
(per variant: mean FR, mean accuracy loss, total Forsaken seconds; per case: FR by seed). ``--jobs N``
runs N cases at a time (one process each, one torch thread).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import multiprocessing
import pickle
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulations import forsaken_benchmark as bench

PANEL = (
    "letter/iid",
    "letter/dirichlet",
    "adult/iid",
    "adult/dirichlet",
    "adult/iid/logreg",
    "digits/iid",
    "digits/dirichlet",
    "mnist/dirichlet",
    "fashion-mnist/iid",
)
"""The default cases: ``dataset/partitioning[/model]`` (model ``auto`` when left out)."""
SEED_OFFSET = 1000
FRACTION = bench.DEFAULT_FRACTION


def parse_case(text: str) -> bench.Group:
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or parts[0] not in bench.DATASETS or parts[1] not in bench.PARTITIONINGS:
        raise ValueError(
            f"case {text!r}: expected DATASET/PARTITIONING[/MODEL] with DATASET in "
            f"{', '.join(bench.DATASETS)} and PARTITIONING in {', '.join(bench.PARTITIONINGS)}"
        )
    return bench.Group(parts[0], parts[1], parts[2] if len(parts) == 3 else "auto", (FRACTION,))


def parse_variant(text: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``"default"`` -> ``{}``; ``"focus=1,patience=3"`` -> ``{"focus": 1.0, "patience": 3}``."""
    if text.strip() == "default":
        return {}
    return bench.forsaken_overrides([p for p in text.split(",") if p.strip()], parser)


def variant_name(overrides: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"


def _trained(group: bench.Group, args: argparse.Namespace) -> tuple[Any, dict[str, Any], Any]:
    """The case's run config, original model state + test accuracy, and oracle (cached)."""
    from fedforget import data
    from fedforget.federated import fedavg
    from fedforget.mia import oracle_from_state
    from fedforget.mia.recipe import oracle_model_factory

    config = bench.make_config(group, args)
    key = f"{group.dataset}-{group.partitioning}-{config.model}-{config.max_train_samples}"
    key += f"-s{config.seed}-r{config.num_rounds}x{config.local_epochs}-c{config.num_clients}"
    path = Path(args.cache) / f"{key}.pkl"
    if path.exists():
        blob = pickle.loads(path.read_bytes())
    else:
        original = fedavg(config)
        oracle, _ = bench.fit_server_oracle(config)
        blob = {"state": original.state_dict, "accuracy": original.test_accuracy, "oracle": oracle.to_state()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(blob))
        tmp.replace(path)  # a crash never leaves a half-written cache entry
    dataset = data.load(config)
    oracle = oracle_from_state(*blob["oracle"], oracle_model_factory(config, dataset))
    return config, blob, oracle


def run_case(
    index: int, group: bench.Group, args: argparse.Namespace, variants: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every variant x seed on one case (one process: the original model and oracle are loaded once)."""
    from fedforget.client_data import ClientData
    from fedforget.withdrawals import WithdrawalRequest, resolve_ids

    torch.set_num_threads(args.threads)
    bench.warm_up()
    config, blob, oracle = _trained(group, args)
    client = ClientData.for_partition(config, 0)
    server_round = config.num_rounds + 1
    request = WithdrawalRequest(server_round, 0, "samples", FRACTION)
    forget_ids = resolve_ids(request, client.train_ids, client.y_train, config.seed)
    base_seed = config.seed * 7_919 + server_round
    rows = []
    for overrides in variants:
        for seed in range(args.seeds):
            changes = dict(overrides)
            if seed:
                changes["seed"] = base_seed + SEED_OFFSET + seed
            model = bench.model_from_state(config, blob["state"])
            out = bench.unlearn_like_the_federation(
                config, model, oracle, client, forget_ids, server_round, changes
            )
            judged = bench.judge(oracle, out["model"], client, forget_ids, out["before"])
            accuracy = bench.test_accuracy(config, out["model"])
            rows.append(
                {
                    "case": f"{group.dataset}/{group.partitioning}/{config.model}",
                    "case-index": index,
                    "variant": variant_name(overrides),
                    "seed": seed,
                    "b-t": judged["fr"].b_t,
                    "fr": bench._nan_none(judged["fr"].fr),
                    "acc-loss": blob["accuracy"] - accuracy,
                    "seconds": out["seconds"],
                    "steps": sum(r["steps"] for r in out["rounds"]),
                    "stopped-because": [r["stopped-because"] for r in out["rounds"]],
                }
            )
    return rows


def summarise(rows: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    out = []
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        frs = [r["fr"] for r in mine if r["fr"] is not None]
        out.append(
            {
                "variant": name,
                "runs": len(mine),
                "fr-mean": float(np.mean(frs)) if frs else None,
                "acc-loss-mean": float(np.mean([r["acc-loss"] for r in mine])),
                "seconds-total": float(sum(r["seconds"] for r in mine)),
                "fr-at-least-0.9": sum(1 for f in frs if f >= bench.BAR_FR),
            }
        )
    return out


def markdown(rows: list[dict[str, Any]], summary: list[dict[str, Any]], seeds: int) -> str:
    lines = [
        "| variant | runs | mean FR | runs with FR >= 0.9 | mean acc loss | Forsaken seconds (total) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        fr = "n/a" if s["fr-mean"] is None else f"{s['fr-mean']:.3f}"
        lines.append(
            f"| {s['variant']} | {s['runs']} | {fr} | {s['fr-at-least-0.9']} | "
            f"{100 * s['acc-loss-mean']:+.2f} pt | {s['seconds-total']:.1f} |"
        )
    cases = list(dict.fromkeys(r["case"] for r in rows))
    lines += [
        "",
        "FR (accuracy loss in points) per case, seeds " + ", ".join(map(str, range(seeds))) + ":",
        "",
    ]
    lines.append("| case | " + " | ".join(s["variant"] for s in summary) + " |")
    lines.append("|---|" + "---|" * len(summary))
    for case in cases:
        cells = []
        for s in summary:
            mine = [r for r in rows if r["case"] == case and r["variant"] == s["variant"]]
            cells.append(
                " / ".join(
                    ("n/a" if r["fr"] is None else f"{r['fr']:.2f}") + f" ({100 * r['acc-loss']:+.1f})"
                    for r in sorted(mine, key=lambda r: r["seed"])
                )
            )
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", help="default, or KEY=VALUE[,KEY=VALUE...] (repeat)")
    parser.add_argument("--cases", nargs="+", default=list(PANEL), help="DATASET/PARTITIONING[/MODEL]")
    parser.add_argument(
        "--seeds", type=int, default=2, help="Forsaken seeds per variant and case (default 2)"
    )
    parser.add_argument("--out", type=Path, default=bench.PROJECT_ROOT / "results" / "forsaken_panel.json")
    parser.add_argument("--cache", type=Path, default=bench.PROJECT_ROOT / "runs" / "forsaken-panel-cache")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at a time (one process each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--rounds", dest="num_rounds", type=int, default=bench.NUM_ROUNDS)
    parser.add_argument("--local-epochs", type=int, default=bench.LOCAL_EPOCHS)
    parser.add_argument("--forsaken-steps", type=int)
    parser.add_argument("--unlearn-rounds", type=int)
    args = parser.parse_args(argv)
    args.variants = [parse_variant(v, parser) for v in (args.variant or ["default"])]
    names = [variant_name(v) for v in args.variants]
    if len(set(names)) != len(names):
        parser.error(f"--variant: the same variant twice ({', '.join(names)})")
    try:
        args.groups = [parse_case(c) for c in args.cases]
    except ValueError as error:
        parser.error(str(error))
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be >= 1")
    # what forsaken_benchmark.make_config reads
    args.num_clients, args.seed, args.max_train_samples = bench.NUM_CLIENTS, 0, None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m simulations.forsaken_panel " + " ".join(
        list(argv) if argv is not None else sys.argv[1:]
    )
    started = datetime.datetime.now().astimezone()
    torch.set_num_threads(args.threads)  # what machine() reports: the cases' setting
    origin, where = bench.provenance(), bench.machine()
    start = time.perf_counter()
    names = [variant_name(v) for v in args.variants]
    print(
        f"[forsaken-panel] {len(args.groups)} cases x {len(names)} variants x {args.seeds} seeds",
        file=sys.stderr,
    )
    context = multiprocessing.get_context("spawn")
    rows: list[dict[str, Any]] = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = {pool.submit(run_case, i, g, args, args.variants): g for i, g in enumerate(args.groups)}
        for future in concurrent.futures.as_completed(futures):
            group = futures[future]
            done = future.result()
            rows += done
            frs = ", ".join(f"{r['variant']}#{r['seed']}: {bench._fmt(r['fr'])}" for r in done)
            print(
                f"[forsaken-panel {time.perf_counter() - start:5.0f}s] "
                f"{group.dataset}/{group.partitioning}: {frs}",
                file=sys.stderr,
            )
    rows.sort(key=lambda r: (r["case-index"], names.index(r["variant"]), r["seed"]))
    summary = summarise(rows, names)
    table = markdown(rows, summary, args.seeds)
    total = time.perf_counter() - start
    doc = {
        "command": command,
        "date": started.isoformat(timespec="seconds"),
        "machine": where,
        "seconds-total": total,
        "provenance": origin,
        "seeds": args.seeds,
        "summary": summary,
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(bench._jsonable(doc), indent=1) + "\n")
    header = (
        f"`{command}`, {started:%Y-%m-%d %H:%M %Z}, {where}; commit {origin.get('commit', '?')}, "
        f"forsaken sources sha256 {origin['forsaken-sources-sha256']}; {total:.0f} s (wall).\n\n"
    )
    args.out.with_suffix(".md").write_text(header + table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
