"""Sending messages to nodes that may die: every reply is matched to the node it was meant for.

A SuperNode can die at any moment. The SuperLink then answers its pending messages with an error
reply that comes *from the SuperLink* (``NODE_UNAVAILABLE``, after the node missed its heartbeats),
so a reply is matched to its instruction by ``reply_to_message_id``, never by its source node.
:func:`exchange` returns the good replies by destination node and the failures with their reasons;
nothing here raises because a node failed: the caller decides what a failure means.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from flwr.app import Message
from flwr.serverapp import Grid

REPLY_TIMEOUT_S = 3600.0


@dataclasses.dataclass
class Exchange:
    """Replies by destination node id, and ``node id -> reason`` for every node that failed."""

    replies: dict[int, Message]
    failures: dict[int, str]


def exchange(grid: Grid, messages: Sequence[Message], timeout: float = REPLY_TIMEOUT_S) -> Exchange:
    """Send ``messages`` (at most one per node) and collect the replies; a missing reply is a failure."""
    destinations = [m.metadata.dst_node_id for m in messages]
    if len(set(destinations)) != len(destinations):
        raise ValueError("exchange sends at most one message per node")
    replies = list(grid.send_and_receive(list(messages), timeout=timeout))
    by_id = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
    result = Exchange({}, {})
    for reply in replies:
        node = by_id.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        if reply.has_error():
            result.failures[node] = (reply.error.reason.strip().splitlines() or ["error reply"])[-1][:500]
        else:
            result.replies[node] = reply
    for node in destinations:
        if node not in result.replies and node not in result.failures:
            result.failures[node] = f"no reply within {timeout:.0f} s"
    return result
