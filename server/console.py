"""The per-round table printed by the server (what a person watches during a run).

``judge FR`` and ``judge AUC`` are the server judge's headline attack (``fedforget.judge``; ``-`` when
FR is not measurable: the attack is at chance on the model, or no forget sample was judged a member).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

COLUMNS = (
    ("round", "round", "{:>5}"),
    ("phase", "phase", "{:>8}"),
    ("test-accuracy", "test acc", "{:>8.4f}"),
    ("test-loss", "test loss", "{:>9.4f}"),
    ("train-loss", "train loss", "{:>10.4f}"),
    ("clients", "clients", "{:>7}"),
    ("forget-accuracy", "forget acc", "{:>10.4f}"),
    ("fr", "judge FR", "{:>8.3f}"),
    ("attack-auc", "judge AUC", "{:>9.3f}"),
    ("seconds", "seconds", "{:>7.2f}"),
)


class RoundTable:
    """Prints a header once, then one aligned line per metrics row, then the record path."""

    def __init__(self, record_path: Path, stream: Any = None) -> None:
        self.record_path = record_path
        self.stream = stream or sys.stdout
        self._header_done = False

    def _emit(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def print_row(self, row: Mapping[str, Any]) -> None:
        if not self._header_done:
            self._emit(f"[fedforget] run record: {self.record_path}")
            self._emit("[fedforget] " + " ".join(f"{title:>{_width(fmt)}}" for _, title, fmt in COLUMNS))
            self._header_done = True
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append(" " * (_width(fmt) - 1) + "-")
            else:
                cells.append(fmt.format(value))
        self._emit("[fedforget] " + " ".join(cells))

    def print_event(self, text: str) -> None:
        self._emit(f"[fedforget] * {text}")

    def print_warning(self, text: str) -> None:
        """A line that must not be missed (e.g. training diverged), marked ``!!! WARNING``."""
        self._emit(f"[fedforget] !!! WARNING: {text}")

    def print_footer(self) -> None:
        self._emit(f"[fedforget] finished; run record: {self.record_path}")


def _width(fmt: str) -> int:
    return int(fmt.split(">")[1].split(".")[0].rstrip("}"))
