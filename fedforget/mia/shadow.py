"""Shadow models: copies of the target's architecture and recipe trained on the server's auxiliary data.

:func:`train_shadows` trains ``num_shadows`` models with :func:`fedforget.training.train` (the same
recipe as the global model). Shadow ``s`` trains on a seeded random half of the auxiliary data, its
``in_mask``; the other half is its "out" data. The halves are drawn *balanced per sample* (the scheme
of Carlini et al. 2022): every auxiliary sample is IN for exactly ``num_shadows // 2`` shadows (plus one
more with probability 1/2 when ``num_shadows`` is odd), chosen at random, so each shadow trains on
about half the data and every sample has OUT shadows to calibrate LiRA with. With one shadow this is
a plain random half.

Everything is seeded: the masks by ``(seed,)``, shadow ``s``'s initial weights and batch order by
``(seed, s)``, so the same call gives the same shadows.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fedforget.mia.features import check_inputs, model_logits
from fedforget.training import train

__all__ = ["MIN_AUX_SAMPLES", "ShadowModel", "build_seeded", "in_masks", "train_shadows"]

MIN_AUX_SAMPLES = 20
"""Fewest auxiliary samples :func:`train_shadows` accepts (each shadow needs an in and an out half)."""

_MASK, _SHADOW = 71, 73  # decorrelate the seeded streams


@dataclasses.dataclass(eq=False)
class ShadowModel:
    """One trained shadow: the model and which auxiliary samples it trained on."""

    model: nn.Module
    in_mask: np.ndarray
    """Boolean, one entry per auxiliary sample: True = trained on it (member of this shadow)."""
    seed: int
    train_loss: float = float("nan")


def build_seeded(model_factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``model_factory()`` with its initial weights drawn from ``torch.manual_seed(seed)``.

    The global torch RNG is left untouched (the factory runs inside ``torch.random.fork_rng``).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = model_factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_factory must return a torch.nn.Module, got {type(model).__name__}")
    return model


def in_masks(num_samples: int, num_shadows: int, seed: int) -> np.ndarray:
    """``num_shadows x num_samples`` boolean IN masks, balanced per sample (see the module docstring)."""
    if num_shadows < 1:
        raise ValueError(f"num_shadows must be >= 1, got {num_shadows}")
    rng = np.random.default_rng([int(seed), _MASK])
    ranks = np.argsort(rng.random((num_shadows, num_samples)), axis=0).argsort(axis=0)
    count = np.full(num_samples, num_shadows // 2)
    if num_shadows % 2:
        count += rng.random(num_samples) < 0.5
    return ranks < count[None, :]


def train_shadows(
    model_factory: Callable[[], nn.Module],
    x_aux: np.ndarray,
    y_aux: np.ndarray,
    *,
    num_shadows: int = 4,
    epochs: int = 10,
    learning_rate: float = 0.05,
    batch_size: int = 16,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool | None = None,
) -> list[ShadowModel]:
    """Train ``num_shadows`` shadow models on random halves of ``(x_aux, y_aux)``.

    ``model_factory()`` must build the target's architecture (e.g.
    ``lambda: build_model(name, info)``); the recipe arguments are those of
    :func:`fedforget.training.train` and should match how the target was trained (for FedAvg, about
    ``num_rounds * local_epochs`` epochs). ``progress``: a tqdm bar; ``None`` shows it only when
    stderr is a terminal.
    """
    x_aux, y_aux = check_inputs(x_aux, y_aux, what="auxiliary data")
    if num_shadows < 1:
        raise ValueError(f"num_shadows must be >= 1, got {num_shadows}")
    if len(x_aux) < MIN_AUX_SAMPLES:
        raise ValueError(
            f"auxiliary data has {len(x_aux)} samples; shadow models need at least {MIN_AUX_SAMPLES} "
            "(each trains on one half and is calibrated on the other)"
        )
    masks = in_masks(len(x_aux), num_shadows, seed)
    # The factory's model must accept the data: fail before the first (possibly long) training run.
    probe = build_seeded(model_factory, seed)
    model_logits(probe, x_aux[:2])

    shadows: list[ShadowModel] = []
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    for s in tqdm(range(num_shadows), desc="shadow models", unit="model", disable=disable, leave=False):
        mask = masks[s]
        if mask.sum() == 0 or mask.sum() == len(mask):
            raise ValueError("a shadow got an empty in or out half; use more auxiliary data")
        shadow_seed = int(np.random.default_rng([int(seed), _SHADOW, s]).integers(2**31))
        model = build_seeded(model_factory, shadow_seed)
        result = train(
            model,
            x_aux[mask],
            y_aux[mask],
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            momentum=momentum,
            weight_decay=weight_decay,
            seed=shadow_seed,
        )
        model.eval()
        shadows.append(ShadowModel(model, mask, shadow_seed, result.loss))
    return shadows
