"""What a small device pays: peak memory and time of a client's local training and Forsaken unlearning.

    python -m simulations.device_footprint                  # LeNet and MLP on an MNIST client
    python -m simulations.device_footprint --models mlp --samples 300 --forsaken-steps 10

One client of an MNIST federation (``--clients`` partitions, the run config's split; 28x28 inputs)
is cut out once, the model is trained on it (untimed) to stand for the global model, and then each
task runs in a **fresh Python process** (torch limited to ``--threads`` threads), so its numbers are
its own:

* ``load-partition``: ``ClientData.for_partition`` as the ClientApp does it (reads and decodes the
  whole dataset, keeps the client's part);
* ``train``: ``fedforget.training.train`` with the run config's defaults (``--epochs`` local epochs,
  batch 16, SGD lr 0.05, momentum 0.9) on the client's training samples;
* ``forsaken``: ``fedforget.forsaken.unlearn`` as the ClientApp calls it (``forsaken-steps`` =
  ``--forsaken-steps``; up to ``retain-samples`` = 512 retained samples; the client's held-out data as
  reference; a ``--forget`` sample forget set; the default loss-threshold oracle instead of the
  server's shadow-model oracle).

Per task: RSS after importing torch + fedforget (the floor every client process pays), RSS
just before the task, **peak RSS** during the task (the ``VmHWM`` high-water mark, reset through
``/proc/self/clear_refs`` just before the task, so the setup does not count), the task's own share
(peak minus before), **torch peak** (the most bytes held in CPU tensors at once during the task,
from a second, profiled run: ``torch.profiler``'s memory timeline; Forsaken's profiled run takes
``--profile-steps`` steps, as every step repeats the same work) and wall seconds (of the
unprofiled run). Also reported: each model's parameter count and the Forsaken mask generator's.
Results go to ``results/device_footprint.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TASKS = ("load-partition", "train", "forsaken")
MODELS = ("lenet", "mlp")


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    """Reset this process's RSS high-water mark (``VmHWM``) to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def _process_peak_mib() -> float:
    """This process's lifetime RSS high-water mark in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _torch_peak_bytes(prof: Any) -> int | None:
    """Most bytes held in CPU tensors at once during a ``torch.profiler`` run (None if unavailable).

    Uses the profiler's memory timeline (``torch.profiler._memory_profiler``, the code behind
    ``export_memory_timeline``): sizes per category over time, summed, maximum.
    """
    try:
        import torch
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        timeline = MemoryProfileTimeline(prof._memory_profile())
        _, sizes = timeline._coalesce_timeline(torch.device("cpu"))
        return int(max(sum(row) for row in sizes)) if sizes else 0
    except Exception:  # noqa: BLE001 - a private API: report "not measured" rather than fail
        return None


# --------------------------------------------------------------------------- child side
def _child(task: str, model_name: str, workdir: Path, threads: int, profile: bool) -> dict[str, Any]:
    """Run one task in this (fresh) process and return its measurements."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from fedforget import data, models, training
    from fedforget.client_data import ClientData
    from fedforget.config import RunConfig
    from fedforget.forsaken import ForsakenConfig, unlearn

    rss_import = _status_mib("VmRSS")
    spec = json.loads((workdir / "spec.json").read_text())
    config = RunConfig.from_mapping(spec["run-config"])
    if task != "load-partition":
        arrays = dict(np.load(workdir / "client.npz"))
        info = data.info("mnist", config.data_dir or None)
        model = models.build_model(model_name, info, seed=0)
        model.load_state_dict(torch.load(workdir / f"{model_name}.pt", weights_only=True))

    def work() -> dict[str, Any]:
        if task == "load-partition":
            client = ClientData.for_partition(config, 0)
            return {"samples": int(len(client.y_train))}
        if task == "train":
            result = training.train(
                model,
                arrays["x_train"],
                arrays["y_train"],
                epochs=spec["epochs"],
                learning_rate=config.learning_rate,
                batch_size=config.batch_size,
                momentum=config.momentum,
                seed=0,
            )
            return {"samples": result.num_examples, "epochs": spec["epochs"]}
        rng = np.random.default_rng(0)
        order = rng.permutation(len(arrays["y_train"]))
        forget, keep = order[: spec["forget"]], order[spec["forget"] :][: config.retain_samples]
        result = unlearn(
            model,
            forget=(arrays["x_train"][forget], arrays["y_train"][forget]),
            reference=(arrays["x_holdout"], arrays["y_holdout"]),
            retain=(arrays["x_train"][keep], arrays["y_train"][keep]),
            config=ForsakenConfig(
                max_steps=spec["profile-steps"] if profile else spec["forsaken-steps"], seed=0
            ),
        )
        return {
            "forget": int(len(forget)),
            "retain": int(len(keep)),
            "steps": int(result.steps),
            "stopped-because": result.stopped_because,
        }

    rss_before = _status_mib("VmRSS")
    _reset_peak_rss()
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(
            activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
        ) as prof:
            details = work()
        return {"torch-peak-bytes": _torch_peak_bytes(prof), **details}
    start = time.perf_counter()
    details = work()
    seconds = time.perf_counter() - start
    return {
        "rss-after-imports-mib": rss_import,
        "rss-before-mib": rss_before,
        "peak-rss-mib": _status_mib("VmHWM"),
        "process-peak-rss-mib": _process_peak_mib(),
        "seconds": seconds,
        **details,
    }


