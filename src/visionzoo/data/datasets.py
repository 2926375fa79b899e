"""Load a catalogue dataset into memory as uint8 tensors: `load_dataset(name, split)`.

Small datasets are decoded once and kept as (N, C, H, W) uint8 tensors; batches are cut,
augmented and normalized on the device (`visionzoo.data.loader`), with no per-sample Python
in the training loop.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from visionzoo.data.catalogue import ALIASES, CATALOGUE, DatasetSpec
from visionzoo.data.decode import parse_background
from visionzoo.data.folders import FolderOptions, decode_folder, warn_skipped
from visionzoo.data.idx import DatasetError, read_idx
from visionzoo.data.sources import default_cache, download, find_file, how_to_get, search_dirs
from visionzoo.data.synthetic import make_synthetic


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
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    download_ok: bool = False,
    folder: FolderOptions | None = None,
) -> InMemoryDataset:
    """The `split` ("train" or "test") of a dataset, decoded into memory. `folder` says how
    an `imagefolder:PATH` is decoded (side, fit, background, strict); for catalogue datasets
    only its fit and background count, kept in the spec for `predict` to apply to photos."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name.startswith("imagefolder:"):
        spec, images, labels = _imagefolder(name.partition(":")[2], folder, split)
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
    if folder is not None:
        spec = replace(spec, fit=folder.fit, background=parse_background(folder.background))
    return InMemoryDataset(images, labels, spec, split)


def _load_idx(spec: DatasetSpec, split: str, data_dir, download_ok: bool) -> tuple[Tensor, Tensor]:
    image_file, label_file = spec.files[split]
    dirs = search_dirs(spec, data_dir)
    paths = [find_file(f.name, dirs, spec) for f in (image_file, label_file)]
    if None in paths:
        if not download_ok:
            raise DatasetError(how_to_get(spec, dirs))
        dest = Path(data_dir) / spec.name if data_dir else default_cache() / spec.name
        found = download(spec, dest, (image_file, label_file))
    else:
        found = [p for p in paths if p is not None]
    images = read_idx(found[0], expected_dims=3)
    labels = read_idx(found[1], expected_dims=1)
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


def _imagefolder(
    path_str: str, options: FolderOptions | None = None, split: str = "train"
) -> tuple[DatasetSpec, Tensor, Tensor]:
    """One folder per class. `PATH/train` and `PATH/test` (or `val`) when present, else a
    deterministic 80/20 split per class. Images go through `visionzoo.data.decode` at the
    training side (`options.image_size`, else the most common shorter side up to 224) and
    are cached as uint8 (see `visionzoo.data.folders`); unreadable files are skipped with a
    warning, or are fatal with `options.strict`."""
    options = options or FolderOptions()
    root = Path(path_str).expanduser()
    decoded = decode_folder(root, options)
    if decoded.cache_file is None or decoded.cache_file not in _WARNED:
        warn_skipped(decoded, root)
        _WARNED.add(decoded.cache_file)
    labels = torch.from_numpy(decoded.labels)
    if decoded.pre_split:
        is_train = torch.from_numpy(decoded.is_train)
        train_idx, test_idx = is_train.nonzero().flatten(), (~is_train).nonzero().flatten()
    else:
        train_idx, test_idx = _split_per_class(labels, len(decoded.classes))
    images = torch.from_numpy(decoded.images)  # (N, C, S, S) uint8, memory-mapped
    key = (decoded.cache_file, len(train_idx))  # train and test loads share the statistics
    if decoded.cache_file is None or key not in _STATS:
        _STATS[key] = _channel_stats(images, train_idx)
    mean, std = _STATS[key]
    rule = decoded.rule
    spec = replace(
        CATALOGUE["synthetic"],
        name=f"imagefolder:{root}",
        description=f"images under {root}: {len(decoded.classes)} classes",
        classes=decoded.classes,
        channels=rule.channels,
        size=rule.side,
        mean=mean,
        std=std,
        train_size=len(train_idx),
        test_size=len(test_idx),
        format="imagefolder",
        hflip=False,
        crop_padding=max(1, rule.side // 16),
        fit=rule.fit,
        background=rule.background,
    )
    idx = train_idx if split == "train" else test_idx
    return spec, images[idx], labels[idx]  # a copy of this split only: memory = its pixels


_WARNED: set = set()  # cache files whose skipped images were already reported
_STATS: dict = {}  # (cache file, number of training images) -> channel mean and std


def _split_per_class(labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    train_parts, test_parts = [], []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = max(1, len(idx) // 5) if len(idx) > 1 else 0
        test_parts.append(idx[:n_test])
        train_parts.append(idx[n_test:])
    return torch.cat(train_parts), torch.cat(test_parts)


def _channel_stats(
    images: Tensor, indices: Tensor, chunk: int = 2048
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of images[indices], exactly, from a histogram of
    the uint8 values gathered a chunk at a time (never a float copy of the set)."""
    c = images.shape[1]
    counts = torch.zeros(c, 256, dtype=torch.float64)
    for start in range(0, len(indices), chunk):
        x = images[indices[start : start + chunk]]  # (b, C, S, S) uint8
        for ch in range(c):
            counts[ch] += torch.bincount(x[:, ch].reshape(-1), minlength=256)
    n = counts.sum(1)
    if not n.all():
        return (0.5,) * c, (0.25,) * c
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = (counts * values).sum(1) / n
    std = ((counts * values.square()).sum(1) / n - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(max(s, 1e-3) for s in std.tolist())
