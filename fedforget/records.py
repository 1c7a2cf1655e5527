"""Run records: the auditable trace every run leaves in ``runs/<run-id>/``.

Layout (documented in ``docs/run-record.md``)::

    runs/<run-id>/
      config.json          the fully resolved RunConfig (kebab-case) + "environment" (versions, time)
      split.json           every client's train / held-out global ids, the server's aux ids, test ids
      metrics.jsonl        one JSON object per round and event
      checkpoints/round-<r>.pt   global model state_dict after round r
      resume.pt            the resume point: model, last completed round, unlearnings it holds

Every write is crash-safe: JSON documents and checkpoints are written to a temporary file, fsynced,
renamed into place, and the folder is fsynced (so the new name survives a power cut too);
``metrics.jsonl`` lines are flushed and fsynced one by one, so a crash loses at most the line being
written.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from fedforget.config import RunConfig
from fedforget.splits import Split

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_runs_root() -> Path:
    """``$FEDFORGET_RUNS`` if set, else ``runs/`` under the project (or the working directory)."""
    env = os.environ.get("FEDFORGET_RUNS")
    if env:
        return Path(env).expanduser().resolve()
    return (PROJECT_ROOT / "runs") if (PROJECT_ROOT / "pyproject.toml").exists() else Path.cwd() / "runs"


def new_run_id(dataset: str) -> str:
    """A sortable, unique run id such as ``20261127-174012-digits-3f9a``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() else "-" for c in Path(dataset.split(":", 1)[-1]).stem or dataset)
    return f"{stamp}-{safe}-{secrets.token_hex(2)}"


def is_unlearning_round(row: Mapping[str, Any]) -> bool:
    """Whether a ``metrics.jsonl`` row measures one unlearning round's model.

    Such rows have ``phase == "unlearn"`` and an ``unlearn-round``; event rows of the same phase
    (``unlearning-stalled``, ``unlearning-kept-round``) name a round too but measure nothing new.
    """
    return row.get("phase") == "unlearn" and "unlearn-round" in row and "event" not in row


