"""scripts/bench_train.py's GPU mode, run on the CPU with the synthetic dataset and a small
budget: every measurement is written, the budget is kept, a missed target says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts/bench_train.py"


def bench(tmp_path: Path, budget: float, *extra: str) -> tuple[dict, float]:
    argv = [sys.executable, str(SCRIPT), "gpu", "--device", "cpu", "--dataset", "synthetic",
            "--budget-s", str(budget), "--no-compile", "--plain-steps", "20", "--quiet",
            "--out", str(tmp_path), *extra]  # fmt: skip
    t0 = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, timeout=budget + 60)
    assert done.returncode in (0, 3)  # 3: the watchdog ended the run at the hard limit
    (path,) = tmp_path.glob("train-*.json")
    return json.loads(path.read_text()), time.monotonic() - t0


@pytest.mark.slow
def test_gpu_mode_measures_everything_in_order_and_writes_the_environment(tmp_path):
    report, _ = bench(
        tmp_path, 60, "--lenet-target", "0.9", "--only", "plain_loop,engine_plain_settings,lenet5"
    )
    m = report["measurements"]
    assert report["status"] == "done" and report["environment"]["torch"]
    assert m["plain_loop"]["images_per_s"] > 0 and m["plain_loop"]["batch_size"] == 128
    same = m["engine_plain_settings"]["recipe"]  # the plain loop's optimizer, nothing added
    assert (same["weight_decay"], same["nesterov"], same["schedule"]) == (0.0, False, "constant")
    assert (same["batch_size"], same["lr"], same["momentum"]) == (128, 0.05, 0.9)
    assert m["lenet5"]["reached"] and m["lenet5"]["stopped"] == "target"
    assert m["lenet5"]["train_seconds_to_target"] > 0 and m["lenet5"]["curve"]
    assert not any(r.get("running") for r in m.values())  # epoch records replaced by results
    assert set(report["ratios"]) == {"engine_plain_settings_vs_plain_loop", "lenet5_vs_plain_loop"}


@pytest.mark.slow
def test_gpu_mode_stops_at_the_budget_and_says_so(tmp_path):
    only = "resnet20_small_cnn_recipe,lenet5"
    report, seconds = bench(
        tmp_path, 25, "--only", only, "--min-s", "1", "--reserve-s", "1", "--resnet-target", "1.01"
    )
    resnet, lenet = (
        report["measurements"]["resnet20_small_cnn_recipe"],
        report["measurements"]["lenet5"],
    )
    assert resnet["stopped"] == "budget" and not resnet["reached"]  # 30 epochs: minutes here
    assert "skipped" in lenet  # nothing starts once the budget is spent
    assert seconds < 25 + 40  # the budget, plus the interpreter's start under load


@pytest.mark.slow
def test_leaderboard_runs_a_family_and_resumes(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("leaderboard", SCRIPT.parent / "leaderboard.py")
    board = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(board)
    argv = ["--dataset", "synthetic", "--families", "ResNet", "--seeds", "1", "--epochs", "1",
            "--train-subset", "128", "--device", "cpu", "--out", str(tmp_path), "--quiet",
            "--threads", "1"]  # fmt: skip
    board.main(argv)
    model = board.family_models()["ResNet"]
    data = json.loads((tmp_path / f"{model}.json").read_text())
    assert [r["seed"] for r in data["runs"]] == [0] and data["params"] > 0
    assert data["runs"][0]["recipe"] == "small-cnn"
    board.main(argv)  # resumable: the seed already there is not trained again
    assert len(json.loads((tmp_path / f"{model}.json").read_text())["runs"]) == 1
    md = (tmp_path / "leaderboard.md").read_text()
    assert f"`{model}`" in md and "ResNet18: 94.9%" in md
