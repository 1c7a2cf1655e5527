"""Withdrawal requests: which client takes back which of its samples, and when.

In simulation, requests come from the run config's ``withdrawals`` schedule, a ``;``-separated list of
entries ``ROUND:CLIENT:GRAIN[:ARG]``:

* ``3:0:samples:0.05``: before round 3, client 0 withdraws a seeded random 5% of its training samples
  (``ARG`` < 1 is a fraction, ``ARG`` >= 1 a count; default 0.05);
* ``4:1:class:7``: before round 4, client 1 withdraws all of its training samples of class 7;
* ``5:2:client``: before round 5, client 2 withdraws all of its training samples.

A client can only withdraw its own samples: ids are always drawn from that client's training ids.
:func:`resolve_ids` turns a request into sorted global ids; it is deterministic in the run seed, so the
client that owns the data and any auditor with the run record get the same ids.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np

GRAINS = ("samples", "class", "client")
_ID_STREAM = 71


class WithdrawalError(ValueError):
    """A malformed or impossible withdrawal request."""


@dataclasses.dataclass(frozen=True)
class WithdrawalRequest:
    """One request: ``client`` withdraws data of the given ``grain`` before round ``round``."""

    round: int
    client: int
    grain: str
    arg: float | None = None

    @property
    def request_id(self) -> str:
        arg = "" if self.arg is None else f"-{self.arg:g}"
        return f"r{self.round}-c{self.client}-{self.grain}{arg}"

    def describe(self) -> str:
        if self.grain == "samples":
            amount = self.arg if self.arg is not None else 0.05
            what = f"{amount:.0%} of its samples" if amount < 1 else f"{int(amount)} samples"
        elif self.grain == "class":
            what = f"its samples of class {int(self.arg or 0)}"
        else:
            what = "all its samples"
        return f"client {self.client} withdraws {what} before round {self.round}"


def parse_schedule(text: str) -> tuple[WithdrawalRequest, ...]:
    """Parse a ``withdrawals`` schedule; raises :class:`WithdrawalError` with the bad entry."""
    requests: list[WithdrawalRequest] = []
    for raw in text.split(";"):
        entry = raw.strip()
        if not entry:
            continue
        parts = [p.strip() for p in entry.split(":")]
        if len(parts) not in (3, 4):
            raise WithdrawalError(f"withdrawal {entry!r}: expected ROUND:CLIENT:GRAIN[:ARG]")
        try:
            round_, client = int(parts[0]), int(parts[1])
        except ValueError:
            raise WithdrawalError(f"withdrawal {entry!r}: ROUND and CLIENT must be integers") from None
        grain = parts[2].lower()
        if grain not in GRAINS:
            raise WithdrawalError(f"withdrawal {entry!r}: grain must be one of {', '.join(GRAINS)}")
        arg = _parse_arg(entry, grain, parts[3] if len(parts) == 4 else None)
        if round_ < 1 or client < 0:
            raise WithdrawalError(f"withdrawal {entry!r}: ROUND must be >= 1 and CLIENT >= 0")
        request = WithdrawalRequest(round_, client, grain, arg)
        if request in requests:
            raise WithdrawalError(f"withdrawal {entry!r} is listed twice")
        requests.append(request)
    return tuple(sorted(requests, key=lambda r: (r.round, r.client, r.grain)))


def _parse_arg(entry: str, grain: str, raw: str | None) -> float | None:
    if grain == "client":
        if raw not in (None, ""):
            raise WithdrawalError(f"withdrawal {entry!r}: grain 'client' takes no argument")
        return None
    if raw in (None, ""):
        if grain == "class":
            raise WithdrawalError(f"withdrawal {entry!r}: grain 'class' needs the class label")
        return None
    try:
        value = float(raw)
    except ValueError:
        raise WithdrawalError(f"withdrawal {entry!r}: argument {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise WithdrawalError(f"withdrawal {entry!r}: argument {raw!r} is not a finite number")
    if grain == "class" and (value < 0 or not value.is_integer()):
        raise WithdrawalError(f"withdrawal {entry!r}: class label must be an integer >= 0")
    if grain == "samples" and (value <= 0 or (value >= 1 and not value.is_integer())):
        raise WithdrawalError(f"withdrawal {entry!r}: use a fraction in (0, 1) or a whole count >= 1")
    return value


def resolve_ids(
    request: WithdrawalRequest, train_ids: np.ndarray, train_labels: np.ndarray, seed: int
) -> np.ndarray:
    """The sorted global ids ``request`` withdraws from a client's ``train_ids`` (never others)."""
    train_ids = np.asarray(train_ids, dtype=np.int64)
    if len(train_ids) == 0:
        raise WithdrawalError(
            f"{request.request_id}: client {request.client} has no training samples left to withdraw "
            "(an earlier request withdrew them all)"
        )
    if request.grain == "client":
        chosen = train_ids
    elif request.grain == "class":
        chosen = train_ids[np.asarray(train_labels) == int(request.arg or 0)]
        if len(chosen) == 0:
            held = ", ".join(str(c) for c in np.unique(np.asarray(train_labels)).tolist())
            raise WithdrawalError(
                f"{request.request_id}: client {request.client} holds no training samples of class "
                f"{int(request.arg or 0)} (its classes: {held})"
            )
    else:
        amount = 0.05 if request.arg is None else request.arg
        count = int(amount) if amount >= 1 else max(1, int(round(amount * len(train_ids))))
        if count > len(train_ids):
            raise WithdrawalError(
                f"{request.request_id}: asks for {count} samples but client {request.client} "
                f"holds {len(train_ids)}"
            )
        rng = np.random.default_rng([seed, _ID_STREAM, request.round, request.client])
        chosen = rng.choice(train_ids, size=count, replace=False)
    if len(chosen) == 0:
        raise WithdrawalError(f"{request.request_id}: client {request.client} holds no such samples")
    return np.sort(chosen)


