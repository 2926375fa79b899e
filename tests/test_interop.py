"""Checkpoints from everywhere: timm's names, Hugging Face transformers, files on disk, offline.

Every reference is built with random weights (timm's and transformers' constructors, no
download) and random BatchNorm statistics; the port must give the reference's logits.
Hugging Face references are written with `save_pretrained`, which writes the Hub's layout,
and read back through `hf:ORG/NAME` from the folder for files placed by hand.
"""

from __future__ import annotations

import pickle
import socket

import pytest
import torch
from safetensors.torch import save_file

from visionzoo import create_model
from visionzoo.convert import port_weights, register_converter
from visionzoo.errors import UserError
from visionzoo.pretrained import _NETWORK, load_pretrained

timm = pytest.importorskip("timm")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network (any connection attempt fails at once) and empty caches under tmp_path."""

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    _NETWORK.clear()  # forget what earlier tests found
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("VISIONZOO_HOME", str(tmp_path / "vz"))
    yield
    _NETWORK.clear()


@torch.no_grad()
def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics and LayerNorm/BN affine parameters, so a swapped or
    skipped normalization cannot go unnoticed; eval mode."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
            if m.weight is not None:
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


def logits(model, x):
    with torch.no_grad():
        out = model(x)
    return getattr(out, "logits", out)


def assert_same_logits(ours, ref, x, atol=1e-5):
    a, b = logits(ours.eval(), x), logits(ref.eval(), x)
    assert b.std() > 1e-3, "the reference's logits are near constant: the check would be empty"
    torch.testing.assert_close(a, b, rtol=0, atol=atol * max(1.0, float(b.abs().max())))


# -- timm's own names ---------------------------------------------------------------------

TIMM = [  # (ours, timm's name, input side)
    ("resnet50", "resnet50", 64),
    ("efficientnet_b0", "efficientnet_b0", 64),
    ("convnext_tiny", "convnext_tiny.fb_in1k", 64),
    ("vit_b_16", "vit_base_patch16_224", 224),
    ("swin_t", "swin_tiny_patch4_window7_224", 224),
]


@pytest.mark.parametrize("ours,ref_name,size", TIMM)
def test_timm_names_port_exactly(ours, ref_name, size, tmp_path):
    torch.manual_seed(0)
    ref = randomize(timm.create_model(ref_name, pretrained=False))
    model = create_model(ours)
    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path)
    load_pretrained(model, str(path))  # the layout is detected from the keys
    assert_same_logits(model, ref, torch.randn(1 if size == 224 else 2, 3, size, size))


def test_timm_spec_reads_the_hugging_face_cache_offline(tmp_path):
    """`timm:NAME` finds the file where huggingface_hub caches it; nothing is downloaded."""
    torch.manual_seed(0)
    ref = randomize(timm.create_model("resnet18", pretrained=False))
    repo = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    snapshot = tmp_path / "hf" / "hub" / f"models--{repo.replace('/', '--')}"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("abc")
    (snapshot / "snapshots" / "abc").mkdir(parents=True)
    save_file(ref.state_dict(), snapshot / "snapshots" / "abc" / "model.safetensors")
    model = create_model("resnet18", weights="timm:resnet18")
    assert_same_logits(model, ref, torch.randn(2, 3, 64, 64))


# -- Hugging Face transformers ------------------------------------------------------------


def hf_references():
    transformers = pytest.importorskip("transformers")
    t = transformers
    return {
        # ours: (transformers model, input side). LayerNorm eps 1e-6 as the original weights
        # were trained with (transformers' ViT/ConvNeXt configs default to 1e-12).
        "vit_tiny_patch16": (t.ViTForImageClassification(t.ViTConfig(
            hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
            layer_norm_eps=1e-6, num_labels=1000)), 224),
        "resnet18": (t.ResNetForImageClassification(t.ResNetConfig(
            layer_type="basic", embedding_size=64, hidden_sizes=[64, 128, 256, 512],
            depths=[2, 2, 2, 2], num_labels=1000)), 64),
        "resnet50": (t.ResNetForImageClassification(t.ResNetConfig(num_labels=1000)), 64),
        "convnext_tiny": (t.ConvNextForImageClassification(t.ConvNextConfig(
            layer_norm_eps=1e-6, num_labels=1000)), 64),
        "swin_t": (t.SwinForImageClassification(t.SwinConfig(num_labels=1000)), 224),
    }  # fmt: skip


@pytest.mark.parametrize(
    "ours", ["vit_tiny_patch16", "resnet18", "resnet50", "convnext_tiny", "swin_t"]
)
def test_hugging_face_models_port_exactly(ours, tmp_path):
    torch.manual_seed(0)
    ref, size = hf_references()[ours]
    randomize(ref)
    ref.config.id2label = {i: f"class {i}" for i in range(1000)}
    ref.save_pretrained(tmp_path / "vz" / "weights" / "someorg" / ours)  # the Hub's layout
    model = create_model(ours, weights=f"hf:someorg/{ours}")
    assert_same_logits(model, ref, torch.randn(1 if size == 224 else 2, 3, size, size))


def test_hugging_face_in_memory_names_port_too():
    """transformers 5 renames the Hub's keys in memory (q_proj, mlp.fc1): both layouts load."""
    torch.manual_seed(0)
    ref, size = hf_references()["vit_tiny_patch16"]
    randomize(ref)
    model = port_weights(create_model("vit_tiny_patch16"), ref.state_dict(), "hf")
    assert_same_logits(model, ref, torch.randn(1, 3, size, size))


