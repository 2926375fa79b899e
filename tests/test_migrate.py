"""Run folders saved before ConvNormAct's norm child was renamed `bn` -> `norm` still load."""

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from visionzoo.engine.transfer import initialise
from visionzoo.layers import ConvNormAct
from visionzoo.models.migrate import migrate_state_dict
from visionzoo.registry import create_model
from visionzoo.runs import CONFIG, WEIGHTS, load_run

CLASSES = [f"class{i}" for i in range(10)]


def old_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s state dict as a run saved before the rename holds it."""
    norms = {f"{n}.norm." for n, m in model.named_modules() if isinstance(m, ConvNormAct)}
    out = {}
    for key, value in model.state_dict().items():
        prefix = key.rsplit(".", 1)[0] + "."
        new = re.sub(r"\.norm\.$", ".bn.", prefix) + key.rsplit(".", 1)[1]
        out[new if prefix in norms else key] = value.clone()
    return out


def random_statistics(model: torch.nn.Module) -> None:
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)


@pytest.fixture
def old_run(tmp_path):
    model = create_model("resnet20", num_classes=10).eval()
    random_statistics(model)
    state = old_state_dict(model)
    assert any(".bn." in k for k in state) and not any(".norm." in k for k in state)
    run = tmp_path / "run"
    run.mkdir()
    config = {"model": "resnet20", "model_kwargs": {"num_classes": 10}, "class_names": CLASSES}
    (run / CONFIG).write_text(json.dumps(config))
    save_file(state, run / WEIGHTS)
    return run, model


def test_old_run_loads_with_identical_logits(old_run):
    run, model = old_run
    x = torch.randn(2, 3, 32, 32)
    loaded = load_run(run).model
    assert torch.equal(loaded(x), model(x))


def test_old_run_initialises_a_new_run(old_run):
    run, model = old_run
    fresh = create_model("resnet20", num_classes=10)
    assert initialise(fresh, str(run), class_names=CLASSES) == []  # same classes: head kept
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_only_keys_the_model_lacks_are_renamed():
    model = create_model("xception", num_classes=10)
    state = model.state_dict()
    old = old_state_dict(model)
    # Xception's own `layers.K.bn` modules keep their name; only ConvNormAct's moved.
    assert "entry.0.layers.0.bn.weight" in state and "stem.0.norm.weight" in state
    assert "stem.0.bn.weight" in old and "entry.0.layers.0.bn.weight" in old
    assert migrate_state_dict(model, old).keys() == state.keys()
    assert migrate_state_dict(model, state).keys() == state.keys()
