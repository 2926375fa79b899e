"""Prediction on a user's own images, preprocessed as the run's config says.

A run trained on 28x28 grayscale accepts any PNG, JPEG, GIF, BMP, TIFF or WebP photo: it
goes through the same `visionzoo.data.decode` path as the training images (EXIF upright,
16-bit scaled, transparency on the run's background, the run's crop or letterbox rule at
the training side), then the run's `Preprocess` (resize, padding, normalization).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from visionzoo.data.decode import (
    MAX_PIXELS,
    DecodeRule,
    decode,
    fit_square,
    open_image,
    parse_background,
    to_pixels,
)
from visionzoo.data.loader import Preprocess
from visionzoo.errors import UserError


def decode_rule(pre: Preprocess) -> DecodeRule:
    return DecodeRule(pre.data_side, pre.in_channels, pre.fit, parse_background(pre.background))


def load_input(path: str | Path, config: dict) -> Tensor:
    """An image file -> model input (1, C, S, S), exactly as the run's training images."""
    pre = Preprocess.from_config(config)
    return pre(decode(Path(path), decode_rule(pre), name=str(path))[None])


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "image") -> Tensor:
    """Bytes of an image file -> uint8 (C, H, W) at full size, upright, 8-bit; C is 1 or 3,
    or 4 (RGB + alpha) when the image has transparency, which `preprocess` then
    composites onto the run's background."""
    im = open_image(data, name, max_pixels)
    try:
        with im:
            im.seek(0)
            from PIL import ImageOps

            im = ImageOps.exif_transpose(im)
            has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
            if has_alpha:
                im = im.convert("RGBA")
            else:
                im = to_pixels(im, 1 if _is_gray(im) else 3, (0, 0, 0))
            array = np.asarray(im, dtype=np.uint8)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a truncated or malformed body, any codec
        raise UserError(f"{name}: not a readable image ({str(err).splitlines()[0]})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)  # (H, W, C) -> (C, H, W)


def _is_gray(im) -> bool:
    return im.mode in ("1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def read_image(path: str | Path) -> Tensor:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return decode_image(path.read_bytes(), name=str(path))


def preprocess(image: Tensor, config: dict) -> Tensor:
    """uint8 (C, H, W) -> model input (1, C', S, S) following the run's `preprocess`."""
    from PIL import Image

    pre = Preprocess.from_config(config)
    if image.shape[0] not in (1, 3, 4):
        raise UserError(f"expected an image of 1, 3 or 4 channels, got {image.shape[0]}")
    array = image.permute(1, 2, 0).contiguous().numpy()  # (C, H, W) -> (H, W, C)
    im = Image.fromarray(array[:, :, 0] if image.shape[0] == 1 else array)  # L, RGB or RGBA
    rule = decode_rule(pre)
    im = fit_square(to_pixels(im, rule.channels, rule.background), rule.side, rule.fit,
                    rule.background)  # fmt: skip
    x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
    return pre(x[None])


def check_class_names(run, num_outputs: int) -> list[str]:
    """The run's class names, checked against the model's outputs."""
    names = run.class_names
    if not names:
        return [str(i) for i in range(num_outputs)]
    if not isinstance(names, list) or len(names) != num_outputs:
        n = len(names) if isinstance(names, list) else type(names).__name__
        raise UserError(
            f"{run.path}/config.json: 'class_names' lists {n} names but the model has "
            f"{num_outputs} outputs"
        )
    return [str(n) for n in names]


@torch.no_grad()
def predict(run, batch: Tensor, topk: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each image of a preprocessed batch."""
    model = run.model.eval()
    probs = model(batch).float().softmax(-1)
    k = min(topk, probs.shape[-1])
    values, indices = probs.topk(k, dim=-1)
    names = check_class_names(run, probs.shape[-1])
    return [
        [(names[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())]
        for vals, idx in zip(values, indices)
    ]
