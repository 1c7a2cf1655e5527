"""One client device: its data, its durable request store, and what it may use for what.

``Device`` is what the Flower ClientApp works through, and what a centralized experiment can use
directly. Its rules:

* training data = the client's training ids minus every tombstoned id (tombstones are persisted in the
  request store, so this holds across restarts);
* reference (non-member) data = the client's held-out ids, never trained on and never tombstoned;
* a forget set = the ids of the device's own requests.

Its data is either its partition of the run's shared ``dataset`` (simulation, :meth:`Device.open`) or
its own file (``client-data = own``, :meth:`Device.open_own`); ids are then the device's own.

In simulation the run config's ``withdrawals`` schedule is copied into the store when its round comes
(:meth:`Device.sync_schedule`, idempotent); on a real device requests come from ``fedforget withdraw``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fedforget.client_data import ClientData, OwnData
from fedforget.config import RunConfig
from fedforget.data.base import DatasetInfo
from fedforget.request_store import RequestError, RequestStore, StoredRequest
from fedforget.withdrawals import WithdrawalError, WithdrawalRequest, due, resolve_ids


def default_store_path(config: RunConfig, run_id: str, partition_id: int) -> Path:
    """Where a simulated device keeps its store: inside the run record."""
    from fedforget.records import default_runs_root

    root = Path(config.run_dir) if config.run_dir else default_runs_root()
    return root / run_id / "clients" / f"client-{partition_id}.sqlite"


@dataclasses.dataclass
class Device:
    config: RunConfig
    data: ClientData
    store: RequestStore

    @classmethod
    def open(cls, config: RunConfig, partition_id: int, store_path: str | Path) -> Device:
        """A simulated device: its partition of the run's shared ``dataset`` (``client-data = shared``)."""
        return cls(config, ClientData.for_partition(config, partition_id), RequestStore(store_path))

    @classmethod
    def open_own(
        cls,
        config: RunConfig,
        own: OwnData,
        store_path: str | Path,
        *,
        partition_id: int,
        info: DatasetInfo | None = None,
    ) -> Device:
        """A device that holds only its own file (``client-data = own``); its ids are its own.

        ``info``: the run model's input shape and classes; the file must fit them (one-line
        :class:`~fedforget.client_data.OwnDataError` otherwise).
        """
        shape = None if info is None else info.input_shape
        classes = None if info is None else info.num_classes
        client = ClientData.from_file(own, partition_id, num_classes=classes, input_shape=shape)
        return cls(config, client, RequestStore(store_path))

    @property
    def partition_id(self) -> int:
        return self.data.partition_id

    # ------------------------------------------------------------------ requests
    def sync_schedule(self, server_round: int) -> list[str]:
        """Store the schedule's requests due by ``server_round``; returns problems (rejections).

        A request this device cannot satisfy (a class it does not hold, more samples than it holds,
        nothing left) is stored as ``rejected`` with the reason in its receipt, so it neither fails
        every message of the run nor stays pending.
        """
        problems = []
        known = {r.request_id for r in self.store.all()}
        for request in due(self.config.withdrawal_requests, server_round, self.partition_id):
            if request.request_id in known:
                continue
            try:
                self.withdraw(request)
            except (RequestError, WithdrawalError) as error:
                self.store.reject(request.request_id, request.grain, str(error), arg=request.arg)
                problems.append(f"{request.request_id}: {error}")
        return problems

    def withdraw(self, request: WithdrawalRequest) -> StoredRequest:
        """Resolve a request against this device's remaining training data and store it."""
        live = self.training_data()
        ids = resolve_ids(request, live.train_ids, live.y_train, self.config.seed)
        return self.store.add(
            request.grain, ids, owned_ids=self.data.train_ids, arg=request.arg, request_id=request.request_id
        )

    def requests(self, request_ids: list[str]) -> list[StoredRequest]:
        found = []
        for rid in request_ids:
            try:
                found.append(self.store.get(rid))
            except KeyError:
                raise RequestError(f"client {self.partition_id} has no request {rid!r}") from None
        return found

    # ------------------------------------------------------------------ data views
    def training_data(self) -> ClientData:
        """What this device may train on: its training samples minus every tombstoned one."""
        tombstoned = self.store.tombstoned()
        return self.data.without(tombstoned) if tombstoned.size else self.data

    def forget_set(self, request_ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids, x, y)`` of the union of the given requests' samples."""
        requests = self.requests(request_ids)
        ids = np.unique(np.concatenate([r.ids for r in requests]))
        return self.data.subset(ids)

    def reference_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The held-out (never trained on) samples: the non-member reference."""
        return self.data.x_holdout, self.data.y_holdout
