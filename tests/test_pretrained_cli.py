"""Published weights from the command line and the training engine, offline.

`eval MODEL --weights SPEC --dataset imagefolder:PATH` on a tiny ImageNet-format folder made
here, with random weights placed in torchvision's cache under the expected file name;
`train --init` with a weights file; timm's `pretrained_cfg` and `forward_intermediates`.
"""

from __future__ import annotations

import json
import re
import socket

import pytest
import torch

from visionzoo import create_model
from visionzoo.errors import UserError
from visionzoo.pretrained import _NETWORK

WNIDS = ("n01440764", "n01443537", "n01484850")  # ImageNet-1k classes 0, 1, 2


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    _NETWORK.clear()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VISIONZOO_HOME", str(tmp_path / "vz"))
    yield
    _NETWORK.clear()


def random_resnet18(tmp_path):
    """torchvision's ResNet-18 with random weights, placed where `--weights torchvision` looks."""
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18().eval()
    with torch.no_grad():  # spread the logits so that the top-5 is not a tie
        ref.fc.weight.mul_(50)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(ref.state_dict(), folder / "resnet18-f37072fd.pth")
    return ref


def image_folder(root, names, per_class=3, seed=0):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    files = []
    for label, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            h, w = 200 + 20 * j, 260 - 15 * label
            pixels = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
            path = root / name / f"img_{j}.JPEG" if j % 2 == 0 else root / name / f"img_{j}.png"
            Image.fromarray(pixels).save(path, format="JPEG" if j % 2 == 0 else "PNG")
            files.append(path)
    return files


def direct_accuracy(ref, root, labels):
    """torchvision's own transforms and model over the same files: (top-1, top-5)."""
    import torchvision
    from torchvision.io import decode_image

    tf = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    top1 = top5 = n = 0
    for name, label in labels.items():
        for path in sorted((root / name).iterdir()):
            x = tf(decode_image(str(path)))[None]
            with torch.no_grad():
                top = ref(x).topk(5).indices[0].tolist()
            top1 += top[0] == label
            top5 += label in top
            n += 1
    return top1 / n, top5 / n


