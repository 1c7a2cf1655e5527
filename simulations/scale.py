"""How a fedforget federation grows: time per round, withdrawal-to-forgotten time and memory vs clients.

    python -m simulations.scale                       # 10, 100, 1000 clients + 3 forget-set sizes
    python -m simulations.scale --quick               # 10 and 50 clients, one forget size (CI smoke)
    python -m simulations.scale --clients 10 100 --fractions 0.1 --out results/scale-small.json

Every point is a real Flower simulation (``simulations.run.simulate``: a SuperLink started by PID,
``flwr run``, the Ray simulation engine, the real ServerApp and ClientApp) of the same small job:
mnist, MLP, ``clients-per-round`` clients trained per round (default 10 at every size; mnist's
training set is split over all clients, so at 10 clients a round trains on all of it and at 1000
clients on 1% of it: a round's time is then mostly what the federation itself costs: polling every
node for requests, sampling, messaging), 3 rounds, and one withdrawal of a fraction of client 0's
samples before round 2 (``withdrawals = 2:0:samples:F``).

Measured per point, from the outside (no help from the code under test):

* ``round-seconds``: the ``seconds`` of each training round in ``metrics.jsonl`` (the server's own
  wall time for the round: request poll of every node, training of the sampled clients, evaluation);
  the first round (Ray start-up) is reported apart;
* ``withdrawal-seconds``: wall time from the moment the last row before the withdrawal appears in
  ``metrics.jsonl`` to the moment the last unlearning row appears (the server polls, trains its oracle
  on first use, measures B, runs the Forsaken rounds); rows are timestamped by a watcher thread that
  polls the file every 0.2 s, so this is exact to about 0.2 s;
* ``peak-rss-mb``: the highest sum of resident memory of the SuperLink's whole process tree
  (SuperLink, ServerApp, Ray workers running the ClientApps), sampled every 0.5 s from ``/proc``;
* the run's FR and test accuracy, from the run record.

Writes ``--out`` (JSON), a markdown table beside it, and a PNG plot (``--plot``).

Running on more than one machine uses what Flower and Ray already have: start a Ray cluster
(``ray start --head`` on one machine, ``ray start --address=HEAD:6379`` on the others), then start the
simulation SuperLink on the head with ``RAY_ADDRESS=HEAD:6379`` in its environment: Flower's Ray
backend calls ``ray.init()``, which joins the existing cluster instead of starting a local one
(``docs/scaling.md``; ``tests/test_scale.py`` checks this against a local one-node Ray cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedforget.records import RunRecord, is_unlearning_round
from simulations.run import resolve_run_config, simulate

DEFAULT_CLIENTS = (10, 100, 1000)
DEFAULT_FRACTIONS = (0.01, 0.1, 0.5)
FRACTION_CLIENTS = 10  # forget-set growth is measured at this federation size
JOB = {
    "dataset": "mnist",
    "model": "mlp",
    "num-rounds": 3,
    "local-epochs": 1,
    "batch-size": 32,
    "learning-rate": 0.05,
    "unlearn-rounds": 3,
    "aux-fraction": 0.05,  # the server's shadow data: 3,000 mnist samples keep the oracle's training short
}


@dataclass
class ScalePoint:
    """One measured federation."""

    num_clients: int
    clients_per_round: int
    forget_fraction: float
    num_forget: int
    first_round_seconds: float
    round_seconds: float
    withdrawal_seconds: float
    unlearn_rounds: int
    fr: float | None
    test_accuracy: float
    peak_rss_mb: float
    wall_seconds: float
    run_dir: str


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mb(root_pid: int) -> float:
    """Resident memory (MiB) of a process and all its descendants, read from ``/proc``."""
    total, stack, seen = 0, [root_pid], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss_kb(pid)
        stack.extend(_children(pid))
    return total / 1024


class _Watcher:
    """Background sampling of memory (process tree) and of when each metrics row appears."""

    def __init__(self, metrics_path: Path) -> None:
        self.metrics_path = metrics_path
        self.row_times: list[float] = []
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        last_mem = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self.metrics_path.exists():
                with open(self.metrics_path, encoding="utf-8") as handle:
                    lines = sum(1 for _ in handle)
                self.row_times += [now] * (lines - len(self.row_times))
            if now - last_mem >= 0.5:
                # The Flower processes are this process's children: count them, not this driver.
                self.peak_mb = max(self.peak_mb, sum(tree_rss_mb(c) for c in _children(os.getpid())))
                last_mem = now
            self._stop.wait(0.2)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def _watching(metrics_path: Path) -> Iterator[_Watcher]:
    watcher = _Watcher(metrics_path)
    watcher.start()
    try:
        yield watcher
    finally:
        watcher.stop()


def measure_point(
    num_clients: int,
    fraction: float,
    *,
    clients_per_round: int,
    runs_dir: Path,
    extra: dict[str, Any] | None = None,
) -> ScalePoint:
    """Run one federation and measure it (see the module docstring for each number)."""
    overrides = {
        **JOB,
        "num-clients": num_clients,
        "clients-per-round": min(clients_per_round, num_clients),
        "withdrawals": f"2:0:samples:{fraction}",
        **(extra or {}),
    }
    run_config = resolve_run_config(overrides, runs_dir)
    record_path = Path(run_config["run-dir"]) / str(run_config["run-id"])
    start = time.monotonic()
    with _watching(record_path / "metrics.jsonl") as watcher:
        simulate(run_config, timeout_s=3600)
    wall = time.monotonic() - start
    record = RunRecord(record_path)
    rows = record.metrics()
    times = watcher.row_times + [time.monotonic()] * (len(rows) - len(watcher.row_times))
    train = [r for r in rows if r.get("phase") == "train"]
    received = next(i for i, r in enumerate(rows) if r.get("event") == "request-received")
    unlearn = [i for i, r in enumerate(rows) if is_unlearning_round(r)]
    # The row before the withdrawal is the last train row (round 1); the oracle row may sit between.
    before = max(i for i in range(received) if rows[i].get("phase") == "train")
    last_unlearn = rows[unlearn[-1]] if unlearn else {}
    return ScalePoint(
        num_clients=num_clients,
        clients_per_round=int(run_config["clients-per-round"]),
        forget_fraction=fraction,
        num_forget=int(rows[received]["num-forget"]),
        first_round_seconds=float(train[0]["seconds"]),
        round_seconds=sum(float(r["seconds"]) for r in train[1:]) / max(1, len(train) - 1),
        withdrawal_seconds=(times[unlearn[-1]] if unlearn else times[received]) - times[before],
        unlearn_rounds=len(unlearn),
        fr=last_unlearn.get("fr"),
        test_accuracy=float(train[-1]["test-accuracy"]),
        peak_rss_mb=watcher.peak_mb,
        wall_seconds=wall,
        run_dir=str(record_path),
    )


def markdown(points: Sequence[ScalePoint], command: str) -> str:
    """The results table, with the command that produced it."""
    lines = [
        f"Produced by `{command}`.",
        "",
        "| clients | per round | forget | round s (1st) | round s | withdrawal -> unlearned s "
        "| unlearn rounds | FR | test acc | peak RSS MiB | wall s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        fr = "-" if p.fr is None else f"{p.fr:.2f}"
        lines.append(
            f"| {p.num_clients} | {p.clients_per_round} | {p.num_forget} ({p.forget_fraction:g}) "
            f"| {p.first_round_seconds:.1f} | {p.round_seconds:.2f} | {p.withdrawal_seconds:.1f} "
            f"| {p.unlearn_rounds} | {fr} | {p.test_accuracy:.3f} | {p.peak_rss_mb:.0f} "
            f"| {p.wall_seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(points: Sequence[ScalePoint], path: Path) -> Path:
    """Two panels: seconds vs number of clients, seconds vs forget-set size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_clients = sorted(
        {p.num_clients: p for p in points if p.forget_fraction == points[0].forget_fraction}.values(),
        key=lambda p: p.num_clients,
    )
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    xs = [p.num_clients for p in by_clients]
    axes[0].plot(xs, [p.round_seconds for p in by_clients], "o-", label="training round")
    axes[0].plot(xs, [p.withdrawal_seconds for p in by_clients], "s-", label="withdrawal -> unlearned")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("clients in the federation")
    axes[0].set_ylabel("seconds")
    axes[0].legend(fontsize=8)
    axes[0].set_title("growth with the federation")
    sized = sorted((p for p in points if p.num_clients == FRACTION_CLIENTS), key=lambda p: p.num_forget)
    if sized:
        axes[1].plot([p.num_forget for p in sized], [p.withdrawal_seconds for p in sized], "s-")
        axes[1].set_xscale("log")
    axes[1].set_xlabel(f"samples withdrawn ({FRACTION_CLIENTS} clients)")
    axes[1].set_ylabel("seconds, withdrawal -> unlearned")
    axes[1].set_title("growth with the forget set")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", help=f"federation sizes (default {DEFAULT_CLIENTS})"
    )
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        help=f"withdrawn fractions of client 0's data at {FRACTION_CLIENTS} clients "
        f"(default {DEFAULT_FRACTIONS})",
    )
    parser.add_argument("--clients-per-round", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="10 and 50 clients, one fraction, mlp on digits")
    parser.add_argument("--out", type=Path, default=Path("results/scale.json"))
    parser.add_argument("--plot", type=Path, help="PNG path (default: --out with .png)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/scale"))
    args = parser.parse_args(argv)
    extra: dict[str, Any] = {}
    if args.quick:
        clients, fractions = args.clients or [10, 50], args.fractions or [0.1]
        extra = {"dataset": "digits", "local-epochs": 3, "forsaken-steps": 10, "unlearn-rounds": 1}
    else:
        clients, fractions = args.clients or list(DEFAULT_CLIENTS), args.fractions or list(DEFAULT_FRACTIONS)
    if any(c < 2 for c in clients) or any(not 0 < f <= 1 for f in fractions):
        parser.error("--clients must be >= 2 and --fractions in (0, 1]")
    plan = [(c, fractions[len(fractions) // 2]) for c in clients]
    plan += [(FRACTION_CLIENTS, f) for f in fractions if (FRACTION_CLIENTS, f) not in plan and not args.quick]
    points: list[ScalePoint] = []
    for i, (num_clients, fraction) in enumerate(plan, 1):
        print(
            f"[scale] {i}/{len(plan)}: {num_clients} clients, withdraw {fraction:g} of client 0", flush=True
        )
        point = measure_point(
            num_clients,
            fraction,
            clients_per_round=args.clients_per_round,
            runs_dir=args.runs_dir.resolve(),
            extra=extra,
        )
        print(
            f"[scale]   round {point.round_seconds:.2f} s, withdrawal -> unlearned "
            f"{point.withdrawal_seconds:.1f} s, peak {point.peak_rss_mb:.0f} MiB",
            flush=True,
        )
        points.append(point)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps([asdict(p) for p in points], indent=2) + "\n"
        )  # nothing lost on a crash
    command = "python -m simulations.scale " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.with_suffix(".md").write_text(markdown(points, command.strip()))
    png = plot(points, args.plot or args.out.with_suffix(".png"))
    print(f"[scale] wrote {args.out}, {args.out.with_suffix('.md')}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
