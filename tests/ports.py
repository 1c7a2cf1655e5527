"""Ports for the Flower processes a test starts, from a range set aside for it on a shared machine.

``simulations.launcher.free_port`` asks the OS for any free port; several people starting SuperLinks
on one machine at once then share the OS's whole range. :func:`ports_from` replaces it (through
``monkeypatch``) with one that hands out free ports of one range only.
"""

from __future__ import annotations

import socket
from collections.abc import Callable


def ports_from(first: int, last: int) -> Callable[[], int]:
    """A ``free_port`` that returns the next port in ``first..last`` that is free on 127.0.0.1."""
    candidates = iter(range(first, last + 1))

    def free_port() -> int:
        for port in candidates:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise RuntimeError(f"no free port left in {first}..{last}")

    return free_port
