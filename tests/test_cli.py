"""The command line: train -> eval -> predict round trip, and every bad input as one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torchvision.io import write_jpeg, write_png

from visionzoo.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lenet"
    code = main(["train", "lenet5", "--dataset", "synthetic", "--epochs", "1", "--batch-size", "64",
                 "--threads", "1", "--device", "cpu", "--quiet", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def one_line_error(capsys, argv, code=2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("visionzoo: error:") and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def test_list_and_info(capsys):
    assert main(["list", "lenet*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["lenet5", "lenet5_paper"]
    assert rows[1]["reference_params"] == 60_000 and rows[1]["small_input"] is False


def test_eval_reports_per_class_and_confusion(run_dir, capsys):
    assert main(["eval", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 500 and 0.5 < result["top1"] <= 1
    assert len(result["confusion"]) == 10 and sum(map(sum, result["confusion"])) == 500
    assert len(result["per_class"]) == 10


def test_predict_any_photo(run_dir, tmp_path, capsys):
    rgb = (torch.rand(3, 120, 90) * 255).to(torch.uint8)
    write_jpeg(rgb, str(tmp_path / "photo.jpg"))
    write_png(rgb[:1], str(tmp_path / "gray.png"))
    assert main(["predict", str(run_dir), str(tmp_path / "photo.jpg"), str(tmp_path / "gray.png"),
                 "--topk", "3", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 2 and len(out[0]["top"]) == 3
    assert out[0]["top"][0]["class"].startswith("class")
    assert abs(sum(t["prob"] for t in out[0]["top"])) <= 1.0 + 1e-6


def test_unknown_model_and_dataset(capsys, tmp_path):
    assert "did you mean: lenet5" in one_line_error(
        capsys, ["train", "lenet", "--out", str(tmp_path / "x")]
    )
    err = one_line_error(
        capsys, ["train", "lenet5", "--dataset", "fashion-mnst", "--out", str(tmp_path / "y")]
    )
    assert "fashion-mnist" in err
    assert "unknown recipe" in one_line_error(
        capsys, ["train", "lenet5", "--recipe", "fast", "--out", str(tmp_path)]
    )


def test_out_holding_a_run_is_refused(run_dir, capsys):
    before = (run_dir / "model.safetensors").read_bytes()
    err = one_line_error(
        capsys, ["train", "lenet5", "--dataset", "synthetic", "--out", str(run_dir)]
    )
    assert "--overwrite" in err
    assert (run_dir / "model.safetensors").read_bytes() == before


def test_missing_dataset_files_say_how(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    err = one_line_error(capsys, ["data", "cifar10", "--data-dir", str(tmp_path)])
    assert "not found" in err and "--download" in err


def test_bad_run_dirs(run_dir, capsys, tmp_path):
    assert "not a run folder" in one_line_error(
        capsys, ["predict", str(tmp_path / "nope"), "x.png"]
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json" in one_line_error(capsys, ["eval", str(empty)])
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    shutil.copy(run_dir / "config.json", no_weights)
    assert "no model.safetensors" in one_line_error(capsys, ["eval", str(no_weights)])
    wrong = tmp_path / "wrong"
    shutil.copytree(run_dir, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["model"] = "lenet5_paper"
    (wrong / "config.json").write_text(json.dumps(config))
    assert "do not match" in one_line_error(capsys, ["eval", str(wrong)])
    (wrong / "config.json").write_text("{not json")
    assert "not valid JSON" in one_line_error(capsys, ["eval", str(wrong)])


def test_bad_images(run_dir, capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a readable image" in one_line_error(
        capsys, ["predict", str(run_dir), str(tmp_path / "notes.txt")]
    )
    write_png(torch.zeros(1, 8, 8, dtype=torch.uint8), str(tmp_path / "ok.png"))
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:30])
    assert "not a readable image" in one_line_error(
        capsys, ["predict", str(run_dir), str(tmp_path / "cut.png")]
    )
    assert "no such file" in one_line_error(
        capsys, ["predict", str(run_dir), str(tmp_path / "missing.png")]
    )


def test_resume_errors(run_dir, capsys, tmp_path):
    assert "give no model" in one_line_error(capsys, ["train", "lenet5", "--resume", str(run_dir)])
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    (other / "checkpoint.pt").write_bytes(b"garbage")
    assert "corrupt" in one_line_error(capsys, ["train", "--resume", str(other)])
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state["model_name"] = "resnet20"
    torch.save(state, other / "checkpoint.pt")
    assert "not 'lenet5'" in one_line_error(capsys, ["train", "--resume", str(other)])
