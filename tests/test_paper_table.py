"""Smoke test of the paper-table command (simulations/paper_table.py) at its smallest size."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest

from fedforget import baselines
from fedforget.judge.verdict import VERDICTS
from simulations import paper_table


def test_quick_smallest_setting_writes_finite_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def diverges(*args: object, **kwargs: object) -> None:
        raise FloatingPointError("training diverged (non-finite loss); lower the learning rate")

    # a method that fails in a setting gets a row with its error; the others still run
    monkeypatch.setitem(baselines.METHODS, "pga", dataclasses.replace(baselines.METHODS["pga"], run=diverges))
    out, docs = tmp_path / "results" / "paper_table.json", tmp_path / "docs"
    argv = ["--quick", "--datasets", "breast-cancer", "--rounds", "2", "--local-epochs", "1"]
    argv += ["--forsaken-steps", "3", "--out", str(out), "--docs", str(docs)]
    assert paper_table.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["command"].endswith(" ".join(argv)) and doc["quick"] is True
    methods = [row["method"] for row in doc["rows"]]
    assert methods == list(paper_table.METHODS)  # every method, once, on the one setting
    failed = [row for row in doc["rows"] if row.get("error")]
    assert [row["method"] for row in failed] == ["pga"] and "diverged" in failed[0]["error"]
    assert failed[0]["acc"] is None and failed[0]["seconds"] is None
    h = paper_table.HEADLINE
    for row in doc["rows"]:
        # every row, failed or not, names the judge and its attacks
        assert row["judge"] == h and row["attacks"] == list(paper_table.ATTACKS), row["method"]
        if row["method"] == "pga":
            continue
        for key in (
            "acc",
            "acc-loss",
            "seconds",
            "seconds-retrain",
            "speedup",
            "pass-ratio",
            "client-seconds",
        ):
            assert row[key] is not None and math.isfinite(row[key]), (row["method"], key)
        assert row["seconds"] > 0 and 0 <= row["acc"] <= 1
        assert row["passes"] > 0 and row["passes-retrain"] > 0, row["method"]
        assert row["pass-ratio"] == pytest.approx(row["passes-retrain"] / row["passes"])
        for attack in paper_table.ATTACKS:  # the judge's attacks, side by side, on every row
            assert 0 <= row[f"judge-auc-{attack}"] <= 1 and isinstance(
                row[f"judge-measurable-{attack}"], bool
            )
            for arm in ("method", "retrain"):
                assert 0 <= row[f"auc-{arm}-{attack}"] <= 1, (row["method"], arm, attack)
                status, fr = row[f"fr-status-{arm}-{attack}"], row[f"fr-{arm}-{attack}"]
                assert status in ("measured", "not-measurable")
                # FR is None exactly when the judge cannot measure it (attack at chance, B_T = 0)
                assert (fr is None) == (status != "measured"), (row["method"], arm, attack)
                assert fr is None or -math.inf < fr <= 1
            assert row[f"verdict-method-{attack}"] in VERDICTS
            if not row[f"judge-measurable-{attack}"]:
                assert (
                    row[f"fr-method-{attack}"] is None and row[f"verdict-method-{attack}"] == "not-measurable"
                )
    by = {row["method"]: row for row in doc["rows"]}
    assert by["retrain"]["speedup"] == pytest.approx(1.0) and by["retrain"]["pass-ratio"] == pytest.approx(
        1.0
    )
    for attack in paper_table.ATTACKS:  # retraining is its own reference
        assert by["retrain"][f"verdict-method-{attack}"] in ("retrain-equivalent", "not-measurable")
        assert by["retrain"][f"auc-method-{attack}"] == by["retrain"][f"auc-retrain-{attack}"]
    assert by["federaser"]["storage-bytes"] > 0 and by["sisa"]["storage-bytes"] > 0
    assert by["sisa"]["bytes-sent"] == 0 and by["forsaken"]["bytes-sent"] > 0
    with out.with_suffix(".csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == methods and set(paper_table.CSV_COLUMNS) == set(rows[0])
    text = (docs / "results.md").read_text()
    assert f"`{doc['command']}`" in text and "| forsaken | federated | 1 |" in text
    assert "| pga | federated | 1 (1 failed) |" in text and "pga failed on breast-cancer seed 0" in text
    assert "Judged by the server's judge" in text and "shadow models on its auxiliary data" not in text
    forsaken_line = next(
        line for line in text.splitlines() if line.startswith("| breast-cancer | 0 | forsaken |")
    )
    if by["forsaken"][f"fr-status-method-{h}"] != "measured":  # shown as such, never as a number
        assert "| not measurable |" in forsaken_line
    else:
        assert f"| {by['forsaken'][f'fr-method-{h}']:.2f} |" in forsaken_line
    for name in ("results_fr_vs_accuracy.png", "results_time.png", "results_rounds.png"):
        png = (docs / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000
    # the per-round record: every round of every federated method that ran, judged by the judge's headline
    expected_rounds = {"retrain": [1, 2], "finetune": [1], "gradient-ascent": [1, 2], "federaser": [1, 2]}
    for method, rounds in expected_rounds.items():
        assert [p["round"] for p in by[method]["rounds"]] == rounds, method
        for p in by[method]["rounds"]:
            assert 0 <= p["acc"] <= 1 and 0 <= p["auc"] <= 1
            assert (p["fr"] is None) == (p["fr-status"] != "measured")
    last = by["retrain"]["rounds"][-1]  # the last round is the retrained model: the same judgement
    assert last["acc"] == pytest.approx(by["retrain"]["acc"])
    assert last["auc"] == pytest.approx(by["retrain"][f"auc-method-{h}"])
    assert last["fr-status"] == by["retrain"][f"fr-status-method-{h}"]
    assert 1 <= len(by["forsaken"]["rounds"]) <= baselines.RunConfig().unlearn_rounds
    assert by["forsaken"]["rounds"][-1]["acc"] == pytest.approx(by["forsaken"]["acc"])
    curves = paper_table.round_curves(doc["rows"])["breast-cancer"]
    round_0 = curves["finetune"][0]  # the original model: FR 0 where the judge can measure it, else NaN
    assert round_0[0] == 0 and round_0[2] == pytest.approx(by["finetune"]["acc-original"])
    if by["finetune"][f"judge-measurable-{h}"]:
        assert round_0[1] == 0.0
    else:
        assert math.isnan(round_0[1])
    assert "results_rounds.png" in text
    assert not out.with_suffix(".partial.jsonl").exists()  # a finished run keeps no partial file
    assert (
        "## Forsaken per dataset" in text and "| breast-cancer |" in text.split("## Forsaken per dataset")[1]
    )
    # the page and plots can be rendered again from the results alone
    again = tmp_path / "again"
    assert paper_table.main(["--render", str(out), "--docs", str(again)]) == 0
    rendered = (again / "results.md").read_text()
    assert (
        rendered.replace(
            f" This page was rendered again from them by `python -m simulations.paper_table "
            f"--render {out} --docs {again}`.",
            "",
        )
        == text
    )
    assert (again / "results_rounds.png").exists()
    with pytest.raises(SystemExit, match="does not exist"):
        paper_table.main(["--render", str(tmp_path / "missing.json"), "--docs", str(again)])
    old = tmp_path / "old.json"  # rows judged by the old oracle (no per-attack columns) are refused
    old.write_text(
        json.dumps({**doc, "rows": [{k: v for k, v in r.items() if k != "attacks"} for r in doc["rows"]]})
    )
    with pytest.raises(SystemExit, match="judged by the server's judge"):
        paper_table.main(["--render", str(old), "--docs", str(again)])


def test_an_interrupted_run_resumes_from_its_finished_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, docs = tmp_path / "paper_table.json", tmp_path / "docs"
    argv = ["--datasets", "breast-cancer", "--seeds", "0", "1", "--methods", "retrain", "finetune"]
    argv += ["--rounds", "1", "--local-epochs", "1", "--out", str(out), "--docs", str(docs)]
    real = paper_table.run_setting

    def crash_on_seed_1(dataset: str, seed: int, *args: object) -> list:
        if seed == 1:
            raise KeyboardInterrupt  # the machine goes away in the middle of the second setting
        return real(dataset, seed, *args)

    monkeypatch.setattr(paper_table, "run_setting", crash_on_seed_1)
    with pytest.raises(KeyboardInterrupt):
        paper_table.main(argv)
    partial = out.with_suffix(".partial.jsonl")
    assert partial.exists() and not out.exists()
    monkeypatch.setattr(paper_table, "run_setting", real)
    calls: list[int] = []

    def counting(dataset: str, seed: int, *args: object) -> list:
        calls.append(seed)
        return real(dataset, seed, *args)

    monkeypatch.setattr(paper_table, "run_setting", counting)
    assert paper_table.main([*argv, "--resume"]) == 0
    assert calls == [1]  # seed 0 was not run again
    doc = json.loads(out.read_text())
    assert [(r["seed"], r["method"]) for r in doc["rows"]] == [
        (0, "retrain"),
        (0, "finetune"),
        (1, "retrain"),
        (1, "finetune"),
    ]
    assert doc["resumed-settings"] == ["breast-cancer/0"] and not partial.exists()
    # resuming with other options is refused rather than mixing incomparable rows
    partial.write_text(json.dumps({"key": {"methods": ["pga"]}}) + "\n")
    with pytest.raises(SystemExit, match="other options"):
        paper_table.main([*argv, "--resume"])
