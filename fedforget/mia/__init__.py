"""Membership oracles: judge whether a model trained on a sample (member) or not (non-member).

The oracles are fitted by the server on its auxiliary data (disjoint from every client) with shadow
models (:mod:`fedforget.mia.shadow`) and shipped to the client that owns the data to forget, which
computes the per-sample decisions locally. An oracle therefore serialises to plain numbers::

    arrays, config = oracle.to_state()     # dict[str, np.ndarray], dict[str, int | float | str | bool]
    oracle = oracle_from_state(arrays, config, model_factory)

Oracles (``kind`` of :func:`fit_oracle`):

* ``"shokri"``: :class:`~fedforget.mia.shokri.ShokriOracle`, Shokri et al. (S&P 2017): a small
  torch classifier trained on the shadows' output features (:mod:`fedforget.mia.features`) of their
  in (member) and out (non-member) samples; modes ``"global"`` and ``"per-class"``.
* ``"lira"``: :class:`~fedforget.mia.lira.LiraOracle`, offline LiRA (Carlini et al., S&P 2022):
  how far the target's logit-scaled confidence lies above the per-sample distribution of the OUT
  shadows' confidences.

The *steering* oracle an unlearning method may use on the device is
:func:`fedforget.mia.device_oracle.fit_device_oracle`: it is fitted on the device's own data, and
the server's judge (:mod:`fedforget.judge`) is fitted apart from it.

Every oracle's ``scores`` are higher for more member-like samples and in ``[0, 1]``; ``decide``
returns ``scores >= threshold``. **Threshold rule**: the threshold maximises Youden's J = TPR - FPR
(equivalently balanced accuracy) of the rule on the shadows' own in/out auxiliary samples, see
:func:`~fedforget.mia.strength.youden_threshold`; it is stored in the state. The details per oracle
are in ``docs/forgetting-rate.md``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from torch import nn

from fedforget.mia.features import check_inputs
from fedforget.mia.strength import attack_strength, youden_threshold

if TYPE_CHECKING:
    from fedforget.mia.shadow import ShadowModel

__all__ = [
    "KINDS",
    "MembershipOracle",
    "attack_strength",
    "check_state",
    "fit_oracle",
    "oracle_from_state",
    "youden_threshold",
]

KINDS = ("shokri", "lira")
"""The oracle kinds :func:`fit_oracle` and :func:`oracle_from_state` know."""
STATE_FORMAT = 1
"""``config["format"]`` of the serialised state; bumped when the layout changes."""

ModelFactory = Callable[[], nn.Module]


class MembershipOracle(abc.ABC):
    """A fitted membership-inference attack with a decision threshold."""

    name: ClassVar[str]
    threshold: float

    @abc.abstractmethod
    def scores(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """One float64 score in ``[0, 1]`` per sample ``(x[i], y[i])``; higher = more member-like."""

    def decide(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Booleans, True = judged a member of ``model``'s training data (``scores >= threshold``)."""
        return self.scores(model, x, y) >= self.threshold

    @abc.abstractmethod
    def to_state(self) -> tuple[dict[str, np.ndarray], dict[str, int | float | str | bool]]:
        """``(arrays, config)``: everything needed to rebuild the oracle, no Python objects."""

    @classmethod
    @abc.abstractmethod
    def from_state(
        cls, arrays: Mapping[str, np.ndarray], config: Mapping[str, Any], model_factory: ModelFactory
    ) -> MembershipOracle:
        """The inverse of :meth:`to_state` (``model_factory`` builds the target's architecture)."""

    @staticmethod
    def _inputs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return check_inputs(x, y, what="samples to judge")


def check_state(arrays: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """TypeError unless ``arrays`` maps str -> np.ndarray (no object dtype) and ``config`` str -> scalar."""
    for key, value in arrays.items():
        if not isinstance(key, str):
            raise TypeError(f"state array key {key!r} is not a string")
        if not isinstance(value, np.ndarray) or value.dtype == object:
            raise TypeError(f"state array {key!r} is {type(value).__name__}, not a numeric numpy array")
    for key, value in config.items():
        if not isinstance(key, str):
            raise TypeError(f"state config key {key!r} is not a string")
        if not isinstance(value, bool | int | float | str):
            raise TypeError(f"state config {key!r} = {value!r} is not an int, float, str or bool")


def oracle_from_state(
    arrays: Mapping[str, np.ndarray], config: Mapping[str, Any], model_factory: ModelFactory
) -> MembershipOracle:
    """Rebuild an oracle from :meth:`MembershipOracle.to_state` output and the target's model factory."""
    from fedforget.mia.lira import LiraOracle
    from fedforget.mia.shokri import ShokriOracle

    check_state(arrays, config)
    name = config.get("name")
    if config.get("format") != STATE_FORMAT:
        raise ValueError(f"oracle state format {config.get('format')!r}; this version reads {STATE_FORMAT}")
    classes: dict[str, type[MembershipOracle]] = {"shokri": ShokriOracle, "lira": LiraOracle}
    if name not in classes:
        raise ValueError(f"unknown oracle {name!r} in the state; known: {', '.join(KINDS)}")
    return classes[name].from_state(arrays, config, model_factory)


def fit_oracle(
    kind: str,
    model_factory: ModelFactory,
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
    mode: str | None = None,
    progress: bool | None = False,
    shadows: list[ShadowModel] | None = None,
) -> MembershipOracle:
    """Train shadow models on the auxiliary data and fit a ``kind`` oracle (``"shokri"`` or ``"lira"``).

    The recipe (``epochs`` ... ``weight_decay``) should be the target's (see
    :func:`fedforget.mia.shadow.train_shadows`). ``mode``: for ``shokri`` ``"global"`` or
    ``"per-class"`` (``None`` = :data:`fedforget.mia.shokri.DEFAULT_MODE`); for ``lira`` only
    ``None`` / ``"offline"``. ``shadows``: already trained shadows on the same ``(x_aux, y_aux)``
    (e.g. to fit several oracles from one set); the recipe arguments are then unused.
    """
    key = str(kind).strip().lower()
    if key not in KINDS:
        raise ValueError(f"unknown oracle kind {kind!r}; choose one of: {', '.join(KINDS)}")
    x_aux, y_aux = check_inputs(x_aux, y_aux, what="auxiliary data")
    if shadows is None:
        from fedforget.mia.shadow import train_shadows

        if key == "lira" and num_shadows < 3:
            raise ValueError(f"LiRA needs num_shadows >= 3, got {num_shadows}")
        shadows = train_shadows(
            model_factory,
            x_aux,
            y_aux,
            num_shadows=num_shadows,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            momentum=momentum,
            weight_decay=weight_decay,
            seed=seed,
            progress=progress,
        )
    if key == "shokri":
        from fedforget.mia.shokri import ShokriOracle

        return ShokriOracle.fit(shadows, x_aux, y_aux, mode=mode, seed=seed)
    from fedforget.mia.lira import LiraOracle

    if mode not in (None, "offline"):
        raise ValueError(f"LiRA has only the 'offline' mode, got mode={mode!r}")
    return LiraOracle.fit(shadows, x_aux, y_aux)
