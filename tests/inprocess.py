"""An in-process transport for the server loop: messages go to the real ClientApp handlers.

``InProcessGrid`` keeps one Context per node, as a SuperNode would, and calls ``clients.app`` directly;
only the network is left out. ``tamper`` may rewrite replies (to test the server's defences).
Messages get ids and error replies come from the SuperLink's node id, as in a real deployment; a node
can be marked dead (its messages get Flower's ``NODE_UNAVAILABLE`` error) and a device can rejoin
under a new node id with the same partition and store (:meth:`InProcessGrid.rejoin`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid

from clients.app import app as client_app


class InProcessGrid(Grid):
    """Routes messages to the real ClientApp in this process; ``tamper`` may rewrite replies."""

    def __init__(
        self, run_config: dict, tmp: Path, tamper: Callable[[Message], Message] | None = None
    ) -> None:
        num = int(run_config["num-clients"])
        self.contexts = {
            100 + pid: Context(
                run_id=1,
                node_id=100 + pid,
                node_config={
                    "partition-id": pid,
                    "num-partitions": num,
                    "request-store": str(tmp / f"dev{pid}.sqlite"),
                },
                state=RecordDict(),
                run_config=run_config,
            )
            for pid in range(num)
        }
        self.tamper = tamper or (lambda m: m)
        self.dead: set[int] = set()
        self.sent: list[Message] = []

    def rejoin(self, old_node: int) -> int:
        """The device behind ``old_node`` restarts: same node config (partition, store), new node id."""
        context = self.contexts.pop(old_node)
        self.dead.discard(old_node)
        new_node = max(self.contexts, default=old_node) + 100
        self.contexts[new_node] = Context(
            run_id=1,
            node_id=new_node,
            node_config=dict(context.node_config),
            state=RecordDict(),
            run_config=context.run_config,
        )
        return new_node

    def node_of(self, partition_id: int) -> int:
        return next(n for n, c in self.contexts.items() if int(c.node_config["partition-id"]) == partition_id)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.dead]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            if node in self.dead or node not in self.contexts:
                reply = Message(Error(code=5, reason="Error: Node Unavailable"), reply_to=msg)
                reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
                replies.append(reply)
                continue
            try:
                reply = client_app(msg, self.contexts[node])
            except Exception as error:  # noqa: BLE001 - Flower turns handler errors into error replies
                reply = Message(Error(code=0, reason=repr(error)), reply_to=msg)
            replies.append(self.tamper(reply))
        return replies

    # Unused by fedforget's server loop.
    def create_message(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201, D102
        raise NotImplementedError

    def push_messages(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201, D102
        raise NotImplementedError

    def pull_messages(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201, D102
        raise NotImplementedError

    @property
    def run(self):  # noqa: ANN201, D102
        raise NotImplementedError

    def set_run(self, run_id: int) -> None:  # noqa: D102
        pass
