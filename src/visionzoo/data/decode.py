"""One way to turn an image file into training pixels, shared by train, eval and predict.

`decode(source, rule)` opens a file with PIL and returns uint8 (C, S, S):

1. the header is checked (size limit, empty file, folder) before any pixel is decoded;
2. JPEGs are decoded at reduced size with `Image.draft` (DCT scaling, 1/2 to 1/8) when the
   target is small, so a 4000x3000 photo never exists at full size in memory;
3. EXIF orientation is applied (`ImageOps.exif_transpose`): phone photos stand upright;
4. 16-bit grayscale (I;16, I) is scaled to 8 bits (65535 -> 255), not clipped to white;
5. transparency (RGBA, LA, PA, palette or tRNS) is composited onto the run's background,
   so pixels hidden under alpha 0 never reach the model; palette, CMYK, YCbCr and 1-bit
   images are converted; animated GIFs give their first frame;
6. the geometry rule: "crop" resizes the shorter side to S then centre-crops, "letterbox"
   fits the whole image inside S x S on the background colour. Large reductions go through
   `Image.reduce` first (`reducing_gap=2`), then an antialiased bilinear resize.

NOTE: the rule and the background are saved in each run's `preprocess`; runs saved before
they existed are read as "crop" on black, which is what `predict` did then.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from visionzoo.data.idx import DatasetError

# The file-name suffixes an image folder is scanned for: every one of them decodes here.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FITS = ("crop", "letterbox")
MAX_PIXELS = 120_000_000  # refuse decompression bombs; 120 MP is above any camera's sensor
MAX_BYTES = 200 * 1024 * 1024
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
NAMED_COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}


class ImageDecodeError(DatasetError):
    """An image file that cannot be decoded; the message names the file and the reason."""


@dataclass(frozen=True)
class DecodeRule:
    side: int  # output is side x side
    channels: int  # 1 (luma, ITU-R 601) or 3 (RGB)
    fit: str = "crop"  # "crop": shorter side then centre crop; "letterbox": whole image, padded
    background: tuple[int, int, int] = (0, 0, 0)  # behind transparency and letterbox bars


def parse_background(value: str | int | tuple | list | None) -> tuple[int, int, int]:
    """'black', 'white', 'gray', '#rrggbb', 0-255 or (r, g, b) -> an RGB triple."""
    if value is None:
        return (0, 0, 0)
    if isinstance(value, (tuple, list)) and len(value) == 3:
        rgb = tuple(int(v) for v in value)
    elif isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        rgb = (int(value),) * 3
    elif isinstance(value, str) and value.lower() in NAMED_COLOURS:
        rgb = NAMED_COLOURS[value.lower()]
    elif isinstance(value, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", value.strip()):
        h = value.strip().lstrip("#")
        rgb = tuple(int(h[i : i + 2], 16) for i in (0, 2, 4))
    else:
        raise DatasetError(
            f"--background must be black, white, gray, #rrggbb or 0-255, got {value!r}"
        )
    if not all(0 <= v <= 255 for v in rgb):
        raise DatasetError(f"--background values must be in 0-255, got {value!r}")
    return rgb  # type: ignore[return-value]


def check_fit(fit: str) -> str:
    if fit not in FITS:
        raise DatasetError(f"--image-fit must be {' or '.join(FITS)}, got {fit!r}")
    return fit


def open_image(source: str | Path | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS):
    """A lazily decoded PIL image (header read only), or ImageDecodeError naming the file."""
    from PIL import Image

    name = name or (str(source) if not isinstance(source, bytes) else "image")
    if not isinstance(source, bytes):
        path = Path(source)
        if path.is_dir():
            raise ImageDecodeError(f"{name}: is a folder, not an image file")
        if not path.is_file():
            raise ImageDecodeError(f"{name}: no such file")
        size = path.stat().st_size
    else:
        size = len(source)
    if size == 0:
        raise ImageDecodeError(f"{name}: empty file (0 bytes), not an image")
    if size > MAX_BYTES:
        raise ImageDecodeError(
            f"{name}: file too large ({size / 2**20:.0f} MB > {MAX_BYTES / 2**20:.0f} MB)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else path)
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
        raise ImageDecodeError(f"{name}: {_reason(err)}") from None
    w, h = im.size
    if w * h > max_pixels or w < 1 or h < 1:
        im.close()
        raise ImageDecodeError(f"{name}: {w}x{h} pixels is outside the 1..{max_pixels:,} allowed")
    return im


def decode(source: str | Path | bytes, rule: DecodeRule, name: str | None = None) -> Tensor:
    """An image file -> uint8 (C, S, S) following `rule` (see the module docstring)."""
    name = name or (str(source) if not isinstance(source, bytes) else "image")
    im = open_image(source, name)
    try:
        with im:
            _draft(im, rule)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL's EXIF and palette notices
                pixels = to_pixels(im, rule.channels, rule.background)
            pixels = fit_square(pixels, rule.side, rule.fit, rule.background)
            array = np.asarray(pixels, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except Exception as err:  # noqa: BLE001 - a truncated or malformed body, any codec
        raise ImageDecodeError(f"{name}: {_reason(err)}") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)  # (H, W, C) -> (C, H, W)


def _draft(im, rule: DecodeRule) -> None:
    """Ask the JPEG decoder for the smallest DCT scale that still covers the target."""
    w, h = im.size
    scale = rule.side / (min(w, h) if rule.fit == "crop" else max(w, h))
    if scale < 0.5:
        im.draft(None, (math.ceil(w * scale), math.ceil(h * scale)))


def to_pixels(im, channels: int, background: tuple[int, int, int]):
    """Any PIL image -> mode "L" or "RGB", upright, 8-bit, transparency composited."""
    from PIL import Image, ImageOps

    im.seek(0)  # animated GIF/WebP/TIFF: the first frame
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        im = _deep_to_l(im)
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        im = canvas.convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return im if im.mode == target else im.convert(target)


def _deep_to_l(im):
    """16-bit (I;16*, and PNG's 16-bit gray read as I) and float images -> 8-bit L."""
    from PIL import Image

    x = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        x = x * 255 if x.size and x.max() <= 1.0 else x  # float images: [0, 1] or [0, 255]
    else:
        x = x / 257  # 65535 -> 255 exactly, 257 -> 1
    return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))