@pytest.mark.parametrize("layout", ["wnid", "index"])
def test_eval_published_weights_on_an_imagenet_folder(tmp_path, capsys, layout):
    from visionzoo.cli import main

    ref = random_resnet18(tmp_path)
    names = WNIDS if layout == "wnid" else ("0", "1", "2")
    root = tmp_path / "val"
    image_folder(root, names)
    top1, top5 = direct_accuracy(ref, root, dict(zip(names, range(3))))

    args = ["eval", "resnet18", "--weights", "torchvision", "--dataset", f"imagefolder:{root}"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 9 and result["layout"] == layout and result["classes"] == 3
    assert result["weights"] == "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    assert result["top1"] == pytest.approx(top1) and result["top5"] == pytest.approx(top5)
    assert result["published_top1"] == pytest.approx(0.69758)
    assert result["published_top5"] == pytest.approx(0.89078)

    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("resnet18 with torchvision:ResNet18_Weights.IMAGENET1K_V1 on ")
    assert out[2].split() == ["measured", f"{top1:.2%}", f"{top5:.2%}"]
    assert out[3].split()[:3] == ["published", "69.76%", "89.08%"]


def test_eval_published_weights_bad_input_is_one_line(tmp_path, capsys):
    from visionzoo.cli import main

    random_resnet18(tmp_path)
    image_folder(tmp_path / "val", ("n01440764", "cats"), per_class=1)
    base = ["eval", "resnet18", "--weights", "torchvision"]
    cases = [
        ([], "pass --dataset imagefolder:PATH"),
        (["--dataset", "cifar10"], "pass --dataset imagefolder:PATH"),
        (["--dataset", f"imagefolder:{tmp_path / 'absent'}"], "no folder"),
        (["--dataset", f"imagefolder:{tmp_path / 'val'}"], "not ImageNet-1k WordNet ids .*cats"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("visionzoo: error: "), err
        assert re.search(message, err), err


# -- train --init with load_pretrained's specs --------------------------------------------


def test_train_init_from_a_weights_file(tmp_path, monkeypatch, capsys):
    """`train lenet5 --init FILE.safetensors` (our layout): one epoch on the synthetic data,
    starting from the file's body (the head is new: the file's classes are unknown)."""
    from safetensors.torch import save_file

    import visionzoo.engine.fit as fit_module
    from visionzoo.cli import main
    from visionzoo.engine.transfer import head_prefixes, initialise

    torch.manual_seed(1)
    source = create_model("lenet5", num_classes=10)
    path = tmp_path / "lenet5.safetensors"
    save_file(source.state_dict(), path)
    started = {}

    def spy(model, spec, class_names=None):
        reset = initialise(model, spec, class_names)
        started.update({k: v.clone() for k, v in model.state_dict().items()})
        started["_heads"] = head_prefixes(model)
        return reset

    monkeypatch.setattr(fit_module, "initialise", spy)
    args = ["train", "lenet5", "--dataset", "synthetic", "--epochs", "1", "--device", "cpu",
            "--threads", "1", "--batch-size", "64", "--init", str(path),
            "--out", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    heads = started.pop("_heads")
    body = [k for k in source.state_dict() if not k.startswith(heads)]
    assert body and all(torch.equal(started[k], source.state_dict()[k]) for k in body)
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_init_from_files_in_torchvision_layout_and_mismatch(tmp_path):
    """A torchvision-layout .pth is detected; 3 -> 1 channels adapted; a wrong file: one line."""
    import torchvision

    from visionzoo.engine.transfer import initialise

    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    model = create_model("resnet18", num_classes=10, in_channels=1, small_input=False)
    reset = initialise(model, str(tmp_path / "tv.pth"))
    assert reset and all("classifier" in k or "fc" in k for k in reset), reset
    assert torch.allclose(
        model.state_dict()["stem.conv.weight"], ref.conv1.weight.sum(1, keepdim=True)
    )
    assert torch.equal(
        model.state_dict()["stages.3.1.conv2.conv.weight"], ref.layer4[1].conv2.weight
    )

    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    with pytest.raises(UserError, match=r"fits resnet18 in no known layout; closest: .*missing"):
        initialise(create_model("resnet18"), str(tmp_path / "r34.pth"))
    with pytest.raises(UserError, match="^--init torchvision:resnet18: no network to download"):
        initialise(create_model("resnet18"), "torchvision")


# -- timm's habits: pretrained_cfg, forward_intermediates ---------------------------------


def test_pretrained_cfg_as_timm(tmp_path):
    import timm

    model = create_model("resnet18")
    cfg = model.pretrained_cfg
    assert model.default_cfg == cfg
    ref = timm.models.get_pretrained_cfg("resnet18.tv_in1k").to_dict()
    for key in ("input_size", "mean", "std", "num_classes", "interpolation", "crop_pct"):
        assert key in cfg and key in ref, key
    assert cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000
    assert cfg["first_conv"] == "stem.conv" and cfg["classifier"] == "classifier"

    random_resnet18(tmp_path)  # torchvision's weights (random) in the cache: their transforms
    loaded = create_model("resnet18", weights="torchvision")
    cfg = loaded.pretrained_cfg
    assert cfg["source"] == "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    for key in ("input_size", "mean", "std", "interpolation", "crop_pct", "num_classes"):
        assert cfg[key] == pytest.approx(ref[key]), key  # timm's tv_in1k: the same recipe
    loaded.pretrained_cfg = {"input_size": (3, 160, 160)}  # settable, as timm's
    assert loaded.default_cfg == {"input_size": (3, 160, 160)}


@pytest.mark.parametrize(
    "ours,theirs,size,indices",
    [
        ("resnet18", "resnet18", 64, (1, 2, 3, 4)),
        ("vit_tiny_patch16", "vit_tiny_patch16_224", 224, 3),
    ],
)
def test_forward_intermediates_as_timm(ours, theirs, size, indices):
    import timm

    torch.manual_seed(0)
    model = create_model(ours).eval()
    ref = timm.create_model(theirs, pretrained=False).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        for idx in (indices, None, [-1, 2] if isinstance(indices, int) else 2):
            maps = model.forward_intermediates(x, indices=idx, intermediates_only=True)
            theirs_maps = ref.forward_intermediates(x, indices=idx, intermediates_only=True)
            assert isinstance(maps, list)
            assert [m.shape for m in maps] == [m.shape for m in theirs_maps], idx
            final, again = model.forward_intermediates(x, indices=idx, intermediates_only=False)
            ref_final, _ = ref.forward_intermediates(x, indices=idx, intermediates_only=False)
            assert final.shape == ref_final.shape
            torch.testing.assert_close(final, model.forward_features(x))
            assert len(again) == len(maps)
            for a, b in zip(again, maps):
                torch.testing.assert_close(a, b)
    assert len(model.forward_intermediates(x)) == len(model.feature_info)  # our own default
