"""Transfer learning: --init from a run or a reference library, head reset, channels adapted."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torchvision.io import write_png

from visionzoo.data import load_dataset
from visionzoo.engine import transfer
from visionzoo.engine.config import TrainConfig
from visionzoo.engine.fit import fit
from visionzoo.errors import UserError
from visionzoo.registry import create_model

BASE = dict(dataset="synthetic", batch_size=64, lr=0.05, threads=1, device="cpu")


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("src") / "run"
    fit(TrainConfig(model="lenet5", epochs=1, **BASE), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    """Four classes of the synthetic images, saved as RGB PNGs: another dataset, another shape."""
    root = tmp_path_factory.mktemp("folder")
    data = load_dataset("synthetic", "test")
    for c in range(4):
        (root / f"c{c}").mkdir()
        for i, idx in enumerate((data.labels == c).nonzero().flatten()[:30].tolist()):
            write_png(
                data.images[idx].expand(3, -1, -1).contiguous(), str(root / f"c{c}" / f"{i}.png")
            )
    return root


def test_finetune_resets_head_adapts_channels_and_freezes(source_run, rgb_folder, tmp_path):
    cfg = TrainConfig(
        model="lenet5",
        dataset=f"imagefolder:{rgb_folder}",
        epochs=2,
        batch_size=16,
        lr=0.01,
        threads=1,
        init=str(source_run),
        freeze_epochs=1,
        layer_decay=0.7,
    )
    fit(cfg, tmp_path / "ft", quiet=True)
    records = [json.loads(x) for x in (tmp_path / "ft/metrics.jsonl").read_text().splitlines()]
    assert records[0]["trainable_params"] == 84 * 4 + 4  # only the new head while frozen
    assert records[1]["trainable_params"] > 60_000  # everything afterwards
    config = json.loads((tmp_path / "ft/config.json").read_text())
    assert config["model_kwargs"]["in_channels"] == 3 and config["num_classes"] == 4

    src = load_file(source_run / "model.safetensors")
    model = create_model("lenet5", num_classes=4, in_channels=3)
    reset = transfer.initialise(model, str(source_run))
    assert set(reset) == {"classifier.weight", "classifier.bias"}
    # 1 -> 3 channels: each RGB kernel is a third of the gray one, so gray input sees the same.
    assert torch.allclose(model.c1[0].weight.sum(1, keepdim=True), src["c1.0.weight"], atol=1e-6)
    assert torch.equal(model.f6[0].weight, src["f6.0.weight"])


def test_init_from_another_architecture_is_refused(source_run):
    model = create_model("lenet5_paper", num_classes=10)
    with pytest.raises(UserError, match="holds a 'lenet5' run"):
        transfer.initialise(model, str(source_run))


def test_init_from_torchvision_offline(monkeypatch, tmp_path):
    """The --init torchvision:NAME path, fed a state dict built locally (no download)."""
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    monkeypatch.setattr(
        transfer, "fetch_reference_weights", lambda lib, name: reference.state_dict()
    )
    model = create_model("resnet18", num_classes=10, in_channels=1, small_input=False)
    reset = transfer.initialise(model, "torchvision:resnet18")
    assert all(k.startswith("fc") or "fc" in k or "classifier" in k for k in reset), reset
    ours = model.state_dict()
    conv1 = [k for k, v in ours.items() if v.dim() == 4][0]
    assert torch.allclose(ours[conv1], reference.conv1.weight.sum(1, keepdim=True))


def test_3_to_1_channel_adaptation_keeps_gray_response():
    w = torch.randn(8, 3, 3, 3)
    gray = torch.randn(1, 1, 5, 5)
    rgb = gray.expand(1, 3, 5, 5)
    adapted = transfer.adapt_in_channels(w, 1)
    assert torch.allclose(torch.conv2d(gray, adapted), torch.conv2d(rgb, w), atol=1e-5)


def test_head_reset_even_with_the_same_number_of_classes(source_run):
    """synthetic -> another 10-class task: the 10-way head must not be kept."""
    model = create_model("lenet5", num_classes=10)
    reset = transfer.initialise(model, str(source_run), class_names=[f"d{i}" for i in range(10)])
    assert set(reset) == {"classifier.weight", "classifier.bias"}
    src = load_file(source_run / "model.safetensors")
    assert not torch.equal(model.classifier.weight, src["classifier.weight"])
    same = create_model("lenet5", num_classes=10)
    names = [f"class{i}" for i in range(10)]
    assert transfer.initialise(same, str(source_run), class_names=names) == []  # same task: kept
