"""What every baseline returns, what a federated baseline starts from, and the input checks they share.

* :class:`UnlearnResult`: the unlearned model's state, wall seconds, client compute seconds, bytes
  sent over the network, storage bytes the method needs, a per-step / per-round history, and -- for
  the methods that work on one client (gradient ascent, PGA) -- the ``delta`` that client sends, to
  be **added** to the global model as a Forsaken mask is (``w <- w + delta``).
* :class:`Original`: the trained federation a federated baseline unlearns from: its run config, the
  global model ``w_T``, the last round's :class:`~fedforget.federated.RoundUpdate` (PGA needs the
  withdrawing client's last local model ``w_T^i``) and, when recorded, FedEraser's store.
* ``forget``: a mapping ``partition id -> global training ids`` (the withdrawn samples of each
  withdrawing client), checked by :func:`check_forget`.

**Per-round observation** (for plots and audits): every federated method takes ``observe``, a
callable ``observe(round, state_dict)`` called with the global model after each of its unlearning
rounds (1, 2, ...: retraining's and FedEraser's rounds, fine-tuning's and the repair rounds; for
gradient ascent and PGA round 1 is the model right after the client's delta is added). The seconds
the observer takes are left out of ``seconds`` (:class:`Observation`), so observing does not change
a method's measured cost; the model is identical with and without it.

Communication is counted as in the Flower flow: a client taking part in a round downloads the global
model and uploads its state (2 x the model's bytes); a client computing a delta downloads the model
and uploads the delta.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedforget import data, models
from fedforget.client_data import ClientData
from fedforget.config import RunConfig
from fedforget.federated import RoundUpdate, state_nbytes

if TYPE_CHECKING:
    from fedforget.baselines.federaser import FedEraserStore

__all__ = [
    "Forget",
    "Observation",
    "Observer",
    "Original",
    "UnlearnResult",
    "add_delta",
    "build_model",
    "check_forget",
    "check_positive",
    "model_bytes",
    "remaining_exclude",
]

Forget = Mapping[int, np.ndarray]
"""partition id -> global training ids that client withdraws."""

Observer = Callable[[int, Mapping[str, torch.Tensor]], None]
"""``observe(round, state_dict)``: sees the global model after each unlearning round (read only)."""


class Observation:
    """Calls an optional :data:`Observer` and keeps the seconds it took (to leave them out of a cost).

    ``offset`` is added to the round numbers it is called with (repair rounds after a client step).
    """

    def __init__(self, observe: Observer | None, offset: int = 0) -> None:
        if observe is not None and not callable(observe):
            raise ValueError(f"observe must be a callable observe(round, state_dict), got {observe!r}")
        self.observe = observe
        self.offset = offset
        self.seconds = 0.0
        self.rounds_seen = 0

    def __call__(self, round_: int, state: Mapping[str, Any]) -> None:
        if self.observe is None:
            return
        start = time.perf_counter()
        tensors = {
            k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v)) for k, v in state.items()
        }
        self.observe(self.offset + round_, tensors)
        self.seconds += time.perf_counter() - start

    def on_round(self, update: RoundUpdate) -> None:
        """A ``fedavg(on_round=...)`` hook: observe the round's result, rounds counted from 1."""
        if self.observe is not None and update.averaged is not None:
            self(self.rounds_seen + 1, update.averaged)
        self.rounds_seen += 1


@dataclasses.dataclass(eq=False)
class UnlearnResult:
    """The outcome of one unlearning method (the common result of every baseline)."""

    method: str
    state_dict: dict[str, torch.Tensor]
    """The unlearned model's ``state_dict`` (for SISA: the ensemble's)."""
    seconds: float
    """Wall seconds of the unlearning itself (no evaluation, no oracle)."""
    client_seconds: float
    """Seconds of computation on clients (summed over clients; the whole run for centralized methods)."""
    bytes_sent: int
    """Bytes over the network: model downloads + uploads (0 for centralized methods)."""
    storage_bytes: int
    """Bytes the method must keep to be able to unlearn (FedEraser's updates, SISA's checkpoints,
    Amnesiac's per-batch updates; 0 for methods that keep nothing)."""
    history: list[dict[str, Any]]
    delta: dict[str, torch.Tensor] | None = None
    """For client-side methods: the change the client sends, added to the global model."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready scalars (no tensors)."""
        return {
            "method": self.method,
            "seconds": self.seconds,
            "client-seconds": self.client_seconds,
            "bytes-sent": self.bytes_sent,
            "storage-bytes": self.storage_bytes,
            **{k: v for k, v in self.extra.items() if isinstance(v, int | float | str | bool)},
        }


@dataclasses.dataclass(eq=False)
class Original:
    """A trained federation: what a federated baseline unlearns from."""

    config: RunConfig
    state_dict: dict[str, torch.Tensor]
    last_round: RoundUpdate | None = None
    federaser: FedEraserStore | None = None


def build_model(config: RunConfig, state: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """The run's model (``config.model``, seeded ``config.seed``), loaded with ``state`` if given."""
    info = data.load(config).info
    model = models.build_model(models.resolve_model_name(config.model, info), info, seed=config.seed)
    if state is not None:
        model.load_state_dict(dict(state))
    return model


def model_bytes(state: Mapping[str, Any]) -> int:
    """Bytes of one copy of the model (parameters and buffers)."""
    return state_nbytes(state)


def add_delta(
    state: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``w + delta`` entry by entry (entries without a delta are kept; dtypes are kept)."""
    out = {}
    for key, value in state.items():
        out[key] = (value + delta[key]).to(value.dtype) if key in delta else value.clone()
    return out


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """ValueError unless ``value > 0`` (or ``>= 0`` with ``allow_zero``) and finite."""
    ok = np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def check_forget(config: RunConfig, forget: Forget) -> dict[int, np.ndarray]:
    """Validate ``forget`` (client -> withdrawn global ids) against the run's split.

    Every client must exist, every id must be one of that client's training ids, ids must be unique
    and at least one id must be given. Returns the ids as sorted int64 arrays.
    """
    if not isinstance(forget, Mapping):
        raise ValueError(
            f"forget must map a partition id to the global ids it withdraws, got {type(forget).__name__}"
        )
    out: dict[int, np.ndarray] = {}
    for pid, ids in forget.items():
        if not isinstance(pid, int | np.integer) or not 0 <= int(pid) < config.num_clients:
            raise ValueError(f"forget names client {pid!r} outside [0, num-clients={config.num_clients})")
        array = np.asarray(ids)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"forget[{pid}] must be a 1-d array of integer global ids, got {array.dtype}")
        array = array.astype(np.int64)
        if len(np.unique(array)) != len(array):
            raise ValueError(f"forget[{pid}] repeats ids")
        if len(array):
            ClientData.for_partition(config, int(pid)).subset(array)  # ValueError: ids it does not hold
            out[int(pid)] = np.sort(array)
    if not out:
        raise ValueError("forget is empty: name at least one client and one of its training ids")
    return out


def remaining_exclude(forget: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
    """``exclude`` for :func:`fedforget.federated.fedavg`: the withdrawn ids, never trained on."""
    return {pid: np.asarray(ids, dtype=np.int64) for pid, ids in forget.items()}
