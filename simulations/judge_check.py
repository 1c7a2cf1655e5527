"""Check a run's reported FR against a loss-threshold attack that no part of the product steers by.

Given a finished run record (``simulations.run`` with a withdrawal and ``retrain-reference = 1``),
this script rebuilds, outside the federation, the attack the issue calls the independent check:

* per-sample cross-entropy loss of the model on **every** client's retained training samples
  (members: what the model trained on, the withdrawn samples left out) and on the **test** split
  (non-members), at full precision (no histogram bins, no client subsampling);
* the decision threshold maximising Youden's J on those two sets
  (:func:`fedforget.mia.strength.youden_threshold` on ``-loss``), fitted on each model separately;
* the forget set judged on the model before unlearning (B_T / B_F), after it (A_F) and on the
  retrained model: ``FR = (A_F - B_F) / B_T``, and the forget-vs-test AUC.

It then puts these beside what the run reported: the judge's headline FR of the unlearning round, and
the retrained model's FR (``fr-retrain``), and says whether they are within ``--tolerance`` (0.2).
The judge runs from clients' score histograms; this check reads every sample, which only a
simulation can. Usage::

    python -m simulations.judge_check runs/<id> [--out results/judge_check.location]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedforget import data, models
from fedforget.client_data import ClientData
from fedforget.metrics import attack_auc, forgetting_rate_from_arrays
from fedforget.mia.strength import youden_threshold
from fedforget.records import RunRecord, is_unlearning_round

__all__ = ["check_run", "main"]


def _losses(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(y), 1024):
            xb = torch.as_tensor(np.array(x[start : start + 1024]))
            yb = torch.as_tensor(y[start : start + 1024]).long()
            out.append(torch.nn.functional.cross_entropy(model(xb), yb, reduction="none").double().numpy())
    return np.concatenate(out) if out else np.empty(0)


def _attack(
    model: torch.nn.Module, members: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> tuple[float, np.ndarray]:
    """``(threshold on -loss, test scores)``: Youden's J on members vs test samples of this model."""
    member_scores, test_scores = -_losses(model, *members), -_losses(model, *test)
    scores = np.concatenate([member_scores, test_scores])
    labels = np.concatenate([np.ones(len(member_scores), bool), np.zeros(len(test_scores), bool)])
    return youden_threshold(scores, labels), test_scores


