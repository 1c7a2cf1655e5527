"""FedEraser's server-side store, on disk in the run record: ``w_t`` and every client's update ``U_t^k``.

With ``unlearn-method = federaser`` the loop keeps, for the training rounds ``t = 1, 1 + Δ, 1 + 2Δ,
...`` (``Δ = federaser-every``), the global model sent out and every accepted client's update
``U_t^k = w_{t+1}^k - w_t`` by partition id, with its FedAvg weight ``n_k``, in one file per round:
``<record>/federaser/round-<t>.npz`` (written atomically; a resumed run finds them again). Its size
is FedEraser's storage cost (:attr:`UpdateStore.storage_bytes`).
:meth:`UpdateStore.load` returns :class:`fedforget.baselines.FedEraserStore`, whose calibration
step (:func:`fedforget.baselines.calibration_step`) the server runs.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedforget.baselines import FedEraserStore
from fedforget.records import atomic_write_bytes


class UpdateStore:
    """The stored rounds of one run (``root`` = ``<record>/federaser``), every ``every`` rounds."""

    def __init__(self, root: Path, every: int) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every (federaser-every) must be an integer >= 1, got {every!r}")
        self.root = Path(root)
        self.every = every

    def wants(self, server_round: int) -> bool:
        """Whether round ``server_round``'s updates are kept (``1, 1 + Δ, 1 + 2Δ, ...``)."""
        return (server_round - 1) % self.every == 0

    def path(self, server_round: int) -> Path:
        return self.root / f"round-{server_round:05d}.npz"

    def save(
        self,
        server_round: int,
        global_state: Mapping[str, np.ndarray],
        client_states: Mapping[int, Mapping[str, np.ndarray]],
        weights: Mapping[int, float],
    ) -> None:
        """Keep ``w_t`` and ``U_t^k = client_states[k] - w_t`` (float entries) for round ``t``."""
        if set(client_states) != set(weights):
            raise ValueError("client_states and weights must name the same partitions")
        arrays: dict[str, np.ndarray] = {f"global/{k}": np.asarray(v) for k, v in global_state.items()}
        for pid, state in client_states.items():
            for key, value in state.items():
                base = np.asarray(global_state[key])
                if np.issubdtype(base.dtype, np.floating):
                    arrays[f"update/{pid}/{key}"] = np.asarray(value) - base
            arrays[f"weight/{pid}"] = np.asarray(float(weights[pid]))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(self.path(server_round), buffer.getvalue())  # fsynced file, rename, folder

    def rounds(self, before: int | None = None) -> list[int]:
        """Stored rounds (all, or those ``< before``), ascending."""
        found = sorted(int(p.name[6:11]) for p in self.root.glob("round-?????.npz"))
        return [t for t in found if before is None or t < before]

    @property
    def storage_bytes(self) -> int:
        """Bytes on disk of every stored round."""
        return sum(self.path(t).stat().st_size for t in self.rounds())

    def load(self, before: int | None = None) -> FedEraserStore:
        """The stored rounds (``< before`` if given) as the library's :class:`FedEraserStore`."""
        store = FedEraserStore(every=self.every)
        for t in self.rounds(before):
            with np.load(self.path(t)) as saved:
                store.global_states[t] = {k[7:]: saved[k] for k in saved.files if k.startswith("global/")}
                updates: dict[int, dict[str, np.ndarray]] = {}
                weights: dict[int, float] = {}
                for name in saved.files:
                    kind, _, rest = name.partition("/")
                    if kind == "update":
                        pid, _, key = rest.partition("/")
                        updates.setdefault(int(pid), {})[key] = saved[name]
                    elif kind == "weight":
                        weights[int(rest)] = float(saved[name])
                store.updates[t] = updates
                store.weights[t] = weights
        return store


def update_store(record_path: Path, every: int) -> UpdateStore:
    """The run's store: ``<record>/federaser``, every ``every`` (``federaser-every``) rounds."""
    return UpdateStore(Path(record_path) / "federaser", every)
