"""How strong are the membership oracles? Members vs non-members of an overfitted, centrally trained target.

    python -m simulations.attack_strength                       # digits mnist location letter
    python -m simulations.attack_strength --datasets location --quick
    python -m simulations.attack_strength --out results/attack_strength.json --png docs/attack_strength.png

For each dataset: draw disjoint random sets of members, non-members and auxiliary data (sizes in
:data:`SETUPS`); train the target (the dataset's ``auto`` model) on the members; train
``--num-shadows`` shadow models with the same architecture and recipe on random halves of the
auxiliary data (so a shadow sees as many samples as the target); fit the oracles ``shokri``
(global), ``shokri`` (per-class) and ``lira`` from the *same* shadows; report each oracle's AUC,
TPR at 1% and 0.1% FPR and balanced accuracy at its threshold, members vs non-members.

Writes the JSON (``--out``), a markdown table next to it (same name, ``.md``) and printed, and the
ROC curves of the first seed with log-scale FPR (``--png``); the JSON keeps each curve as its TPR
at 31 log-spaced FPRs (``fpr_grid``, ``tpr_at_fpr_grid``). ``--quick`` shrinks every set and the
epochs (a smoke run; its numbers are not the documented ones). ``--threads`` defaults to 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedforget.data import load_dataset
from fedforget.mia import fit_oracle
from fedforget.mia.shadow import build_seeded, train_shadows
from fedforget.mia.strength import strength_from_scores, tpr_at_fpr
from fedforget.models import build_model, resolve_model_name
from fedforget.training import evaluate, train

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Setup:
    """Set sizes and training recipe of one dataset's experiment."""

    members: int
    nonmembers: int
    aux: int
    epochs: int
    learning_rate: float = 0.05
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 0.0
    use_test_split: bool = False
    """Draw from train + test (digits: 1,438 train samples are too few for three disjoint sets)."""

    def quick(self) -> Setup:
        return dataclasses.replace(
            self,
            members=min(self.members, 300),
            nonmembers=min(self.nonmembers, 300),
            aux=min(self.aux, 600),
            epochs=max(5, self.epochs // 3),
        )


SETUPS: dict[str, Setup] = {
    "digits": Setup(members=450, nonmembers=450, aux=897, epochs=30, use_test_split=True),
    "mnist": Setup(members=2000, nonmembers=2000, aux=4000, epochs=20, learning_rate=0.02),
    "location": Setup(members=1000, nonmembers=1000, aux=2000, epochs=30),
    "letter": Setup(members=2000, nonmembers=2000, aux=4000, epochs=60),
}
FPR_GRID = [float(f) for f in np.round(np.logspace(-3, 0, 31), 6)]
"""The JSON keeps each ROC curve as its TPR at these FPRs (log-spaced, 0.1% .. 100%)."""
ORACLES: tuple[tuple[str, str, str | None], ...] = (
    ("shokri-global", "shokri", "global"),
    ("shokri-per-class", "shokri", "per-class"),
    ("lira", "lira", None),
)


def run_dataset(
    name: str, setup: Setup, num_shadows: int, seed: int, progress: bool
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The experiment on one dataset: its JSON record and the full ROC curves per oracle."""
    start = time.perf_counter()
    dataset = load_dataset(name)
    x, y = dataset.x_train, dataset.y_train
    if setup.use_test_split:
        x, y = np.concatenate([x, dataset.x_test]), np.concatenate([y, dataset.y_test])
    need = setup.members + setup.nonmembers + setup.aux
    if need > len(y):
        raise SystemExit(f"{name}: needs {need} samples, has {len(y)}")
    order = np.random.default_rng([seed, 5]).permutation(len(y))
    members = order[: setup.members]
    nonmembers = order[setup.members : setup.members + setup.nonmembers]
    aux = order[setup.members + setup.nonmembers : need]
    model_name = resolve_model_name("auto", dataset.info)

    def factory() -> torch.nn.Module:
        return build_model(model_name, dataset.info)

    recipe = {
        "epochs": setup.epochs,
        "learning_rate": setup.learning_rate,
        "batch_size": setup.batch_size,
        "momentum": setup.momentum,
        "weight_decay": setup.weight_decay,
    }
    target = build_seeded(factory, seed + 1000)
    train(target, x[members], y[members], seed=seed + 1000, **recipe)
    target_seconds = time.perf_counter() - start
    shadow_start = time.perf_counter()
    shadows = train_shadows(
        factory, x[aux], y[aux], num_shadows=num_shadows, seed=seed, progress=progress, **recipe
    )
    shadow_seconds = time.perf_counter() - shadow_start
    record: dict[str, Any] = {
        "dataset": name,
        "seed": seed,
        "model": model_name,
        "num_members": len(members),
        "num_nonmembers": len(nonmembers),
        "num_aux": len(aux),
        "num_shadows": num_shadows,
        "recipe": recipe,
        "target_train_accuracy": evaluate(target, x[members], y[members]).accuracy,
        "target_nonmember_accuracy": evaluate(target, x[nonmembers], y[nonmembers]).accuracy,
        "shadow_train_accuracy": float(
            np.mean([evaluate(s.model, x[aux][s.in_mask], y[aux][s.in_mask]).accuracy for s in shadows])
        ),
        "shadow_out_accuracy": float(
            np.mean([evaluate(s.model, x[aux][~s.in_mask], y[aux][~s.in_mask]).accuracy for s in shadows])
        ),
        "fpr_grid": FPR_GRID,
        "oracles": {},
        "seconds": {"target": target_seconds, "shadows": shadow_seconds},
    }
    curves: dict[str, dict[str, np.ndarray]] = {}
    for label, kind, mode in ORACLES:
        oracle_start = time.perf_counter()
        oracle = fit_oracle(kind, factory, x[aux], y[aux], mode=mode, seed=seed, shadows=shadows)
        pos = oracle.scores(target, x[members], y[members])
        neg = oracle.scores(target, x[nonmembers], y[nonmembers])
        result = strength_from_scores(pos, neg, oracle.threshold, name=label, with_roc=True)
        roc = result.pop("roc")
        result["tpr_at_fpr_grid"] = [tpr_at_fpr(roc["fpr"], roc["tpr"], a) for a in FPR_GRID]
        record["oracles"][label] = result
        curves[label] = roc
        record["seconds"][label] = time.perf_counter() - oracle_start
    record["seconds"]["total"] = time.perf_counter() - start
    return record, curves


METRICS = ("auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "balanced_accuracy")


def summarise(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean (and standard deviation over seeds) of every metric, per dataset and oracle."""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in records):
        runs = [r for r in records if r["dataset"] == name]
        first = runs[0]
        row: dict[str, Any] = {
            "dataset": name,
            "model": first["model"],
            "seeds": [r["seed"] for r in runs],
            "num_members": first["num_members"],
            "num_nonmembers": first["num_nonmembers"],
            "num_aux": first["num_aux"],
            "target_train_accuracy": float(np.mean([r["target_train_accuracy"] for r in runs])),
            "target_nonmember_accuracy": float(np.mean([r["target_nonmember_accuracy"] for r in runs])),
            "oracles": {},
        }
        for label in first["oracles"]:
            values = {m: [r["oracles"][label][m] for r in runs] for m in METRICS}
            row["oracles"][label] = {
                **{m: float(np.mean(v)) for m, v in values.items()},
                **{f"{m}_sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()},
                "tpr_at_0.1pct_fpr_resolved": first["oracles"][label]["tpr_at_0.1pct_fpr_resolved"],
            }
        out.append(row)
    return out


def markdown_table(summary: Sequence[dict[str, Any]]) -> str:
    """One row per (dataset, oracle); ``mean ± sd`` over the seeds when there are several."""
    lines = [
        "| dataset (model) | target train / non-member acc | members / non-members / aux | oracle "
        "| AUC | TPR @ 1% FPR | TPR @ 0.1% FPR | bal. acc @ threshold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        several = len(row["seeds"]) > 1
        head = (
            f"{row['dataset']} ({row['model']}) | {row['target_train_accuracy']:.3f} / "
            f"{row['target_nonmember_accuracy']:.3f} | {row['num_members']} / {row['num_nonmembers']} / "
            f"{row['num_aux']}"
        )
        for label, res in row["oracles"].items():

            def cell(metric: str, res: dict[str, Any] = res, several: bool = several) -> str:
                text = f"{res[metric]:.3f}"
                return f"{text} ± {res[metric + '_sd']:.3f}" if several else text

            star = "" if res["tpr_at_0.1pct_fpr_resolved"] else "*"
            lines.append(
                f"| {head} | {label} | {cell('auc')} | {cell('tpr_at_1pct_fpr')} | "
                f"{cell('tpr_at_0.1pct_fpr')}{star} | {cell('balanced_accuracy')} |"
            )
    lines.append("")
    if any(not r["tpr_at_0.1pct_fpr_resolved"] for row in summary for r in row["oracles"].values()):
        lines.append(
            "\\* fewer than 1,000 non-members: TPR at 0.1% FPR is interpolated below the first "
            "non-member (see `fedforget/mia/strength.py`)."
        )
    return "\n".join(lines)


def plot_roc(
    records: Sequence[dict[str, Any]], curves: Sequence[dict[str, dict[str, np.ndarray]]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(records), figsize=(3.2 * len(records), 3.2), squeeze=False)
    for ax, rec, roc in zip(axes[0], records, curves, strict=True):
        floor = 1.0 / rec["num_nonmembers"]
        for label, res in rec["oracles"].items():
            fpr = np.maximum(roc[label]["fpr"], floor / 2)
            ax.plot(fpr, roc[label]["tpr"], label=f"{label} ({res['auc']:.2f})", lw=1.2)
        grid = np.logspace(np.log10(floor / 2), 0, 50)
        ax.plot(grid, grid, "k:", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(floor / 2, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{rec['dataset']} ({rec['model']})", fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower right")
    axes[0][0].set_ylabel("true positive rate", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--quick", action="store_true", help="small sets and few epochs (smoke run)")
    parser.add_argument("--num-shadows", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="repeat with these seeds")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "attack_strength.json")
    parser.add_argument("--png", type=Path, default=PROJECT_ROOT / "docs" / "attack_strength.png")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: as fast for these small models, and robust on a shared "
        "machine; 0 = torch's default)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    records, curves = [], []
    for seed in args.seeds:
        for name in args.datasets:
            setup = SETUPS[name].quick() if args.quick else SETUPS[name]
            print(f"[attack-strength] {name} seed {seed}: {setup}", file=sys.stderr, flush=True)
            record, roc = run_dataset(name, setup, args.num_shadows, seed, progress=sys.stderr.isatty())
            print(
                f"[attack-strength] {name} seed {seed}: done in {record['seconds']['total']:.1f}s "
                + " ".join(f"{k}={v['auc']:.3f}" for k, v in record["oracles"].items()),
                file=sys.stderr,
                flush=True,
            )
            records.append(record)
            curves.append(roc)
    total = time.perf_counter() - start
    summary = summarise(records)

    table = markdown_table(summary)
    command = "python -m simulations.attack_strength " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = {
        "command": command.strip(),
        "quick": args.quick,
        "seeds": args.seeds,
        "seconds_total": total,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.system()}, python {platform.python_version()}",
        "summary": summary,
        "runs": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(f"`{command.strip()}` ({total:.0f} s)\n\n{table}\n")
    first = [i for i, r in enumerate(records) if r["seed"] == args.seeds[0]]
    plot_roc([records[i] for i in first], [curves[i] for i in first], args.png)
    print(table)
    print(f"\n[attack-strength] {total:.1f}s; wrote {args.out}, {args.out.with_suffix('.md')}, {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
