"""Amnesiac unlearning (centralized, one data owner): Graves, Nagisetty and Ganesh, "Amnesiac Machine
Learning" (AAAI 2021).

**Training** is ordinary mini-batch SGD (the same loop, shuffling and seeds as
:func:`fedforget.training.train`, so the trained model is the same), except that the parameter
update of every batch ``b`` is recorded together with the ids of the samples in it::

    Delta theta_b = theta_after_b - theta_before_b,    ids(b)

(``track``: record only the batches that contain one of these ids, Graves et al.'s "sensitive"
samples; default: every batch). The record's size is the method's storage cost.

**Unlearning** ``D_u`` subtracts every recorded update of a batch that contained one of its samples::

    theta' = theta_T - sum_{b : ids(b) n D_u != {}} Delta theta_b

then ``repair_epochs`` epochs of SGD on the remaining data recover the accuracy the subtraction
cost (the paper's "a few epochs of additional training").
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from fedforget import training
from fedforget.baselines.base import UnlearnResult, check_positive
from fedforget.federated import state_nbytes
from fedforget.models import criterion_for

__all__ = ["AmnesiacRecord", "amnesiac_train", "amnesiac_unlearn", "subtract_updates"]


@dataclasses.dataclass(eq=False)
class AmnesiacRecord:
    """Per-batch parameter updates and the ids of each batch's samples."""

    batch_ids: list[np.ndarray]
    updates: list[dict[str, torch.Tensor]]
    tracked: np.ndarray | None
    """The ids whose batches were recorded (None: every batch)."""
    seconds: float
    loss: float

    @property
    def storage_bytes(self) -> int:
        return sum(state_nbytes(u) for u in self.updates) + sum(int(b.nbytes) for b in self.batch_ids)

    def batches_with(self, ids: np.ndarray) -> list[int]:
        """Indices of the recorded batches that contain one of ``ids``."""
        return [i for i, b in enumerate(self.batch_ids) if np.isin(b, ids).any()]


def amnesiac_train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    ids: np.ndarray,
    *,
    epochs: int = 1,
    learning_rate: float = 0.05,
    batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    track: np.ndarray | None = None,
) -> AmnesiacRecord:
    """Train ``model`` in place as :func:`fedforget.training.train`, recording per-batch updates."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(x) == len(y) == len(ids):
        raise ValueError(f"x, y and ids must have the same length, got {len(x)}, {len(y)}, {len(ids)}")
    if len(x) == 0:
        raise ValueError("cannot train on an empty set of samples")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be integers >= 1, got {epochs!r}, {batch_size!r}")
    check_positive("learning_rate", learning_rate)
    tracked = None if track is None else np.asarray(track, dtype=np.int64)
    start = time.perf_counter()
    xt = torch.from_numpy(np.array(x, dtype=np.float32))
    yt = torch.from_numpy(np.array(y, dtype=np.int64))
    criterion = criterion_for(model)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    batch_ids: list[np.ndarray] = []
    updates: list[dict[str, torch.Tensor]] = []
    epoch_loss = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        total, count = 0.0, 0
        for begin in range(0, len(order), batch_size):
            idx = order[begin : begin + batch_size]
            in_batch = ids[idx.numpy()]
            record = tracked is None or bool(np.isin(in_batch, tracked).any())
            before = _float_state(model) if record else None
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
            if before is not None:
                after = _float_state(model)
                updates.append({k: after[k] - before[k] for k in after})
                batch_ids.append(in_batch.copy())
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        epoch_loss = total / count
    return AmnesiacRecord(batch_ids, updates, tracked, time.perf_counter() - start, epoch_loss)


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def subtract_updates(
    state: dict[str, torch.Tensor], record: AmnesiacRecord, forget_ids: np.ndarray
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """``theta - sum of the recorded updates of the batches holding forget ids``; and those batches."""
    forget_ids = np.asarray(forget_ids, dtype=np.int64)
    if forget_ids.size == 0:
        raise ValueError("forget_ids is empty: name at least one training id to unlearn")
    if record.tracked is not None:
        untracked = np.setdiff1d(forget_ids, record.tracked)
        if untracked.size:
            raise ValueError(
                f"ids {untracked[:5].tolist()} were not tracked during training: their updates were "
                "not recorded, so Amnesiac cannot unlearn them (train with track=None or include them)"
            )
    seen = np.unique(np.concatenate(record.batch_ids)) if record.batch_ids else np.empty(0, np.int64)
    unknown = np.setdiff1d(forget_ids, seen)
    if unknown.size:
        raise ValueError(f"ids not in any recorded batch (not trained on?): {unknown[:5].tolist()}")
    batches = record.batches_with(forget_ids)
    out = {k: v.detach().clone() for k, v in state.items()}
    for i in batches:
        for key, delta in record.updates[i].items():
            out[key] -= delta
    return out, batches


def amnesiac_unlearn(
    model: nn.Module,
    record: AmnesiacRecord,
    forget_ids: np.ndarray,
    *,
    repair: tuple[np.ndarray, np.ndarray] | None = None,
    repair_epochs: int = 1,
    learning_rate: float = 0.05,
    batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> UnlearnResult:
    """Subtract the recorded updates of ``forget_ids``' batches from ``model`` (not modified), then repair.

    ``repair``: the remaining training data ``(x, y)`` (never the forget set); ``repair_epochs = 0``
    or ``repair=None`` skips the repair.
    """
    if isinstance(repair_epochs, bool) or not isinstance(repair_epochs, int) or repair_epochs < 0:
        raise ValueError(f"repair_epochs must be an integer >= 0, got {repair_epochs!r}")
    start = time.perf_counter()
    state, batches = subtract_updates(dict(model.state_dict()), record, forget_ids)
    work = copy.deepcopy(model)
    work.load_state_dict(state)
    history: list[dict[str, Any]] = [{"phase": "amnesiac-subtract", "batches-subtracted": len(batches)}]
    compute = time.perf_counter() - start
    if repair is not None and repair_epochs > 0:
        result = training.train(
            work,
            repair[0],
            repair[1],
            epochs=repair_epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            momentum=momentum,
            weight_decay=weight_decay,
            seed=seed,
        )
        compute += result.seconds
        history.append({"phase": "amnesiac-repair", "epochs": repair_epochs, "train-loss": result.loss})
    return UnlearnResult(
        method="amnesiac",
        state_dict={k: v.detach().clone() for k, v in work.state_dict().items()},
        seconds=time.perf_counter() - start,
        client_seconds=compute,
        bytes_sent=0,
        storage_bytes=record.storage_bytes,
        history=history,
        extra={
            "batches-subtracted": len(batches),
            "repair-epochs": repair_epochs if repair is not None else 0,
        },
    )
