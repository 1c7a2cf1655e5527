"""Offline LiRA (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022).

For a target sample ``(x, y)`` let ``phi`` be the target model's logit-scaled true-class confidence
``log(p_y / (1 - p_y))`` (:func:`fedforget.mia.features.phi_from_logits`) and ``phi_1 .. phi_n`` that
of the ``n`` shadow models that did **not** train on it (the OUT shadows). Offline LiRA models the
OUT confidences of this sample as a Gaussian ``N(mu, sigma^2)`` and asks how unusually *high* the
target's confidence is:

    mu    = mean(phi_1 .. phi_n)                                   (per sample)
    sigma = global_sigma, or std(phi_1 .. phi_n) when n >= min_shadows_per_sample_std
    z     = (phi - mu) / (sigma * sqrt(1 + 1 / n))
    score = Phi(z)       (standard normal CDF; one-sided, higher = more member-like)

``global_sigma`` (the paper's "fixed variance", which it recommends with few shadows) is the pooled
within-sample standard deviation of the OUT confidences on the auxiliary data:
``sqrt(sum_i sum_{OUT s} (phi_si - mu_i)^2 / sum_i (n_i - 1))`` over samples with ``n_i >= 2``. The
factor ``sqrt(1 + 1/n)`` is the predictive spread of a fresh OUT draw when ``mu`` is estimated from
``n`` shadows; it makes ``z`` standard normal for non-members whatever ``n`` is, so the threshold
calibrated on the auxiliary data (where ``n`` is about half the shadows) transfers to client data.

Samples that no shadow trained on -- every client sample, since the auxiliary data is disjoint from
the clients -- have all shadows OUT (``n = num_shadows``). Scoring does not know which auxiliary
samples the shadows trained on (the state carries no data), so do not score auxiliary samples.

Threshold: :func:`fedforget.mia.strength.youden_threshold` over leave-one-shadow-out scores on the
auxiliary data: each shadow ``s`` in turn plays the target, every auxiliary sample is scored against
the OUT shadows other than ``s`` (member label: whether ``s`` trained on it); samples with no other
OUT shadow are skipped. This needs at least 3 shadows.

State: the shadows' ``state_dict`` tensors as ``"shadow/<s>/<name>"`` arrays; rebuilding needs the
model factory of the target's architecture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fedforget.mia import STATE_FORMAT, MembershipOracle, ModelFactory, check_state
from fedforget.mia.features import model_logits, phi_from_logits
from fedforget.mia.shadow import ShadowModel
from fedforget.mia.strength import youden_threshold

__all__ = ["MIN_SHADOWS", "MIN_SHADOWS_PER_SAMPLE_STD", "LiraOracle"]

MIN_SHADOWS = 3
MIN_SHADOWS_PER_SAMPLE_STD = 16
"""With at least this many OUT shadows a sample gets its own sigma; below, the global sigma is used."""
_SIGMA_FLOOR = 1e-6


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.as_tensor(np.asarray(z, dtype=np.float64))).numpy()


def _out_stats(
    phis: np.ndarray, out: np.ndarray, global_sigma: float, min_per_sample: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column ``(mu, sigma, n)`` of the OUT rows of ``phis`` (``S x N``)."""
    n = out.sum(axis=0)
    safe_n = np.maximum(n, 1)
    mu = (phis * out).sum(axis=0) / safe_n
    sigma = np.full(phis.shape[1], global_sigma)
    own = n >= max(min_per_sample, 2)
    if own.any():
        resid = ((phis - mu) ** 2 * out).sum(axis=0)
        sigma[own] = np.sqrt(resid[own] / (n[own] - 1))
    return mu, np.maximum(sigma, _SIGMA_FLOOR), n


