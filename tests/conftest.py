"""Suite-wide settings, and the one rule for tests that need the offline dataset files.

Tests that need the files in ``../shared/datasets`` (or wherever ``FEDFORGET_DATA`` points) skip with the
reason when they are absent, so a fresh clone passes: mark a test ``@requires_shared_data("location")``
(checked at collection), or call ``shared_data_root("location")`` inside a fixture or test. Core tests
that only need an overfitted model use the synthetic ``memorise`` dataset, which exists everywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedforget.data import DataError, resolve_data_root

# Tiny models on a 2-core machine: one intra-op thread avoids oversubscription (measured up to 15x
# slower with 2 threads while Flower processes run beside the tests) and keeps timings steady.
torch.set_num_threads(1)


def missing_shared_data(*names: str) -> str | None:
    """Why the dataset folder (with every one of the sub-folders ``names``) cannot be used, or None."""
    try:
        for name in names or (None,):
            resolve_data_root(None, name)
    except DataError as exc:
        lines = str(exc).splitlines()
        searched = "; ".join(line.strip(" -") for line in lines if line.startswith("  - "))
        return f"offline dataset files absent: {lines[0]} {searched}"
    return None


def shared_data_root(*names: str) -> Path:
    """The dataset folder holding every sub-folder in ``names``; skips the calling test when absent."""
    reason = missing_shared_data(*names)
    if reason is not None:
        pytest.skip(reason)
    return resolve_data_root(None, names[0] if names else None)


def requires_shared_data(*names: str) -> pytest.MarkDecorator:
    """A skip marker for tests that read the offline dataset files ``names`` (e.g. "location")."""
    reason = missing_shared_data(*names)
    return pytest.mark.skipif(reason is not None, reason=reason or "")
