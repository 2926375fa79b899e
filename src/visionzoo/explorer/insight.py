"""Look inside a trained run: top-5 predictions, feature maps, Grad-CAM, attention.

Images travel to the page as PNG data URLs. Feature maps are the model's own
`forward_intermediates` (one per `feature_info` stage). Grad-CAM (Selvaraju et al. 2017,
arXiv:1610.02391) weighs the channels of the deepest stage that still has a spatial grid
by the mean gradient of the top class. Transformers show attention instead: the class
token's attention to every patch in the last block (`capture_attention` records it).

Before any of that, `input_checks` says why a prediction may surprise: a blank image is
refused (`BlankImage`), and an image whose background is the opposite of the training
data's (a dark shoe on white, for a model trained on Fashion-MNIST's light-on-black) gets
a warning that the page offers to fix with one click (invert).
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from visionzoo.layers.attention import Attention, capture_attention
from visionzoo.models.base import ImageClassifier

MAX_CHANNELS = 16  # feature-map tiles per stage
TILE_MIN = 40  # feature-map tiles are upscaled to at least this many pixels
VIEW_SIZE = 224  # heat maps and the input are shown at this size

# A perceptually ordered ramp (viridis' anchors), for heat maps and feature maps.
_RAMP = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32
)


BLANK_RANGE = 4  # grey levels: an image whose pixels all lie within this range is blank
DARK, LIGHT = 0.35, 0.65  # mean intensity below / above which images are dark / light


class BlankImage(ValueError):
    """An image of one colour: there is nothing to classify."""


def colour_scale() -> dict[str, Any]:
    """The heat maps' colour ramp, for the page's legend: low to high."""
    return {"stops": [f"rgb({r:.0f},{g:.0f},{b:.0f})" for r, g, b in _RAMP]}


def _grey(image: Tensor) -> Tensor:
    """uint8 (C, H, W) -> float (H, W) in [0, 1] (alpha dropped)."""
    rgb = image[:3].float() / 255
    return rgb.mean(0)


def input_checks(image: Tensor, config: dict[str, Any]) -> list[dict[str, str]]:
    """Reasons a prediction may surprise: [{"kind", "message"}]; raises `BlankImage`.

    The training data's polarity comes from the run's normalisation mean (MNIST 0.13,
    Fashion-MNIST 0.29: light strokes on black); the image's from its border, which is
    its background in a photo of one object or a drawing.
    """
    flat = image.flatten(1).int()  # (C, H*W): one colour means every channel is constant
    if int((flat.amax(1) - flat.amin(1)).max()) <= BLANK_RANGE:
        raise BlankImage("the image is blank (one colour): draw or upload something to classify")
    mean = config.get("preprocess", {}).get("mean") or []
    if not mean or image.shape[0] == 4:  # transparency is composited onto the right background
        return []
    trained = float(sum(mean) / len(mean))
    grey = _grey(image)
    h, w = grey.shape
    k = max(1, min(h, w) // 10)
    ring = torch.cat([grey[:k].flatten(), grey[-k:].flatten(), grey[:, :k].flatten(),
                      grey[:, -k:].flatten()])  # fmt: skip
    background = float(ring.mean())
    dataset = config.get("dataset") or "the training data"
    if trained < DARK and background > LIGHT:
        kinds = ("light on a dark", "a light")
    elif trained > LIGHT and background < DARK:
        kinds = ("dark on a light", "a dark")
    else:
        return []
    text = (
        f"{dataset} images are {kinds[0]} background (mean {trained:.2f}); this one has "
        f"{kinds[1]} background ({background:.2f}): invert it for a fair prediction"
    )
    return [{"kind": "polarity", "message": text}]


def colormap(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (H, W) -> RGB uint8 (H, W, 3)."""
    t = np.clip(v, 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(t).astype(int).clip(0, len(_RAMP) - 2)
    frac = (t - lo)[..., None]
    return (_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).astype(np.uint8)


def png_data_url(array: np.ndarray) -> str:
    """uint8 (H, W) or (H, W, 3) -> "data:image/png;base64,..."."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _normalise(x: Tensor) -> Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)


def input_view(x: Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """The preprocessed input (1, C, H, W) back in pixels: RGB uint8 (H, W, 3)."""
    c = x.shape[1]
    m = torch.tensor((list(mean) or [0.0] * c)[:c]).view(1, -1, 1, 1)
    s = torch.tensor((list(std) or [1.0] * c)[:c]).view(1, -1, 1, 1)
    img = (x * s + m).clamp(0, 1)
    img = F.interpolate(img, size=(VIEW_SIZE, VIEW_SIZE), mode="nearest")[0]
    img = img.expand(3, -1, -1) if c == 1 else img[:3]
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def feature_tiles(fmap: Tensor) -> tuple[np.ndarray, list[int]]:
    """The most active channels of one stage (C, H, W) as a grid of tiles; and their indices."""
    c, h, w = fmap.shape
    strength = fmap.abs().mean((1, 2))
    order = strength.argsort(descending=True)[: min(MAX_CHANNELS, c)].tolist()
    cols = min(4, len(order))
    rows = math.ceil(len(order) / cols)
    scale = max(1, math.ceil(TILE_MIN / max(h, w)))
    th, tw, gap = h * scale, w * scale, 2
    grid = np.full((rows * (th + gap) - gap, cols * (tw + gap) - gap, 3), 255, dtype=np.uint8)
    # Maps of a pixel or two say nothing on their own scale: compare those across channels.
    joint = _normalise(fmap[order]) if h * w <= 4 else None
    for k, ch in enumerate(order):
        tile = joint[k] if joint is not None else _normalise(fmap[ch])
        tile = tile.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        r, q = divmod(k, cols)
        grid[r * (th + gap) : r * (th + gap) + th, q * (tw + gap) : q * (tw + gap) + tw] = colormap(
            tile.numpy()
        )
    return grid, order


def overlay(base: np.ndarray, heat: Tensor) -> np.ndarray:
    """A heat map (h, w) in [0, 1], upsampled and blended over the input view."""
    up = F.interpolate(heat[None, None], size=base.shape[:2], mode="bilinear", align_corners=False)
    colour = colormap(up[0, 0].clamp(0, 1).numpy()).astype(np.float32)
    return (0.45 * base.astype(np.float32) + 0.55 * colour).round().astype(np.uint8)


def to_map(t: Tensor, channels: int) -> Tensor | None:
    """A stage output as (B, C, H, W): conv maps as they are, tokens reshaped; else None."""
    if t.dim() == 4 and t.shape[1] == channels:
        return t
    if t.dim() == 4 and t.shape[-1] == channels:  # (B, H, W, C), Swin and ConvNeXt blocks
        return t.permute(0, 3, 1, 2)
    if t.dim() == 3:  # (B, N, D) tokens, with or without a class token in front
        n = t.shape[1]
        for prefix in (0, 1):
            side = math.isqrt(n - prefix)
            if side * side == n - prefix and side > 1:
                return t[:, prefix:].transpose(1, 2).reshape(t.shape[0], -1, side, side)
    return None


def grad_cam(model: nn.Module, x: Tensor, target: int) -> dict[str, Any] | None:
    """Grad-CAM on the deepest stage whose map is at least 2x2: {"stage", "heat"}."""
    infos = list(getattr(model, "feature_info", []))
    captured: dict[str, Tensor] = {}
    handles = []
    for info in infos:
        try:
            module = model.get_submodule(info.name)
        except AttributeError:
            continue

        def hook(mod: nn.Module, inp: Any, out: Any, info: Any = info) -> None:
            out = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(out, Tensor) and out.requires_grad:
                out.retain_grad()
                captured[info.name] = out

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            x = x.clone().requires_grad_(True)  # gradients flow even through frozen layers
            logits = model(x)
            logits[0, target].backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    for info in reversed(infos):
        act = captured.get(info.name)
        if act is None or act.grad is None:
            continue
        a, g = to_map(act.detach(), info.channels), to_map(act.grad, info.channels)
        if a is None or g is None or min(a.shape[-2:]) < 2:
            continue
        return {"stage": info.name, "heat": _cam(a, g)}
    return _grad_cam_features(cast(ImageClassifier, model), x, target)


def _cam(act: Tensor, grad: Tensor) -> Tensor:
    weights = grad[0].mean((1, 2))  # one weight per channel: (C,)
    return _normalise(F.relu((weights[:, None, None] * act[0]).sum(0)))


def _grad_cam_features(model: ImageClassifier, x: Tensor, target: int) -> dict[str, Any] | None:
    """Grad-CAM on the output of `forward_features`, for stages that hooks cannot see."""
    with torch.enable_grad():
        feats = model.forward_features(x.clone().requires_grad_(True))
        feats.retain_grad()
        model.forward_head(feats)[0, target].backward()
    model.zero_grad(set_to_none=True)
    if feats.grad is None:
        return None
    channels = int(getattr(model, "num_features", feats.shape[1]))
    a, g = to_map(feats.detach(), channels), to_map(feats.grad, channels)
    if a is None or g is None or min(a.shape[-2:]) < 2:
        return None
    return {"stage": "forward_features", "heat": _cam(a, g)}


def attention_map(model: nn.Module, x: Tensor) -> dict[str, Any] | None:
    """The last attention layer's map over the patches: {"stage", "heat"}, or None."""
    if hasattr(model, "cls_attention"):
        with torch.no_grad():
            att = cast(Any, model).cls_attention(x)  # (B, heads, h, w)
        return {"stage": "class token attention, last block", "heat": _normalise(att[0].mean(0))}
    layers = [n for n, m in model.named_modules() if isinstance(m, Attention)]
    if not layers:
        return None
    name = layers[-1]
    with capture_attention(model, [name]) as maps, torch.no_grad():
        model(x)
    att = maps.get(name)
    if att is None or att.shape[0] != 1:  # windowed attention (Swin): use Grad-CAM instead
        return None
    n = att.shape[-1]
    side = math.isqrt(n - 1)
    if side * side == n - 1:  # class token first: its attention to each patch
        heat = att[0, :, 0, 1:].mean(0).reshape(side, side)
    else:
        side = math.isqrt(n)
        if side * side != n:
            return None
        heat = att[0].mean((0, 1)).reshape(side, side)  # attention each patch receives
    return {"stage": f"{name} (attention received)", "heat": _normalise(heat)}


def analyse(run: Any, image: Tensor, topk: int = 5) -> dict[str, Any]:
    """Everything the "inside a run" panel shows for one uint8 image (C, H, W)."""
    from visionzoo.predict import predict, preprocess

    config = run.config
    model = run.model.eval()
    warnings = input_checks(image, config)
    x = preprocess(image, config)
    predictions = predict(run, x, topk=topk)[0]
    pre = config.get("preprocess", {})
    base = input_view(x, pre.get("mean", []), pre.get("std", []))
    stages = []
    with torch.no_grad():
        maps = model.forward_intermediates(x)
    for info, fmap in zip(model.feature_info, maps):
        grid, channels = feature_tiles(fmap[0].float())
        stages.append(
            {
                "name": info.name,
                "shape": list(fmap.shape[1:]),
                "stride": info.stride,
                "channels_shown": channels,
                "png": png_data_url(grid),
            }
        )
    names = list(run.class_names)
    top = names.index(predictions[0][0]) if predictions and predictions[0][0] in names else 0
    kind, heat = "attention", attention_map(model, x)
    if heat is None:
        kind, heat = "grad-cam", grad_cam(model, x, top)
    explain = None
    if heat is not None:
        explain = {
            "kind": kind,
            "stage": heat["stage"],
            "target": names[top] if names else str(top),
            "png": png_data_url(overlay(base, heat["heat"])),
        }
    return {
        "predictions": [{"label": str(c), "prob": float(p)} for c, p in predictions],
        "input_png": png_data_url(base),
        "input_shape": list(x.shape[1:]),
        "stages": stages,
        "explain": explain,
        "warnings": warnings,
        "colour_scale": colour_scale(),
    }
