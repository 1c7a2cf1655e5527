"""The judge's attacks and the :class:`Judge` that bundles them.

Every attack maps ``(model, x, y)`` to one score per sample in ``[0, 1]``, higher = more
member-like. **No attack carries a threshold**: the judge's decision threshold is calibrated on the
target (the current global model) from the clients' score histograms
(:mod:`fedforget.judge.calibration`), every time the model changes.

* ``"loss"`` (:class:`LossAttack`, Yeom et al. 2018): the true-class confidence
  ``p_y = exp(-CE loss) = sigmoid(phi)``, ``phi = z_y - logsumexp_{j != y} z_j`` computed in float64
  from the logits (:func:`fedforget.mia.features.phi_from_logits`; float32 ``exp(-loss)`` would round
  every confident sample to exactly 1). Nothing to fit. **The headline attack by default**: it needs
  no shadow model, so nothing about it can be mis-specified, and it is a different family from the
  device's steering oracle (:mod:`fedforget.mia.device_oracle`, a learned classifier).
* ``"shokri"`` (:class:`ShokriAttack`): the attack network of
  :class:`fedforget.mia.shokri.ShokriOracle` (the paper's oracle) fitted on the shadow
  *federations'* in/out auxiliary samples (:mod:`fedforget.judge.shadow_federation`); score = its
  sigmoid output.
* ``"lira"`` (:class:`LiraAttack`): offline LiRA (:class:`fedforget.mia.lira.LiraOracle`) with the
  shadow federations as OUT models (every client sample is OUT for all of them); score = ``Phi(z)``.

**State** (numbers only, like :meth:`fedforget.mia.MembershipOracle.to_state`)::

    arrays, config = judge.to_state()   # dict[str, np.ndarray], dict[str, int | float | str | bool]
    judge = Judge.from_state(arrays, config, model_factory)

``config`` holds ``judge/format``, ``judge/bins`` (:data:`fedforget.judge.histogram.BINS_ID`),
``judge/attacks`` (comma-separated names), ``judge/headline``, and each attack's config under
``<attack>/``; ``arrays`` each attack's arrays under ``<attack>/`` (Shokri: the attack network;
LiRA: the shadow federations' weights). The judge state travels only in the server's judge queries,
never in an unlearning message.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from torch import nn

from fedforget.judge.histogram import BINS_ID, bin_scores
from fedforget.mia import check_state
from fedforget.mia.features import check_inputs, model_logits, phi_from_logits
from fedforget.mia.lira import LiraOracle
from fedforget.mia.shokri import ShokriOracle

if TYPE_CHECKING:
    from fedforget.judge.shadow_federation import ShadowFederationRecipe
    from fedforget.mia.shadow import ShadowModel

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACKS",
    "DEFAULT_HEADLINE",
    "JUDGE_FORMAT",
    "Attack",
    "Judge",
    "LiraAttack",
    "LossAttack",
    "ShokriAttack",
    "fit_judge",
]

JUDGE_FORMAT = 1
DEFAULT_HEADLINE = "loss"
DEFAULT_ATTACKS = ("loss", "shokri", "lira")

ModelFactory = Callable[[], nn.Module]
StateConfig = dict[str, int | float | str | bool]


class Attack(abc.ABC):
    """One of the judge's attacks: scores in ``[0, 1]`` (higher = member), no threshold."""

    name: ClassVar[str]

    @abc.abstractmethod
    def score(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """float64 scores in ``[0, 1]``, one per sample ``(x[i], y[i])``."""

    @abc.abstractmethod
    def to_state(self) -> tuple[dict[str, np.ndarray], StateConfig]:
        """``(arrays, config)``, numbers only."""

    @classmethod
    @abc.abstractmethod
    def from_state(
        cls, arrays: Mapping[str, np.ndarray], config: Mapping[str, Any], model_factory: ModelFactory | None
    ) -> Attack:
        """The inverse of :meth:`to_state`."""


class LossAttack(Attack):
    """``p_y = sigmoid(phi)`` from float64 logits (module docstring); nothing fitted."""

    name: ClassVar[str] = "loss"

    def score(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = check_inputs(x, y, what="samples to judge")
        phi = phi_from_logits(model_logits(model, x), y)
        return 1.0 / (1.0 + np.exp(-phi))

    def to_state(self) -> tuple[dict[str, np.ndarray], StateConfig]:
        return {}, {"name": self.name}

    @classmethod
    def from_state(
        cls, arrays: Mapping[str, np.ndarray], config: Mapping[str, Any], model_factory: ModelFactory | None
    ) -> LossAttack:
        return cls()


class _OracleAttack(Attack):
    """An attack scored by a fitted :class:`fedforget.mia.MembershipOracle` (its threshold unused)."""

    oracle_class: ClassVar[type[ShokriOracle] | type[LiraOracle]]

    def __init__(self, oracle: ShokriOracle | LiraOracle) -> None:
        self.oracle = oracle

    def score(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.clip(self.oracle.scores(model, x, y), 0.0, 1.0)

    def to_state(self) -> tuple[dict[str, np.ndarray], StateConfig]:
        return self.oracle.to_state()

    @classmethod
    def from_state(
        cls, arrays: Mapping[str, np.ndarray], config: Mapping[str, Any], model_factory: ModelFactory | None
    ) -> _OracleAttack:
        return cls(cls.oracle_class.from_state(arrays, config, model_factory))  # type: ignore[arg-type]


class ShokriAttack(_OracleAttack):
    """Shokri et al.'s attack network fitted on the shadow federations (module docstring)."""

    name: ClassVar[str] = "shokri"
    oracle_class = ShokriOracle


class LiraAttack(_OracleAttack):
    """Offline LiRA with the shadow federations as OUT models (module docstring)."""

    name: ClassVar[str] = "lira"
    oracle_class = LiraOracle


ATTACKS: dict[str, type[Attack]] = {"loss": LossAttack, "shokri": ShokriAttack, "lira": LiraAttack}
"""The attack names a judge knows."""


class Judge:
    """The server's judge: named attacks, one of them the ``headline`` (FR and AUC reported first)."""

    def __init__(self, attacks: Mapping[str, Attack], headline: str = DEFAULT_HEADLINE) -> None:
        if not attacks:
            raise ValueError("a judge needs at least one attack")
        for key, attack in attacks.items():
            if key != attack.name:
                raise ValueError(f"attack {attack.name!r} registered under the name {key!r}")
        if headline not in attacks:
            raise ValueError(f"headline attack {headline!r} is not one of the judge's: {', '.join(attacks)}")
        self.attacks: dict[str, Attack] = dict(attacks)
        self.headline = headline

    @property
    def names(self) -> tuple[str, ...]:
        """The attack names, the headline first."""
        return (self.headline, *(n for n in self.attacks if n != self.headline))

    def scores(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """``{attack: scores in [0, 1]}`` of every attack on ``(x, y)``."""
        return {name: self.attacks[name].score(model, x, y) for name in self.names}

    def bins(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """``{attack: bin index (int16) per sample}`` (:func:`fedforget.judge.histogram.bin_scores`)."""
        return {name: bin_scores(s) for name, s in self.scores(model, x, y).items()}

    def to_state(self) -> tuple[dict[str, np.ndarray], StateConfig]:
        """``(arrays, config)``, numbers and strings only (module docstring)."""
        arrays: dict[str, np.ndarray] = {}
        config: StateConfig = {
            "judge/format": JUDGE_FORMAT,
            "judge/bins": BINS_ID,
            "judge/attacks": ",".join(self.names),
            "judge/headline": self.headline,
        }
        for name in self.names:
            a, c = self.attacks[name].to_state()
            arrays.update({f"{name}/{k}": v for k, v in a.items()})
            config.update({f"{name}/{k}": v for k, v in c.items()})
        check_state(arrays, config)
        return arrays, config

    @classmethod
    def from_state(
        cls, arrays: Mapping[str, np.ndarray], config: Mapping[str, Any], model_factory: ModelFactory | None
    ) -> Judge:
        """Rebuild from :meth:`to_state`; ``model_factory`` (the target's architecture) is needed for LiRA."""
        check_state(arrays, config)
        if config.get("judge/format") != JUDGE_FORMAT:
            raise ValueError(
                f"judge state format {config.get('judge/format')!r}; this version reads {JUDGE_FORMAT}"
            )
        if config.get("judge/bins") != BINS_ID:
            raise ValueError(
                f"judge state uses bins {config.get('judge/bins')!r}; this version uses {BINS_ID}"
            )
        names = [n for n in str(config.get("judge/attacks", "")).split(",") if n]
        attacks: dict[str, Attack] = {}
        for name in names:
            if name not in ATTACKS:
                raise ValueError(f"unknown attack {name!r} in the judge state; known: {', '.join(ATTACKS)}")
            prefix = f"{name}/"
            sub_arrays = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            sub_config = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
            attacks[name] = ATTACKS[name].from_state(sub_arrays, sub_config, model_factory)
        return cls(attacks, str(config.get("judge/headline", DEFAULT_HEADLINE)))


def fit_judge(
    model_factory: ModelFactory,
    x_aux: np.ndarray,
    y_aux: np.ndarray,
    recipe: ShadowFederationRecipe | None = None,
    *,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    headline: str = DEFAULT_HEADLINE,
    shadows: Sequence[ShadowModel] | None = None,
    progress: bool | None = False,
) -> Judge:
    """Fit the judge's attacks on the judge's auxiliary data.

    ``recipe``: a :class:`fedforget.judge.shadow_federation.ShadowFederationRecipe` (the run's
    federation); shadow federations are trained only when an attack needs them (``shokri``,
    ``lira``) and ``shadows`` (already trained on this ``(x_aux, y_aux)``) is not given. Shokri's
    attack network is seeded with ``rng([recipe.seed, JUDGE_STREAM, 4]).integers(2**20)`` (the
    judge's own stream, see :mod:`fedforget.judge.shadow_federation`).
    """
    from fedforget.judge.shadow_federation import judge_rng as _judge_rng
    from fedforget.judge.shadow_federation import train_shadow_federations

    wanted = [str(a).strip().lower() for a in attacks]
    unknown = [a for a in wanted if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown judge attack(s) {unknown}; choose from: {', '.join(ATTACKS)}")
    built: dict[str, Attack] = {}
    needs_shadows = any(a != "loss" for a in wanted)
    attack_seed = int(_judge_rng(int(getattr(recipe, "seed", 0)), 4).integers(2**20))
    if needs_shadows and shadows is None:
        if recipe is None:
            raise ValueError("the shokri and lira attacks need a ShadowFederationRecipe (or shadows)")
        shadows = train_shadow_federations(model_factory, x_aux, y_aux, recipe, progress=progress)
    for name in wanted:
        if name == "loss":
            built[name] = LossAttack()
        elif name == "shokri":
            built[name] = ShokriAttack(ShokriOracle.fit(list(shadows or []), x_aux, y_aux, seed=attack_seed))
        else:
            built[name] = LiraAttack(LiraOracle.fit(list(shadows or []), x_aux, y_aux))
    return Judge(built, headline)
