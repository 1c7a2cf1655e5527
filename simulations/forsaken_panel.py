"""Compare ForsakenConfig variants on a panel of the benchmark's cases, over several Forsaken seeds,
judged by the server's judge.

    python -m simulations.forsaken_panel --variant default --variant focus=1 --variant inner_updates=2
    python -m simulations.forsaken_panel --cases memorise/iid letter/iid --seeds 3 \
        --variant default --variant escalation=0.1,patience=4

Forsaken's outcome is chaotic in its input (``docs/forsaken.md``, Determinism): one run of one case says
little about a hyper-parameter. The panel runs every variant on the same cases with several Forsaken
seeds and reports the means. Each case is one of ``simulations.forsaken_benchmark``'s (the same
federation, :data:`~simulations.forsaken_benchmark.DATASET_SETTINGS`, withdrawal of 5 % of client 0's
samples after the last round, and federated unlearning rounds through
:func:`simulations.forsaken_benchmark.run_forsaken`, steered by the device's own oracle).

**Judged as the benchmark judges** (:mod:`simulations.withdrawal_judge`): the server's judge
(:func:`fedforget.judge.for_run.fit_run_judge`: loss (headline), shokri, lira; nothing Forsaken steers
by), each model calibrated on every client's retained and held-out samples; per attack the FR =
(A_F - B_F) / B_T against the original model's decisions (*not measurable* where the attack is at
chance), the forget-vs-never-seen AUC, and the verdict against the retrained model
(:func:`fedforget.judge.retrain_verdict`: ``retrain-equivalent``, ``under-forgetting``,
``over-forgetting``, ``not-measurable``).

Per case the original model, the fitted judge and the retrained model (FedAvg without the forget
samples, same seeds) are trained once and cached in ``--cache`` (default ``runs/forsaken-panel-cache``),
in a file named by the case, the training recipe and :data:`CACHE_FORMAT`; entries of an older format
(before the judge: an oracle in place of the judge, no retrained model) have other names and are
ignored, and a file of the right name but another format is refused with a one-line error. Delete the
folder after a change to training or to the judge's code. Seed 0 is the benchmark's own Forsaken seed;
seed ``s > 0`` is ``forsaken_seed + 1000 + s``.

A variant is ``default`` or comma-separated ``KEY=VALUE`` ForsakenConfig fields (typed and checked as
``forsaken_benchmark --forsaken``). Writes ``--out`` (JSON: every run, with every attack's FR, AUC and
verdict) and a markdown table next to it: per variant the headline attack's mean FR and AUC beside the
retrained model's, the verdict counts per attack, the mean accuracy loss and the total Forsaken
seconds; per case the headline FR / AUC by seed. ``--jobs N`` runs N cases at a time (one process
each, one torch thread).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import hashlib
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
    "memorise/iid",
    "memorise/dirichlet",
    "location/iid",
    "location/dirichlet",
    "letter/iid",
    "letter/dirichlet",
)
"""The default cases, ``dataset/partitioning[/model]`` (model ``auto`` when left out): the benchmark's
memorisation-regime datasets (:data:`simulations.forsaken_benchmark.MEMORISING`) but cifar10, in both
partitionings."""
SEED_OFFSET = 1000
FRACTION = bench.DEFAULT_FRACTION
CACHE_FORMAT = 2
"""Version of a cache entry: 2 = original state + judge state + retrained state (the server's judge);
1 (unversioned names) = original state + the old server oracle."""


UNLEARNING_KEYS = ("forsaken-steps", "unlearn-rounds", "retain-samples")


class CacheError(ValueError):
    """A cache entry this version cannot read (one line: what and what to do)."""


def parse_case(text: str, fraction: float = FRACTION) -> bench.Group:
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or parts[0] not in bench.DATASETS or parts[1] not in bench.PARTITIONINGS:
        raise ValueError(
            f"case {text!r}: expected DATASET/PARTITIONING[/MODEL] with DATASET in "
            f"{', '.join(bench.DATASETS)} and PARTITIONING in {', '.join(bench.PARTITIONINGS)}"
        )
    return bench.Group(parts[0], parts[1], parts[2] if len(parts) == 3 else "auto", (fraction,))


def parse_variant(text: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``"default"`` -> ``{}``; ``"focus=1,patience=3"`` -> ``{"focus": 1.0, "patience": 3}``."""
    if text.strip() == "default":
        return {}
    return bench.forsaken_overrides([p for p in text.split(",") if p.strip()], parser)


def cache_path(group: bench.Group, config: Any, cache: Path) -> Path:
    """``<cache>/<dataset>-<partitioning>-<model>-f<fraction>-s<seed>-<recipe hash>.v<CACHE_FORMAT>.pkl``;
    the hash (SHA-256, 12 hex digits) is over the case's training recipe
    (:func:`simulations.forsaken_benchmark.training_recipe`, judge attacks and shadows included; not
    the unlearning's settings, which the cached parts do not depend on)."""
    recipe = {k: v for k, v in bench.training_recipe(config).items() if k not in UNLEARNING_KEYS}
    recipe.update(model=config.model, alpha=config.alpha, partitioning=config.partitioning)
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    name = f"{group.dataset}-{group.partitioning}-{config.model}-f{group.fractions[0]:g}-s{config.seed}"
    return Path(cache) / f"{name}-{digest}.v{CACHE_FORMAT}.pkl"


@dataclasses.dataclass
class TrainedCase:
    """One case's fixed parts: its config, client 0's forget ids, the original and retrained models
    with their test accuracies, and the withdrawal's judge (with every client)."""

    config: Any
    forget_ids: np.ndarray
    original: torch.nn.Module
    accuracy: float
    retrained: torch.nn.Module
    retrain_accuracy: float
    judge: Any  # simulations.withdrawal_judge.WithdrawalJudge


def trained(group: bench.Group, args: argparse.Namespace) -> TrainedCase:
    """The case's fixed parts (:class:`TrainedCase`), from ``args.cache`` or trained and cached there."""
    from fedforget import data
    from fedforget.client_data import ClientData, split_for
    from fedforget.federated import fedavg
    from fedforget.judge import Judge
    from fedforget.mia.recipe import oracle_model_factory
    from fedforget.withdrawals import resolve_ids
    from simulations.withdrawal_judge import WithdrawalJudge

    config = bench.make_config(group, args)
    dataset = data.load(config)
    clients = [ClientData.for_partition(config, k) for k in range(config.num_clients)]
    request = bench.withdrawal(config, clients[0], "samples", group.fractions[0])
    forget_ids = resolve_ids(request, clients[0].train_ids, clients[0].y_train, config.seed)
    path = cache_path(group, config, args.cache)
    if path.exists():
        blob = pickle.loads(path.read_bytes())
        if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT:
            found = blob.get("format", 1) if isinstance(blob, dict) else "?"
            raise CacheError(
                f"cache entry {path} has format {found}, this version reads {CACHE_FORMAT}: delete it"
            )
        judge = Judge.from_state(*blob["judge"], oracle_model_factory(config, dataset))
        wj = WithdrawalJudge(judge, clients, {0: forget_ids}, config.seed)
    else:
        original = fedavg(config)
        wj = WithdrawalJudge.fit(config, dataset, split_for(config), clients, withdrawn={0: forget_ids})
        retrain = bench.run_retrain(config, forget_ids)
        blob = {
            "format": CACHE_FORMAT,
            "state": original.state_dict,
            "accuracy": original.test_accuracy,
            "judge": wj.judge.to_state(),
            "retrain-state": retrain["model"].state_dict(),
            "retrain-accuracy": retrain["test-accuracy"],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(blob))
        tmp.replace(path)  # a crash never leaves a half-written cache entry
    return TrainedCase(
        config=config,
        forget_ids=forget_ids,
        original=bench.model_from_state(config, blob["state"]),
        accuracy=float(blob["accuracy"]),
        retrained=bench.model_from_state(config, blob["retrain-state"]),
        retrain_accuracy=float(blob["retrain-accuracy"]),
        judge=wj,
    )


def run_case(
    index: int, group: bench.Group, args: argparse.Namespace, variants: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every variant x seed on one case (one process: the case's fixed parts are loaded once)."""
    from fedforget.client_data import ClientData
    from fedforget.forsaken.on_device import forsaken_seed
    from simulations.withdrawal_judge import judgement_fields

    torch.set_num_threads(args.threads)
    bench.warm_up()
    case = trained(group, args)
    config, wj = case.config, case.judge
    client = ClientData.for_partition(config, 0)
    base_seed = forsaken_seed(config.seed, config.num_rounds + 1)
    before = wj.look(case.original, withdrawn=False)
    on_retrain = wj.judged(before, wj.look(case.retrained))
    attacks = list(wj.judge.names)
    headline = attacks[0]
    retrain_fields = judgement_fields(on_retrain, arm="retrain")
    rows = []
    for overrides in variants:
        for seed in range(args.seeds):
            changes = dict(overrides)
            if seed:
                changes["seed"] = base_seed + SEED_OFFSET + seed
            out = bench.run_forsaken(config, case.original, client, case.forget_ids, changes)
            judged = wj.judged(before, wj.look(out["model"]))
            fields = judgement_fields(judged, arm="forsaken", retrained=on_retrain)
            accuracy = bench.test_accuracy(config, out["model"])
            rows.append(
                {
                    "case": f"{group.dataset}/{group.partitioning}/{config.model}",
                    "case-index": index,
                    "variant": bench.variant_name(overrides),
                    "seed": seed,
                    "judge": headline,
                    "attacks": attacks,
                    "num-forget": len(case.forget_ids),
                    "b-t": fields[f"b-t-{headline}"],
                    "fr": fields[f"fr-forsaken-{headline}"],
                    "auc": fields[f"auc-forsaken-{headline}"],
                    "fr-retrain": retrain_fields[f"fr-retrain-{headline}"],
                    "auc-retrain": retrain_fields[f"auc-retrain-{headline}"],
                    "auc-original": fields[f"auc-original-{headline}"],
                    "verdict": fields[f"verdict-forsaken-{headline}"],
                    **fields,
                    **retrain_fields,
                    "acc-original": case.accuracy,
                    "acc-forsaken": accuracy,
                    "acc-retrain": case.retrain_accuracy,
                    "acc-loss": case.accuracy - accuracy,
                    "seconds": out["seconds"],
                    "sample-passes": out["sample-passes"].total,
                    "steps": sum(r.get("steps", 0) for r in out["rounds"]),
                    "stopped-because": [r.get("stopped-because") for r in out["rounds"]],
                    "steer-target-met": out["steer-target-met"],
                }
            )
    return rows


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def summarise(rows: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    """Per variant: runs, the headline attack's mean FR (over measurable runs) and AUC beside the
    retrained model's, verdict counts per attack, mean accuracy loss, total Forsaken seconds."""
    out = []
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        attacks = list(dict.fromkeys(a for r in mine for a in r["attacks"]))
        frs = [r["fr"] for r in mine if r["fr"] is not None]
        out.append(
            {
                "variant": name,
                "runs": len(mine),
                "judge": mine[0]["judge"] if mine else None,
                "fr-measured-runs": len(frs),
                "fr-mean": _mean(frs),
                "fr-retrain-mean": _mean([r["fr-retrain"] for r in mine]),
                "auc-mean": _mean([r["auc"] for r in mine]),
                "auc-retrain-mean": _mean([r["auc-retrain"] for r in mine]),
                "auc-original-mean": _mean([r["auc-original"] for r in mine]),
                "verdicts": {
                    a: {
                        v: sum(1 for r in mine if r.get(f"verdict-forsaken-{a}") == v)
                        for v in bench.VERDICT_SHORT
                    }
                    for a in attacks
                },
                "acc-loss-mean": float(np.mean([r["acc-loss"] for r in mine])),
                "seconds-total": float(sum(r["seconds"] for r in mine)),
                "fr-at-least-0.9": sum(1 for f in frs if f >= bench.BAR_FR),
            }
        )
    return out


def markdown(rows: list[dict[str, Any]], summary: list[dict[str, Any]], seeds: int) -> str:
    judge = next((s["judge"] for s in summary if s["judge"]), "loss")
    lines = [
        f"Judged by the server's judge (headline attack: {judge}; FR over the runs where it is measurable, "
        "n/m = not measurable; AUC: forget set vs never-seen data; retrain: the retrained model, one per "
        "case).",
        "",
        f"| variant | runs | mean FR ({judge}) | measurable | FR >= 0.9 | mean FR retrain | mean AUC "
        "original | mean AUC | mean AUC retrain | mean acc loss | Forsaken seconds (total) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['variant']} | {s['runs']} | {bench._fmt(s['fr-mean'], 3)} | {s['fr-measured-runs']} "
            f"| {s['fr-at-least-0.9']} | {bench._fmt(s['fr-retrain-mean'], 3)} "
            f"| {bench._fmt(s['auc-original-mean'], 3)} | {bench._fmt(s['auc-mean'], 3)} "
            f"| {bench._fmt(s['auc-retrain-mean'], 3)} | {100 * s['acc-loss-mean']:+.2f} pt "
            f"| {s['seconds-total']:.1f} |"
        )
    lines += ["", "Verdicts against retraining, per attack:", ""]
    for s in summary:
        verdicts = "; ".join(
            f"{a}: " + ", ".join(f"{bench.VERDICT_SHORT[v]} {n}" for v, n in counts.items() if n)
            for a, counts in s["verdicts"].items()
        )
        lines.append(f"- **{s['variant']}**: {verdicts}")
    cases = list(dict.fromkeys(r["case"] for r in rows))
    lines += [
        "",
        f"FR / AUC ({judge}; accuracy loss in points) per case, seeds "
        + ", ".join(map(str, range(seeds)))
        + "; retrain: the retrained model's FR / AUC:",
        "",
    ]
    lines.append("| case | retrain | " + " | ".join(s["variant"] for s in summary) + " |")
    lines.append("|---|---|" + "---|" * len(summary))
    for case in cases:
        first = next(r for r in rows if r["case"] == case)
        cells = [f"{_fr(first['fr-retrain'])} / {bench._fmt(first['auc-retrain'], 3)}"]
        for s in summary:
            mine = [r for r in rows if r["case"] == case and r["variant"] == s["variant"]]
            cells.append(
                " ; ".join(
                    f"{_fr(r['fr'])} / {bench._fmt(r['auc'], 3)} ({100 * r['acc-loss']:+.1f})"
                    for r in sorted(mine, key=lambda r: r["seed"])
                )
            )
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fr(value: float | None) -> str:
    return "n/m" if value is None else f"{value:.2f}"


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
    parser.add_argument(
        "--rounds", dest="num_rounds", type=int, help="num-rounds (default: the benchmark's DATASET_SETTINGS)"
    )
    parser.add_argument("--local-epochs", type=int, help="local-epochs (default: DATASET_SETTINGS)")
    parser.add_argument("--forsaken-steps", type=int)
    parser.add_argument("--unlearn-rounds", type=int)
    parser.add_argument(
        "--target",
        choices=("fr", "retrain"),
        default="retrain",
        help="unlearn-target the device steers to (default retrain, as the benchmark)",
    )
    args = parser.parse_args(argv)
    args.variants = [parse_variant(v, parser) for v in (args.variant or ["default"])]
    names = [bench.variant_name(v) for v in args.variants]
    if len(set(names)) != len(names):
        parser.error(f"--variant: the same variant twice ({', '.join(names)})")
    try:
        args.groups = [parse_case(c) for c in args.cases]
    except ValueError as error:
        parser.error(str(error))
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be >= 1")
    # what forsaken_benchmark.make_config reads
    args.num_clients, args.max_train_samples = bench.NUM_CLIENTS, None
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
    names = [bench.variant_name(v) for v in args.variants]
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
            try:
                done = future.result()
            except CacheError as error:
                for other in futures:
                    other.cancel()
                print(f"forsaken_panel: error: {error}", file=sys.stderr)
                return 2
            rows += done
            frs = ", ".join(
                f"{r['variant']}#{r['seed']}: FR {_fr(r['fr'])} AUC {bench._fmt(r['auc'], 3)} "
                f"({r['verdict']})"
                for r in done
            )
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
        "judge": "the server's judge (simulations/withdrawal_judge.py)",
        "target": args.target,
        "seeds": args.seeds,
        "summary": summary,
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(bench._jsonable(doc), indent=1) + "\n")
    header = (
        f"`{command}`, {started:%Y-%m-%d %H:%M %Z}, {where}; commit {origin.get('commit', '?')}, "
        f"forsaken sources sha256 {origin['forsaken-sources-sha256']}; unlearn-target {args.target}; "
        f"{total:.0f} s (wall).\n\n"
    )
    args.out.with_suffix(".md").write_text(header + table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
