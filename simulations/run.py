"""Run a fedforget federation as a real Flower simulation and check its run record.

    python -m simulations.run                       # the demo: digits, 5 clients, 5 rounds
    python -m simulations.run --dataset mnist --num-clients 10 --set partitioning=dirichlet alpha=0.3

Starts its own SuperLink (simulation runtime) on 127.0.0.1, submits the app with ``flwr run``,
streams the server's per-round table, stops the SuperLink by PID, and exits non-zero when the run
failed (``flwr run`` itself exits 0 then) or left an incomplete run record.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from fedforget import data, models
from fedforget.config import ConfigError, RunConfig
from fedforget.data.registry import entry, is_file_name
from fedforget.plots import plot_run
from fedforget.records import RunRecord, new_run_id
from fedforget.splits import SplitError, check_run_plan
from simulations.launcher import PROJECT_ROOT, FlowerRunError, federation, submit_run


def app_defaults() -> dict[str, Any]:
    """The run config declared in ``pyproject.toml``."""
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as handle:
        return dict(tomllib.load(handle)["tool"]["flwr"]["app"]["config"])


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings to a mapping; values parsed as TOML (numbers) or kept as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


def resolve_run_config(overrides: Mapping[str, Any], runs_root: Path | None = None) -> dict[str, Any]:
    """Defaults + overrides, validated, with absolute ``run-dir``/``data-dir`` and a fresh ``run-id``.

    The split is made and the ``withdrawals`` schedule checked against it here
    (:func:`fedforget.splits.check_run_plan`): a bad plan is a one-line :class:`SplitError` before any
    Flower process starts, not a traceback from the server later.
    """
    values = {**app_defaults(), **overrides}
    config = RunConfig.from_mapping(values)
    info = data.info(config.dataset, config.data_dir or None)  # fails early on an unknown dataset
    changes: dict[str, Any] = {"model": models.resolve_model_name(config.model, info)}
    if not config.run_dir:
        changes["run_dir"] = str((runs_root or PROJECT_ROOT / "runs").resolve())
    if not config.run_id:
        changes["run_id"] = new_run_id(config.dataset)
    required = None if is_file_name(config.dataset) else entry(config.dataset).requires
    if required:  # find the files now (clear error before any process starts), as an absolute path
        changes["data_dir"] = str(data.resolve_data_root(config.data_dir or None, required).resolve())
    resolved = config.replace(**changes)
    check_run_plan(resolved)  # the split and the withdrawal schedule, before any process starts
    return resolved.to_dict()


def resume_config(run_id: str, runs_root: Path | None = None) -> dict[str, Any]:
    """The stored config of run ``run_id`` under ``runs_root``, with ``resume = 1``."""
    record = RunRecord((runs_root or PROJECT_ROOT / "runs").resolve() / run_id)
    if not (record.path / "config.json").exists():
        raise ConfigError(f"--resume: no run record {record.path}")
    return record.config().replace(resume=1).to_dict()


class _TableFilter:
    """Passes on only the server's ``[fedforget]`` lines and errors (unless verbose)."""

    def __init__(self, sink: IO[str], verbose: bool) -> None:
        self.sink, self.verbose = sink, verbose

    def write(self, text: str) -> None:
        if self.verbose or "[fedforget]" in text or "ERROR" in text or "Traceback" in text:
            self.sink.write(text[text.find("[fedforget]") :] if "[fedforget]" in text else text)

    def flush(self) -> None:
        self.sink.flush()


def check_record(record: RunRecord, num_rounds: int) -> None:
    """Raise :class:`FlowerRunError` unless the record holds every round and a final checkpoint."""
    missing = [n for n in ("config.json", "split.json", "metrics.jsonl") if not (record.path / n).exists()]
    if missing:
        raise FlowerRunError(f"run record {record.path} lacks {', '.join(missing)}")
    rounds = {row["round"] for row in record.metrics() if row.get("phase") == "train"}
    if rounds != set(range(1, num_rounds + 1)):
        raise FlowerRunError(
            f"run record {record.path} has train rounds {sorted(rounds)}, expected 1..{num_rounds}"
        )
    if num_rounds not in record.checkpoints():
        raise FlowerRunError(f"run record {record.path} lacks checkpoints/round-{num_rounds}.pt")