def due(
    requests: Iterable[WithdrawalRequest], server_round: int, client: int | None = None
) -> list[WithdrawalRequest]:
    """Requests made before ``server_round`` (optionally of one client)."""
    return [r for r in requests if r.round <= server_round and (client is None or r.client == client)]


def check_feasible(
    requests: Sequence[WithdrawalRequest],
    *,
    client_train_ids: Sequence[np.ndarray],
    labels: np.ndarray,
    seed: int,
) -> None:
    """Raise :class:`WithdrawalError` unless every client can satisfy its requests, in schedule order.

    ``client_train_ids[k]`` are client ``k``'s training ids and ``labels[i]`` the label of global id
    ``i``. Each request is resolved as the device resolves it (:func:`resolve_ids` against what
    the client's earlier requests left), so a class the client does not hold, more samples than it
    holds, or a request after a ``client`` withdrawal is found before the run starts.
    """
    labels = np.asarray(labels)
    left = {k: np.asarray(ids, dtype=np.int64) for k, ids in enumerate(client_train_ids)}
    for request in requests:
        if request.client not in left:
            raise WithdrawalError(
                f"{request.request_id}: client {request.client} does not exist ({len(left)} clients)"
            )
        live = left[request.client]
        taken = resolve_ids(request, live, labels[live], seed)
        left[request.client] = np.setdiff1d(live, taken)


def check_schedule(requests: Sequence[WithdrawalRequest], num_clients: int, num_rounds: int) -> None:
    """Requests must name an existing client and a round of the run."""
    for r in requests:
        if r.client >= num_clients:
            raise WithdrawalError(
                f"{r.request_id}: client {r.client} does not exist (num-clients={num_clients})"
            )
        if r.round > num_rounds:
            raise WithdrawalError(f"{r.request_id}: round {r.round} is after the last round ({num_rounds})")
