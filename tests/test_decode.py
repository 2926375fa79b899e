"""The one decode path (visionzoo.data.decode): every mode and format a user's photos come in."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from visionzoo.data.decode import (
    DecodeRule,
    ImageDecodeError,
    decode,
    parse_background,
    to_pixels,
)

GRAY8, RGB8 = DecodeRule(8, 1), DecodeRule(8, 3)


def save(im: Image.Image, path, **kw):
    im.save(path, **kw)
    return path


def test_16_bit_grayscale_is_scaled_not_clipped_to_white(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = save(Image.fromarray(ramp), tmp_path / "deep.png")
    assert Image.open(path).mode == "I;16"
    x = decode(path, DecodeRule(64, 1))
    assert x.shape == (1, 64, 64)
    assert abs(x.float().mean().item() - 127.5) < 2  # clipping gave ~255
    assert x[0, 0, 0] == 0 and x[0, -1, -1] == 255


def test_exif_orientation_is_applied(tmp_path):
    raw = np.zeros((20, 40, 3), np.uint8)  # wide: left half black, right half white
    raw[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display", as a phone held upright writes
    path = save(Image.fromarray(raw), tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = to_pixels(Image.open(path), 3, (0, 0, 0))
    assert upright.size == (20, 40)  # tall, as the phone showed it
    x = decode(path, DecodeRule(20, 1, "letterbox"))[0].float()  # 10x20 in the middle
    assert x[:8, 6:14].mean() < 30 and x[12:, 6:14].mean() > 225  # black top, white bottom
    assert x[:, :4].max() == 0 and x[:, -4:].max() == 0  # letterbox bars: the background
    tall = decode(path, DecodeRule(20, 1, "crop"))[0].float()  # centre square straddles
    assert tall[:5].mean() < 30 and tall[-5:].mean() > 225


@pytest.mark.parametrize("background", ["black", "white", "#336699"])
def test_hidden_colour_under_alpha_never_reaches_the_model(tmp_path, background):
    rgb = parse_background(background)
    images = []
    for hidden in ((255, 0, 0), (0, 255, 0)):
        a = np.zeros((8, 8, 4), np.uint8)
        a[:, :, :3] = hidden  # invisible: alpha 0 on the left half
        a[:, 4:] = (90, 90, 90, 255)  # the visible right half
        path = save(Image.fromarray(a), tmp_path / f"{hidden[0]}.png")
        images.append(decode(path, DecodeRule(8, 3, background=rgb)))
    assert torch.equal(images[0], images[1])
    assert images[0][:, 0, 0].tolist() == list(rgb) and images[0][:, 0, 7].tolist() == [90] * 3


def test_gray_alpha_palette_cmyk_and_animated_gif(tmp_path):
    la = Image.fromarray(np.dstack([np.full((8, 8), 200, np.uint8), np.full((8, 8), 0, np.uint8)]))
    assert la.mode == "LA"
    assert decode(save(la, tmp_path / "la.png"), GRAY8).max() == 0  # fully transparent: black
    pal = Image.new("RGB", (8, 8), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert decode(save(pal, tmp_path / "p.png"), RGB8)[:, 0, 0].tolist() == [0, 0, 255]
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in ink
    assert decode(save(cmyk, tmp_path / "c.jpg", quality=100), RGB8)[0].float().mean() > 240
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 255, 255), (0, 0, 0))]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(gif).n_frames == 2
    assert decode(gif, GRAY8).min() == 255  # the first frame
    trns = Image.new("P", (8, 8), 1)
    trns.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    trns.info["transparency"] = 1
    assert decode(save(trns, tmp_path / "t.gif", transparency=1), GRAY8).max() == 0


@pytest.mark.parametrize("suffix", [".bmp", ".tif", ".tiff", ".webp", ".gif", ".jpeg"])
def test_every_accepted_suffix_decodes(tmp_path, suffix):
    im = Image.new("RGB", (12, 10), (10, 200, 30))
    x = decode(save(im, tmp_path / f"a{suffix}"), RGB8)
    assert x.shape == (3, 8, 8) and x.dtype == torch.uint8
    assert abs(x[1].float().mean().item() - 200) < 12


def test_crop_keeps_geometry_letterbox_keeps_everything(tmp_path):
    wide = np.full((10, 40), 255, np.uint8)
    path = save(Image.fromarray(wide), tmp_path / "wide.png")
    assert decode(path, DecodeRule(10, 1, "crop")).min() == 255  # no squash, no bars
    box = decode(path, DecodeRule(40, 1, "letterbox", (0, 0, 0)))[0]
    assert box[:10].max() == 0 and box[20].min() == 255 and box[-10:].max() == 0


def test_large_jpeg_is_drafted_to_the_target(tmp_path):
    big = Image.new("RGB", (1600, 1200), (128, 64, 32))
    path = save(big, tmp_path / "big.jpg", quality=90)
    with Image.open(path) as im:
        from visionzoo.data.decode import _draft

        _draft(im, DecodeRule(64, 3))
        assert im.size == (200, 150)  # DCT scaling 1/8: never decoded at full size
    assert decode(path, DecodeRule(64, 3)).shape == (3, 64, 64)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: p.write_bytes(b"hello, not an image"), "no known image format"),
        (lambda p: p.write_bytes(_png()[:60]), "not a readable image"),
        (lambda p: None, "no such file"),
    ],
)
def test_bad_files_give_one_line_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(ImageDecodeError) as info:
        decode(path, RGB8)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message
    assert "0x" not in message and "BytesIO" not in message and ".cpp" not in message
    assert len(message.splitlines()) == 1


def test_background_parsing():
    assert parse_background("white") == (255, 255, 255)
    assert parse_background("#ff8000") == (255, 128, 0)
    assert parse_background(7) == (7, 7, 7)
    with pytest.raises(ImageDecodeError.__mro__[1], match="--background"):
        parse_background("mauve")


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(buf, "PNG")
    return buf.getvalue()


def test_unknown_fit_is_refused_by_its_flag_name():
    from visionzoo.data.decode import check_fit

    assert check_fit("letterbox") == "letterbox"
    with pytest.raises(ImageDecodeError.__mro__[1], match="--image-fit must be crop or letterbox"):
        check_fit("squash")
