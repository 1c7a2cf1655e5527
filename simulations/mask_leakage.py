"""What an unlearning mask reveals: reconstruct withdrawn samples from the deltas devices send.

    python -m simulations.mask_leakage                # writes results/mask_leakage.{json,md}
    python -m simulations.mask_leakage --trials 3 --out /tmp/leak

A device answers ``train.unlearn`` with ``mask`` = ``w' - w`` (``clients/methods.py``). For a layer
``z = W x + b`` that sees the input ``x`` directly, every gradient step on one sample adds
``g_t x^T`` to ``W`` and ``g_t`` to ``b`` (``g_t`` = the loss gradient w.r.t. ``z``); summed over the
steps, ``delta W = (delta b) x^T``. So from a one-sample mask the server recovers ``x`` exactly, by
least squares over the rows:

    x_hat = delta_W^T delta_b / ||delta_b||^2            (first layer: logistic regression's only one)

and the label from the output layer's bias: gradient *ascent* on ``-log p_y`` lowers ``b_y`` and
raises the others, so ``y_hat = argmin delta_b_out``. With ``n`` samples the same formula gives a
weighted mixture of the ``n`` inputs. (Projections onto a norm ball and SGD momentum scale every
step's delta alike and leave the ratio exact; weight decay would not, and none is used here.)

The experiment, on scikit-learn's digits (bundled, no download), for each model (``logreg``,
``mlp``) and each client-side method (``forsaken``, ``gradient-ascent``, ``pga``):

1. a global model trained by FedAvg-free central SGD on the clients' training data (the attack
   needs a model, not a particular one), a device = client 0 of a 3-client iid split;
2. **by size** (``min-forget-samples = 1``, no floor): ``--trials`` withdrawals of ``n`` random
   training samples for ``n`` in ``--sizes``; the mask goes through the device's own
   :func:`clients.methods.compute_delta`; the attack's ``x_hat`` is compared with the closest of the
   ``n`` withdrawn samples (features are standardised, so errors are in standard deviations);
3. **by floor**: one-sample withdrawals under ``min-forget-samples`` in ``--floors`` (the device
   pads the mask's forget set with decoys); ``x_hat`` is compared with the one withdrawn sample.

Reported per row: max and mean over trials of the largest absolute feature error
(``max |x_hat - x|``), the mean relative error ``||x_hat - x|| / ||x||``, how often the label is
recovered, and how many masks were zero (the method stopped at once; nothing to attack).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord

from clients.context import ClientSetup
from clients.methods import CLIENT_METHODS, compute_delta, decoys
from fedforget import data, models, training
from fedforget.client_data import split_for
from fedforget.config import RunConfig
from fedforget.device import Device

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SIZES = (1, 2, 4, 8, 16)
FLOORS = (1, 2, 4, 8, 16)


def reconstruct(mask: dict[str, np.ndarray], names: Sequence[str]) -> tuple[np.ndarray | None, int | None]:
    """The attack: ``(x_hat, y_hat)`` from a mask (``None`` where the mask gives nothing).

    ``names``: the model's parameter names in order; the first weight/bias pair is the layer that
    sees the input, the last bias the output layer's.
    """
    weight, bias = names[0], names[1]
    d_w, d_b = np.asarray(mask[weight], dtype=np.float64), np.asarray(mask[bias], dtype=np.float64)
    d_w = d_w.reshape(d_w.shape[0], -1)
    norm = float(d_b @ d_b)
    x_hat = None if norm == 0.0 else (d_w.T @ d_b) / norm
    d_out = np.asarray(mask[names[-1]], dtype=np.float64)
    y_hat = None if not np.any(d_out) else int(np.argmin(d_out))
    return x_hat, y_hat


def _run_config(model: str, floor: int, seed: int) -> RunConfig:
    return RunConfig.from_mapping(
        {
            "dataset": "digits",
            "model": model,
            "num-clients": 3,
            "seed": seed,
            "num-shadows": 2,
            "shadow-epochs": 10,
            "forsaken-steps": 30,
            "ascent-steps": 50,
            "min-forget-samples": floor,
        }
    )


def _global_model(config: RunConfig, epochs: int) -> dict[str, torch.Tensor]:
    dataset = data.load(config)
    split = split_for(config)
    ids = np.concatenate([c.train_ids for c in split.clients])
    model = models.build_model(config.model, dataset.info, seed=config.seed)
    training.train(
        model,
        dataset.x_train[ids],
        dataset.y_train[ids],
        epochs=epochs,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        momentum=config.momentum,
        weight_decay=0.0,
        seed=config.seed,
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def one_mask(
    config: RunConfig,
    state: dict[str, torch.Tensor],
    method: str,
    ids: np.ndarray,
    store: Path,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The mask the device sends for withdrawing ``ids`` (a fresh store: nothing else withdrawn), and
    the ids of every sample it was computed from (``ids`` and the decoys the floor added)."""
    info = data.load(config).info
    device = Device.open(config, 0, store)
    stored = device.store.add("samples", ids, owned_ids=device.data.train_ids)
    model = models.build_model(config.model, info, seed=config.seed)
    model.load_state_dict(state)
    setup = ClientSetup(config, 0, device, model, server_round=2, info=info)
    _, x, y = device.forget_set([stored.request_id])
    message = ConfigRecord({"request-ids": [stored.request_id], "unlearn-method": method})
    mixed = np.concatenate([ids, decoys(setup, [stored.request_id], len(ids))])
    result = compute_delta(method, setup, message, (x, y))  # Forsaken steers by the device's own oracle
    return result.mask, mixed


