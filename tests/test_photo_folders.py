"""Photo folders: decoded once at training size, cached, bad files skipped; train == predict."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from visionzoo.data import DatasetError, DeviceLoader, Preprocess, load_dataset
from visionzoo.data.decode import DecodeRule, decode
from visionzoo.data.folder_loader import FolderLoader
from visionzoo.data.folders import FolderOptions, decode_folder
from visionzoo.errors import UserError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def photo(seed: int, size=(40, 30), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(a).convert(mode)


def awkward_folder(root):
    """Two classes holding every format and mode the issue names, plus two bad files."""
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
    for i, suffix in enumerate((".png", ".jpg", ".bmp", ".tif", ".webp")):
        photo(i).save(root / "cat" / f"{i}{suffix}")
    deep = (np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(deep).save(root / "dog" / "deep16.png")
    photo(7).convert("LA").save(root / "dog" / "gray_alpha.png")
    frames = [photo(8), photo(9)]
    frames[0].save(root / "dog" / "anim.gif", save_all=True, append_images=frames[1:])
    photo(10).convert("P").save(root / "dog" / "palette.png")
    (root / "dog" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return root


def test_every_format_loads_and_bad_files_are_skipped_by_name(tmp_path, capsys):
    root = awkward_folder(tmp_path / "photos")
    train = load_dataset(f"imagefolder:{root}", "train", folder=FolderOptions(image_size=16))
    test = load_dataset(f"imagefolder:{root}", "test", folder=FolderOptions(image_size=16))
    assert len(train) + len(test) == 9  # 11 files, 2 unreadable
    assert train.images.shape[1:] == (3, 16, 16) and train.spec.size == 16
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image(s)" in err
    assert "dog/empty.jpg: empty file" in err and "broken.png" in err and "--strict" in err
    assert err.count("skipped") == 1  # once, not once per split
    with pytest.raises(DatasetError, match=r"2 unreadable image\(s\).*--strict"):
        load_dataset(f"imagefolder:{root}", "train", folder=FolderOptions(16, strict=True))


def test_strict_fails_before_decoding_everything(tmp_path):
    root = awkward_folder(tmp_path / "photos")
    with pytest.raises(DatasetError, match="empty.jpg|broken.png"):
        decode_folder(root, FolderOptions(image_size=8, strict=True, cache_dir=str(tmp_path / "c")))


def test_cache_is_hit_on_the_second_load_and_rebuilt_when_a_file_changes(
    tmp_path, cache_dir, monkeypatch
):
    root = tmp_path / "photos"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            photo(i + ord(c)).save(root / c / f"{i}.png")
    first = decode_folder(root, FolderOptions(image_size=8))
    assert first.cache_file is not None and first.cache_file.parent == cache_dir
    assert isinstance(first.images, np.memmap)

    import visionzoo.data.folders as folders

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(folders, "decode", no_decoding)
    second = decode_folder(root, FolderOptions(image_size=8))
    assert second.cache_file == first.cache_file
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))

    monkeypatch.undo()
    monkeypatch.setenv("VISIONZOO_CACHE", str(cache_dir))
    photo(99, size=(30, 30)).save(root / "a" / "0.png")
    os.utime(root / "a" / "0.png", ns=(1, 1))  # even an old mtime: the size changed
    third = decode_folder(root, FolderOptions(image_size=8))
    assert third.cache_file != first.cache_file and not first.cache_file.exists()  # pruned
    assert not np.array_equal(np.asarray(third.images), np.asarray(first.images))
    other_size = decode_folder(root, FolderOptions(image_size=12))
    assert other_size.images.shape[-1] == 12 and other_size.cache_file != third.cache_file


def test_parallel_decoding_matches_serial(tmp_path):
    root = tmp_path / "photos"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(40):
            photo(i, size=(24, 18)).save(root / c / f"{i}.jpg")
    (root / "b" / "bad.jpg").write_bytes(b"\xff\xd8\xff" + bytes(50))
    serial = decode_folder(root, FolderOptions(image_size=8, workers=0, cache_dir=str(tmp_path)))
    pooled = decode_folder(root, FolderOptions(image_size=8, workers=2))
    assert pooled.images.shape == (80, 3, 8, 8) and len(pooled.skipped) == 1
    assert np.array_equal(np.asarray(serial.images), np.asarray(pooled.images))
    assert np.array_equal(serial.labels, pooled.labels)


def test_non_square_photos_are_cropped_as_predict_crops_them(tmp_path):
    root = tmp_path / "photos"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        photo(ord(c), size=(60, 20)).save(root / c / "wide.png")
        photo(ord(c) + 1, size=(20, 20)).save(root / c / "square.png")
    data = decode_folder(root, FolderOptions())
    assert data.rule.side == 20  # the most common shorter side
    expected = decode(root / "a" / "wide.png", DecodeRule(20, 3))
    assert torch.equal(torch.from_numpy(np.asarray(data.images[1])), expected)  # not squashed


def test_train_and_predict_see_the_same_tensor(tmp_path):
    """The same file through the imagefolder loader and through `visionzoo predict`."""
    from visionzoo.predict import load_input

    root = tmp_path / "photos"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
    rgba = np.array(photo(1, size=(50, 36)).convert("RGBA"))
    rgba[:10, :, 3] = 0  # a transparent band over random colours
    Image.fromarray(rgba).save(root / "test" / "a" / "x.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    photo(2, size=(64, 40)).save(root / "test" / "b" / "y.jpg", exif=exif)
    for i in range(3):
        for c in ("a", "b"):
            photo(10 + i, size=(30, 30)).save(root / "train" / c / f"{i}.png")
    name = f"imagefolder:{root}"
    options = FolderOptions(image_size=24, fit="letterbox", background=(255, 255, 255))
    test = load_dataset(name, "test", folder=options)
    pre = Preprocess.for_model(test.spec, min_size=40)  # resized 24 -> 40 on the device
    assert pre.fit == "letterbox" and pre.background == (255, 255, 255) and pre.resize == 40
    batch, _ = next(DeviceLoader(test, 8, pre).epoch(0))
    config = json.loads(json.dumps({"preprocess": pre.to_dict()}))  # as saved in config.json
    for i, path in enumerate((root / "test" / "a" / "x.png", root / "test" / "b" / "y.jpg")):
        assert torch.equal(load_input(path, config)[0], batch[i]), path


def test_worker_loader_uses_the_same_decode_and_skips_bad_files(tmp_path, capsys):
    root = tmp_path / "photos" / "train"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            photo(i + ord(c), size=(32, 24)).save(root / c / f"{i}.jpg")
    (root / "b" / "cut.jpg").write_bytes(b"")
    pre = Preprocess(3, 16, (0.5,) * 3, (0.25,) * 3, data_size=16)
    loader = FolderLoader(root, pre, batch_size=8, train=False, num_workers=0)
    x, y = next(loader.epoch(0))
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1]
    expected = pre(decode(root / "a" / "0.jpg", DecodeRule(16, 3))[None])[0]
    assert torch.allclose(x[0], expected, atol=1e-6)
    assert "cut.jpg: empty file" in capsys.readouterr().err
    strict = FolderLoader(root, pre, batch_size=8, train=False, num_workers=0, strict=True)
    with pytest.raises(DatasetError, match="cut.jpg.*--strict"):
        next(strict.epoch(0))


def test_eval_options_come_from_the_runs_preprocess():
    pre = Preprocess(1, 32, (0.5,), (0.5,), pad=2, data_size=28, fit="letterbox",
                     background=(9, 9, 9))  # fmt: skip
    opts = FolderOptions.from_preprocess(pre)
    assert (opts.image_size, opts.channels, opts.fit) == (28, 1, "letterbox")
    assert opts.background == (9, 9, 9)
    old = Preprocess.from_dict({"in_channels": 1, "image_size": 28, "mean": [0.5], "std": [0.5]})
    assert (old.fit, old.background) == ("crop", (0, 0, 0))  # runs saved before the keys
    with pytest.raises(UserError, match="'mean'"):
        Preprocess.from_dict({"in_channels": 1, "image_size": 28, "std": [0.5]})
    with pytest.raises(UserError, match="no 'preprocess' key"):
        Preprocess.from_config({"model": "lenet5"})


def one_line_error(capsys, argv) -> str:
    from visionzoo.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("visionzoo: error:") and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert "0x" not in err and ".cpp" not in err, err
    return err


@pytest.fixture
def saved_run(tmp_path):
    from visionzoo.registry import create_model
    from visionzoo.runs import save_run

    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    pre = Preprocess(1, 32, (0.5,), (0.5,), pad=2, data_size=28)
    config = {"class_names": [f"c{i}" for i in range(10)], "preprocess": pre.to_dict()}
    return save_run(tmp_path / "run", model, config)


def test_predict_messages(saved_run, tmp_path, capsys):
    from visionzoo.cli import main

    (tmp_path / "empty.png").write_bytes(b"")
    err = one_line_error(capsys, ["predict", str(saved_run), str(tmp_path / "empty.png")])
    assert "empty.png: empty file" in err and "BytesIO" not in err
    assert "is a folder" in one_line_error(capsys, ["predict", str(saved_run), str(tmp_path)])
    deep = np.full((40, 30), 65535, np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert main(["predict", str(saved_run), str(tmp_path / "deep.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"].startswith("c")

    config = json.loads((saved_run / "config.json").read_text())
    config["class_names"] = ["only", "three", "names"]
    (saved_run / "config.json").write_text(json.dumps(config))
    err = one_line_error(capsys, ["predict", str(saved_run), str(tmp_path / "deep.png")])
    assert "'class_names' lists 3 names but the model has 10 outputs" in err
    del config["preprocess"]
    (saved_run / "config.json").write_text(json.dumps(config))
    err = one_line_error(capsys, ["predict", str(saved_run), str(tmp_path / "deep.png")])
    assert "no 'preprocess' key" in err
    config["preprocess"] = {"in_channels": 1, "mean": [0.5], "std": [0.5]}
    config["dataset"] = "synthetic"
    (saved_run / "config.json").write_text(json.dumps(config))
    assert "'image_size'" in one_line_error(capsys, ["eval", str(saved_run)])


def test_train_skips_or_refuses_a_corrupt_photo(tmp_path, capsys):
    from visionzoo.cli import main

    root = tmp_path / "photos"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            photo(i + ord(c), size=(48, 36)).save(root / c / f"{i}.jpg")
    (root / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(40))
    argv = ["train", "lenet5", "--dataset", f"imagefolder:{root}", "--image-size", "32",
            "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--threads", "1",
            "--quiet", "--out", str(tmp_path / "run")]  # fmt: skip
    err = one_line_error(capsys, [*argv, "--strict"])
    assert "corrupt.jpg" in err and "--strict" in err
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable image(s)" in captured.err and "a/corrupt.jpg" in captured.err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["preprocess"]["fit"] == "crop" and config["preprocess"]["data_size"] == 32
    assert main(["predict", str(tmp_path / "run"), str(root / "b" / "0.jpg"), "--json"]) == 0


def test_catalogue_runs_record_the_chosen_background_and_fit():
    data = load_dataset(
        "synthetic", "test", folder=FolderOptions(fit="letterbox", background=(255, 255, 255))
    )
    pre = Preprocess.for_model(data.spec, min_size=28)
    assert (pre.fit, pre.background) == ("letterbox", (255, 255, 255))
    assert Preprocess.for_model(load_dataset("synthetic", "test").spec, 28).background == (0, 0, 0)
