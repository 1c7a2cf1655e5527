"""An auditable message log: every reply a client sends the server, saved as numbers.

With ``log-messages = 1`` in the run config, the server wraps its ``Grid`` in :class:`AuditedGrid`,
which saves the content of every reply (all arrays and every numeric config / metric value) to
``<run record>/messages/<n>-<message type>-node<id>.npz``. An auditor (and the test suite) can then
check what left each client: e.g. that no forget-set sample's features ever did.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid


def message_arrays(message: Message) -> dict[str, np.ndarray]:
    """All numbers a message carries, as named float64 / int64 / string arrays."""
    out: dict[str, np.ndarray] = {}
    if message.has_error():
        return out
    for record_name, record in message.content.items():
        if isinstance(record, ArrayRecord):
            for key in record:
                out[f"{record_name}/{key}"] = record[key].numpy()
        elif isinstance(record, ConfigRecord | MetricRecord):
            for key, value in record.items():
                values = value if isinstance(value, list) else [value]
                out[f"{record_name}/{key}"] = np.asarray(values)
    return out


class AuditedGrid:
    """A ``Grid`` that saves every reply it receives (delegates everything else)."""

    def __init__(self, grid: Grid, folder: Path) -> None:
        self._grid = grid
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            self._count += 1
            kind = reply.metadata.message_type.replace(".", "-")
            name = f"{self._count:05d}-{kind}-node{reply.metadata.src_node_id}.npz"
            arrays = message_arrays(reply)
            np.savez(self.folder / name, **{k.replace("/", "__"): v for k, v in arrays.items()})
        return replies