def _errors(x_hat: np.ndarray | None, y_hat: int | None, xs: np.ndarray, ys: np.ndarray) -> dict[str, Any]:
    """Error of the attack against the closest of the withdrawn samples ``xs``."""
    if x_hat is None:
        return {"zero": True}
    gaps = np.abs(xs.astype(np.float64) - x_hat[None, :]).max(axis=1)
    k = int(np.argmin(gaps))
    rel = float(np.linalg.norm(x_hat - xs[k]) / max(np.linalg.norm(xs[k]), 1e-12))
    return {"zero": False, "max-error": float(gaps[k]), "rel-error": rel, "label-hit": y_hat == int(ys[k])}


def _summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    done = [t for t in trials if not t["zero"]]
    row: dict[str, Any] = {"trials": len(trials), "zero-masks": len(trials) - len(done)}
    if done:
        errors = [t["max-error"] for t in done]
        row.update(
            {
                "max-error-max": max(errors),
                "max-error-mean": float(np.mean(errors)),
                "max-error-min": min(errors),
                "rel-error-mean": float(np.mean([t["rel-error"] for t in done])),
                "label-recovered": float(np.mean([t["label-hit"] for t in done])),
                "any-max-error-mean": float(np.mean([t["any-max-error"] for t in done])),
                "any-max-error-min": float(min(t["any-max-error"] for t in done)),
            }
        )
    return row


