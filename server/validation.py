"""What the server accepts from a client: masks (unlearning) and model updates (training).

Nothing a client sends touches the global model before it passes these checks; a rejected reply is
logged in ``metrics.jsonl`` (``mask-rejected`` / ``update-rejected`` with the reason) and left out.

* a **mask** ``m`` (``train.unlearn``): only names of trainable parameters, each with the
  parameter's shape, a floating dtype, finite values, and ``||m||_2 <= max-mask-ratio * ||w||_2``;
* a **training update** ``w_k`` (``train``): exactly the global state_dict's names, shapes and dtypes,
  finite values, ``||w_k - w||_2 <= max-update-ratio * ||w||_2`` over the trainable parameters, and
  ``0 <= num-examples <= the largest client's training set`` (so a client cannot buy itself more
  weight in FedAvg than any real client has).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch


class MaskRejected(ValueError):
    """A client's mask failed validation."""


class UpdateRejected(ValueError):
    """A client's training update failed validation."""


def parameter_names(model: torch.nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters()}


def _norm(state: Mapping[str, torch.Tensor], names: set[str]) -> float:
    return math.sqrt(sum(float(state[n].double().square().sum()) for n in names))


def validate_mask(
    mask: Mapping[str, np.ndarray], state: Mapping[str, torch.Tensor], trainable: set[str], max_ratio: float
) -> None:
    """Raise :class:`MaskRejected` unless ``mask`` is a sane change of the ``trainable`` parameters."""
    if not mask:
        raise MaskRejected("the mask is empty")
    unknown = sorted(set(mask) - trainable)
    if unknown:
        raise MaskRejected(f"the mask names parameters the model does not train: {unknown[:5]}")
    squared = 0.0
    for name, delta in mask.items():
        expected = tuple(state[name].shape)
        if tuple(delta.shape) != expected:
            raise MaskRejected(f"mask[{name!r}] has shape {tuple(delta.shape)}, the parameter has {expected}")
        if delta.dtype.kind != "f":
            raise MaskRejected(f"mask[{name!r}] has dtype {delta.dtype}, expected a float type")
        if not np.isfinite(delta).all():
            raise MaskRejected(f"mask[{name!r}] holds non-finite values")
        squared += float(np.square(delta, dtype=np.float64).sum())
    model_norm = _norm(state, trainable)
    if math.sqrt(squared) > max_ratio * model_norm:
        raise MaskRejected(
            f"mask L2 norm {math.sqrt(squared):.4g} exceeds max-mask-ratio x model norm "
            f"({max_ratio} x {model_norm:.4g})"
        )


def validate_update(
    update: Mapping[str, np.ndarray],
    state: Mapping[str, torch.Tensor],
    trainable: set[str],
    max_ratio: float,
    num_examples: float,
    max_examples: int,
) -> None:
    """Raise :class:`UpdateRejected` unless ``update`` is a sane locally trained model."""
    missing, extra = sorted(set(state) - set(update)), sorted(set(update) - set(state))
    if missing or extra:
        raise UpdateRejected(
            f"the update's names differ from the model's (missing {missing[:5]}, extra {extra[:5]})"
        )
    squared = 0.0
    for name, value in update.items():
        reference = state[name].detach().cpu().numpy()
        if tuple(value.shape) != reference.shape:
            raise UpdateRejected(
                f"update[{name!r}] has shape {tuple(value.shape)}, the model has {reference.shape}"
            )
        if value.dtype != reference.dtype:
            raise UpdateRejected(f"update[{name!r}] has dtype {value.dtype}, the model has {reference.dtype}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise UpdateRejected(f"update[{name!r}] holds non-finite values")
        if name in trainable:
            squared += float(np.square(value.astype(np.float64) - reference.astype(np.float64)).sum())
    model_norm = _norm(state, trainable)
    if math.sqrt(squared) > max_ratio * model_norm:
        raise UpdateRejected(
            f"update moves the model by L2 {math.sqrt(squared):.4g}, more than max-update-ratio x model norm "
            f"({max_ratio} x {model_norm:.4g})"
        )
    if not (
        math.isfinite(num_examples) and 0 <= num_examples <= max_examples and float(num_examples).is_integer()
    ):
        raise UpdateRejected(
            f"num-examples {num_examples!r} is not a whole number in [0, {max_examples}] (largest client)"
        )
