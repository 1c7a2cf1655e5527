"""Plots of a run record: test accuracy and forgetting rate, step by step (PNG, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedforget.records import RunRecord, is_unlearning_round


def _steps(rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(label, row) for the init row, every training round and every unlearning round, in order."""
    out = []
    for row in rows:
        if row.get("phase") == "init":
            out.append(("0", row))
        elif row.get("phase") == "train":
            out.append((str(row["round"]), row))
        elif is_unlearning_round(row):
            out.append((f"U{row['round']}.{row['unlearn-round']}", row))
    return out


def plot_run(record: RunRecord, path: Path | None = None) -> Path:
    """Save ``summary.png`` in the record: test accuracy (and forget accuracy), and the judge's FR and
    forget-vs-never-seen AUC (the legend names the judge's headline attack; FR is a gap where it was not
    measurable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = _steps(record.metrics())
    labels = [label for label, _ in steps]
    xs = list(range(len(steps)))

    def series(key: str) -> list[float]:
        values = []
        for _, row in steps:
            value = row.get(key)
            values.append(float("nan") if value is None else float(value))
        return values

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    top.plot(xs, series("test-accuracy"), marker="o", label="test accuracy")
    top.plot(xs, series("forget-accuracy"), marker="s", label="forget-set accuracy")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1.02)
    top.legend(loc="lower right")
    top.grid(alpha=0.3)
    judge = next((r["judge"] for _, r in steps if r.get("judge")), "judge")
    bottom.plot(xs, series("fr"), marker="o", color="tab:red", label=f"FR (judge: {judge})")
    bottom.plot(
        xs,
        series("attack-auc"),
        marker="^",
        color="tab:purple",
        label=f"forget vs never-seen AUC (judge: {judge})",
    )
    bottom.axhline(0.5, color="gray", linestyle=":", linewidth=1)
    labelled: set[str] = set()
    for row in record.metrics():  # the retrain reference (retrain-reference = 1): where retraining lands
        if row.get("event") != "retrain-reference":
            continue
        at = [
            x
            for x, (label, r) in zip(xs, steps, strict=True)
            if label.startswith("U") and r.get("round") == row["round"]
        ]
        lines = (("fr-retrain", "tab:red", "FR"), ("attack-auc-retrain", "tab:purple", "AUC"))
        for key, color, what in lines:
            if at and row.get(key) is not None:
                bottom.plot(
                    [min(at) - 0.4, max(at) + 0.4],
                    [row[key]] * 2,
                    color=color,
                    linestyle="--",
                    linewidth=1.5,
                    label=None if what in labelled else f"{what} of a model retrained without the data",
                )
                labelled.add(what)
    bottom.set_ylabel("FR / AUC")
    bottom.set_ylim(min(-0.05, *[v for v in series("fr") if v == v] or [0.0]), 1.05)
    bottom.legend(loc="lower left", fontsize=8)
    bottom.grid(alpha=0.3)
    for axis in (top, bottom):
        for x, (label, _) in zip(xs, steps, strict=True):
            if label.startswith("U"):
                axis.axvspan(x - 0.5, x + 0.5, color="tab:orange", alpha=0.12, linewidth=0)
    bottom.set_xticks(xs, labels, rotation=45 if len(xs) > 12 else 0)
    bottom.set_xlabel("round (U<r>.<k> = unlearning round k before training round r; shaded)")
    config = record.config()
    top.set_title(f"{config.dataset} / {config.model} / {config.num_clients} clients: {record.path.name}")
    fig.tight_layout()
    target = path or record.path / "summary.png"
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target
