"""Neurons of a PyTorch model, and the per-neuron features the mask generator reads.

A **neuron** is an output unit of an ``nn.Linear`` layer or an output channel of an ``nn.Conv1d/2d/3d``
layer. The neuron owns row ``j`` (dimension 0) of its layer's ``weight`` and entry ``j`` of its
``bias``; the affine parameters (``weight``, ``bias``) of a BatchNorm layer that follows the
convolution / linear layer in registration order and has as many features as it has neurons are
owned by the same neurons (channel ``j`` of the BatchNorm belongs to neuron ``j``). A BatchNorm with
no such predecessor is a layer of its own whose neurons are its channels. Parameters of any other
module (LayerNorm, embeddings, ...) are not masked: Forsaken leaves them unchanged. BatchNorm running
statistics are buffers, never masked, and stay frozen (every forward pass runs in eval mode).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

__all__ = ["FEATURE_NAMES", "NUM_FEATURES", "Layer", "find_layers", "neuron_features"]

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_EPS = 1e-12

FEATURE_NAMES: tuple[str, ...] = (
    "log_forget_grad_rel",  # log ||g_f,j|| - log mean_layer ||g_f||
    "log_forget_grad_to_weight",  # log ||g_f,j|| - log ||w_j||
    "cos_forget_retain",  # cos(g_f,j, g_r,j)
    "log_retain_to_forget_grad",  # log ||g_r,j|| - log ||g_f,j||
    "activation_gap",  # (mean act on forget - mean act on reference) / std act on reference
    "abs_activation_gap",
    "log_activation_rel",  # log mean |act| on forget - log layer mean of that
    "log_weight_rel",  # log ||w_j|| - log mean_layer ||w||
    "shrink_fraction",  # fraction of the neuron's weights the forgetting step moves towards 0
    "depth",  # layer index / (number of layers - 1)
    "is_output",  # 1 for the output layer
)
NUM_FEATURES = len(FEATURE_NAMES)
_RAW = {"depth", "is_output"}  # not standardised


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer of neurons: the parameters it owns (dimension 0 = neuron index) and its module."""

    name: str
    module: nn.Module
    params: tuple[str, ...]
    num_neurons: int
    depth: float
    is_output: bool


def find_layers(model: nn.Module) -> list[Layer]:
    """The model's layers of neurons, in registration order (see the module docstring)."""
    found: list[tuple[str, nn.Module, list[str], int]] = []
    last: tuple[str, nn.Module, list[str], int] | None = None
    for module_name, module in model.named_modules():
        own = [n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        full = [f"{module_name}.{n}" if module_name else n for n in own]
        if isinstance(module, _WEIGHTED) and "weight" in own:
            last = (module_name, module, full, int(module.weight.shape[0]))
            found.append(last)
        elif isinstance(module, _NORMS) and module.affine and own:
            if last is not None and last[3] == module.num_features:
                last[2].extend(full)
                last = None  # one BatchNorm per layer
            else:
                found.append((module_name, module, full, int(module.num_features)))
                last = None
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no trainable Linear, Conv or BatchNorm layer: Forsaken masks "
            "neurons of those layers"
        )
    count = len(found)
    return [
        Layer(
            name=name,
            module=module,
            params=tuple(params),
            num_neurons=neurons,
            depth=index / (count - 1) if count > 1 else 1.0,
            is_output=index == count - 1,
        )
        for index, (name, module, params, neurons) in enumerate(found)
    ]


def _rows(tensor: torch.Tensor, neurons: int) -> torch.Tensor:
    return tensor.reshape(neurons, -1)


def _neuron_concat(layer: Layer, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """``num_neurons x P``: each neuron's parameters (weight row, bias, BatchNorm affine) side by side."""
    return torch.cat([_rows(values[p], layer.num_neurons) for p in layer.params], dim=1)


@torch.no_grad()
def neuron_features(
    layers: list[Layer],
    params: dict[str, torch.Tensor],
    grad_forget: dict[str, torch.Tensor],
    grad_retain: dict[str, torch.Tensor],
    act_forget: dict[str, torch.Tensor],
    act_reference: dict[str, tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """The ``total_neurons x NUM_FEATURES`` feature matrix (rows in layer order; see FEATURE_NAMES).

    ``act_forget[layer]`` is the per-neuron mean activation on the forget batch; ``act_reference`` the
    mean and standard deviation (over samples) on the reference batch. Every column except ``depth``
    and ``is_output`` is standardised over all neurons (z-score, clipped to +-5), so the generator sees
    the same scale whatever the model.
    """
    blocks = []
    for layer in layers:
        w = _neuron_concat(layer, params)
        gf = _neuron_concat(layer, grad_forget)
        gr = _neuron_concat(layer, grad_retain)
        gf_norm = gf.norm(dim=1)
        gr_norm = gr.norm(dim=1)
        w_norm = w.norm(dim=1)
        cos = (gf * gr).sum(dim=1) / (gf_norm * gr_norm + _EPS)
        mean_r, std_r = act_reference[layer.name]
        mean_f = act_forget[layer.name]
        gap = (mean_f - mean_r) / (std_r + 1e-6)
        act_abs = mean_f.abs()
        shrink = ((-gf * w) < 0).float().mean(dim=1)
        n = layer.num_neurons
        blocks.append(
            torch.stack(
                [
                    torch.log(gf_norm + _EPS) - math.log(float(gf_norm.mean()) + _EPS),
                    torch.log(gf_norm + _EPS) - torch.log(w_norm + _EPS),
                    cos,
                    torch.log(gr_norm + _EPS) - torch.log(gf_norm + _EPS),
                    gap,
                    gap.abs(),
                    torch.log(act_abs + 1e-6) - math.log(float(act_abs.mean()) + 1e-6),
                    torch.log(w_norm + _EPS) - math.log(float(w_norm.mean()) + _EPS),
                    shrink,
                    torch.full((n,), layer.depth),
                    torch.full((n,), 1.0 if layer.is_output else 0.0),
                ],
                dim=1,
            )
        )
    features = torch.cat(blocks).float()
    for column, name in enumerate(FEATURE_NAMES):
        if name in _RAW:
            continue
        values = features[:, column]
        std = values.std(unbiased=False)
        centred = values - values.mean()
        features[:, column] = (centred / std).clamp(-5.0, 5.0) if float(std) > 1e-8 else 0.0
    return torch.nan_to_num(features, nan=0.0, posinf=5.0, neginf=-5.0)


class ActivationRecorder:
    """Forward hooks collecting each layer's per-neuron output per sample (mean over spatial positions)."""

    def __init__(self, layers: list[Layer]) -> None:
        self.values: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
        self._handles = [layer.module.register_forward_hook(self._hook(layer.name)) for layer in layers]

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            out = output.detach()
            if out.dim() > 2:
                out = out.flatten(2).mean(dim=2)
            self.values[name].append(out.reshape(out.shape[0], -1))

        return hook

    def close(self) -> dict[str, torch.Tensor]:
        for handle in self._handles:
            handle.remove()
        return {name: torch.cat(chunks) for name, chunks in self.values.items() if chunks}
