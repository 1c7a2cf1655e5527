"""The checks on :func:`fedforget.forsaken.unlearn`'s inputs, made before any work (scikit-learn style).

Contract: every ``(x, y)`` set becomes a float32 ``N x ...`` array and an int64 label vector (read-only
arrays are copied, tensors moved to numpy); a bad set, a model that rejects the samples' shape, a label
outside ``[0, K)`` of the model's ``K`` outputs or a malformed ``accuracy_baseline`` raise one
``TypeError`` / ``ValueError`` that names the argument (``docs/forsaken.md``, API).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["GUARDED", "Pair", "as_pair", "check_baseline", "check_labels", "device_of", "num_classes"]

Pair = tuple[np.ndarray, np.ndarray]
GUARDED = ("retain_acc", "reference_acc")
"""The accuracies the guard (``max_accuracy_drop``) watches; the keys of ``accuracy_baseline``."""


def as_pair(name: str, pair: Any) -> Pair:
    """``pair`` as ``(x float32, y int64)`` numpy arrays, or a one-line error naming ``name``."""
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise TypeError(f"{name} must be a pair (x, y) of arrays, got {type(pair).__name__}")
    x, y = pair
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{name}: x must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name}: x must be a batch N x features..., got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if y.ndim != 1:
        raise ValueError(f"{name}: y must be a 1-D array of labels, got shape {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} samples but {len(y)} labels")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"{name}: labels must be integers, got dtype {y.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: x contains NaN or infinite values")
    y = y.astype(np.int64, copy=False)
    # torch cannot share memory with read-only arrays (cached datasets are read-only)
    return (x if x.flags.writeable else x.copy()), (y if y.flags.writeable else y.copy())


def num_classes(model: nn.Module, name: str, x: np.ndarray, device: torch.device) -> int:
    """The model's number of outputs ``K``, checking that the samples ``x`` of set ``name`` fit it."""
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        raise ValueError(
            f"{name}: samples have shape {tuple(x.shape[1:])} but the model ({type(model).__name__}) expects "
            f"{tuple(expected)}"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(x[:2], device=device))
    except RuntimeError as error:
        raise ValueError(
            f"{name}: samples of shape {tuple(x.shape[1:])} do not fit the model "
            f"({type(model).__name__}): {error}"
        ) from error
    finally:
        model.train(was_training)
    if out.dim() != 2 or out.shape[1] < 2:
        raise ValueError(
            f"the model must output N x num_classes scores (>= 2 classes), got {tuple(out.shape)}"
        )
    return int(out.shape[1])


def check_labels(name: str, y: np.ndarray, num_classes: int) -> None:
    """Every label of set ``name`` in ``[0, num_classes)``."""
    if y.min() < 0 or y.max() >= num_classes:
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise ValueError(
            f"{name}: label {bad} is outside [0, {num_classes}) of the model's {num_classes} outputs"
        )


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (a model without parameters is an error)."""
    try:
        return next(model.parameters()).device
    except StopIteration as error:
        raise ValueError(f"{type(model).__name__} has no parameters to unlearn") from error


def check_baseline(baseline: Mapping[str, float] | None) -> dict[str, float] | None:
    """``accuracy_baseline`` as ``{key: float}`` for the keys :data:`GUARDED`, each in [0, 1]."""
    if baseline is None:
        return None
    if not isinstance(baseline, Mapping):
        raise TypeError(f"accuracy_baseline must be a mapping, got {type(baseline).__name__}")
    missing = [key for key in GUARDED if key not in baseline]
    if missing:
        raise ValueError(f"accuracy_baseline lacks {', '.join(missing)} (it needs {', '.join(GUARDED)})")
    out = {}
    for key in GUARDED:
        value = baseline[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"accuracy_baseline[{key!r}] must be an accuracy in [0, 1], got {value!r}")
        out[key] = float(value)
    return out
