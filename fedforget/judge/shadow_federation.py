"""Shadow federations: the judge's shadow models, trained the way the target is (FedAvg), on aux data.

The target is a FedAvg global model, so the judge's shadows are *federations*, not centrally trained
models: shadow federation ``f`` (``f = 0 .. K-1``) trains a fresh model of the target's architecture
with :func:`fedforget.federated.fedavg_on_arrays` -- the run's number of clients, rounds, local
epochs, learning rate, batch size, momentum and weight decay -- on its IN half of the judge's
auxiliary data.

**IN / OUT.** The IN halves are balanced per sample over the federations
(:func:`fedforget.mia.shadow.in_masks`, the scheme of Carlini et al.): every auxiliary sample is IN
for ``K // 2`` federations (one more with probability 1/2 when ``K`` is odd), so every sample has OUT
federations for LiRA's statistics and Shokri's non-member rows. A federation's IN samples are dealt
(seeded, at random, i.e. IID) to its clients; ``client_index[i]`` is the client that trained on aux
sample ``i`` (``-1``: OUT).

**Client sizes.** ``client_sizes`` are the run's per-client training-set sizes ``n_1 .. n_C``. A
federation with ``I`` IN samples gives client ``k`` ``round(n_k * I / sum n)`` of them (largest
remainders, so they add up to ``I``): the same *proportions* as the run's clients, scaled to the aux
data. With fewer aux than client samples each shadow client is smaller than a real one, so shadow
federations tend to memorise *more* than the target; the judge's threshold is therefore never taken
from the shadows but calibrated on the target itself (:mod:`fedforget.judge.calibration`).

**Seeds** (the judge's own, never the run's: the run's clients use ``seed * 1_000_003 + t * 1_009 +
k`` and the server's shadow oracle ``[seed, 71 | 73]`` streams). With the recipe's ``seed``:

* IN masks: ``in_masks(n_aux, K, seed=s_mask)``, ``s_mask = rng([seed, JUDGE_STREAM, 1]).integers(2**31)``;
* federation ``f``'s client assignment: ``rng([seed, JUDGE_STREAM, 2, f])``;
* federation ``f``'s initial weights: ``s_f = rng([seed, JUDGE_STREAM, 3, f]).integers(2**31)``;
* client ``k``'s local training in round ``t`` of federation ``f``: ``s_f * 1_000_003 + t * 1_009 + k``;

(``rng`` = ``numpy.random.default_rng``, :data:`JUDGE_STREAM` = 0x6A75). **Data halves**:
:func:`judge_aux_half` splits the server's auxiliary ids into the judge's half and a half left for
anything else (e.g. a server-side steering oracle), seeded by ``[seed, JUDGE_STREAM, 0]``.

**Cost** (sample passes): ``K * rounds * local_epochs * I`` with ``I ~ n_aux / 2``; bounded by
``max_in_samples`` (each federation's IN set is subsampled to at most that many; 0 = no bound).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from fedforget.federated import fedavg_on_arrays
from fedforget.mia.features import check_inputs, model_logits
from fedforget.mia.shadow import MIN_AUX_SAMPLES, ShadowModel, build_seeded, in_masks

if TYPE_CHECKING:
    from fedforget.config import RunConfig
    from fedforget.splits import Split

__all__ = [
    "JUDGE_STREAM",
    "ShadowFederation",
    "ShadowFederationRecipe",
    "client_shares",
    "judge_aux_half",
    "judge_rng",
    "train_shadow_federations",
]

JUDGE_STREAM = 0x6A75
"""Tag of the judge's seeded streams (decorrelates them from every other seed of a run)."""


@dataclasses.dataclass(frozen=True)
class ShadowFederationRecipe:
    """How to train the shadow federations: the run's federation and training recipe, plus K and a seed."""

    num_federations: int = 4
    client_sizes: tuple[int, ...] = (1, 1, 1, 1, 1)
    """The run's per-client training sizes (only their proportions matter)."""
    rounds: int = 5
    local_epochs: int = 3
    learning_rate: float = 0.05
    batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    max_in_samples: int = 0
    """At most this many IN samples per federation (0 = all of its half)."""

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.client_sizes)
        object.__setattr__(self, "client_sizes", sizes)
        if self.num_federations < 1:
            raise ValueError(f"num_federations must be >= 1, got {self.num_federations}")
        if not sizes or min(sizes) < 0 or sum(sizes) == 0:
            raise ValueError(f"client_sizes must be non-negative with a positive sum, got {sizes}")
        if self.rounds < 1 or self.local_epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("rounds, local_epochs and batch_size must be >= 1 and learning_rate > 0")
        if self.max_in_samples < 0:
            raise ValueError(f"max_in_samples must be >= 0, got {self.max_in_samples}")

    @classmethod
    def for_run(
        cls, config: RunConfig, split: Split, *, num_federations: int = 4, max_in_samples: int = 0
    ) -> ShadowFederationRecipe:
        """The recipe of a run: its clients' training sizes (``split``), rounds, local epochs, SGD
        recipe, and ``config.seed`` (the judge derives its own streams from it, see the module doc).
        A split without client parts (``client-data = own``: the server knows no device's size) gives
        ``num-clients`` equal shares."""
        sizes = tuple(len(c.train_ids) for c in split.clients) or (1,) * config.num_clients
        return cls(
            num_federations=num_federations,
            client_sizes=sizes,
            rounds=config.num_rounds,
            local_epochs=config.local_epochs,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            seed=config.seed,
            max_in_samples=max_in_samples,
        )

    @property
    def num_clients(self) -> int:
        return len(self.client_sizes)


