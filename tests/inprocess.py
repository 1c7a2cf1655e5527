"""An in-process transport for the server loop: messages go to the real ClientApp handlers.

``InProcessGrid`` keeps one Context per node, as a SuperNode would, and calls ``clients.app`` directly;
only the network is left out. ``tamper`` may rewrite replies (to test the server's defences).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
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

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            try:
                reply = client_app(msg, self.contexts[msg.metadata.dst_node_id])
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
