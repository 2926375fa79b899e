"""Prediction on a user's own images, preprocessed as the run's config says.

A run trained on 28x28 grayscale accepts any PNG or JPEG photo: it is decoded, converted to
the run's channels, resized (shorter side, then centre crop) to the training images' size,
padded and normalized exactly as in training.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from visionzoo.data.loader import Preprocess
from visionzoo.errors import UserError

MAX_PIXELS = 40_000_000  # refuse decompression bombs: 40 MP is more than any camera photo needs
MAX_BYTES = 50 * 1024 * 1024


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "image") -> Tensor:
    """Bytes of a PNG/JPEG/GIF/WebP/BMP file -> uint8 (C, H, W), C = 1 or 3."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_BYTES:
        raise UserError(
            f"{name}: file too large ({len(data) / 2**20:.1f} MB > {MAX_BYTES / 2**20:.0f} MB)"
        )
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            w, h = im.size
            if w * h > max_pixels:
                raise UserError(f"{name}: {w}x{h} pixels is more than the {max_pixels:,} allowed")
            im.draft("RGB", (max(w, 1), max(h, 1)))
            im = im.convert("L" if im.mode in ("1", "L", "I;16", "I", "LA") else "RGB")
            img = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except UserError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{name}: not a readable image ({str(err).splitlines()[0]})") from None
    channels = 1 if im.mode == "L" else 3
    return img.view(h, w, channels).permute(2, 0, 1).contiguous()  # (H, W, C) -> (C, H, W)


def read_image(path: str | Path) -> Tensor:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return decode_image(path.read_bytes(), name=str(path))


def preprocess(image: Tensor, config: dict) -> Tensor:
    """uint8 (C, H, W) -> model input (1, C', S, S) following the run's `preprocess`."""
    pre = Preprocess.from_dict(config["preprocess"])
    x = image.float()
    if x.shape[0] != pre.in_channels:
        if pre.in_channels == 1:  # ITU-R 601 luma
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
        else:
            x = x.expand(3, -1, -1)
    side = pre.resize or pre.data_size or (pre.image_size - 2 * pre.pad)
    x = fit_square(x[None], side)  # (1, C, side, side)
    x = x.round().clamp(0, 255).to(torch.uint8)
    return pre(x)


def fit_square(x: Tensor, side: int) -> Tensor:
    """Resize the shorter side to `side`, then centre-crop to side x side."""
    h, w = x.shape[-2:]
    scale = side / min(h, w)
    nh, nw = max(side, round(h * scale)), max(side, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - side) // 2, (nw - side) // 2
    return x[..., top : top + side, left : left + side]


@torch.no_grad()
def predict(run, batch: Tensor, topk: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each image of a preprocessed batch."""
    model = run.model.eval()
    probs = model(batch).float().softmax(-1)
    k = min(topk, probs.shape[-1])
    values, indices = probs.topk(k, dim=-1)
    names = run.class_names or [str(i) for i in range(probs.shape[-1])]
    return [
        [(names[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())]
        for vals, idx in zip(values, indices)
    ]