def simulate(
    run_config: Mapping[str, Any],
    *,
    stream: IO[str] | None = None,
    verbose: bool = False,
    timeout_s: float = 3600,
) -> RunRecord:
    """Run one simulation with a fully resolved run config; returns the checked run record."""
    num_clients = int(run_config["num-clients"])
    sink = _TableFilter(stream, verbose) if stream is not None else None
    with federation(simulation=True, num_supernodes=num_clients) as fed:
        submit_run(fed, run_config, stream_to=sink, timeout_s=timeout_s)  # type: ignore[arg-type]
    record = RunRecord(Path(run_config["run-dir"]) / str(run_config["run-id"]))
    check_record(record, int(run_config["num-rounds"]))
    return record


def summary_lines(record: RunRecord) -> list[str]:
    """A short account of the run: accuracy over training, and each withdrawal's outcome."""
    rows = record.metrics()
    trained = [r for r in rows if r.get("phase") in ("init", "train")]
    lines = [
        f"test accuracy {trained[0]['test-accuracy']:.4f} -> {trained[-1]['test-accuracy']:.4f} "
        f"over {len(trained) - 1} rounds"
    ]
    for row in rows:  # fedforget/training_health.py: say it again where the run's results are read
        if row.get("phase") == "health":
            lines.append(f"!!! WARNING: training {row['event'].removeprefix('training-')}: {row['finding']}")
    if (record.path / "withdrawals.json").exists():
        for request in record.read_json("withdrawals.json")["requests"]:
            receipt = request.get("receipt") or {}
            fr = receipt.get("fr")
            judge = receipt.get("judge", "?")
            fr_text = (
                f"judge ({judge}) FR {fr:.3f}"
                if fr is not None
                else f"judge ({judge}) FR not measurable (the attack is at chance or judged no member)"
            )
            before = receipt.get("test-accuracy-before", float("nan"))
            after = receipt.get("test-accuracy-after", float("nan"))
            reference = receipt.get("fr-retrain")
            reference_text = (
                "" if reference is None else f"; a model retrained without them: FR {reference:.3f}"
            )
            verdict = receipt.get("verdict")
            verdict_text = "" if verdict is None else f"; against retraining: {verdict}"
            auc_before, auc_after = receipt.get("attack-auc-before"), receipt.get("attack-auc")
            if auc_before is not None and auc_after is not None:
                retrained = receipt.get("attack-auc-retrain")
                verdict_text += f"; forget-vs-never-seen AUC {auc_before:.3f} -> {auc_after:.3f}" + (
                    "" if retrained is None else f" (retrained: {retrained:.3f})"
                )
            lines.append(
                f"withdrawal {request['request-id']} ({request['num-ids']} samples of client "
                f"{request['client']}): {request['outcome']} in {receipt.get('unlearn-rounds', 0)} "
                f"unlearning round(s); {fr_text} ({receipt.get('b-t')} of {request['num-ids']} judged "
                f"members before{reference_text}{verdict_text}); test accuracy {before:.4f} -> {after:.4f} "
                "by unlearning"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", help="registry name, csv:PATH or npz:PATH (default: digits)")
    parser.add_argument("--num-clients", type=int)
    parser.add_argument("--num-rounds", type=int)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="any run-config value")
    parser.add_argument("--runs-dir", type=Path, help="where run records go (default: ./runs)")
    parser.add_argument("--verbose", action="store_true", help="show all Flower logs")
    parser.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue this run (in --runs-dir) from its resume point with its own config (docs/recovery.md)",
    )
    args = parser.parse_args(argv)
    try:
        if args.resume:
            run_config = resume_config(args.resume, args.runs_dir)
        else:
            overrides = parse_assignments(args.set)
            for key in ("dataset", "num_clients", "num_rounds"):
                if getattr(args, key) is not None:
                    overrides[key.replace("_", "-")] = getattr(args, key)
            run_config = resolve_run_config(overrides, args.runs_dir)
    except (ConfigError, data.DataError, SplitError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"[fedforget] simulating {run_config['num-clients']} clients x {run_config['num-rounds']} rounds "
        f"on {run_config['dataset']} (model {run_config['model']})",
        flush=True,
    )
    try:
        record = simulate(run_config, stream=sys.stdout, verbose=args.verbose)
    except FlowerRunError as error:
        print(f"error: the Flower run failed: {error}", file=sys.stderr)
        return 1
    for line in summary_lines(record):
        print(f"[fedforget] {line}")
    print(f"[fedforget] plot: {plot_run(record)}")
    print(f"[fedforget] run record: {record.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
