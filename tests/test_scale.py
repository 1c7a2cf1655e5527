"""The scale benchmark's smoke test, run on an existing (local, one-node) Ray cluster.

It checks two promises of ``docs/scaling.md`` at once: the benchmark produces finite measurements
from a real Flower simulation, and a simulation SuperLink started with ``RAY_ADDRESS`` runs its
ClientApps on the Ray cluster that was already there (the multi-machine recipe) instead of a private
one: the cluster's own state API must list the ClientApp actors afterwards.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulations import scale
from simulations.launcher import free_port

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture()
def ray_cluster() -> Iterator[tuple[str, Path]]:
    """A one-node Ray cluster started with ``ray start --head``: its address and temp folder."""
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [RAY, "start", "--head", "--port", str(port), "--num-cpus", "2", "--temp-dir", str(temp)]
    start += ["--include-dashboard", "false", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, text=True, env=env, timeout=120)
    try:
        yield f"127.0.0.1:{port}", temp
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _cluster_actor_logs(temp: Path) -> list[Path]:
    """Worker logs of the cluster's session that name Flower's ClientApp actor class.

    Ray starts every actor's worker log with ``:actor_name:<class>``.
    """
    logs = (temp / "session_latest" / "logs").glob("worker-*")
    return [p for p in logs if "ClientAppActor" in p.read_text(errors="replace")[:4096]]


def test_scale_point_runs_on_an_existing_ray_cluster(
    ray_cluster: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, temp = ray_cluster
    assert not _cluster_actor_logs(temp)
    monkeypatch.setenv("RAY_ADDRESS", address)
    point = scale.measure_point(
        6,
        0.2,
        clients_per_round=3,
        runs_dir=tmp_path / "runs",
        extra={"dataset": "digits", "num-rounds": 3, "forsaken-steps": 5, "unlearn-rounds": 1},
    )
    for value in (
        point.first_round_seconds,
        point.round_seconds,
        point.withdrawal_seconds,
        point.wall_seconds,
    ):
        assert math.isfinite(value) and value > 0
    assert point.num_forget > 0 and point.unlearn_rounds == 1
    assert point.clients_per_round == 3
    assert 0.0 <= point.test_accuracy <= 1.0
    assert point.peak_rss_mb > 100  # a SuperLink plus Ray workers with torch loaded
    assert point.withdrawal_seconds < point.wall_seconds
    # The ClientApps ran as actors of the cluster that existed before the run.
    assert _cluster_actor_logs(temp)

    table = scale.markdown([point], "python -m simulations.scale --test")
    assert "| 6 | 3 |" in table and "python -m simulations.scale --test" in table
    png = scale.plot([point], tmp_path / "scale.png")
    assert png.stat().st_size > 1000
