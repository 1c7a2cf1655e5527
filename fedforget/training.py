"""Local training and evaluation of a PyTorch classifier on in-memory arrays.

``train`` runs ``epochs`` of mini-batch SGD (with momentum and weight decay) minimising the model's
criterion (cross-entropy, or the multi-class hinge loss for the linear SVM); ``evaluate`` returns the
mean loss and the accuracy; ``predict_proba`` returns softmax confidence vectors. Everything is
seeded so a client's update is reproducible from (seed, round, client).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What one call of :func:`train` did."""

    loss: float
    num_examples: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Mean loss and accuracy of a model on a set of samples."""

    loss: float
    accuracy: float
    num_examples: int


def _criterion(model: nn.Module) -> nn.Module:
    from fedforget.models import criterion_for

    return criterion_for(model)


def _as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    if len(x) != len(y):
        raise ValueError(f"{len(x)} samples but {len(y)} labels")
    return _tensor(x, np.float32), _tensor(y, np.int64)


def _tensor(array: np.ndarray, dtype: type) -> torch.Tensor:
    """A tensor of ``array``, copying only when needed (cached datasets are read-only)."""
    array = np.asarray(array, dtype=dtype)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 1,
    learning_rate: float = 0.05,
    batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> TrainResult:
    """Train ``model`` in place with SGD; returns the mean training loss of the last epoch."""
    if len(x) == 0:
        raise ValueError("cannot train on an empty set of samples")
    if epochs < 1 or batch_size < 1 or learning_rate <= 0:
        raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")
    start = time.perf_counter()
    xt, yt = _as_tensors(x, y)
    criterion = _criterion(model)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=learning_rate, momentum=momentum, weight_decay=weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    epoch_loss = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        total, count = 0.0, 0
        for begin in range(0, len(order), batch_size):
            idx = order[begin : begin + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        epoch_loss = total / count
    if not np.isfinite(epoch_loss):
        raise FloatingPointError("training diverged (non-finite loss); lower the learning rate")
    return TrainResult(epoch_loss, len(xt), time.perf_counter() - start)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> EvalResult:
    """Mean criterion loss and accuracy of ``model`` on ``(x, y)`` (NaN for an empty set)."""
    if len(x) == 0:
        return EvalResult(float("nan"), float("nan"), 0)
    xt, yt = _as_tensors(x, y)
    criterion = _criterion(model)
    model.eval()
    loss_sum, correct = 0.0, 0
    for begin in range(0, len(xt), batch_size):
        logits = model(xt[begin : begin + batch_size])
        target = yt[begin : begin + batch_size]
        loss_sum += float(criterion(logits, target)) * len(target)
        correct += int((logits.argmax(dim=1) == target).sum())
    return EvalResult(loss_sum / len(xt), correct / len(xt), len(xt))


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Softmax confidence vectors ``N x num_classes`` of ``model`` on ``x``."""
    model.eval()
    xt = _tensor(x, np.float32)
    out = [torch.softmax(model(xt[b : b + batch_size]), dim=1) for b in range(0, len(xt), batch_size)]
    return torch.cat(out).numpy() if out else np.empty((0, 0), dtype=np.float32)
