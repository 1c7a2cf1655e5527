"""The tuning panel: variants x seeds on benchmark cases, judged by the server's judge, with the trained
originals, judges and retrained models cached."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from simulations import forsaken_benchmark as bench
from simulations import forsaken_panel

SMALL = ["--cases", "memorise/iid", "--rounds", "4", "--forsaken-steps", "3", "--unlearn-rounds", "1"]


def test_the_panel_judges_every_variant_and_seed_with_the_judge_and_reuses_its_cache(tmp_path: Path) -> None:
    out, cache = tmp_path / "panel.json", tmp_path / "cache"
    cache.mkdir()
    old = cache / "memorise-iid-mlp-None-s0-r4x3-c5.pkl"  # an entry of the old format (the old oracle)
    old.write_bytes(pickle.dumps({"state": {}, "accuracy": 0.5, "oracle": ({}, {})}))
    argv = [*SMALL, "--variant", "default", "--variant", "focus=1,patience=3", "--seeds", "2"]
    argv += ["--out", str(out), "--cache", str(cache)]
    assert forsaken_panel.main(argv) == 0
    doc = json.loads(out.read_text())
    runs = doc["runs"]
    assert [(r["variant"], r["seed"]) for r in runs] == [
        ("default", 0),
        ("default", 1),
        ("focus=1,patience=3", 0),
        ("focus=1,patience=3", 1),
    ]
    assert all(r["case"] == "memorise/iid/mlp" and r["steps"] <= 3 and r["seconds"] > 0 for r in runs)
    attacks = runs[0]["attacks"]
    assert runs[0]["judge"] == attacks[0] == "loss" and set(attacks) == {"loss", "shokri", "lira"}
    for r in runs:
        assert r["fr"] == r["fr-forsaken-loss"] and r["auc"] == r["auc-forsaken-loss"]
        assert all(r[f"verdict-forsaken-{a}"] in bench.VERDICT_SHORT for a in attacks)
        # one retrained model per case, judged once: the same reference for every run
        assert (r["fr-retrain"], r["auc-retrain"]) == (runs[0]["fr-retrain"], runs[0]["auc-retrain"])
        assert r["auc-retrain"] is not None and r["auc-original"] is not None
    summary = doc["summary"]
    assert [s["runs"] for s in summary] == [2, 2]
    for s in summary:
        assert set(s["verdicts"]) == set(attacks)
        assert all(sum(counts.values()) == 2 for counts in s["verdicts"].values())
        assert s["auc-retrain-mean"] == pytest.approx(runs[0]["auc-retrain"])
    # the old entry is left alone; the new one is named by its format
    assert old.exists() and [p.name.endswith(".v2.pkl") for p in cache.glob("*.v*.pkl")] == [True]
    md = out.with_suffix(".md").read_text()
    assert "| default | 2 |" in md and "| memorise/iid/mlp |" in md and "server's judge" in md
    assert "- **default**: loss:" in md
    # again, from the cache: the same original model, judge and retrained model, so the same outcome
    assert forsaken_panel.main(argv) == 0
    again = json.loads(out.read_text())["runs"]
    keys = ("fr", "auc", "auc-retrain", "acc-loss", "steps", "verdict-forsaken-shokri")
    assert [[r[k] for k in keys] for r in again] == [[r[k] for k in keys] for r in runs]


def test_a_cache_entry_of_another_format_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    argv = [*SMALL, "--out", str(tmp_path / "panel.json"), "--cache", str(cache)]
    args = forsaken_panel.parse_args(argv)
    group = args.groups[0]
    path = forsaken_panel.cache_path(group, bench.make_config(group, args), cache)
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"state": {}, "accuracy": 0.5, "oracle": ({}, {})}))
    assert forsaken_panel.main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == [f"forsaken_panel: error: cache entry {path} has format 1, this version reads 2: delete it"]
    assert not (tmp_path / "panel.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cases", "digits"], "expected DATASET/PARTITIONING"),
        (["--cases", "nope/iid"], "expected DATASET/PARTITIONING"),
        (["--cases", "memorise/random"], "expected DATASET/PARTITIONING"),
        (["--variant", "nope=1"], "expected KEY=VALUE"),
        (["--variant", "default", "--variant", "default"], "the same variant twice"),
        (["--seeds", "0"], "must be >= 1"),
    ],
)
def test_bad_arguments_are_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        forsaken_panel.parse_args(argv)
    assert message in capsys.readouterr().err


def test_the_default_cases_are_benchmark_cases() -> None:
    groups = forsaken_panel.parse_args([]).groups
    assert {g.dataset for g in groups} <= set(bench.MEMORISING)