def check_run(path: Path, *, tolerance: float = 0.2) -> dict[str, Any]:
    """The check for the run record at ``path`` (module docstring)."""
    record = RunRecord(path)
    config = record.config()
    dataset = data.load(config)
    withdrawals = record.read_json("withdrawals.json")["requests"]
    done = [w for w in withdrawals if w.get("receipt")]
    if not done:
        raise SystemExit(f"error: {path} has no unlearned withdrawal")
    first_round = min(int(w["receipt"]["round"]) for w in done)
    requests = [w for w in done if int(w["receipt"]["round"]) == first_round]
    forget = {int(w["client"]): np.asarray(w["global-ids"], dtype=np.int64) for w in requests}
    ids = np.concatenate(list(forget.values()))
    x_forget, y_forget = dataset.x_train[ids], dataset.y_train[ids]
    retained = []
    for pid in range(config.num_clients):
        client = ClientData.for_partition(config, pid)
        keep = np.setdiff1d(client.train_ids, np.concatenate([np.asarray(w["global-ids"]) for w in done]))
        retained.append(keep)
    members_ids = np.concatenate(retained)
    members = (dataset.x_train[members_ids], dataset.y_train[members_ids])
    test = (dataset.x_test, dataset.y_test)
    checkpoints = record.named_checkpoints()
    names = {
        "before": f"unlearning-{first_round}-before",
        "after": f"unlearning-{first_round}-after",
        "retrained": f"retrain-reference-{first_round}",
    }
    missing = [n for n in names.values() if n not in checkpoints]
    if missing:
        raise SystemExit(f"error: {path} lacks checkpoints {missing} (run with retrain-reference=1)")
    decided: dict[str, np.ndarray] = {}
    aucs: dict[str, float] = {}
    thresholds: dict[str, float] = {}
    for label, name in names.items():
        model = models.build_model(config.model, dataset.info)
        model.load_state_dict(torch.load(checkpoints[name], weights_only=True))
        threshold, test_scores = _attack(model, members, test)
        forget_scores = -_losses(model, x_forget, y_forget)
        decided[label] = forget_scores >= threshold
        aucs[label] = attack_auc(forget_scores, test_scores)
        thresholds[label] = threshold
    fr_after = forgetting_rate_from_arrays(ids, decided["before"], decided["after"])
    fr_retrained = forgetting_rate_from_arrays(ids, decided["before"], decided["retrained"])
    rows = record.metrics()
    unlearned = [r for r in rows if is_unlearning_round(r) and r["round"] == first_round]
    reported = unlearned[-1] if unlearned else {}
    reference = next(
        (r for r in rows if r.get("event") == "retrain-reference" and r["round"] == first_round), {}
    )

    def gap(ours: float, theirs: Any) -> float | None:
        if theirs is None or not math.isfinite(ours):
            return None
        return abs(ours - float(theirs))

    out = {
        "run": str(path),
        "dataset": config.dataset,
        "model": config.model,
        "num-forget": len(ids),
        "independent": {
            "b-t": fr_after.b_t,
            "b-f": fr_after.b_f,
            "fr-unlearned": fr_after.fr,
            "fr-retrained": fr_retrained.fr,
            "auc-before": aucs["before"],
            "auc-unlearned": aucs["after"],
            "auc-retrained": aucs["retrained"],
            "members": len(members_ids),
            "non-members (test)": len(test[1]),
        },
        "reported": {
            "judge": reported.get("judge"),
            "b-t": reported.get("b-t"),
            "fr-unlearned": reported.get("fr"),
            "fr-status": reported.get("fr-status"),
            "fr-retrained": reference.get("fr-retrain"),
            "auc-unlearned": reported.get("attack-auc"),
            "auc-retrained": reference.get("attack-auc-retrain"),
        },
    }
    gaps = {
        "fr-unlearned": gap(fr_after.fr, reported.get("fr")),
        "fr-retrained": gap(fr_retrained.fr, reference.get("fr-retrain")),
    }
    out["gaps"] = gaps
    out["tolerance"] = tolerance
    out["within-tolerance"] = all(g is not None and g <= tolerance for g in gaps.values())
    return out


def _markdown(result: dict[str, Any], command: str) -> str:
    ind, rep = result["independent"], result["reported"]

    def f(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

    return "\n".join(
        [
            f"# Reported FR vs an independent loss-threshold attack: {result['dataset']} / {result['model']}",
            "",
            f"Command: `{command}` (run record `{result['run']}`).",
            "",
            "| | B_T (of " + str(result["num-forget"]) + ") | FR unlearned | FR retrained | AUC unlearned "
            "| AUC retrained |",
            "|---|---|---|---|---|---|",
            f"| reported by the run (judge: {rep['judge']}) | {rep['b-t']} | {f(rep['fr-unlearned'])} | "
            f"{f(rep['fr-retrained'])} | {f(rep['auc-unlearned'])} | {f(rep['auc-retrained'])} |",
            f"| independent loss threshold (all retained vs test) | {ind['b-t']} | "
            f"{f(ind['fr-unlearned'])} | "
            f"{f(ind['fr-retrained'])} | {f(ind['auc-unlearned'])} | {f(ind['auc-retrained'])} |",
            "",
            f"Gaps: FR unlearned {f(result['gaps']['fr-unlearned'])}, FR retrained "
            f"{f(result['gaps']['fr-retrained'])}; within {result['tolerance']}: "
            f"**{'yes' if result['within-tolerance'] else 'no'}**. The AUCs are not the same quantity "
            "(reported: forget vs the owners' held-out samples; independent: forget vs the test split).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.judge_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", type=Path, help="a finished run record with retrain-reference=1")
    parser.add_argument("--tolerance", type=float, default=0.2)
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if not (args.run_dir / "config.json").exists():
        print(f"error: {args.run_dir} is not a run record (no config.json)", file=sys.stderr)
        return 2
    result = check_run(args.run_dir, tolerance=args.tolerance)
    command = "python -m simulations.judge_check " + " ".join(argv if argv is not None else sys.argv[1:])
    text = _markdown(result, command)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        args.out.with_suffix(".md").write_text(text)
    return 0 if result["within-tolerance"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