# --------------------------------------------------------------------------- parent side
def prepare(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Cut out client 0 of an MNIST federation, train each model on it (untimed), save both."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from fedforget import data, models, training
    from fedforget.client_data import ClientData
    from fedforget.config import RunConfig
    from fedforget.forsaken import MaskGenerator

    values: dict[str, Any] = {"dataset": "mnist", "num-clients": args.clients, "seed": 0}
    if args.data_dir:
        values["data-dir"] = str(args.data_dir)
    config = RunConfig.from_mapping(values)
    client = ClientData.for_partition(config, 0)
    n = min(args.samples, len(client.y_train)) if args.samples else len(client.y_train)
    x, y = client.x_train[:n], client.y_train[:n]
    np.savez(
        workdir / "client.npz", x_train=x, y_train=y, x_holdout=client.x_holdout, y_holdout=client.y_holdout
    )
    info = data.info("mnist", config.data_dir or None)
    params: dict[str, int] = {}
    for name in args.models:
        model = models.build_model(name, info, seed=0)
        training.train(model, x, y, epochs=args.pretrain_epochs, learning_rate=0.05, batch_size=16, seed=0)
        torch.save(model.state_dict(), workdir / f"{name}.pt")
        params[name] = sum(p.numel() for p in model.parameters())
    spec = {
        "run-config": config.to_dict(),
        "epochs": args.epochs,
        "forget": args.forget,
        "forsaken-steps": args.forsaken_steps,
        "profile-steps": min(args.profile_steps, args.forsaken_steps),
    }
    (workdir / "spec.json").write_text(json.dumps(spec))
    generator = MaskGenerator()
    return {
        "client-train-samples": int(n),
        "client-holdout-samples": int(len(client.y_holdout)),
        "input-shape": list(x.shape[1:]),
        "model-parameters": params,
        "generator-parameters": sum(p.numel() for p in generator.parameters()),
        "spec": {k: v for k, v in spec.items() if k != "run-config"},
    }


def run_task(task: str, model: str, workdir: Path, threads: int, profile: bool) -> dict[str, Any]:
    """Run one task in a fresh interpreter and return what it measured."""
    argv = [sys.executable, "-m", "simulations.device_footprint", "--child", task, "--child-model", model]
    argv += ["--child-workdir", str(workdir), "--threads", str(threads)]
    if profile:
        argv.append("--child-profile")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run(argv, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"task {task} ({model}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown table with the command and setting above it."""
    setup = result["setup"]
    lines = [
        "# Client footprint: local training and Forsaken unlearning",
        "",
        f"Command: `{result['command']}` (at commit {result['commit']})  ",
        f"Machine: {result['machine']}; torch threads per process: {result['threads']}; "
        f"measured {result['when']}; load average at the end {result['load-average-at-end'][0]:.1f} "
        "(times stretch with other work on the machine; memory does not).  ",
        f"Client: {setup['client-train-samples']} training + {setup['client-holdout-samples']} held-out "
        f"MNIST samples (input {'x'.join(map(str, setup['input-shape']))}); training "
        f"{setup['spec']['epochs']} epoch(s), batch 16; Forsaken on {setup['spec']['forget']} forget "
        f"samples, at most {setup['spec']['forsaken-steps']} steps (torch peak measured over "
        f"{setup['spec']['profile-steps']}).  ",
        f"Mask generator: **{setup['generator-parameters']} parameters** (shared by every neuron, whatever "
        "the model's size).",
        "",
        "| model | parameters | task | RSS after imports (MiB) | RSS before task (MiB) | "
        "peak RSS in task (MiB) | task's own (MiB) | torch peak (MiB) | seconds | detail |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        torch_peak = row.get("torch-peak-bytes")
        detail = ", ".join(
            f"{k} {v}"
            for k, v in row.items()
            if k in ("samples", "forget", "retain", "steps", "stopped-because")
        )
        peak_text = "-" if torch_peak is None else f"{torch_peak / 2**20:.1f}"
        lines.append(
            f"| {row['model']} | {setup['model-parameters'][row['model']]:,} | {row['task']} | "
            f"{row['rss-after-imports-mib']:.0f} | {row['rss-before-mib']:.0f} | {row['peak-rss-mib']:.0f} | "
            f"{row['peak-rss-mib'] - row['rss-before-mib']:.0f} | {peak_text} | {row['seconds']:.2f} | "
            f"{detail} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.device_footprint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--clients", type=int, default=100, help="federation size the client is cut from")
    parser.add_argument("--samples", type=int, default=0, help="cap on training samples (0: the whole part)")
    parser.add_argument("--epochs", type=int, default=1, help="local epochs timed")
    parser.add_argument("--pretrain-epochs", type=int, default=3, help="untimed training before Forsaken")
    parser.add_argument("--forget", type=int, default=30, help="forget-set size")
    parser.add_argument("--forsaken-steps", type=int, default=30, help="the run config's forsaken-steps")
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=2,
        help="Forsaken steps in the profiled run (every step does the same work; profiling is slow)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--data-dir", type=Path, help="dataset root (default: the usual search)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "device_footprint")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled torch-peak runs")
    parser.add_argument("--child", choices=TASKS, help=argparse.SUPPRESS)
    parser.add_argument("--child-model", help=argparse.SUPPRESS)
    parser.add_argument("--child-workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = _child(args.child, args.child_model, args.child_workdir, args.threads, args.child_profile)
        print(json.dumps(result))
        return 0
    for name in ("clients", "epochs", "forget", "forsaken-steps", "profile-steps", "threads"):
        if getattr(args, name.replace("-", "_")) < 1:
            parser.error(f"--{name} must be >= 1")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedforget-footprint-") as tmp:
        workdir = Path(tmp)
        setup = prepare(workdir, args)
        rows = []
        for model in args.models:
            for task in TASKS:
                row = {"model": model, "task": task, **run_task(task, model, workdir, args.threads, False)}
                if not args.no_profile and task in ("train", "forsaken"):
                    row["torch-peak-bytes"] = run_task(task, model, workdir, args.threads, True)[
                        "torch-peak-bytes"
                    ]
                rows.append(row)
                print(
                    f"{model:6} {task:15} peak RSS {row['peak-rss-mib']:7.1f} MiB  {row['seconds']:7.2f} s",
                    flush=True,
                )
    argv_text = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    import fedforget

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=PROJECT_ROOT, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "fedforget"], capture_output=True, text=True, cwd=PROJECT_ROOT
    ).stdout.strip()
    result = {
        "command": f"python -m simulations.device_footprint {argv_text}".strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "threads": args.threads,
        "commit": commit + (" (fedforget/ has uncommitted changes)" if dirty else ""),
        "fedforget": str(Path(fedforget.__file__).parent),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "total-seconds": round(time.perf_counter() - start, 1),
        "load-average-at-end": list(os.getloadavg()),
        "setup": setup,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
