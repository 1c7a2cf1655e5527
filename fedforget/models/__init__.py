"""Model zoo: every model maps a float32 batch ``N x input_shape`` to logits ``N x num_classes``.

=========  =====================================================================  ===============
name       model                                                                  fits
=========  =====================================================================  ===============
mlp        :class:`~fedforget.models.mlp.MLP`, hidden (256, 128), ReLU             any input
lenet      :class:`~fedforget.models.lenet.LeNet`, LeNet-5 style CNN               images >= 12x12
cnn        :class:`~fedforget.models.cnn.CifarCNN`, 3 conv blocks + 2 FC           images >= 8x8
resnet18   :class:`~fedforget.models.resnet.ResNet18`, torchvision, 32x32 stem     RGB images >= 8x8
logreg     :class:`~fedforget.models.linear.LogisticRegression`, flatten + linear  any input
svm        :class:`~fedforget.models.linear.LinearSVM`, flatten + linear (hinge)   any input
=========  =====================================================================  ===============

``model = "auto"`` picks :func:`default_model`: ``lenet`` for single-channel images up to 32 x 32
(mnist), ``cnn`` for other images (cifar10), ``mlp`` for tabular data.

To rebuild a run's global model from its record and load a checkpoint::

    config = json.loads((run_dir / "config.json").read_text())
    model = fedforget.models.build(config)
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "...", weights_only=True))

Train with ``criterion_for(model)`` (or ``criterion(name)``): cross-entropy for every model except
``svm``, which uses the multi-class hinge loss ``nn.MultiMarginLoss``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedforget.config import ConfigError, RunConfig
from fedforget.cost import track

if TYPE_CHECKING:
    from fedforget.data.base import DatasetInfo

__all__ = [
    "AUTO",
    "LOSSES",
    "MODELS",
    "ModelSpec",
    "build",
    "build_model",
    "count_parameters",
    "criterion",
    "criterion_for",
    "default_model",
    "model_names",
    "resolve_model_name",
]

AUTO = "auto"

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "multi_margin": nn.MultiMarginLoss,
}
"""Loss name (a model class's ``loss_name``) -> loss factory."""


# ---------------------------------------------------------------------------------------- factories
def _mlp(info: DatasetInfo) -> nn.Module:
    from fedforget.models.mlp import MLP

    return MLP(info.input_shape, info.num_classes)


def _lenet(info: DatasetInfo) -> nn.Module:
    from fedforget.models.lenet import LeNet

    return LeNet(info.input_shape, info.num_classes)


def _cnn(info: DatasetInfo) -> nn.Module:
    from fedforget.models.cnn import CifarCNN

    return CifarCNN(info.input_shape, info.num_classes)


def _resnet18(info: DatasetInfo) -> nn.Module:
    from fedforget.models.resnet import ResNet18

    return ResNet18(info.input_shape, info.num_classes)


def _logreg(info: DatasetInfo) -> nn.Module:
    from fedforget.models.linear import LogisticRegression

    return LogisticRegression(info.input_shape, info.num_classes)


def _svm(info: DatasetInfo) -> nn.Module:
    from fedforget.models.linear import LinearSVM

    return LinearSVM(info.input_shape, info.num_classes)


# ------------------------------------------------------------------------------------ compatibility
def _any_input(info: DatasetInfo) -> str | None:
    return None


def _image_at_least(size: int, channels: int | None = None) -> Callable[[DatasetInfo], str | None]:
    need = f"{channels}-channel images" if channels else "images"

    def check(info: DatasetInfo) -> str | None:
        shape = tuple(info.input_shape)
        if info.kind != "image" or len(shape) != 3:
            return f"needs {need} (C x H x W input), but '{info.name}' is {info.kind} data"
        if channels is not None and shape[0] != channels:
            return f"needs {need}, but '{info.name}' has {shape[0]} channel(s)"
        if min(shape[1:]) < size:
            return f"needs {need} of at least {size}x{size}, but '{info.name}' is {shape[1]}x{shape[2]}"
        return None

    return check


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registry entry: how to build a model and which datasets it fits."""

    name: str
    summary: str
    factory: Callable[[DatasetInfo], nn.Module]
    loss: str = "cross_entropy"
    incompatibility: Callable[[DatasetInfo], str | None] = _any_input
    """Returns why the model cannot take this dataset, or None when it can."""

    def fits(self, info: DatasetInfo) -> bool:
        return self.incompatibility(info) is None


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("mlp", "fully connected ReLU network, hidden (256, 128)", _mlp),
        ModelSpec("lenet", "LeNet-5 style CNN", _lenet, incompatibility=_image_at_least(12)),
        ModelSpec("cnn", "small CIFAR-10 CNN, 3 conv blocks", _cnn, incompatibility=_image_at_least(8)),
        ModelSpec(
            "resnet18",
            "torchvision ResNet-18, 3x3 stride-1 stem, no max-pool",
            _resnet18,
            incompatibility=_image_at_least(8, channels=3),
        ),
        ModelSpec("logreg", "multinomial logistic regression (flatten + linear)", _logreg),
        ModelSpec("svm", "linear multi-class SVM (flatten + linear, hinge loss)", _svm, loss="multi_margin"),
    )
}
"""Model name -> :class:`ModelSpec`, in documentation order."""


def model_names() -> tuple[str, ...]:
    """Every registered model name (``"auto"`` not included)."""
    return tuple(MODELS)


# ------------------------------------------------------------------------------------- public API
def default_model(info: DatasetInfo) -> str:
    """The model ``"auto"`` stands for: lenet for small greyscale images, cnn for other images, else mlp."""
    shape = tuple(info.input_shape)
    if info.kind == "image" and len(shape) == 3:
        preferred = ("lenet", "cnn") if shape[0] == 1 and max(shape[1:]) <= 32 else ("cnn", "lenet")
        for name in preferred:
            if MODELS[name].fits(info):
                return name
    return "mlp"


def resolve_model_name(name: str, info: DatasetInfo) -> str:
    """The canonical registry name for ``name`` on this dataset; ConfigError if unknown or unfit.

    ``"auto"`` (or an empty string) resolves to :func:`default_model`. Names are case-insensitive.
    """
    key = str(name).strip().lower()
    if key in ("", AUTO):
        return default_model(info)
    if key not in MODELS:
        choices = [AUTO, *MODELS]
        close = difflib.get_close_matches(key, choices, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown model '{name}'.{hint} Available models: {', '.join(choices)}.")
    reason = MODELS[key].incompatibility(info)
    if reason is not None:
        fitting = [n for n, spec in MODELS.items() if spec.fits(info)]
        raise ConfigError(
            f"Model '{key}' does not fit dataset '{info.name}' ({_describe(info)}): {key} {reason}. "
            f"Models that fit '{info.name}': {', '.join(fitting)} (auto = {default_model(info)})."
        )
    return key


def build_model(name: str, info: DatasetInfo, seed: int | None = None) -> nn.Module:
    """A freshly initialised model ``name`` (or ``"auto"``) for dataset ``info``, on the CPU, float32.

    With ``seed`` the initial weights depend only on ``(name, info, seed)`` and the global torch
    RNG is left untouched; with ``seed=None`` they are drawn from the global RNG. Its forwards are
    counted in sample-passes (:mod:`fedforget.cost`).
    """
    key = resolve_model_name(name, info)
    if info.num_classes < 2:
        raise ConfigError(f"Dataset '{info.name}' has {info.num_classes} class(es); models need at least 2.")
    if seed is None:
        return track(MODELS[key].factory(info))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return track(MODELS[key].factory(info))


def build(config: RunConfig | Mapping[str, Any], seed: int | None = None) -> nn.Module:
    """The global model of a run, from its :class:`RunConfig` or its ``config.json`` mapping.

    The mapping uses the kebab-case keys of ``RunConfig.to_dict`` (``dataset``, ``data-dir``,
    ``model``, ``seed``; snake_case accepted too, other keys ignored). ``seed`` defaults to the
    config's ``seed``. Load a checkpoint into the result with ``model.load_state_dict(state)``.
    """
    if not isinstance(config, RunConfig):
        if not isinstance(config, Mapping):
            raise TypeError(f"build() needs a RunConfig or a mapping, got {type(config).__name__}")
        wanted = {"dataset", "data_dir", "model", "seed"}
        subset = {k: v for k, v in config.items() if str(k).strip().replace("-", "_") in wanted}
        if "dataset" not in {str(k).strip() for k in subset}:
            raise ConfigError("The config mapping has no 'dataset' key; cannot rebuild the model.")
        config = RunConfig.from_mapping(subset)
    from fedforget.data import info as dataset_info

    data_info = dataset_info(config.dataset, config.data_dir or None)
    return build_model(config.model, data_info, config.seed if seed is None else seed)


def criterion(name: str) -> nn.Module:
    """The training loss for model ``name``: ``MultiMarginLoss`` (hinge) for svm, else cross-entropy."""
    key = str(name).strip().lower()
    if key in ("", AUTO):
        return nn.CrossEntropyLoss()  # every model "auto" can pick is trained with cross-entropy
    if key not in MODELS:
        close = difflib.get_close_matches(key, list(MODELS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown model '{name}'.{hint} Available models: {', '.join(MODELS)}.")
    return LOSSES[MODELS[key].loss]()


def criterion_for(model: nn.Module) -> nn.Module:
    """The training loss for a model instance (from its class attribute ``loss_name``)."""
    loss = getattr(model, "loss_name", "cross_entropy")
    if loss not in LOSSES:
        raise ValueError(f"{type(model).__name__}.loss_name = {loss!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[loss]()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (scalars) in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _describe(info: DatasetInfo) -> str:
    shape = tuple(info.input_shape)
    if info.kind == "image" and len(shape) == 3:
        return f"{shape[0]}x{shape[1]}x{shape[2]} images, {info.num_classes} classes"
    return f"{info.kind} data with {math.prod(shape)} features, {info.num_classes} classes"
