"""What the server accepts from a client (masks, training updates) and of a new global model.

Nothing a client sends touches the global model before it passes these checks; a rejected reply is
logged in ``metrics.jsonl`` (``mask-rejected`` / ``update-rejected`` with the reason) and left out.
Norms are L2 over the named tensors, and a bound is exceeded only beyond rounding
(``NORM_ROUNDING``); ``floor(n) = NORM_FLOOR * sqrt(n)`` is the norm of ``n`` entries of RMS
``NORM_FLOOR``. Bounds are relative to ``max(||w||, floor)``, never to ``||w||``
alone, so a model whose norm has become tiny (or zero) still accepts honest changes.

* a **mask** ``m`` (``train.unlearn``): only names of trainable parameters, each with the
  parameter's shape, a floating dtype, finite values, and

  - ``||m||_2 <= r * max(||w||_2, floor(N))`` over the trainable parameters (``r`` =
    ``max-mask-ratio``, default 0.5; ``N`` trainable entries);
  - for every masked tensor ``t`` with ``||w_t|| >= floor(n_t)``:
    ``||w_t + m_t||_2 >= (1 - r) * ||w_t||_2``: a mask may shrink no tensor by more than the
    fraction ``r`` of its norm, so it cannot cancel a tensor (``m = -w`` fails both rules);
* a **training update** ``w_k`` (``train``): exactly the global state_dict's names, shapes and dtypes,
  finite values, ``||w_k - w||_2 <= max-update-ratio * max(||w||_2, floor(N))`` over the trainable
  parameters and, the same rule, over the floating buffers; batch-norm buffers sane (``*running_var``
  entries > 0, ``*num_batches_tracked`` >= 0); and ``0 <= num-examples <= the largest client's
  training set`` (so a client cannot buy itself more weight in FedAvg than any real client has);
* the **global model after an unlearning attempt** (:func:`check_model_health`, before the attempt
  commits): finite outputs on the test data and test accuracy at least the accuracy before the
  attempt minus ``max-accuracy-drop``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch

NORM_FLOOR = 1e-2
"""RMS per entry of the smallest norm a bound is taken relative to (``floor(n) = NORM_FLOOR sqrt(n)``)."""

NORM_ROUNDING = 1e-9
"""Relative slack of every norm bound: ``a`` exceeds ``bound`` only when ``a > bound (1 + NORM_ROUNDING)``.
Two float64 sums of the same squares in different orders (numpy's pairwise sum, torch's) differ in
the last bits, so a mask of norm exactly the bound (``m = -w`` at ratio 1) must not be rejected by the
order in which its squares were added."""

RUNNING_VAR, NUM_BATCHES = "running_var", "num_batches_tracked"
"""Name endings of the batch-norm buffers with a sign rule (variances > 0, counters >= 0)."""


class MaskRejected(ValueError):
    """A client's mask failed validation."""


class UpdateRejected(ValueError):
    """A client's training update failed validation."""


class ModelUnhealthy(ValueError):
    """A global model that must not be committed (non-finite outputs, or too little accuracy)."""


def parameter_names(model: torch.nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters()}


def floor_norm(num_entries: int) -> float:
    """``NORM_FLOOR * sqrt(num_entries)``."""
    return NORM_FLOOR * math.sqrt(num_entries)


def _exceeds(norm: float, bound: float) -> bool:
    """``norm > bound`` beyond rounding (:data:`NORM_ROUNDING`)."""
    return norm > bound * (1.0 + NORM_ROUNDING)


def _norm(state: Mapping[str, torch.Tensor], names: Iterable[str]) -> float:
    return math.sqrt(sum(float(state[n].double().square().sum()) for n in names))


def _entries(state: Mapping[str, torch.Tensor], names: Iterable[str]) -> int:
    return sum(int(state[n].numel()) for n in names)