@dataclasses.dataclass(eq=False)
class ShadowFederation(ShadowModel):
    """A shadow federation's global model (a :class:`~fedforget.mia.shadow.ShadowModel`, so the
    Shokri and LiRA oracles fit on it unchanged) and which client trained on which aux sample."""

    client_index: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, dtype=np.int64))
    """Per aux sample: the client that trained on it, ``-1`` when OUT (``in_mask == client_index >= 0``)."""


def judge_rng(seed: int, *tags: int) -> np.random.Generator:
    """``numpy.random.default_rng([seed, JUDGE_STREAM, *tags])``: the judge's seeded streams."""
    return np.random.default_rng([int(seed), JUDGE_STREAM, *tags])


def judge_aux_half(aux_ids: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(judge's ids, the other half)``: a seeded random half of the server's aux ids, both sorted."""
    ids = np.asarray(aux_ids, dtype=np.int64).reshape(-1)
    order = judge_rng(seed, 0).permutation(ids)
    half = (len(ids) + 1) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def client_shares(num_in: int, client_sizes: Sequence[int]) -> np.ndarray:
    """``num_in`` split over the clients in proportion to ``client_sizes`` (largest remainders)."""
    sizes = np.asarray(client_sizes, dtype=np.float64)
    exact = num_in * sizes / sizes.sum()
    shares = np.floor(exact).astype(np.int64)
    short = int(num_in - shares.sum())
    if short:
        shares[np.argsort(-(exact - shares), kind="stable")[:short]] += 1
    return shares


def train_shadow_federations(
    model_factory: Callable[[], nn.Module],
    x_aux: np.ndarray,
    y_aux: np.ndarray,
    recipe: ShadowFederationRecipe,
    *,
    progress: bool | None = False,
) -> list[ShadowFederation]:
    """Train ``recipe.num_federations`` shadow federations on ``(x_aux, y_aux)`` (module docstring).

    ``model_factory()`` builds the target's architecture. Deterministic in ``recipe.seed``.
    """
    x_aux, y_aux = check_inputs(x_aux, y_aux, what="judge auxiliary data")
    if len(x_aux) < MIN_AUX_SAMPLES:
        raise ValueError(
            f"judge auxiliary data has {len(x_aux)} samples; shadow federations need {MIN_AUX_SAMPLES}"
        )
    k_fed = recipe.num_federations
    masks = in_masks(len(x_aux), k_fed, seed=int(judge_rng(recipe.seed, 1).integers(2**31)))
    model_logits(build_seeded(model_factory, 0), x_aux[:2])  # the data must fit the model: fail early
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    out: list[ShadowFederation] = []
    for f in tqdm(range(k_fed), desc="shadow federations", unit="fed", disable=disable, leave=False):
        rng = judge_rng(recipe.seed, 2, f)
        members = np.flatnonzero(masks[f])
        if recipe.max_in_samples and len(members) > recipe.max_in_samples:
            members = np.sort(rng.choice(members, size=recipe.max_in_samples, replace=False))
        if len(members) == 0 or len(members) == len(x_aux):
            raise ValueError("a shadow federation got an empty IN or OUT half; use more auxiliary data")
        order = rng.permutation(members)
        shares = client_shares(len(order), recipe.client_sizes)
        client_index = np.full(len(x_aux), -1, dtype=np.int64)
        parts = np.split(order, np.cumsum(shares)[:-1])
        for k, part in enumerate(parts):
            client_index[part] = k
        fed_seed = int(judge_rng(recipe.seed, 3, f).integers(2**31))
        model = build_seeded(model_factory, fed_seed)
        result = fedavg_on_arrays(
            model,
            [(x_aux[np.sort(p)], y_aux[np.sort(p)]) for p in parts],
            rounds=recipe.rounds,
            local_epochs=recipe.local_epochs,
            learning_rate=recipe.learning_rate,
            batch_size=recipe.batch_size,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            seed_of=lambda t, k, s=fed_seed: s * 1_000_003 + t * 1_009 + k,
        )
        model.eval()
        out.append(
            ShadowFederation(
                model=model,
                in_mask=client_index >= 0,
                seed=fed_seed,
                train_loss=float(result.history[-1]["train-loss"]),
                client_index=client_index,
            )
        )
    return out
