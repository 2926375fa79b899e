"""`visionzoo train` flags come from TrainConfig's field metadata: help, choices, booleans."""

from __future__ import annotations

import dataclasses
import json

import pytest

from visionzoo.cli import build_parser, main
from visionzoo.engine.config import TrainConfig
from visionzoo.engine.fit import resume_config
from visionzoo.errors import UserError

OWN_FLAGS = ("model", "dataset", "recipe", "model_kwargs")  # positional or hand-written


def train_help(capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag: no words cut at hyphens
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_every_field_has_help_shown_by_train_help(capsys, monkeypatch):
    text = train_help(capsys, monkeypatch)
    for f in dataclasses.fields(TrainConfig):
        help = f.metadata.get("help", "")
        assert help, f"TrainConfig.{f.name} has no help"
        if f.name not in OWN_FLAGS:
            assert " ".join(help.split()) in text, f.name
    assert "--optimizer {sgd,adamw}" in text and "--precision {auto,fp32,bf16,fp16}" in text
    assert "--decay-norm-bias, --no-decay-norm-bias" in text


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--optimizer", "adam"], "--optimizer must be sgd or adamw, got 'adam'"),
        (["--schedule", "linear"], "--schedule must be cosine, step or constant, got 'linear'"),
        (["--precision", "fp64"], "--precision must be auto, fp32, bf16 or fp16, got 'fp64'"),
        (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    ],
)
def test_bad_values_are_one_line_before_anything_runs(capsys, tmp_path, flags, message):
    out = tmp_path / "run"
    assert main(["train", "lenet5", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"visionzoo: error: {message}") and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_recipe_value_outside_the_choices_is_refused():
    with pytest.raises(UserError, match="--optimizer must be sgd or adamw, got 'lamb'"):
        TrainConfig(optimizer="lamb").validate()
    TrainConfig(optimizer="adamw", schedule="step", precision="bf16").validate()


@pytest.mark.parametrize(
    "flag, value",
    [
        ([], None),
        (["--decay-norm-bias"], True),
        (["--no-decay-norm-bias"], False),
        (["--no-no-decay-norm-bias"], True),  # the flag's name before the rename
    ],
)
def test_decay_norm_bias_flags(flag, value):
    args = build_parser().parse_args(["train", "lenet5", *flag])
    assert args.decay_norm_bias is value
    assert TrainConfig().decay_norm_bias is False


def test_an_old_run_with_no_decay_norm_bias_still_loads(tmp_path):
    recipe = {**TrainConfig().to_dict(), "epochs": 3}
    del recipe["decay_norm_bias"]
    for old, new in ((True, False), (False, True)):
        run = tmp_path / str(old)
        run.mkdir()
        (run / "config.json").write_text(
            json.dumps({"model": "lenet5", "recipe": {**recipe, "no_decay_norm_bias": old}})
        )
        (run / "checkpoint.pt").write_bytes(b"")
        cfg = resume_config(run)
        assert cfg.decay_norm_bias is new and cfg.epochs == 3
    with pytest.raises(UserError, match="--decay-norm-bias"):
        resume_config(tmp_path / "True", {"decay_norm_bias": True})