def mobile_references():
    """MobileNet v1/v2 and EfficientNet-B0 as transformers builds them, configured to pad as
    torchvision does (HF's defaults pad TF-style, which `hf:` specs refuse)."""
    t = pytest.importorskip("transformers")
    effnet = t.EfficientNetForImageClassification(
        t.EfficientNetConfig(
            width_coefficient=1.0,
            depth_coefficient=1.0,
            image_size=224,
            hidden_dim=1280,
            batch_norm_eps=1e-5,
            depthwise_padding=list(range(16)),
            num_labels=1000,
        )
    )
    effnet.efficientnet.embeddings.padding = torch.nn.ZeroPad2d(1)  # HF's stem pads (0, 1, 0, 1)
    return {
        "mobilenet_v1": t.MobileNetV1ForImageClassification(t.MobileNetV1Config(
            tf_padding=False, layer_norm_eps=1e-5, num_labels=1000)),
        "mobilenet_v2": t.MobileNetV2ForImageClassification(t.MobileNetV2Config(
            tf_padding=False, layer_norm_eps=1e-5, num_labels=1000)),
        "efficientnet_b0": effnet,
    }  # fmt: skip


@pytest.mark.parametrize("ours", ["mobilenet_v1", "mobilenet_v2", "efficientnet_b0"])
def test_hugging_face_mobile_models_port_exactly(ours, tmp_path):
    torch.manual_seed(0)
    ref = randomize(mobile_references()[ours])
    if ours.startswith("mobilenet"):  # through `hf:`, from the Hub's layout in the cache
        ref.save_pretrained(tmp_path / "vz" / "weights" / "someorg" / ours)
        model = create_model(ours, weights=f"hf:someorg/{ours}")
    else:
        model = port_weights(create_model(ours), ref.state_dict(), "hf")
    assert_same_logits(model, ref, torch.randn(2, 3, 64, 64), atol=0.0)


def test_hugging_face_tf_padded_checkpoints_are_refused_in_one_line(tmp_path):
    t = pytest.importorskip("transformers")
    hub = tmp_path / "vz" / "weights" / "google"
    t.MobileNetV2ForImageClassification(t.MobileNetV2Config()).save_pretrained(hub / "mnv2")
    with pytest.raises(UserError, match=r"^hf:google/mnv2 pads TF-style .* use --weights torch"):
        create_model("mobilenet_v2", weights="hf:google/mnv2")
    config = t.EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0, hidden_dim=1280)
    t.EfficientNetForImageClassification(config).save_pretrained(hub / "effnet")
    with pytest.raises(UserError, match=r"^hf:google/effnet pads TF-style"):
        create_model("efficientnet_b0", weights="hf:google/effnet")