def run(
    *,
    models_: Sequence[str],
    methods: Sequence[str],
    sizes: Sequence[int],
    floors: Sequence[int],
    trials: int,
    epochs: int,
    seed: int,
) -> dict[str, Any]:
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for model in models_:
            base = _run_config(model, 1, seed)
            state = _global_model(base, epochs)
            names = [n for n, _ in models.build_model(model, data.load(base).info).named_parameters()]
            pool = Device.open(base, 0, Path(tmp) / "probe.sqlite").data
            rng = np.random.default_rng([seed, 7])
            for method in methods:
                plan = [("size", n, 1) for n in sizes] + [("floor", 1, f) for f in floors if f > 1]
                for kind, n, floor in plan:
                    config = _run_config(model, floor, seed)
                    results = []
                    for t in range(trials):
                        ids = np.sort(rng.choice(pool.train_ids, size=n, replace=False))
                        store = Path(tmp) / f"{model}-{method}-{kind}-{n}-{floor}-{t}.sqlite"
                        mask, mixed = one_mask(config, state, method, ids, store)
                        x_hat, y_hat = reconstruct(mask, names)
                        _, xs, ys = pool.subset(ids)
                        _, x_mix, y_mix = pool.subset(np.sort(mixed))
                        any_sample = _errors(x_hat, y_hat, x_mix, y_mix)
                        results.append(
                            {
                                **_errors(x_hat, y_hat, xs, ys),
                                "any-max-error": any_sample.get("max-error"),
                                "mask-samples": len(mixed),
                            }
                        )
                    row = {
                        "model": model,
                        "method": method,
                        "experiment": kind,
                        "withdrawn": n,
                        "min-forget-samples": floor,
                        "mask-samples": int(results[0]["mask-samples"]),
                        **_summary(results),
                    }
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    return {
        "command": "python -m simulations.mask_leakage "
        + f"--trials {trials} --epochs {epochs} --seed {seed}",
        "dataset": "digits",
        "features": "standardised (errors in standard deviations)",
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Mask leakage: reconstructing withdrawn samples from unlearning masks",
        "",
        f"Command: `{doc['command']}` ({doc['seconds']:.0f} s). Dataset {doc['dataset']}, features "
        f"{doc['features']}. Attack: `x_hat = dW1^T db1 / ||db1||^2`, `y_hat = argmin db_out` "
        "(`simulations/mask_leakage.py`). Error: largest absolute feature error against the closest "
        "withdrawn sample (by size) or the one withdrawn sample (by floor).",
        "",
    ]
    for kind, title in (
        ("size", "By number of samples withdrawn (no floor)"),
        ("floor", "One sample withdrawn, by floor"),
    ):
        lines += [
            f"## {title}",
            "",
            "| model | method | withdrawn | min-forget-samples | samples in mask | trials | zero masks | "
            "max err (max) | max err (mean) | rel err (mean) | label recovered | "
            "closest sample in mask: max err (mean / min) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in doc["rows"]:
            if r["experiment"] != kind and not (
                kind == "floor" and r["experiment"] == "size" and r["withdrawn"] == 1
            ):
                continue
            cells = [
                r["model"],
                r["method"],
                str(r["withdrawn"]),
                str(r["min-forget-samples"]),
                str(r["mask-samples"]),
                str(r["trials"]),
                str(r["zero-masks"]),
            ]
            if "max-error-max" in r:
                cells += [
                    f"{r['max-error-max']:.3g}",
                    f"{r['max-error-mean']:.3g}",
                    f"{r['rel-error-mean']:.3g}",
                    f"{r['label-recovered']:.2f}",
                    f"{r['any-max-error-mean']:.3g} / {r['any-max-error-min']:.3g}",
                ]
            else:
                cells += ["-"] * 5
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.mask_leakage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", default=["logreg", "mlp"])
    parser.add_argument("--methods", nargs="+", default=list(CLIENT_METHODS), choices=CLIENT_METHODS)
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--floors", nargs="+", type=int, default=list(FLOORS))
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of the global model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "results", help="folder for mask_leakage.*"
    )
    args = parser.parse_args(argv)
    if args.trials < 1 or min(args.sizes) < 1 or min(args.floors) < 1:
        parser.error("--trials, --sizes and --floors must be >= 1")
    doc = run(
        models_=args.models,
        methods=args.methods,
        sizes=args.sizes,
        floors=args.floors,
        trials=args.trials,
        epochs=args.epochs,
        seed=args.seed,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mask_leakage.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "mask_leakage.md").write_text(markdown(doc))
    print(f"wrote {args.out / 'mask_leakage.json'} and {args.out / 'mask_leakage.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
