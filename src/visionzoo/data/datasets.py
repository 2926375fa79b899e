"""Load a catalogue dataset into memory as uint8 tensors: `load_dataset(name, split)`.

Small datasets are decoded once and kept as (N, C, H, W) uint8 tensors; batches are cut,
augmented and normalized on the device (`visionzoo.data.loader`), with no per-sample Python
in the training loop.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from visionzoo.data.catalogue import ALIASES, CATALOGUE, DatasetSpec
from visionzoo.data.idx import DatasetError, read_idx
from visionzoo.data.sources import default_cache, download, find_file, how_to_get, search_dirs
from visionzoo.data.synthetic import make_synthetic

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class InMemoryDataset:
    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64
    spec: DatasetSpec
    split: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Tensor) -> InMemoryDataset:
        return InMemoryDataset(self.images[indices], self.labels[indices], self.spec, self.split)


def dataset_names() -> list[str]:
    return [*CATALOGUE, "imagefolder:PATH"]


def get_spec(name: str) -> DatasetSpec:
    """The catalogue entry for `name`; `imagefolder:PATH` is described by scanning PATH."""
    if name.startswith("imagefolder:"):
        return _imagefolder(name.partition(":")[2])[0]
    key = ALIASES.get(name.lower(), name.lower())
    if key not in CATALOGUE:
        import difflib

        close = difflib.get_close_matches(key, dataset_names(), n=3)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise DatasetError(f"unknown dataset {name!r}{hint} (known: {', '.join(dataset_names())})")
    return CATALOGUE[key]


def load_dataset(
    name: str, split: str = "train", data_dir: str | Path | None = None, download_ok: bool = False
) -> InMemoryDataset:
    """The `split` ("train" or "test") of a dataset, decoded into memory."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name.startswith("imagefolder:"):
        spec, splits = _imagefolder(name.partition(":")[2])
        images, labels = splits[split]
        return InMemoryDataset(images, labels, spec, split)
    spec = get_spec(name)
    if spec.format == "synthetic":
        n = spec.train_size if split == "train" else spec.test_size
        images, labels = make_synthetic(n, seed=0 if split == "train" else 1)
    elif spec.format == "idx":
        images, labels = _load_idx(spec, split, data_dir, download_ok)
    elif spec.format == "cifar-bin":
        images, labels = _load_cifar_bin(spec, split, data_dir, download_ok)
    else:  # pragma: no cover - catalogue entries are fixed
        raise DatasetError(f"no loader for format {spec.format!r}")
    return InMemoryDataset(images, labels, spec, split)


def _load_idx(spec: DatasetSpec, split: str, data_dir, download_ok: bool) -> tuple[Tensor, Tensor]:
    image_file, label_file = spec.files[split]
    dirs = search_dirs(spec, data_dir)
    paths = [find_file(f.name, dirs) for f in (image_file, label_file)]
    if None in paths:
        if not download_ok:
            raise DatasetError(how_to_get(spec, dirs))
        dest = Path(data_dir) / spec.name if data_dir else default_cache() / spec.name
        paths = download(spec, dest, (image_file, label_file))
    images = read_idx(paths[0], expected_dims=3)
    labels = read_idx(paths[1], expected_dims=1)
    if len(images) != len(labels):
        raise DatasetError(
            f"{paths[0]} holds {len(images):,} images but {paths[1]} {len(labels):,} labels"
        )
    if labels.size and labels.max() >= spec.num_classes:
        raise DatasetError(f"{paths[1]}: label {labels.max()} >= {spec.num_classes} classes")
    if images.shape[1:] != (spec.size, spec.size):
        raise DatasetError(f"{paths[0]}: images are {images.shape[1:]}, expected {spec.size}^2")
    images_t = torch.from_numpy(images.copy())[:, None]  # (N, H, W) -> (N, 1, H, W)
    return images_t, torch.from_numpy(labels.astype(np.int64))