@pytest.mark.parametrize(
    "kind", ["DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"]
)
def test_hugging_face_distilled_deit_is_refused_in_one_line(kind, tmp_path):
    t = pytest.importorskip("transformers")
    config = t.DeiTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
                          intermediate_size=768, layer_norm_eps=1e-6, num_labels=1000)  # fmt: skip
    getattr(t, kind)(config).save_pretrained(tmp_path / "vz" / "weights" / "facebook" / "deit")
    with pytest.raises(UserError, match="^a distilled DeiT .* hf:facebook/deit-tiny-patch16-224$"):
        create_model("vit_tiny_patch16", weights="hf:facebook/deit")


# -- files --------------------------------------------------------------------------------


def test_files_in_every_format_and_layout(tmp_path):
    import torchvision

    torch.manual_seed(0)
    ref = randomize(torchvision.models.resnet18())
    x = torch.randn(2, 3, 64, 64)
    ours = create_model("resnet18")
    port_weights(ours, ref.state_dict(), "torchvision")
    files = {
        "tv.pth": ref.state_dict(),  # torchvision's layout
        "ours.pt": ours.state_dict(),  # our own
        "ckpt.bin": {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}},
    }
    for name, content in files.items():
        torch.save(content, tmp_path / name)
    save_file(ours.state_dict(), tmp_path / "ours.safetensors")
    for name in [*files, "ours.safetensors"]:
        model = create_model("resnet18", weights=str(tmp_path / name))
        assert_same_logits(model, ref, x)


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_files_are_never_unpickled(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(UserError, match="cannot be read as plain tensors"):
        create_model("resnet18", weights=str(path))
    assert "unpickled!" not in capsys.readouterr().out


def test_a_file_for_another_model_names_the_mismatch(tmp_path):
    torch.save(create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UserError, match="fit resnet34 in no known layout; closest: .*missing"):
        create_model("resnet34", weights=str(tmp_path / "r18.pth"))
    with pytest.raises(UserError, match="no weights file"):
        create_model("resnet18", weights=str(tmp_path / "absent.pth"))
    with pytest.raises(UserError, match="unknown weights 'imagenet'"):
        create_model("resnet18", weights="imagenet")


# -- offline ------------------------------------------------------------------------------


def test_offline_torchvision_is_one_line_naming_the_file_and_folder(tmp_path):
    with pytest.raises(UserError) as err:
        create_model("resnet18", pretrained=True)
    message = str(err.value)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert message == (
        "no network to download torchvision ResNet18_Weights.IMAGENET1K_V1 "
        "(https://download.pytorch.org/models/resnet18-f37072fd.pth): put resnet18-f37072fd.pth "
        f"in {folder}/, or pass a downloaded file: --weights PATH/resnet18-f37072fd.pth"
    )


def test_offline_timm_and_hf_do_not_retry(tmp_path, monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    for spec in ("timm:resnet50", "timm:resnet50", "hf:microsoft/resnet-50"):
        with pytest.raises(
            UserError, match=r"^no network to download .* put model\.safetensors in "
        ):
            create_model("resnet50", weights=spec)
    assert len(calls) == 1  # probed once for the process, then remembered

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _NETWORK.clear()
    with pytest.raises(UserError, match="no network"):
        create_model("resnet50", weights="hf:microsoft/resnet-50")
    assert len(calls) == 1  # HF_HUB_OFFLINE: not even probed


def test_torchvision_weights_in_the_cache_load_offline(tmp_path):
    import torchvision

    torch.manual_seed(0)
    ref = randomize(torchvision.models.resnet18())
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(ref.state_dict(), folder / "resnet18-f37072fd.pth")
    model = create_model("resnet18", pretrained=True)
    assert_same_logits(model, ref, torch.randn(2, 3, 64, 64))


# -- extension and timm habits ------------------------------------------------------------


def test_register_converter_takes_a_new_source():
    @register_converter("mylab", "resnet18")
    def _from_mylab(state_dict):
        return {k.removeprefix("net."): v for k, v in state_dict.items()}

    state = {f"net.{k}": v for k, v in create_model("resnet18").state_dict().items()}
    port_weights(create_model("resnet18"), state, "mylab")
    with pytest.raises(ValueError, match="lowercase identifiers"):
        register_converter("My Lab", "resnet18")


def test_features_only_with_out_indices_as_timm():
    model = create_model("resnet50", features_only=True, out_indices=(1, 2, 3, 4))
    assert model.feature_info.channels() == [256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    maps = model(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (256, 16, 16),
        (512, 8, 8),
        (1024, 4, 4),
        (2048, 2, 2),
    ]
    import torchvision

    port_weights(model, torchvision.models.resnet50().state_dict(), "torchvision")


# -- predict from the command line --------------------------------------------------------


def test_predict_with_torchvision_weights_matches_torchvision(tmp_path, capsys):
    """`visionzoo predict resnet18 --weights torchvision photo.png`, offline, on a weight file
    placed in torchvision's cache: the classes and probabilities torchvision itself gives with
    the weights' own transforms."""
    import torchvision
    from PIL import Image

    from visionzoo.cli import main

    torch.manual_seed(0)
    ref = randomize(torchvision.models.resnet18())
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(ref.state_dict(), folder / "resnet18-f37072fd.pth")
    pixels = (torch.rand(300, 400, 3) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(tmp_path / "photo.png")

    assert main(["predict", "resnet18", "--weights", "torchvision", "--topk", "3",
                 str(tmp_path / "photo.png")]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()[1:]

    weights = torchvision.models.ResNet18_Weights.DEFAULT
    x = weights.transforms()(torch.from_numpy(pixels).permute(2, 0, 1))[None]
    with torch.no_grad():
        probs = ref(x).softmax(-1)[0]
    top = probs.topk(3)
    expected = [f"{p:7.2%}  {weights.meta['categories'][i]}" for p, i in zip(*top)]
    assert [line.strip() for line in lines] == [e.strip() for e in expected]


# -- ONNX ---------------------------------------------------------------------------------


def test_onnx_has_dynamic_height_and_width_and_holds_its_weights(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from visionzoo.bench.export import onnx_session, to_onnx

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10).eval()
    path = to_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "resnet18.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["resnet18.onnx"]  # no .onnx.data beside it
    session = onnx_session(path)
    assert ort is not None and len(session.get_inputs()[0].shape) == 4
    for shape in ((1, 3, 64, 64), (3, 3, 96, 80), (2, 3, 45, 130)):
        x = torch.randn(*shape)
        got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(got, model(x), rtol=0, atol=1e-4)


# -- the measured table -------------------------------------------------------------------


def test_interop_table_script_for_one_family(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "scripts/interop_table.py", "--only", "resnet", "--out", tmp_path]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run(command, cwd=root, env=env, check=True, capture_output=True, timeout=600)
    table = json.loads((tmp_path / "table.json").read_text())
    (row,) = table["rows"]
    assert row["variant"] == "resnet50" and row["fx_trace"] == "ok, 0.0"
    assert row["feature_extractor"].startswith("ok") and row["fpn"] == "ok (4 levels)"
    for source in ("torchvision", "timm", "hf", "file"):
        assert row[source].startswith("0.0 (of "), (source, row[source])
    assert row["offline"].startswith("no network to download torchvision ResNet50_Weights")
    assert "$TORCH_HOME/hub/checkpoints/" in row["offline"]
    assert table["environment"]["transformers"] and table["environment"]["torchvision"]
    assert "| ResNet | resnet50 | ok, 0.0 |" in (tmp_path / "table.md").read_text()