class LiraOracle(MembershipOracle):
    """Offline LiRA over a set of shadow models (see the module docstring)."""

    name: ClassVar[str] = "lira"

    def __init__(
        self,
        shadow_models: Sequence[nn.Module],
        global_sigma: float,
        threshold: float,
        min_shadows_per_sample_std: int = MIN_SHADOWS_PER_SAMPLE_STD,
    ) -> None:
        if len(shadow_models) < 1:
            raise ValueError("LiRA needs shadow models")
        self.shadow_models = list(shadow_models)
        for model in self.shadow_models:
            model.eval()
        self.global_sigma = float(global_sigma)
        self.threshold = float(threshold)
        self.min_shadows_per_sample_std = int(min_shadows_per_sample_std)
        self.calibration_scores: np.ndarray | None = None
        """Leave-one-shadow-out scores the threshold was chosen on (set by :meth:`fit` only)."""
        self.calibration_labels: np.ndarray | None = None

    # ------------------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        shadows: Sequence[ShadowModel],
        x_aux: np.ndarray,
        y_aux: np.ndarray,
        *,
        min_shadows_per_sample_std: int = MIN_SHADOWS_PER_SAMPLE_STD,
    ) -> LiraOracle:
        """Fit ``global_sigma`` and the threshold on the shadows' in/out auxiliary samples."""
        x_aux, y_aux = cls._inputs(x_aux, y_aux)
        if len(shadows) < MIN_SHADOWS:
            raise ValueError(f"LiRA needs at least {MIN_SHADOWS} shadow models, got {len(shadows)}")
        for shadow in shadows:
            if len(shadow.in_mask) != len(x_aux):
                raise ValueError(
                    f"a shadow's in_mask has {len(shadow.in_mask)} entries but there are {len(x_aux)} "
                    "auxiliary samples (shadows must be trained on this auxiliary data)"
                )
        phis = np.stack([phi_from_logits(model_logits(s.model, x_aux), y_aux) for s in shadows])
        members = np.stack([np.asarray(s.in_mask, dtype=bool) for s in shadows])
        out = ~members

        # pooled within-sample spread of the OUT confidences
        n = out.sum(axis=0)
        usable = n >= 2
        if usable.any():
            mu = (phis * out).sum(axis=0) / np.maximum(n, 1)
            resid = ((phis - mu) ** 2 * out)[:, usable].sum()
            global_sigma = math.sqrt(resid / (n[usable] - 1).sum())
        else:  # no sample has two OUT shadows: the spread across samples (an over-estimate)
            global_sigma = float(np.std(phis[out], ddof=1)) if out.sum() > 1 else 1.0
        global_sigma = max(global_sigma, _SIGMA_FLOOR)

        scores, labels = [], []
        for s in range(len(shadows)):
            others = out.copy()
            others[s] = False
            mu, sigma, n_s = _out_stats(phis, others, global_sigma, min_shadows_per_sample_std)
            keep = n_s > 0
            z = (phis[s, keep] - mu[keep]) / (sigma[keep] * np.sqrt(1.0 + 1.0 / n_s[keep]))
            scores.append(_normal_cdf(z))
            labels.append(members[s, keep])
        calibration_scores = np.concatenate(scores)
        calibration_labels = np.concatenate(labels)
        threshold = youden_threshold(calibration_scores, calibration_labels)
        oracle = cls([s.model for s in shadows], global_sigma, threshold, min_shadows_per_sample_std)
        oracle.calibration_scores, oracle.calibration_labels = calibration_scores, calibration_labels
        return oracle

    # ------------------------------------------------------------------------------ scoring
    def z_scores(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The standardised confidence ``z`` (before the normal CDF) of every sample."""
        x, y = self._inputs(x, y)
        logits = model_logits(model, x)
        expected = None
        phis = []
        for shadow in self.shadow_models:
            shadow_logits = model_logits(shadow, x)
            expected = shadow_logits.shape[1]
            phis.append(phi_from_logits(shadow_logits, y))
        if logits.shape[1] != expected:
            raise ValueError(f"the model has {logits.shape[1]} outputs but the shadow models have {expected}")
        phi = phi_from_logits(logits, y)
        stacked = np.stack(phis)
        mu, sigma, n = _out_stats(
            stacked, np.ones_like(stacked, dtype=bool), self.global_sigma, self.min_shadows_per_sample_std
        )
        return (phi - mu) / (sigma * np.sqrt(1.0 + 1.0 / n))

    def scores(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _normal_cdf(self.z_scores(model, x, y))

    # ------------------------------------------------------------------------------ state
    def to_state(self) -> tuple[dict[str, np.ndarray], dict[str, int | float | str | bool]]:
        arrays: dict[str, np.ndarray] = {}
        for s, model in enumerate(self.shadow_models):
            for key, value in model.state_dict().items():
                arrays[f"shadow/{s}/{key}"] = value.detach().cpu().numpy().copy()
        config: dict[str, int | float | str | bool] = {
            "name": self.name,
            "format": STATE_FORMAT,
            "threshold": self.threshold,
            "num_shadows": len(self.shadow_models),
            "global_sigma": self.global_sigma,
            "min_shadows_per_sample_std": self.min_shadows_per_sample_std,
        }
        return arrays, config

    @classmethod
    def from_state(
        cls, arrays: Mapping[str, np.ndarray], config: Mapping[str, Any], model_factory: ModelFactory
    ) -> LiraOracle:
        """Rebuild the shadows with ``model_factory()`` and load their weights from ``arrays``."""
        check_state(arrays, config)
        if config.get("name") != cls.name:
            raise ValueError(f"state of oracle {config.get('name')!r}, not {cls.name!r}")
        if model_factory is None:
            raise ValueError("LiRA's state holds shadow weights: rebuilding needs the model factory")
        models = []
        for s in range(int(config["num_shadows"])):
            prefix = f"shadow/{s}/"
            model = model_factory()
            wanted = model.state_dict()
            given = {k[len(prefix) :] for k in arrays if k.startswith(prefix)}
            missing, extra = sorted(set(wanted) - given), sorted(given - set(wanted))
            if missing or extra:
                raise ValueError(
                    f"shadow {s} in the state does not match the factory's {type(model).__name__}: "
                    f"missing {missing[:5]}, unexpected {extra[:5]}"
                )
            state = {}
            for key, tensor in wanted.items():
                array = np.asarray(arrays[prefix + key])
                if tuple(array.shape) != tuple(tensor.shape):
                    raise ValueError(
                        f"shadow {s} tensor {key!r} has shape {array.shape} in the state, "
                        f"{tuple(tensor.shape)} in the factory's model"
                    )
                state[key] = torch.from_numpy(np.array(array, dtype=array.dtype))
            model.load_state_dict(state)
            model.eval()
            models.append(model)
        return cls(
            models,
            float(config["global_sigma"]),
            float(config["threshold"]),
            int(config["min_shadows_per_sample_std"]),
        )
