"""Dataset catalogue, IDX parsing (corrupt files too), downloads with checksums, loaders."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from visionzoo.data import (
    AugmentConfig,
    DatasetError,
    DeviceLoader,
    Preprocess,
    get_spec,
    load_dataset,
    read_idx,
    write_idx,
)
from visionzoo.data.catalogue import CATALOGUE, RemoteFile
from visionzoo.data.sources import download, is_official

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-5k"


def make_idx_dataset(folder: Path, n_train=50, n_test=20, size=28, classes=10, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, size, size))
        )
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(n) % classes)
    return folder


def test_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", a)
    write_idx(tmp_path / "a", a)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)
    assert np.array_equal(read_idx(tmp_path / "a", expected_dims=3), a)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"xx", "trailing bytes"),
        (lambda b: b"\x00\x00\x0d\x03" + b[4:], "bad magic"),
        (lambda b: b[:2], "not an IDX file"),
        (lambda b: b[:6], "truncated IDX header"),
    ],
)
def test_idx_corrupt_files_are_refused(tmp_path, mangle, message):
    write_idx(tmp_path / "a", np.zeros((2, 3, 4), np.uint8))
    (tmp_path / "b").write_bytes(mangle((tmp_path / "a").read_bytes()))
    with pytest.raises(DatasetError, match=message):
        read_idx(tmp_path / "b")


def test_truncated_gzip_is_refused(tmp_path):
    data = gzip.compress(b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + bytes(100))
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated gzip"):
        read_idx(tmp_path / "x.gz")


def test_idx_dimension_check(tmp_path):
    write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    with pytest.raises(DatasetError, match="expected 3 dimensions"):
        read_idx(tmp_path / "labels", expected_dims=3)


def test_catalogue_knows_which_augmentations_fit():
    assert not get_spec("mnist").hflip  # a mirrored digit is another symbol
    assert get_spec("fashion-mnist").hflip and get_spec("cifar10").hflip
    assert get_spec("cifar10").channels == 3 and get_spec("fashion-mnist").num_classes == 10
    assert get_spec("fashion_mnist") is get_spec("fashion-mnist")
    with pytest.raises(DatasetError, match="did you mean: fashion-mnist"):
        get_spec("fashion-mnst")


def test_idx_dataset_from_data_dir(tmp_path):
    make_idx_dataset(tmp_path / "mnist", gz=False)
    data = load_dataset("mnist", "train", data_dir=tmp_path)
    assert data.images.shape == (50, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64 and int(data.labels.max()) == 9


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="--download"):
        load_dataset("mnist", "train", data_dir=tmp_path)


def test_mismatched_labels_are_refused(tmp_path):
    make_idx_dataset(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(49, np.uint8))
    with pytest.raises(DatasetError, match="50 images but"):
        load_dataset("mnist", "train", data_dir=tmp_path)


def test_download_checks_md5(tmp_path, monkeypatch):
    """The real download path, against a local mirror made of files we build here."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    mirror = make_idx_dataset(tmp_path / "mirror")
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        files[split] = tuple(
            RemoteFile(n, hashlib.md5((mirror / n).read_bytes()).hexdigest())
            for n in (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
        )
    spec = replace(CATALOGUE["mnist"], mirrors=(mirror.as_uri() + "/",), files=files)
    monkeypatch.setitem(CATALOGUE, "mnist", spec)
    data = load_dataset("mnist", "test", data_dir=tmp_path / "dl", download_ok=True)
    assert len(data) == 20 and (tmp_path / "dl" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()

    bad = replace(spec, files={"train": (RemoteFile(files["train"][0].name, "0" * 32),)})
    with pytest.raises(DatasetError, match="MD5"):
        download(bad, tmp_path / "dl2", bad.files["train"])
    assert not (tmp_path / "dl2" / files["train"][0].name).exists()  # nothing half-kept


def test_cifar_binary_archive(tmp_path):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            rec = np.concatenate([rng.integers(0, 10, (4, 1)), rng.integers(0, 256, (4, 3072))], 1)
            payload = rec.astype(np.uint8).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())
    train = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert train.images.shape == (20, 3, 32, 32)
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue()[:300])
    with pytest.raises(DatasetError, match="corrupt"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_imagefolder(tmp_path):
    from torchvision.io import write_png

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(5):
            write_png(
                torch.full((1, 20, 20), 40 * i, dtype=torch.uint8), str(tmp_path / c / f"{i}.png")
            )
    write_png(torch.zeros(1, 30, 30, dtype=torch.uint8), str(tmp_path / "dog" / "big.png"))
    train = load_dataset(f"imagefolder:{tmp_path}", "train")
    test = load_dataset(f"imagefolder:{tmp_path}", "test")
    assert train.spec.classes == ("cat", "dog") and train.spec.channels == 1
    assert train.images.shape[1:] == (1, 20, 20)  # the most common size; the big one resized
    assert len(train) + len(test) == 11 and len(test) == 2


def test_imagefolder_bad_image_named(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match="broken.png"):
        load_dataset(f"imagefolder:{tmp_path}", "train")


def test_preprocess_pads_lenet_input():
    pre = Preprocess.for_model(get_spec("mnist"), min_size=32)
    assert (pre.pad, pre.image_size, pre.resize) == (2, 32, None)
    x = pre(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    assert x.shape == (1, 1, 32, 32)
    assert torch.allclose(x, torch.full_like(x, -0.1307 / 0.3081))  # padding is background
    big = Preprocess.for_model(get_spec("mnist"), min_size=224)
    assert big.resize == 224 and big(torch.zeros(1, 1, 28, 28, dtype=torch.uint8)).shape[-1] == 224


def test_loader_is_seeded_resumable_and_sharded():
    data = load_dataset("synthetic")
    pre = Preprocess.for_model(data.spec, 28)
    aug = AugmentConfig(crop_padding=2, random_erasing=0.5, mixup_alpha=0.2, cutmix_alpha=1.0)
    loader = DeviceLoader(data, 64, pre, shuffle=True, augment=aug, seed=3)
    full = list(loader.epoch(2))
    tail = list(loader.epoch(2, start=5))
    assert torch.equal(full[5][0], tail[0][0]) and torch.equal(full[5][1], tail[0][1])
    assert not torch.equal(full[0][0], list(loader.epoch(3))[0][0])
    assert full[0][1].shape == (64, 10) and torch.allclose(full[0][1].sum(1), torch.ones(64))
    shards = [
        DeviceLoader(data, 64, pre, shuffle=True, seed=3, rank=r, world_size=2) for r in (0, 1)
    ]
    seen = torch.cat([torch.cat([y for _, y in s.epoch(0)]) for s in shards])
    assert len(seen) == len(data)


@pytest.mark.parametrize("min_size", [32, 48])  # padded (LeNet's 28 -> 32); resized
@pytest.mark.parametrize("augmented", [False, True])
def test_a_loader_prepared_once_gives_the_batches_of_one_prepared_per_batch(min_size, augmented):
    data = load_dataset("synthetic")
    pre = Preprocess.for_model(data.spec, min_size)
    aug = AugmentConfig(crop_padding=2, hflip=True, random_erasing=0.5) if augmented else None
    once = DeviceLoader(data, 64, pre, shuffle=True, augment=aug, seed=1)
    per_batch = DeviceLoader(data, 64, pre, shuffle=True, augment=aug, seed=1, prepared_bytes=0)
    assert (once.stage, per_batch.stage) == ("unit" if augmented else "normalized", "raw")
    assert once.images.dtype == torch.float32 and per_batch.images.dtype == torch.uint8
    for (x1, y1), (x2, y2) in zip(once.epoch(1), per_batch.epoch(1), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)  # bit for bit: same values, once
    assert x1.shape[-1] == min_size


def test_augmentations_keep_shapes_and_flip_only_where_allowed():
    from visionzoo.data.augment import random_crop, random_hflip

    g = torch.Generator().manual_seed(0)
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    flipped = random_hflip(x, g)
    n_flipped = int((flipped[:, 0, 0, 0] == 3).sum())
    assert 10 < n_flipped < 54  # about half, per sample
    cropped = random_crop(x, 1, g)
    assert cropped.shape == x.shape and not torch.equal(cropped, x)


@pytest.mark.skipif(
    not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_real_fashion_mnist_files_are_the_official_ones():
    spec = get_spec("fashion-mnist")
    for remote in spec.files["train"] + spec.files["test"]:
        assert is_official(FASHION_DIR / remote.name, remote), remote.name
    train = load_dataset("fashion-mnist", "train")
    assert train.images.shape == (60_000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared MNIST subset not present")
def test_real_mnist_subset_offline():
    test = load_dataset("mnist", "test", data_dir=SHARED_MNIST)
    assert len(test) == 10_000
    for remote in get_spec("mnist").files["test"]:
        assert is_official(SHARED_MNIST / remote.name, remote)


def test_one_dataset_never_stands_in_for_another_of_the_same_file_names(tmp_path, monkeypatch):
    """MNIST and Fashion-MNIST share every file name: a folder of one must not load as the
    other (it did: the lab's 'MNIST' LeNet run read Fashion-MNIST from --data-dir)."""
    folder = make_idx_dataset(tmp_path / "fashion")
    names = {s: [f.name for f in CATALOGUE["fashion-mnist"].files[s]] for s in ("train", "test")}
    # Make these files Fashion-MNIST's published ones: by the raw MD5 (train) and by the
    # decompressed content's MD5, as a repackaged copy matches (test).
    files = {
        "train": tuple(
            RemoteFile(n, hashlib.md5((folder / n).read_bytes()).hexdigest())
            for n in names["train"]
        ),
        "test": tuple(
            RemoteFile(
                n, "0" * 32, hashlib.md5(gzip.decompress((folder / n).read_bytes())).hexdigest()
            )
            for n in names["test"]
        ),
    }
    monkeypatch.setitem(
        CATALOGUE, "fashion-mnist", replace(CATALOGUE["fashion-mnist"], files=files)
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("VISIONZOO_DATA", raising=False)
    monkeypatch.setitem(CATALOGUE, "mnist", replace(CATALOGUE["mnist"], system_dirs=()))
    for split in ("train", "test"):
        with pytest.raises(DatasetError, match="is fashion-mnist's file of that name, not mnist's"):
            load_dataset("mnist", split, folder)
        assert len(load_dataset("fashion-mnist", split, folder).labels) in (50, 20)
    # A folder where only the test files are the other dataset's is passed over for every
    # split, so a training set never mixes with another dataset's test set.
    mixed = make_idx_dataset(tmp_path / "mixed", n_train=30)
    for n in names["test"]:
        (mixed / n).write_bytes((folder / n).read_bytes())
    with pytest.raises(DatasetError, match="fashion-mnist's file of that name"):
        load_dataset("mnist", "train", mixed)
    make_idx_dataset(tmp_path / "digits", n_train=30, n_test=21)  # other bytes: MNIST
    assert len(load_dataset("mnist", "train", tmp_path / "digits").labels) == 30
