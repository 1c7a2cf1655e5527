"""Direct forgetting by fine-tuning every parameter: targets chosen by the device's steering oracle, the
path judged by the server's judge, and the best judged FR per accuracy budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedforget.client_data import ClientData
from fedforget.steer import fit_steering_oracle, steer_seed
from simulations import direct_forgetting, forsaken_panel


def test_direct_forgetting_steers_by_the_device_oracle_and_is_judged_by_the_judge(tmp_path: Path) -> None:
    out, cache = tmp_path / "direct.json", tmp_path / "cache"
    argv = ["--cases", "memorise/iid", "--rounds", "4", "--epochs", "20", "--eval-every", "2"]
    argv += ["--lr", "0.001", "--out", str(out), "--cache", str(cache)]
    assert direct_forgetting.main(argv) == 0
    doc = json.loads(out.read_text())
    (row,) = doc["cases"]
    assert row["case"] == "memorise/iid/mlp/0.05" and row["judge"] == "loss"
    # B_T of the fine-tuning: the device's steering oracle on the original model, not the judge
    args = direct_forgetting.parse_args(argv)
    case = forsaken_panel.trained(args.groups[0], args)
    client = ClientData.for_partition(case.config, 0)
    kept = client.without(case.forget_ids)
    steer = fit_steering_oracle(
        case.original,
        retained=(kept.x_train, kept.y_train),
        heldout=(client.x_holdout, client.y_holdout),
        seed=steer_seed(case.config.seed, case.config.num_rounds + 1, 0),
    )
    _, x_forget, y_forget = client.subset(case.forget_ids)
    assert row["steer-b-t"] == int(steer.decide(case.original, x_forget, y_forget).sum()) >= 1
    path = row["path"]
    assert [p["epoch"] for p in path] == list(range(0, 21, 2))
    assert all(set(p["attacks"]) == {"loss", "shokri", "lira"} for p in path)
    assert row["b-t"] == path[0]["attacks"]["loss"]["b-t"]  # the judge's B_T, reported beside
    assert path[0]["acc-loss"] == pytest.approx(0.0, abs=1e-9)
    assert path[0]["auc"] == pytest.approx(row["auc-original"])  # epoch 0: the original model
    assert max(p["fr"] for p in path if p["fr"] is not None) > 0  # the fine-tuning moves members
    assert row["auc-retrain"] is not None and set(row["retrain"]) == {"loss", "shokri", "lira"}
    for budget in ("0.03", "0.05"):
        best = row["best"][budget]
        allowed = [p for p in path if p["acc-loss"] <= float(budget) and p["fr"] is not None]
        assert best is not None and best["fr"] == max(p["fr"] for p in allowed)
        assert best["auc"] == next(p["auc"] for p in path if p["epoch"] == best["epoch"])
    assert row["best"]["0.05"]["fr"] >= row["best"]["0.03"]["fr"]
    md = out.with_suffix(".md").read_text()
    assert "| memorise/iid/mlp/0.05 |" in md and doc["command"] in md and "steering oracle" in md


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