def fit_square(im, side: int, fit: str, background: tuple[int, int, int]):
    """A PIL image -> side x side: shorter side + centre crop, or letterboxed."""
    from PIL import Image

    w, h = im.size
    resample = Image.Resampling.BILINEAR  # antialiased in PIL: its support grows with the scale
    if fit == "crop":
        m = min(w, h)
        box = ((w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2)
        if (w, h) == (side, side):
            return im
        return im.resize((side, side), resample, box=box, reducing_gap=2.0)
    scale = side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = im.resize(size, resample, reducing_gap=2.0) if size != (w, h) else im
    fill = background if im.mode == "RGB" else round(_luma(background))
    canvas = Image.new(im.mode, (side, side), fill)
    canvas.paste(small, ((side - size[0]) // 2, (side - size[1]) // 2))
    return canvas


def _luma(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def header_info(path: str | Path) -> tuple[tuple[int, int], bool]:
    """(width, height) and whether the image is grayscale, from the header alone."""
    with open_image(path) as im:
        gray = im.mode in GRAY_MODES or (
            im.mode == "P" and _gray_palette(im) and "transparency" not in im.info
        )
        return im.size, gray


def _gray_palette(im) -> bool:
    try:
        pal = np.frombuffer(im.palette.tobytes(), np.uint8).reshape(-1, 3)
    except (AttributeError, ValueError):
        return False
    return bool((pal == pal[:, :1]).all())


def _reason(err: BaseException) -> str:
    """A one-line reason without object reprs or C++ source paths."""
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):
        return "not a readable image (no known image format)"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the file", text)
    text = re.sub(r"\S+\.(?:cpp|cc|h|hpp):\d+\S*", "", text).strip(" :")
    return f"not a readable image ({text or type(err).__name__})"
