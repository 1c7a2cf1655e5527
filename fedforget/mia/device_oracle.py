"""The device's own steering oracle: what an unlearning method (Forsaken) may steer by.

An unlearning method that needs a membership oracle must not steer by the server's judge (then FR
would measure how well the method fooled that one judge). The steering oracle is fitted **on the
device, from the device's data only**, on the current model:

* members: the device's retained training samples (the model trained on them);
* non-members: the device's held-out samples (no model trained on them);

and it is of a **different family** from the judge's headline attack (``fedforget.judge``: a loss
threshold calibrated on the global model): a small learned classifier over Shokri et al.'s 13
output features (:mod:`fedforget.mia.features`: the sorted posterior, loss, ``p_y``, ``phi``),
``Linear(13, 64) -> ReLU -> Linear(64, 1)`` trained exactly as the Shokri attack network
(:mod:`fedforget.mia.shokri`: standardised features, classes weighted equally, full-batch Adam), but
on the *target's own* member / non-member rows instead of shadow models' -- so there are no shadow
models and nothing from the server. Threshold: Youden's J on those rows
(:func:`fedforget.mia.strength.youden_threshold`).

It is a :class:`fedforget.mia.shokri.ShokriOracle` (``scores``, ``decide``, ``threshold``;
:func:`fedforget.forsaken.oracle.check_oracle` accepts it, and Forsaken's hinge objective finds its
differentiable margin, :mod:`fedforget.forsaken.surrogate`) with ``name = "device-shokri"``.

Seeded: each side is subsampled to at most ``max_samples`` with
``numpy.random.default_rng([seed, 0x5D0E, side])`` and the attack network is initialised from
``seed``; the same data and seed give the same oracle (the global torch / numpy RNGs are neither
read nor changed). Cost: one forward pass over at most ``2 x max_samples`` rows and 300 full-batch
Adam steps of a ~1k-parameter network (well under a second on a CPU).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from torch import nn

from fedforget.mia.features import check_inputs, features_from_logits, model_logits
from fedforget.mia.shokri import HIDDEN, ShokriOracle, _train_attack
from fedforget.mia.strength import youden_threshold

__all__ = [
    "DEVICE_ORACLE_FAMILY",
    "MAX_DEVICE_SAMPLES",
    "MIN_DEVICE_SAMPLES",
    "DeviceOracle",
    "fit_device_oracle",
]

DEVICE_ORACLE_FAMILY = "learned-classifier"
"""The attack family (the judge's headline, ``loss``, is a ``"threshold"`` on one statistic)."""
MAX_DEVICE_SAMPLES = 2000
"""Default cap on the member and on the non-member rows."""
MIN_DEVICE_SAMPLES = 5
"""Fewest members and non-members the oracle is fitted from."""
_STREAM = 0x5D0E


class DeviceOracle(ShokriOracle):
    """A Shokri-style attack network fitted on the device's own members / non-members (module docstring)."""

    name: ClassVar[str] = "device-shokri"
    family: ClassVar[str] = DEVICE_ORACLE_FAMILY

    @classmethod
    def fit(cls, *args: object, **kwargs: object) -> DeviceOracle:  # type: ignore[override]
        """Not from shadow models: use :func:`fit_device_oracle` (the device's own data)."""
        raise TypeError("DeviceOracle is fitted on the device's data: use fit_device_oracle(model, ...)")


def _cap(x: np.ndarray, y: np.ndarray, limit: int, seed: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    if limit and len(x) > limit:
        keep = np.sort(np.random.default_rng([int(seed), _STREAM, side]).choice(len(x), limit, replace=False))
        return x[keep], y[keep]
    return x, y


def fit_device_oracle(
    model: nn.Module,
    *,
    members: tuple[np.ndarray, np.ndarray],
    nonmembers: tuple[np.ndarray, np.ndarray],
    seed: int = 0,
    max_samples: int = MAX_DEVICE_SAMPLES,
) -> DeviceOracle:
    """Fit the steering oracle on ``model`` from the device's ``members`` (retained) and ``nonmembers``
    (held-out) samples; ValueError (one line) with fewer than :data:`MIN_DEVICE_SAMPLES` of either."""
    xm, ym = check_inputs(*members, what="device members (retained samples)")
    xn, yn = check_inputs(*nonmembers, what="device non-members (held-out samples)")
    if min(len(xm), len(xn)) < MIN_DEVICE_SAMPLES:
        raise ValueError(
            f"the device oracle needs >= {MIN_DEVICE_SAMPLES} members and non-members, "
            f"got {len(xm)} and {len(xn)}"
        )
    xm, ym = _cap(xm, ym, max_samples, seed, 0)
    xn, yn = _cap(xn, yn, max_samples, seed, 1)
    logits_m, logits_n = model_logits(model, xm), model_logits(model, xn)
    features = np.concatenate([features_from_logits(logits_m, ym), features_from_logits(logits_n, yn)])
    labels = np.concatenate([np.ones(len(xm), dtype=bool), np.zeros(len(xn), dtype=bool)])
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    net = _train_attack((features - mean) / std, labels, HIDDEN, int(seed))
    oracle = DeviceOracle("global", mean, std, net, {}, logits_m.shape[1], 0.5, HIDDEN)
    scores = oracle._score_features(features, np.concatenate([ym, yn]))
    oracle.threshold = youden_threshold(scores, labels)
    oracle.calibration_scores, oracle.calibration_labels = scores, labels
    return oracle
