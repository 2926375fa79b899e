"""Every training flag checked; --resume with changed flags; config keys; `list` when piped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import visionzoo.engine.fit as fit_mod
from visionzoo.cli import main, one_line
from visionzoo.engine.optim import lr_factor

TRAIN = ["train", "lenet5", "--dataset", "synthetic", "--epochs", "1", "--batch-size", "64",
         "--threads", "1", "--device", "cpu", "--quiet"]  # fmt: skip


def error(capsys, argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("visionzoo: error:") and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err.removeprefix("visionzoo: error: ")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flags") / "run"
    assert main([*TRAIN, "--schedule", "step", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--train-subset", "0"], "--train-subset must be >= 1, got 0"),
        (["--train-subset", "-5"], "--train-subset must be >= 1, got -5"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--eval-batch-size", "0"], "--eval-batch-size must be >= 1, got 0"),
        (["--image-size", "0"], "--image-size must be >= 1, got 0"),
        (["--workers", "-1"], "--workers must be >= 0, got -1"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--loader", "foo"], "--loader must be memory or workers, got 'foo'"),
        (["--loader", "workers"], "--loader workers reads imagefolder:PATH datasets"),
        (["--device", "tpu"], "--device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
        (["--device", "cuda:99"], "cuda"),  # no CUDA, or not 100 devices: one line either way
        (["--random-erasing", "2"], "--random-erasing must be in [0, 1], got 2.0"),
    ],
)
def test_bad_training_flags(capsys, tmp_path, flags, message):
    assert message in error(capsys, [*TRAIN, "--out", str(tmp_path / "r"), *flags])
    assert not (tmp_path / "r").exists()


def test_eval_batch_size_zero(run_dir, capsys):
    assert error(capsys, ["eval", str(run_dir), "--batch-size", "0"]) == (
        "--batch-size must be >= 1, got 0"
    )


def test_resume_refuses_changed_recipe_flags(run_dir, capsys):
    before = (run_dir / "config.json").read_bytes()
    argv = ["train", "--resume", str(run_dir), "--lr", "0.01", "--no-augment", "--epochs", "2"]
    assert error(capsys, argv) == (
        "--resume keeps the run's recipe; these flags differ: "
        "--lr 0.01 (run: 0.05), --no-augment (run: --augment)"
    )
    assert "give no model, --recipe, --out or --overwrite" in error(
        capsys, ["train", "--resume", str(run_dir), "--overwrite"]
    )
    assert (run_dir / "config.json").read_bytes() == before


def test_resume_extends_the_schedule(run_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    steps = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["step"]
    first_lr = []
    real = fit_mod.train_one_epoch

    def train_one_epoch(state, *args, **kwargs):
        first_lr.append(state.optimizer.param_groups[0]["lr"])
        return real(state, *args, **kwargs)

    monkeypatch.setattr(fit_mod, "train_one_epoch", train_one_epoch)
    argv = ["train", "--resume", str(run), "--epochs", "4", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    # the step schedule recomputed for 4 epochs: full lr at step 1/4, not 0.01x as at the end
    # of the 1-epoch schedule the checkpoint was saved with
    assert first_lr[0] == pytest.approx(0.05 * lr_factor(steps, 4 * steps, 0, "step")) == 0.05
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["epochs"] == 4 and config["final_metrics"]["steps"] == 4 * steps
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [
        1, 2, 3, 4
    ]  # fmt: skip


def test_resume_cannot_shorten_below_what_was_trained(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["epoch"] = 3
    torch.save(state, run / "checkpoint.pt")
    assert "--epochs 2 is fewer than the run has trained (3 epochs)" in error(
        capsys, ["train", "--resume", str(run), "--epochs", "2"]
    )
    assert json.loads((run / "config.json").read_text()) == config


def test_inconsistent_config_keys_are_named(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "recipe": {"epochs": "ten"}}))
    assert "recipe: training option 'epochs' cannot be 'ten'" in error(
        capsys, ["train", "--resume", str(run)]
    )
    (run / "config.json").write_text(json.dumps({**config, "recipe": [1]}))
    assert "training options must be a JSON object" in error(
        capsys, ["train", "--resume", str(run)]
    )
    del config["dataset"]
    (run / "config.json").write_text(json.dumps(config))
    assert "names no 'dataset': pass --dataset" in error(capsys, ["eval", str(run)])
    (run / "config.json").write_text(json.dumps({**config, "dataset": "synthetic"}))
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["rng_cpu"]
    torch.save(state, run / "checkpoint.pt")
    assert "has no 'rng_cpu' entry" in error(capsys, ["train", "--resume", str(run)])


def test_list_piped_prints_whole_names(capsys):
    assert main(["list", "highway_conv*"]) == 0
    out = capsys.readouterr().out
    assert "highway_conv_w16" in out and "highway_conv_w32" in out and "…" not in out
    assert out.splitlines()[0].split() == ["model", "family", "year", "params", "input", "paper"]


def test_messages_never_show_cpp_sources_or_reprs():
    assert one_line("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534") == (
        "unexpected pos 576 vs 534"
    )
    assert one_line("cannot identify image file <_io.BytesIO object at 0x7f3a2c>\nmore") == (
        "cannot identify image file a BytesIO"
    )
