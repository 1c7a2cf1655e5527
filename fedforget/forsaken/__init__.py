"""Forsaken: machine unlearning by neuron masking (Ma et al., "Learn to Forget: Machine Unlearning via
Neuron Masking", IEEE TDSC 2022).

A small trainable **mask gradient generator**, shared by every neuron of the model, reads per-neuron
features and emits per-neuron gates; gated forgetting directions are the mask gradients applied to the
neurons. In each unlearning step the generator is trained, through the applied step, to bring the
model's confidence vectors on the data to forget towards those of data it never saw, while a loss on
retained data keeps the accuracy. Usage::

    from fedforget import forsaken
    result = forsaken.unlearn(model, forget=(x_f, y_f), reference=(x_r, y_r), retain=(x_k, y_k),
                              config=forsaken.ForsakenConfig(target="fr"), oracle=None)
    result.mask, result.model, result.history, result.stopped_because
    unlearned = forsaken.apply_mask(model, result.mask)     # what the server does with a mask

The paper's loop is :mod:`fedforget.forsaken.loop` (generator -> mask -> apply -> judge); the method,
its equations and every design choice are in ``docs/forsaken.md``.
"""

from fedforget.forsaken.config import FIELD_GROUPS, GATES, TARGETS, ForsakenConfig
from fedforget.forsaken.generator import MaskGenerator
from fedforget.forsaken.inputs import GUARDED
from fedforget.forsaken.loop import ForsakenResult, unlearn
from fedforget.forsaken.mask import apply_mask
from fedforget.forsaken.neurons import FEATURE_NAMES, Layer, find_layers
from fedforget.forsaken.oracle import LossThresholdOracle, auc, forgetting_rate

__all__ = [
    "FEATURE_NAMES",
    "FIELD_GROUPS",
    "GATES",
    "GUARDED",
    "TARGETS",
    "ForsakenConfig",
    "ForsakenResult",
    "Layer",
    "LossThresholdOracle",
    "MaskGenerator",
    "apply_mask",
    "auc",
    "find_layers",
    "forgetting_rate",
    "unlearn",
]