def _load_cifar_bin(spec: DatasetSpec, split: str, data_dir, download_ok: bool):
    """CIFAR-10 binary version: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    members = (
        [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    )
    dirs = search_dirs(spec, data_dir)
    blobs: list[bytes] = []
    folder = next(
        (d / "cifar-10-batches-bin" for d in dirs if (d / "cifar-10-batches-bin").is_dir()), None
    )
    if folder is not None:
        for m in members:
            if not (folder / m).is_file():
                raise DatasetError(f"{folder / m}: file not found")
            blobs.append((folder / m).read_bytes())
    else:
        archive = find_file(spec.files["archive"][0].name, dirs)
        if archive is None:
            if not download_ok:
                raise DatasetError(how_to_get(spec, dirs))
            dest = Path(data_dir) / spec.name if data_dir else default_cache() / spec.name
            archive = download(spec, dest, spec.files["archive"])[0]
        try:
            with tarfile.open(archive, "r:gz") as tar:  # read members by name, never extract
                for m in members:
                    f = tar.extractfile(f"cifar-10-batches-bin/{m}")
                    if f is None:
                        raise KeyError(m)
                    blobs.append(f.read())
        except (tarfile.TarError, KeyError, OSError, EOFError) as err:
            raise DatasetError(
                f"{archive}: corrupt or incomplete CIFAR-10 archive ({err})"
            ) from None
    raw = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    if raw.size % 3073:
        raise DatasetError("CIFAR-10 batch files are truncated (size is not a multiple of 3073)")
    records = raw.reshape(-1, 3073)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    if labels.max() >= 10:
        raise DatasetError("CIFAR-10 batch files hold labels >= 10: corrupt")
    images = torch.from_numpy(records[:, 1:].copy()).view(
        -1, 3, 32, 32
    )  # (N, 3072) -> (N, C, H, W)
    return images, labels


@lru_cache(maxsize=4)
def _imagefolder(path_str: str) -> tuple[DatasetSpec, dict[str, tuple[Tensor, Tensor]]]:
    """One folder per class. `PATH/train` and `PATH/test` (or `val`) when present, else a
    deterministic 80/20 split per class. Images are decoded with torchvision, converted to
    the folder's channel count (1 if every image is grayscale, else 3) and resized to the
    most common size."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize

    root = Path(path_str).expanduser()
    if not root.is_dir():
        raise DatasetError(f"imagefolder: {root} is not a folder")
    split_dirs = {
        "train": root / "train",
        "test": next((root / s for s in ("test", "val") if (root / s).is_dir()), None),
    }
    pre_split = split_dirs["train"].is_dir() and split_dirs["test"] is not None
    base = split_dirs["train"] if pre_split else root
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DatasetError(
            f"imagefolder: {base} needs at least two class folders, found {len(classes)}"
        )

    def files_of(folder: Path) -> list[tuple[Path, int]]:
        out = []
        for label, c in enumerate(classes):
            d = folder / c
            if d.is_dir():
                out += [
                    (f, label) for f in sorted(d.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES
                ]
        return out

    def decode(f: Path) -> Tensor:
        try:
            data = torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8)
            return decode_image(data, mode=ImageReadMode.UNCHANGED)
        except (RuntimeError, ValueError) as err:
            raise DatasetError(f"{f}: not a readable image ({str(err).splitlines()[0]})") from None

    listing = (
        {"train": files_of(split_dirs["train"]), "test": files_of(split_dirs["test"])}
        if pre_split
        else None
    )
    all_files = files_of(root) if listing is None else listing["train"] + listing["test"]
    if not all_files:
        raise DatasetError(f"imagefolder: no images under {root}")
    decoded = [decode(f)[:3] for f, _ in all_files]
    channels = 1 if all(img.shape[0] == 1 for img in decoded) else 3
    sizes = [tuple(img.shape[1:]) for img in decoded]
    size = max(set(sizes), key=sizes.count)
    side = size[0] if size[0] == size[1] else min(size)

    def prepare(img: Tensor) -> Tensor:
        if img.shape[0] != channels:
            img = (
                img.expand(3, -1, -1)
                if channels == 3
                else img.float().mean(0, keepdim=True).round().to(torch.uint8)
            )
        if tuple(img.shape[1:]) != (side, side):
            img = resize(img, [side, side], antialias=True)
        return img

    images = torch.stack([prepare(img) for img in decoded])
    labels = torch.tensor([label for _, label in all_files])
    if pre_split:
        n_train = len(listing["train"])
        train_idx, test_idx = torch.arange(n_train), torch.arange(n_train, len(labels))
    else:
        g = torch.Generator().manual_seed(0)
        train_parts, test_parts = [], []
        for c in range(len(classes)):
            idx = (labels == c).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            n_test = max(1, len(idx) // 5) if len(idx) > 1 else 0
            test_parts.append(idx[:n_test])
            train_parts.append(idx[n_test:])
        train_idx, test_idx = torch.cat(train_parts), torch.cat(test_parts)
    train_images = images[train_idx].float() / 255
    mean = tuple(train_images.mean((0, 2, 3)).tolist())
    std = tuple(max(s, 1e-3) for s in train_images.std((0, 2, 3)).tolist())
    spec = replace(
        CATALOGUE["synthetic"],
        name=f"imagefolder:{root}",
        description=f"images under {root}: {len(classes)} classes",
        classes=tuple(classes),
        channels=channels,
        size=side,
        mean=mean,
        std=std,
        train_size=len(train_idx),
        test_size=len(test_idx),
        format="imagefolder",
        hflip=False,
        crop_padding=max(1, side // 16),
    )
    return spec, {
        "train": (images[train_idx], labels[train_idx]),
        "test": (images[test_idx], labels[test_idx]),
    }
