"""Direct forgetting by fine-tuning every parameter: the path, and the best FR per accuracy budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations import direct_forgetting


def test_direct_forgetting_follows_the_fine_tuning_path_and_picks_the_best_fr_within_each_budget(
    tmp_path: Path,
) -> None:
    out = tmp_path / "direct.json"
    argv = ["--cases", "digits/iid", "--rounds", "2", "--epochs", "40", "--eval-every", "10"]
    argv += ["--lr", "0.01", "--out", str(out), "--cache", str(tmp_path / "cache")]
    assert direct_forgetting.main(argv) == 0
    doc = json.loads(out.read_text())
    (row,) = doc["cases"]
    assert row["case"] == "digits/iid/mlp/0.05" and row["b-t"] >= 1
    path = row["path"]
    assert [p["epoch"] for p in path] == [0, 10, 20, 30, 40]
    assert path[0]["fr"] == 0.0 and path[0]["acc-loss"] == pytest.approx(0.0, abs=1e-9)
    assert max(p["fr"] for p in path) > 0  # the fine-tuning moves members across the threshold
    for budget in ("0.03", "0.05"):
        best = row["best"][budget]
        allowed = [p for p in path if p["acc-loss"] <= float(budget)]
        assert best is not None and best["fr"] == max(p["fr"] for p in allowed)
    assert row["best"]["0.05"]["fr"] >= row["best"]["0.03"]["fr"]
    md = out.with_suffix(".md").read_text()
    assert "| digits/iid/mlp/0.05 |" in md and doc["command"] in md


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cases", "digits"], "expected DATASET/PARTITIONING"),
        (["--epochs", "0"], "must be >= 1"),
        (["--fraction", "0"], "--fraction must be in"),
    ],
)
def test_bad_arguments_are_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        direct_forgetting.parse_args(argv)
    assert message in capsys.readouterr().err
