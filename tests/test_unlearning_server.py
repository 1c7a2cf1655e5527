"""The server's checks on client masks and training updates, and how accepted masks are applied."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedforget import data, models
from fedforget.attempt_rules import target_met
from fedforget.unlearning_attempt import apply_masks
from fedforget.verify import model_hash
from server.validation import MaskRejected, UpdateRejected, parameter_names, validate_mask, validate_update


@pytest.fixture()
def model() -> torch.nn.Module:
    return models.build_model("logreg", data.info("digits"), seed=0)


def _good_mask(model: torch.nn.Module, scale: float = 1e-3) -> dict[str, np.ndarray]:
    return {n: np.full(tuple(p.shape), scale, dtype=np.float32) for n, p in model.named_parameters()}


def test_a_good_mask_passes_and_masks_are_summed(model: torch.nn.Module) -> None:
    state = model.state_dict()
    masks = [_good_mask(model, 1e-3), _good_mask(model, 2e-3)]
    for mask in masks:
        validate_mask(mask, state, parameter_names(model), max_ratio=1.0)
    new = apply_masks(state, masks)
    for name in state:
        np.testing.assert_allclose(new[name].numpy(), state[name].numpy() + 3e-3, rtol=1e-6)
    assert model_hash(new) != model_hash(state) and model_hash(state) == model_hash(model.state_dict())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.update({"linear.weight_x": np.zeros(3, np.float32)}), "does not train"),
        (lambda m: m.update({k: v[:1] for k, v in list(m.items())[:1]}), "has shape"),
        (lambda m: m.update({k: v.astype(np.int64) for k, v in list(m.items())[:1]}), "dtype"),
        (
            lambda m: next(iter(m.values())).__setitem__((0,) * next(iter(m.values())).ndim, np.nan),
            "non-finite",
        ),
        (lambda m: m.update({k: v * 1e6 for k, v in m.items()}), "exceeds max-mask-ratio"),
        (lambda m: m.clear(), "empty"),
    ],
)
def test_malformed_masks_are_rejected_with_a_clear_error(
    model: torch.nn.Module, mutate, message: str
) -> None:  # noqa: ANN001
    mask = _good_mask(model)
    mutate(mask)
    with pytest.raises(MaskRejected, match=message):
        validate_mask(mask, model.state_dict(), parameter_names(model), max_ratio=1.0)


def test_target_rules() -> None:
    assert target_met("fr", 0.9, {"fr": 0.95}) and not target_met("fr", 0.9, {"fr": 0.5})
    assert not target_met("fr", 0.9, {"fr": None})
    assert target_met("retrain", 0.9, {"attack-auc": 0.52}) and not target_met(
        "retrain", 0.9, {"attack-auc": 0.7}
    )


# ---------------------------------------------------------------------------------------- training updates
def _update(model: torch.nn.Module, shift: float = 1e-2) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() + np.float32(shift) for k, v in model.state_dict().items()}


def test_a_sane_training_update_passes(model: torch.nn.Module) -> None:
    validate_update(_update(model), model.state_dict(), parameter_names(model), 10.0, 120, max_examples=300)


@pytest.mark.parametrize(
    ("mutate", "examples", "message"),
    [
        (lambda u: u.pop(next(iter(u))), 10, "names differ"),
        (lambda u: u.update({"extra": np.zeros(2, np.float32)}), 10, "names differ"),
        (lambda u: u.update({k: v[:1] for k, v in list(u.items())[:1]}), 10, "has shape"),
        (lambda u: u.update({k: v.astype(np.float64) for k, v in list(u.items())[:1]}), 10, "dtype"),
        (
            lambda u: next(iter(u.values())).__setitem__((0,) * next(iter(u.values())).ndim, np.inf),
            10,
            "non-finite",
        ),
        (lambda u: u.update({k: v * 1e4 for k, v in u.items()}), 10, "max-update-ratio"),
        (lambda u: None, 10_000, "num-examples"),  # a client claiming more data than any client has
        (lambda u: None, -1, "num-examples"),
        (lambda u: None, float("nan"), "num-examples"),
        (lambda u: None, 2.5, "num-examples"),
    ],
)
def test_bad_training_updates_are_rejected_with_a_clear_error(
    model: torch.nn.Module, mutate, examples: float, message: str
) -> None:  # noqa: ANN001
    update = _update(model)
    mutate(update)
    with pytest.raises(UpdateRejected, match=message):
        validate_update(update, model.state_dict(), parameter_names(model), 10.0, examples, max_examples=300)


def test_a_mask_exactly_at_the_norm_bound_is_not_rejected_by_summation_order() -> None:
    """``m = -w`` at ``max-mask-ratio`` 1 has norm exactly the bound. numpy and torch add the squares
    in different orders, so about one state in six came out a few ulps above the bound and was
    rejected as "exceeds max-mask-ratio" (CI's failure of the trust-boundary test). At ratio 1 both
    norm rules admit it (``||w + m|| = 0 >= (1 - 1) ||w||``), and the model-health check is what
    refuses the zero model."""
    for seed in range(60):
        g = torch.Generator().manual_seed(seed)
        state = {
            "a": torch.randn(64, 37, generator=g),
            "b": torch.randn(1001, generator=g) * 0.3,
            "c": torch.randn(10, 64, generator=g),
        }
        mask = {k: -v.numpy() for k, v in state.items()}
        validate_mask(mask, state, set(state), 1.0)
        with pytest.raises(MaskRejected, match="exceeds max-mask-ratio"):
            validate_mask({k: v * (1 + 1e-6) for k, v in mask.items()}, state, set(state), 1.0)
        update = {k: (v * 2.0).numpy() for k, v in state.items()}
        validate_update(update, state, set(state), 1.0, 10, 10)
