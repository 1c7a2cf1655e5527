"""The tuning panel: variants x seeds on benchmark cases, with the trained originals cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations import forsaken_panel


def test_the_panel_runs_every_variant_and_seed_and_reuses_its_cache(tmp_path: Path) -> None:
    out, cache = tmp_path / "panel.json", tmp_path / "cache"
    argv = ["--cases", "digits/iid", "--variant", "default", "--variant", "focus=1,patience=3"]
    argv += ["--seeds", "2", "--rounds", "2", "--forsaken-steps", "3", "--unlearn-rounds", "1"]
    argv += ["--out", str(out), "--cache", str(cache)]
    assert forsaken_panel.main(argv) == 0
    doc = json.loads(out.read_text())
    runs = doc["runs"]
    assert [(r["variant"], r["seed"]) for r in runs] == [
        ("default", 0),
        ("default", 1),
        ("focus=1.0,patience=3", 0),
        ("focus=1.0,patience=3", 1),
    ]
    assert all(r["case"] == "digits/iid/mlp" and r["steps"] <= 3 and r["seconds"] > 0 for r in runs)
    assert [s["runs"] for s in doc["summary"]] == [2, 2]
    assert len(list(cache.glob("*.pkl"))) == 1
    md = out.with_suffix(".md").read_text()
    assert "| default | 2 |" in md and "| digits/iid/mlp |" in md
    # again, from the cache: the same original model and oracle, so the same (deterministic) outcome
    assert forsaken_panel.main(argv) == 0
    again = json.loads(out.read_text())["runs"]
    assert [(r["fr"], r["acc-loss"], r["steps"]) for r in again] == [
        (r["fr"], r["acc-loss"], r["steps"]) for r in runs
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cases", "digits"], "expected DATASET/PARTITIONING"),
        (["--cases", "cifar10/iid"], "expected DATASET/PARTITIONING"),
        (["--variant", "nope=1"], "expected KEY=VALUE"),
        (["--variant", "default", "--variant", "default"], "the same variant twice"),
        (["--seeds", "0"], "must be >= 1"),
    ],
)
def test_bad_arguments_are_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        forsaken_panel.parse_args(argv)
    assert message in capsys.readouterr().err
