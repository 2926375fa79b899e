"""Measure, for one variant per family, what a torchvision, timm or Hugging Face user meets.

For each family's representative variant: `torch.fx.symbolic_trace` (and the traced logits'
largest difference from eager ones), torchvision's `create_feature_extractor` in eval and
train mode, the `visionzoo.backbone` maps fed to torchvision's `FeaturePyramidNetwork`, the
largest logit difference after porting a randomly initialised reference (BatchNorm
statistics and norm affines randomised too) from each source with a converter (torchvision,
timm, Hugging Face transformers, a safetensors file of our own), and the one line a user
sees for `torchvision` weights with no network and an empty cache. Nothing is downloaded:
the references come from their libraries' constructors, and every socket connect is refused.

    OMP_NUM_THREADS=1 python scripts/interop_table.py [--only resnet] [--out results/interop]

Writes `table.md` and `table.json` (with the environment) under `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.fx
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
# One variant per family: the one with the most reference implementations; a family not
# named here is represented by its first registered variant.
REPRESENTATIVE = {
    "AlexNet": "alexnet", "ConvNeXt": "convnext_tiny", "CSWin": "cswin_t",
    "DenseNet": "densenet121", "EfficientNet": "efficientnet_b0", "Inception": "inception_v3",
    "LeNet": "lenet5", "MobileNet": "mobilenet_v2", "ResNet": "resnet50", "Swin": "swin_t",
    "VGG": "vgg11", "ViT": "vit_b_16",
}  # fmt: skip
SOURCES = ("torchvision", "timm", "hf", "file")
# timm's names for variants whose timm converter lives in visionzoo.hub (timm's own layout).
TIMM_NAMES = {
    "resnet50": "resnet50", "efficientnet_b0": "efficientnet_b0",
    "vit_b_16": "vit_base_patch16_224", "swin_t": "swin_tiny_patch4_window7_224",
}  # fmt: skip


def refuse_network() -> None:
    """Every connection attempt fails at once; Hugging Face's hub is told it is offline."""

    def refuse(*args, **kwargs):
        raise OSError("interop_table: network refused")

    socket.create_connection = refuse
    socket.socket.connect = refuse
    os.environ["HF_HUB_OFFLINE"] = "1"


