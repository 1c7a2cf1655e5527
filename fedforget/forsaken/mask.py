"""The mask gradient: the per-neuron directions, the mask built from the gates, and applying a mask.

For every maskable parameter ``p`` of neuron ``j`` in layer ``l`` (``docs/forsaken.md``, The mask gradient)::

    D^f_p = -s_l dL_forget/dp
    D^k_p = -s_l d[(1 - e)(lambda_retain L_retain + lambda_reference L_reference)]/dp
    s_l   = RMS(w_l) / RMS(dL_forget/dw_l)        (RMS(D^f_l) = RMS(w_l): the layer's own scale)
    m_p   = eta * (a_j D^f_p + b_j D^k_p)         (a_j, b_j: the neuron's gates)

A mask is a ``{parameter name: delta}`` dict; :func:`apply_mask` adds one to a copy of a model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import nn

from fedforget.forsaken.neurons import ActivationRecorder, Layer, neuron_features
from fedforget.forsaken.objective import EPS, Objective
from fedforget.forsaken.sets import Batch

__all__ = ["apply_mask", "directions", "mask_from_gates", "sparse_term", "touched_neurons"]

Directions = dict[str, torch.Tensor]


def directions(objective: Objective, batch: Batch) -> tuple[torch.Tensor, Directions, Directions]:
    """Per-neuron features (the generator's input, :mod:`fedforget.forsaken.neurons`) and the forgetting
    / repair directions ``D^f``, ``D^k`` at the current weights on ``batch``."""
    weights, sets = objective.weights, objective.sets
    current = weights.params()
    leaves = {n: current[n].clone().requires_grad_(n in weights.masked) for n in current}
    masked = [leaves[n] for n in weights.masked]
    recorder = ActivationRecorder(weights.layers)
    forget_logits = weights.forward(leaves, sets.xf[batch.forget])
    act_forget = {k: v.mean(dim=0) for k, v in recorder.close().items()}
    forget_term = objective.forget_term(forget_logits, batch.forget)
    grad_forget = dict(zip(weights.masked, torch.autograd.grad(forget_term, masked), strict=True))
    recorder = ActivationRecorder(weights.layers)
    terms = {
        "retain": objective.criterion(weights.forward(leaves, sets.xk[batch.retain]), sets.yk[batch.retain])
    }
    logits_ref = weights.forward(leaves, sets.xr[batch.reference])
    act = recorder.close()
    act_reference = {k: (v.mean(dim=0), v.std(dim=0, unbiased=False)) for k, v in act.items()}
    if objective.config.lambda_reference > 0:
        terms["reference"] = objective.reference_term(logits_ref, batch.reference)
    keep = objective.keep(terms)
    grads = (
        torch.autograd.grad(keep, masked, allow_unused=True) if keep.requires_grad else [None] * len(masked)
    )
    grad_keep = {
        n: torch.zeros_like(current[n]) if g is None else g
        for n, g in zip(weights.masked, grads, strict=True)
    }
    features = neuron_features(weights.layers, current, grad_forget, grad_keep, act_forget, act_reference)
    # both directions use the layer's forgetting scale: RMS(forget direction) = RMS(layer parameters)
    forget_dir: Directions = {}
    keep_dir: Directions = {}
    for layer in weights.layers:
        w = torch.cat([current[n].reshape(-1) for n in layer.params])
        g = torch.cat([grad_forget[n].reshape(-1) for n in layer.params])
        scale = max(float(w.pow(2).mean().sqrt()), 1e-3) / (float(g.pow(2).mean().sqrt()) + EPS)
        for n in layer.params:
            forget_dir[n] = -grad_forget[n] * scale
            keep_dir[n] = -grad_keep[n] * scale
    return features, forget_dir, keep_dir


def mask_from_gates(
    layers: list[Layer],
    gates: torch.Tensor,
    forget_dir: Mapping[str, torch.Tensor],
    keep_dir: Mapping[str, torch.Tensor],
    eta: float,
) -> dict[str, torch.Tensor]:
    """m_p = eta * (a_j * D^f_p + b_j * D^k_p) for every parameter p of neuron j (``gates``: N x 2)."""
    mask: dict[str, torch.Tensor] = {}
    start = 0
    for layer in layers:
        a = gates[start : start + layer.num_neurons, 0]
        b = gates[start : start + layer.num_neurons, 1]
        start += layer.num_neurons
        for n in layer.params:
            shape = (-1, *([1] * (forget_dir[n].dim() - 1)))
            mask[n] = eta * (a.reshape(shape) * forget_dir[n] + b.reshape(shape) * keep_dir[n])
    return mask


def sparse_term(
    masked: list[str], mask: Mapping[str, torch.Tensor], forget_dir: Mapping[str, torch.Tensor], eta: float
) -> torch.Tensor:
    """S(m) = ||m||_1 / (eta * ||D^f||_1): 1 for the mask with every forget gate at 1 and no repair."""
    full = sum(float(forget_dir[n].abs().sum()) for n in masked) * eta
    return sum(mask[n].abs().sum() for n in masked) / (full + EPS)


def touched_neurons(layers: list[Layer], mask: Mapping[str, torch.Tensor]) -> int:
    """Neurons with a non-zero entry in ``mask``."""
    total = 0
    for layer in layers:
        rows = torch.cat([mask[n].reshape(layer.num_neurons, -1) for n in layer.params], dim=1)
        total += int((rows != 0).any(dim=1).sum())
    return total


def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor], scale: float = 1.0) -> nn.Module:
    """A copy of ``model`` with ``scale * mask[name]`` added to each named parameter (buffers unchanged).

    Names missing from ``mask`` are left as they are; an unknown name or a shape mismatch is an error.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    params = dict(model.named_parameters())
    unknown = sorted(set(mask) - set(params))
    if unknown:
        raise KeyError(f"mask names parameters the model does not have: {', '.join(unknown[:5])}")
    for name, delta in mask.items():
        if not isinstance(delta, torch.Tensor):
            raise TypeError(f"mask[{name!r}] must be a torch.Tensor, got {type(delta).__name__}")
        if tuple(delta.shape) != tuple(params[name].shape):
            raise ValueError(
                f"mask[{name!r}] has shape {tuple(delta.shape)}, "
                f"the parameter has {tuple(params[name].shape)}"
            )
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name in mask:
                delta = mask[name].to(device=p.device, dtype=p.dtype)
                p.copy_(p + delta if scale == 1.0 else p + scale * delta)
    return out