def fsync_directory(folder: str | os.PathLike[str]) -> None:
    """fsync ``folder`` itself, so that the names created or renamed in it survive a power cut.

    A file's own fsync makes its bytes durable, not its directory entry: after ``os.replace`` the
    new name is durable only once the directory is fsynced too.
    """
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one.

    The data goes to a temporary file in the same folder, which is fsynced, renamed onto ``path``
    (``os.replace``, atomic), and then the folder is fsynced so the rename itself is durable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def _jsonable(value: Any) -> Any:
    """Plain JSON types; non-finite floats become null (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunRecord:
    """Reader and writer of one run's folder."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()

    # ------------------------------------------------------------------ creation
    @classmethod
    def location(cls, config: RunConfig) -> RunRecord:
        """The record of ``config``'s run id under its run dir (it may not exist yet)."""
        root = Path(config.run_dir) if config.run_dir else default_runs_root()
        return cls(root / config.run_id)

    @classmethod
    def create(cls, config: RunConfig, environment: Mapping[str, Any] | None = None) -> RunRecord:
        """Make ``<run-dir>/<run-id>/`` for a resolved config and write ``config.json``.

        Raises ``FileExistsError`` if a record with that run id already holds a config: a record is
        never overwritten.
        """
        record = cls.location(config)
        if (record.path / "config.json").exists():
            raise FileExistsError(
                f"run-id {config.run_id!r} is taken: its run record {record.path} already exists; "
                "pick a new run-id, or continue that run with resume=1"
            )
        (record.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        env = {
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            **(environment or {}),
        }
        record.write_json("config.json", {**config.to_dict(), "environment": env})
        return record

    # ------------------------------------------------------------------ writing
    def write_json(self, name: str, document: Mapping[str, Any]) -> Path:
        target = self.path / name
        atomic_write_bytes(target, json.dumps(_jsonable(document), indent=1).encode())
        return target

    def write_split(self, split: Split) -> Path:
        return self.write_json("split.json", split.to_json())

    def append_metrics(self, row: Mapping[str, Any]) -> None:
        """Append one JSON object to ``metrics.jsonl`` (flushed and fsynced)."""
        line = json.dumps(_jsonable(row), allow_nan=False) + "\n"
        path = self.path / "metrics.jsonl"
        new = not path.exists()
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        if new:  # the file's name is durable once its folder is fsynced
            fsync_directory(self.path)

    def save_checkpoint(self, server_round: int, state_dict: Mapping[str, torch.Tensor]) -> Path:
        """Write ``checkpoints/round-<r>.pt`` atomically."""
        import io

        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
        target = self.path / "checkpoints" / f"round-{server_round}.pt"
        atomic_write_bytes(target, buffer.getvalue())
        return target

    def save_named_checkpoint(self, name: str, state_dict: Mapping[str, torch.Tensor]) -> Path:
        """Write ``checkpoints/<name>.pt`` (e.g. ``before-unlearning``, ``after-unlearning``)."""
        import io

        if not name.replace("-", "").isalnum() or name.startswith("round-"):
            raise ValueError(f"bad checkpoint name {name!r}")
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
        target = self.path / "checkpoints" / f"{name}.pt"
        atomic_write_bytes(target, buffer.getvalue())
        return target

    def save_resume_point(
        self,
        completed_round: int,
        state_dict: Mapping[str, torch.Tensor],
        applied: Mapping[tuple[int, str], Mapping[str, Any]],
    ) -> Path:
        """Write ``resume.pt`` atomically: the model after ``completed_round`` (and any unlearning
        done since), and ``applied``: (partition, request id) -> ``{"outcome", "receipt"}`` of every
        request whose unlearning this model holds (cumulative over the run).

        One file holds both, so the model and the list of unlearnings it holds can never disagree.
        """
        import io

        payload = {
            "round": int(completed_round),
            "state": {k: v.detach().cpu() for k, v in state_dict.items()},
            "applied": json.dumps(
                [
                    {"partition": int(p), "request-id": str(r), **_jsonable(dict(info))}
                    for (p, r), info in sorted(applied.items())
                ]
            ),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        target = self.path / "resume.pt"
        atomic_write_bytes(target, buffer.getvalue())
        return target

    def load_resume_point(
        self,
    ) -> tuple[int, dict[str, torch.Tensor], dict[tuple[int, str], dict[str, Any]]]:
        """``(completed round, state_dict, applied)`` from ``resume.pt`` (see :meth:`save_resume_point`)."""
        path = self.path / "resume.pt"
        if not path.exists():
            raise FileNotFoundError(f"no resume point {path}: the run never completed its setup")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        applied = {
            (int(item["partition"]), str(item["request-id"])): {
                k: v for k, v in item.items() if k not in ("partition", "request-id")
            }
            for item in json.loads(payload["applied"])
        }
        return int(payload["round"]), dict(payload["state"]), applied

    def named_checkpoints(self) -> dict[str, Path]:
        return {
            p.stem: p for p in (self.path / "checkpoints").glob("*.pt") if not p.stem.startswith("round-")
        }

    # ------------------------------------------------------------------ reading
    def read_json(self, name: str) -> dict[str, Any]:
        with open(self.path / name, encoding="utf-8") as handle:
            return json.load(handle)

    def config(self) -> RunConfig:
        """The run's resolved :class:`RunConfig` (the ``environment`` entry is left out)."""
        doc = self.read_json("config.json")
        doc.pop("environment", None)
        return RunConfig.from_mapping(doc)

    def split(self) -> Split:
        return Split.from_json(self.read_json("split.json"))

    def metrics(self) -> list[dict[str, Any]]:
        return list(self.iter_metrics())

    def iter_metrics(self) -> Iterator[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def checkpoints(self) -> dict[int, Path]:
        """Round number -> checkpoint path, in round order."""
        found = {
            int(p.stem.removeprefix("round-")): p for p in (self.path / "checkpoints").glob("round-*.pt")
        }
        return dict(sorted(found.items()))

    def load_checkpoint(self, server_round: int | None = None) -> dict[str, torch.Tensor]:
        """The state_dict of round ``server_round`` (default: the last one saved)."""
        checkpoints = self.checkpoints()
        if not checkpoints:
            raise FileNotFoundError(f"no checkpoints in {self.path / 'checkpoints'}")
        key = max(checkpoints) if server_round is None else server_round
        if key not in checkpoints:
            raise FileNotFoundError(f"no checkpoint for round {key}; have {sorted(checkpoints)}")
        return torch.load(checkpoints[key], map_location="cpu", weights_only=True)

    def load_model(self, server_round: int | None = None) -> torch.nn.Module:
        """Rebuild the global model from ``config.json`` and load a checkpoint into it."""
        from fedforget.models import build

        model = build(self.config())
        model.load_state_dict(self.load_checkpoint(server_round))
        return model