@torch.no_grad()
def randomize(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics, norm affines and zero-initialised heads (so a skipped
    norm shows, and logits are not all zero); eval mode."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)) and m.weight is not None:
            m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        if isinstance(m, nn.Linear) and not m.weight.any():  # torchvision's ViT head starts at 0
            m.weight.copy_(0.02 * torch.randn(m.weight.shape, generator=g))
    return model.eval()


def logits(out) -> torch.Tensor:
    from visionzoo.models.base import main_logits

    out = getattr(out, "logits", out)
    return main_logits(out[0] if isinstance(out, tuple) else out)


def diff(a: torch.Tensor, b: torch.Tensor) -> str:
    d = float((a - b).abs().max())
    return "0.0" if d == 0 else f"{d:.1e}"


def attempt(fn: Callable[[], str]) -> str:
    """`fn`'s result, or its exception as one short line."""
    try:
        return fn()
    except Exception as err:  # the table reports failures, it does not stop at them
        line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return f"fails: {type(err).__name__}: {line[:90]}"


def small(name: str):
    """The variant in its small-input mode where it has one, else at its smallest input."""
    from visionzoo import create_model, get_model_info

    info = get_model_info(name)
    kwargs = {"small_input": True} if info.small_input else {}
    return create_model(name, **kwargs).eval(), kwargs, 32 if kwargs else info.min_image_size


@torch.no_grad()
def fx_trace(name: str) -> str:
    torch.manual_seed(0)
    model, _, size = small(name)
    x = torch.randn(2, model.in_channels, size, size)
    traced = torch.fx.symbolic_trace(model)
    return f"ok, {diff(logits(traced(x)), logits(model(x)))}"


@torch.no_grad()
def feature_extractor(name: str) -> str:
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model, _, size = small(name)
    x = torch.randn(2, model.in_channels, size, size)
    taps = [f.name for f in model.feature_info]
    extractor = create_feature_extractor(model, return_nodes=taps)
    for mode in (False, True):
        maps = extractor.train(mode)(x)
        assert list(maps) == taps, f"maps {list(maps)} for {taps}"
    return f"ok ({len(taps)} maps, eval+train)"


@torch.no_grad()
def fpn(name: str) -> str:
    from torchvision.ops import FeaturePyramidNetwork

    import visionzoo

    torch.manual_seed(0)
    model, kwargs, size = small(name)
    levels = len(model.feature_info)
    body = visionzoo.backbone(name, out_indices=tuple(range(max(0, levels - 4), levels)), **kwargs)
    channels = body.out_channels if isinstance(body.out_channels, list) else [body.out_channels]
    x = torch.randn(1, model.in_channels, size, size)
    pyramid = FeaturePyramidNetwork(channels, 64)(body.eval()(x))
    return f"ok ({len(pyramid)} levels)"


def hf_reference(name: str) -> nn.Module | None:
    """The transformers classifier for `name`, configured as ours (None if there is none)."""
    import transformers as t

    if name == "resnet50":
        return t.ResNetForImageClassification(t.ResNetConfig(num_labels=1000))
    if name == "convnext_tiny":
        return t.ConvNextForImageClassification(
            t.ConvNextConfig(layer_norm_eps=1e-6, num_labels=1000)
        )
    if name == "swin_t":
        return t.SwinForImageClassification(t.SwinConfig(num_labels=1000))
    if name == "vit_b_16":
        return t.ViTForImageClassification(t.ViTConfig(layer_norm_eps=1e-6, num_labels=1000))
    if name == "mobilenet_v2":
        config = t.MobileNetV2Config(tf_padding=False, layer_norm_eps=1e-5, num_labels=1000)
        return t.MobileNetV2ForImageClassification(config)
    if name == "efficientnet_b0":
        config = t.EfficientNetConfig(
            width_coefficient=1.0, depth_coefficient=1.0, hidden_dim=1280, batch_norm_eps=1e-5,
            depthwise_padding=list(range(16)), num_labels=1000,
        )  # fmt: skip
        model = t.EfficientNetForImageClassification(config)
        model.efficientnet.embeddings.padding = nn.ZeroPad2d(1)  # as torchvision's stem
        return model
    return None


@torch.no_grad()
def port(name: str, source: str) -> str:
    """Largest |logit difference| (and the reference's largest |logit|) after the port."""
    from safetensors.torch import save_file

    from visionzoo import create_model, get_model_info
    from visionzoo.convert import WeightMismatchError, build_reference, get_converter, port_weights
    from visionzoo.pretrained import load_pretrained

    info = get_model_info(name)
    torch.manual_seed(0)
    size = 224 if info.family == "Swin" else max(info.min_image_size, min(info.image_size, 64))
    x = torch.randn(1, info.in_channels, size, size)
    ours = create_model(name)
    if source == "file":
        randomize(ours)
        with tempfile.TemporaryDirectory() as tmp:
            save_file({k: v.contiguous() for k, v in ours.state_dict().items()}, f"{tmp}/w.st")
            path = Path(tmp) / "w.safetensors"
            Path(f"{tmp}/w.st").rename(path)
            reference, ours = ours, load_pretrained(create_model(name), str(path))
    else:
        try:
            get_converter(name, source)
        except WeightMismatchError:
            return "—"
        if source == "hf":
            reference = hf_reference(name)
        elif source == "timm" and name in TIMM_NAMES:
            import timm

            reference = timm.create_model(TIMM_NAMES[name], pretrained=False)
        elif (info.torchvision_name if source == "torchvision" else info.timm_name) is None:
            reference = None
        else:
            reference = build_reference(name, source)
        if reference is None:
            return "—"
        randomize(reference)
        port_weights(ours, reference.state_dict(), source)
    a, b = logits(ours.eval()(x)), logits(reference.eval()(x))
    return f"{diff(a, b)} (of {float(b.abs().max()):.2g})"


def offline_line(name: str) -> str:
    """What `load_pretrained(model, "torchvision")` says with no network and an empty cache."""
    from visionzoo import create_model
    from visionzoo.errors import UserError
    from visionzoo.pretrained import _NETWORK, load_pretrained

    _NETWORK.clear()
    try:
        load_pretrained(create_model(name), "torchvision")
    except UserError as err:
        return str(err).replace(os.environ["TORCH_HOME"], "$TORCH_HOME")
    return "loaded (unexpected: the cache was empty)"


def measure(family: str, name: str) -> dict:
    start = time.perf_counter()
    row = {"family": family, "variant": name}
    row["fx_trace"] = attempt(lambda: fx_trace(name))
    row["feature_extractor"] = attempt(lambda: feature_extractor(name))
    row["fpn"] = attempt(lambda: fpn(name))
    for source in SOURCES:
        row[source] = attempt(lambda source=source: port(name, source))
    row["offline"] = attempt(lambda: offline_line(name))
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def representatives(only: str | None) -> list[tuple[str, str]]:
    from visionzoo import get_model_info, list_models

    families: dict[str, str] = {}
    for name in list_models():
        family = get_model_info(name).family
        families.setdefault(family, REPRESENTATIVE.get(family, name))
    picked = sorted(families.items(), key=lambda fv: fv[0].lower())
    if only:
        picked = [(f, v) for f, v in picked if only.lower() in (f.lower(), v)]
    return picked


def markdown(rows: list[dict], env: dict) -> str:
    head = ["family", "variant", "fx trace (max diff)", "create_feature_extractor", "FPN",
            "torchvision", "timm", "HF", "file"]  # fmt: skip
    keys = ["family", "variant", "fx_trace", "feature_extractor", "fpn", *SOURCES]
    lines = [
        "# Interoperability, measured",
        "",
        "One variant per family, random weights, CPU, no network (`scripts/interop_table.py`).",
        "Port columns: largest |logit difference| from the reference after porting its",
        "randomly initialised weights (BatchNorm statistics and norm affines randomised), with",
        "the reference's largest |logit| in brackets; `—`: no converter or no reference.",
        f"Measured {env['timestamp_utc']} on {env['cpu']} ({env['torch_threads']} thread(s));",
        f"torch {env['torch']}, torchvision {env['torchvision']}, timm {env['timm']}, "
        f"transformers {env['transformers']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(row[k]).replace("|", "/") for k in keys) + " |")
    lines += ["", '## Offline: `load_pretrained(model, "torchvision")` with an empty cache', ""]
    lines += [f"- `{row['variant']}`: {row['offline']}" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="one family (e.g. resnet) or variant")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "interop")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    home = tempfile.mkdtemp(prefix="interop-table-")
    for var, sub in (("TORCH_HOME", "torch"), ("HF_HOME", "hf"), ("VISIONZOO_HOME", "vz")):
        os.environ[var] = f"{home}/{sub}"
    refuse_network()

    import transformers

    from visionzoo.bench.timing import environment

    rows = []
    for family, name in representatives(args.only):
        rows.append(measure(family, name))
        print(json.dumps(rows[-1]), flush=True)
    env = environment() | {"transformers": transformers.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    (args.out / "table.md").write_text(markdown(rows, env))
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
