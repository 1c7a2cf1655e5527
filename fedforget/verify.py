"""Checking a run record's receipts: every model hash recomputed from the checkpoint it names.

A receipt (``server/requests.py``) carries ``model-hash-before`` and ``model-hash-after``, the
:func:`model_hash` of the global model just before and just after that request's unlearning, and
``checkpoint-before`` / ``checkpoint-after``, the names of the checkpoints in the run record that
hold those two models (``checkpoints/<name>.pt``; one pair per unlearning attempt that committed).
:func:`verify_record` recomputes both hashes of every receipt in the record (``withdrawals.json``
and the resume point ``resume.pt``, which must agree) and lists each mismatch. ``fedforget verify
RUN_DIR`` runs it and exits non-zero with one line per problem.

The hash is of the model's tensors, not of the ``.pt`` file (whose bytes depend on the
serializer): SHA-256 over, for each name of the state_dict in sorted order, the name's UTF-8 bytes
followed by the tensor's bytes (C-contiguous, on the CPU, in its own dtype, native byte order).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


def model_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the state_dict's names (sorted) and tensor bytes (see the module docstring)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class VerifyError(ValueError):
    """A folder that is not a run record (no receipts can be read from it)."""


def receipts(record_dir: str | Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every receipt in the record by request (``"<partition>:<request-id>"``), and disagreements.

    Read from ``withdrawals.json`` (the server's account) and ``resume.pt`` (the receipts of the
    unlearnings the resumable model holds); a request whose two receipts differ is a problem.
    """
    folder = Path(record_dir)
    if not (folder / "config.json").is_file():
        raise VerifyError(f"{folder} is not a run record (no config.json)")
    found: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    if (folder / "withdrawals.json").is_file():
        for doc in json.loads((folder / "withdrawals.json").read_text())["requests"]:
            if doc.get("receipt"):
                found[f"{doc['client']}:{doc['request-id']}"] = doc["receipt"]
    if (folder / "resume.pt").is_file():
        payload = torch.load(folder / "resume.pt", map_location="cpu", weights_only=True)
        for item in json.loads(payload["applied"]):
            key = f"{item['partition']}:{item['request-id']}"
            receipt = item.get("receipt") or {}
            if key in found and found[key] != receipt:
                problems.append(f"{key}: withdrawals.json and resume.pt hold different receipts")
            found.setdefault(key, receipt)
    return found, problems


def verify_record(record_dir: str | Path) -> tuple[int, list[str]]:
    """``(number of hashes checked, problems)``: each problem is one line naming the request."""
    folder = Path(record_dir)
    found, problems = receipts(folder)
    hashes: dict[str, str] = {}  # checkpoint name -> its model hash (several receipts share one)
    checked = 0
    for key, receipt in sorted(found.items()):
        for side in ("before", "after"):
            name, claimed = receipt.get(f"checkpoint-{side}"), receipt.get(f"model-hash-{side}")
            if not name or not claimed:
                problems.append(f"{key}: the receipt names no checkpoint-{side} / model-hash-{side}")
                continue
            if not _NAME.match(str(name)):
                problems.append(f"{key}: checkpoint-{side} {name!r} is not a checkpoint name")
                continue
            path = folder / "checkpoints" / f"{name}.pt"
            if name not in hashes:
                if not path.is_file():
                    problems.append(f"{key}: model-hash-{side}: {path} is missing")
                    continue
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                except Exception as error:  # noqa: BLE001 - any unreadable file is a failed check
                    problems.append(f"{key}: model-hash-{side}: {path} cannot be read ({error})")
                    continue
                hashes[name] = model_hash(state)
            checked += 1
            if hashes[name] != claimed:
                problems.append(f"{key}: model-hash-{side} is {claimed} but {path} hashes to {hashes[name]}")
    return checked, problems