def validate_mask(
    mask: Mapping[str, np.ndarray], state: Mapping[str, torch.Tensor], trainable: set[str], max_ratio: float
) -> None:
    """Raise :class:`MaskRejected` unless ``mask`` is a sane change of the ``trainable`` parameters
    (the rules in the module docstring)."""
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
    bound = max_ratio * max(model_norm, floor_norm(_entries(state, trainable)))
    if _exceeds(math.sqrt(squared), bound):
        raise MaskRejected(
            f"mask L2 norm {math.sqrt(squared):.4g} exceeds max-mask-ratio x max(model norm, floor) "
            f"({max_ratio} x max({model_norm:.4g}, {floor_norm(_entries(state, trainable)):.4g}))"
        )
    for name, delta in mask.items():
        weight = state[name].detach().double().cpu().numpy()
        norm = float(np.linalg.norm(weight))
        if norm < floor_norm(weight.size):
            continue
        after = float(np.linalg.norm(weight + delta.astype(np.float64)))
        if after < (1.0 - max_ratio) * norm:
            raise MaskRejected(
                f"mask[{name!r}] shrinks the parameter's L2 norm from {norm:.4g} to {after:.4g}, below "
                f"(1 - max-mask-ratio) x {norm:.4g}: a mask may not cancel a parameter tensor"
            )


def validate_update(
    update: Mapping[str, np.ndarray],
    state: Mapping[str, torch.Tensor],
    trainable: set[str],
    max_ratio: float,
    num_examples: float,
    max_examples: int,
) -> None:
    """Raise :class:`UpdateRejected` unless ``update`` is a sane locally trained model (the rules
    in the module docstring)."""
    missing, extra = sorted(set(state) - set(update)), sorted(set(update) - set(state))
    if missing or extra:
        raise UpdateRejected(
            f"the update's names differ from the model's (missing {missing[:5]}, extra {extra[:5]})"
        )
    buffers = [n for n in state if n not in trainable and state[n].is_floating_point()]
    moved = {"parameters": 0.0, "buffers": 0.0}
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
        if name.endswith(RUNNING_VAR) and not (value > 0).all():
            raise UpdateRejected(f"update[{name!r}] holds variances <= 0 (a batch-norm variance is positive)")
        if name.endswith(NUM_BATCHES) and not (value >= 0).all():
            raise UpdateRejected(f"update[{name!r}] is negative (a batch-norm step counter is >= 0)")
        kind = "parameters" if name in trainable else "buffers" if name in buffers else None
        if kind is not None:
            moved[kind] += float(np.square(value.astype(np.float64) - reference.astype(np.float64)).sum())
    for kind, names in (("parameters", trainable), ("buffers", buffers)):
        norm, floor = _norm(state, names), floor_norm(_entries(state, names))
        if _exceeds(math.sqrt(moved[kind]), max_ratio * max(norm, floor)):
            raise UpdateRejected(
                f"update moves the model's {kind} by L2 {math.sqrt(moved[kind]):.4g}, more than "
                f"max-update-ratio x max({kind} norm, floor) ({max_ratio} x max({norm:.4g}, {floor:.4g}))"
            )
    if not (
        math.isfinite(num_examples) and 0 <= num_examples <= max_examples and float(num_examples).is_integer()
    ):
        raise UpdateRejected(
            f"num-examples {num_examples!r} is not a whole number in [0, {max_examples}] (largest client)"
        )


@torch.no_grad()
def check_model_health(
    model: torch.nn.Module,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    accuracy_before: float,
    max_accuracy_drop: float,
    batch_size: int = 1024,
) -> float:
    """The test accuracy of ``model`` (its weights loaded); raise :class:`ModelUnhealthy` when an
    output on ``x_test`` is not finite or the accuracy is below ``accuracy_before -
    max_accuracy_drop``."""
    model.eval()
    correct = 0
    for begin in range(0, len(x_test), batch_size):
        x = torch.from_numpy(np.array(x_test[begin : begin + batch_size], dtype=np.float32))
        logits = model(x)
        if not torch.isfinite(logits).all():
            raise ModelUnhealthy("the model's outputs on the test data are not all finite")
        target = torch.from_numpy(np.array(y_test[begin : begin + batch_size], dtype=np.int64))
        correct += int((logits.argmax(dim=1) == target).sum())
    accuracy = correct / len(x_test) if len(x_test) else float("nan")
    if math.isfinite(accuracy_before) and not accuracy >= accuracy_before - max_accuracy_drop:
        raise ModelUnhealthy(
            f"test accuracy {accuracy:.4f} is below the accuracy before the attempt ({accuracy_before:.4f}) "
            f"minus max-accuracy-drop ({max_accuracy_drop})"
        )
    return accuracy
