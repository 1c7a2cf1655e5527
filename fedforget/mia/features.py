"""Attack features of a classifier's outputs, and the model query every oracle uses.

The feature vector of one sample ``(x, y)`` with logits ``z`` (``K`` classes, softmax ``p``) has
:data:`NUM_FEATURES` = ``TOP_K + 3`` = 13 columns, in this order:

==========  =================================================================================
columns     feature
==========  =================================================================================
0 .. 9      the posterior vector sorted in descending order, ``p_(1) >= p_(2) >= ...``, the top
            ``k = min(K, 10)`` entries, padded with zeros to 10 columns when ``K < 10`` (so the
            width does not depend on the dataset)
10          the cross-entropy loss ``-log p_y``
11          the true-class confidence ``p_y``
12          the logit-scaled confidence ``phi = log(p_y / (1 - p_y))``, clipped to ``[-PHI_CLIP,
            PHI_CLIP]``
==========  =================================================================================

Numerics: from logits, everything is computed in float64 with ``log_softmax``, and ``phi`` as
``z_y - logsumexp_{j != y} z_j`` (Carlini et al. 2022, eq. 4), which equals ``log(p_y / (1 - p_y))``
without ever forming ``1 - p_y`` (a float32 softmax rounds ``p_y`` to exactly 1 for a confident model,
which would make ``phi`` infinite). From probabilities (:func:`features_from_probs`), ``p`` is clipped to
``[PROB_EPS, 1 - PROB_EPS]`` first, which caps ``phi`` at about 27.6; the oracles always use logits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = [
    "FEATURE_NAMES",
    "NUM_FEATURES",
    "PHI_CLIP",
    "PROB_EPS",
    "TOP_K",
    "check_inputs",
    "features_from_logits",
    "features_from_probs",
    "model_logits",
    "phi_from_logits",
]

TOP_K = 10
"""Sorted-posterior columns (``k = min(num_classes, TOP_K)``, zero-padded to ``TOP_K``)."""
PHI_CLIP = 50.0
"""``|phi|`` is clipped to this (``p_y`` within ``2e-22`` of 0 or 1 is indistinguishable anyway)."""
PROB_EPS = 1e-12
"""Probabilities are clipped to ``[PROB_EPS, 1 - PROB_EPS]`` in :func:`features_from_probs`."""
FEATURE_NAMES: tuple[str, ...] = (*(f"p_sorted_{i + 1}" for i in range(TOP_K)), "loss", "p_y", "phi")
NUM_FEATURES = len(FEATURE_NAMES)


def check_inputs(x: np.ndarray, y: np.ndarray, *, what: str = "samples") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` as float32 / int64 arrays; ValueError when empty, misaligned or labels not integers."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"{what}: x must be a batch (N x features...), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{what}: x is empty (0 samples)")
    if y.ndim != 1:
        raise ValueError(f"{what}: y must be a 1-D array of labels, got shape {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{what}: {len(x)} samples but {len(y)} labels")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"{what}: labels must be integers, got dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{what}: negative label {int(y.min())}")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


@torch.no_grad()
def model_logits(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits ``N x K`` (float64) of ``model`` on ``x`` in eval mode; the model's train/eval mode is kept.

    ValueError when ``x`` does not fit the model (checked against ``model.input_shape`` when the model
    has one, else from the error of the forward pass).
    """
    x = np.asarray(x, dtype=np.float32)
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        raise ValueError(
            f"samples have shape {tuple(x.shape[1:])} but the model ({type(model).__name__}) expects "
            f"{tuple(expected)}"
        )
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for begin in range(0, len(x), batch_size):
            part = np.ascontiguousarray(x[begin : begin + batch_size])
            batch = torch.from_numpy(part if part.flags.writeable else part.copy()).to(device)
            chunks.append(model(batch).detach().to("cpu", torch.float64))
    except RuntimeError as error:
        raise ValueError(
            f"samples of shape {tuple(x.shape[1:])} do not fit the model ({type(model).__name__}): {error}"
        ) from error
    finally:
        model.train(was_training)
    logits = torch.cat(chunks).numpy()
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"the model must output N x num_classes logits (>= 2 classes), got {logits.shape}")
    return logits


def _check_labels(num_classes: int, y: np.ndarray) -> None:
    if len(y) and int(y.max()) >= num_classes:
        raise ValueError(
            f"label {int(y.max())} outside [0, {num_classes}) of the model's {num_classes} outputs"
        )


def phi_from_logits(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Logit-scaled true-class confidence ``log(p_y / (1 - p_y))``, stable, clipped to ``±PHI_CLIP``."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    yt = torch.from_numpy(np.array(y, dtype=np.int64))  # a copy: y may be a read-only cached array
    _check_labels(z.shape[1], np.asarray(y))
    rows = torch.arange(len(yt))
    z_y = z[rows, yt]
    others = z.clone()
    others[rows, yt] = -math.inf
    phi = z_y - torch.logsumexp(others, dim=1)
    return phi.clamp(-PHI_CLIP, PHI_CLIP).numpy()


def features_from_logits(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The ``N x NUM_FEATURES`` float64 feature matrix (see the module docstring) from logits."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = np.asarray(y, dtype=np.int64)
    _check_labels(z.shape[1], y)
    log_p = torch.log_softmax(z, dim=1).numpy()
    rows = np.arange(len(y))
    probs = np.exp(log_p)
    loss = -log_p[rows, y]
    return _assemble(probs, loss, probs[rows, y], phi_from_logits(z.numpy(), y))


def features_from_probs(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The feature matrix from softmax vectors (e.g. :func:`fedforget.training.predict_proba`)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), PROB_EPS, 1.0 - PROB_EPS)
    y = np.asarray(y, dtype=np.int64)
    if p.ndim != 2:
        raise ValueError(f"probs must be N x num_classes, got shape {p.shape}")
    _check_labels(p.shape[1], y)
    rows = np.arange(len(y))
    p_y = p[rows, y]
    phi = np.clip(np.log(p_y) - np.log1p(-p_y), -PHI_CLIP, PHI_CLIP)
    return _assemble(p, -np.log(p_y), p_y, phi)


def _assemble(probs: np.ndarray, loss: np.ndarray, p_y: np.ndarray, phi: np.ndarray) -> np.ndarray:
    k = min(probs.shape[1], TOP_K)
    top = -np.sort(-probs, axis=1)[:, :k]
    out = np.zeros((len(probs), NUM_FEATURES), dtype=np.float64)
    out[:, :k] = top
    out[:, TOP_K] = loss
    out[:, TOP_K + 1] = p_y
    out[:, TOP_K + 2] = phi
    return out
