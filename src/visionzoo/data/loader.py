"""Batches from an in-memory dataset, prepared on the device.

`Preprocess` is the one description of how raw pixels become model input, shared by
training, evaluation and `predict` (it is saved in each run's config.json): optional
resize, background padding (LeNet-5's 28 -> 32), scaling to [0, 1] and normalization.
`DeviceLoader` cuts a seeded permutation into batches, shards it across ranks, and applies
the augmentations of `visionzoo.data.augment` to each batch as a whole. Where the float copy
of a dataset is small (`PREPARED_BYTES`), the deterministic part of the preprocessing is done
once for the whole set: the same values as per batch, without its kernels at every step.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from visionzoo.data.augment import (
    AugmentConfig,
    mix_batch,
    random_crop,
    random_erasing,
    random_hflip,
)
from visionzoo.data.datasets import InMemoryDataset
from visionzoo.data.decode import parse_background
from visionzoo.errors import UserError


@dataclass(frozen=True)
class Preprocess:
    in_channels: int
    image_size: int  # side of the model's input
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None  # resize raw images to this side first (None: keep)
    pad: int = 0  # background pixels added on every side after resizing
    data_size: int | None = None  # side of the training images (predict fits photos to it)
    fit: str = "crop"  # how a file becomes data_size^2: "crop" (shorter side) or "letterbox"
    background: tuple[int, int, int] = (0, 0, 0)  # RGB behind transparency and letterboxing

    @classmethod
    def for_model(cls, spec, min_size: int, image_size: int | None = None) -> Preprocess:
        """Fit a dataset's images to a model: pad small gaps (<= 4 px a side), else resize."""
        target = image_size or max(spec.size, min_size)
        base = dict(
            in_channels=spec.channels, image_size=target, mean=spec.mean, std=spec.std,
            fit=spec.fit, background=tuple(spec.background),
        )  # fmt: skip
        if target == spec.size:
            return cls(**base, data_size=spec.size)
        gap = target - spec.size
        if 0 < gap <= 8 and gap % 2 == 0 and image_size is None:
            return cls(**base, pad=gap // 2, data_size=spec.size)
        return cls(**base, resize=target, data_size=spec.size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "preprocess") -> Preprocess:
        """Read a saved `preprocess`; keys added later ("fit", "background") default to what
        runs saved before them did: centre crop, black background."""
        if not isinstance(d, dict):
            raise UserError(f"{where} must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("in_channels", "image_size", "mean", "std") if k not in d]
        if missing:
            raise UserError(f"{where} has no {', '.join(repr(k) for k in missing)}")
        try:
            pre = cls(
                in_channels=int(d["in_channels"]),
                image_size=int(d["image_size"]),
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                resize=None if d.get("resize") is None else int(d["resize"]),
                pad=int(d.get("pad", 0)),
                data_size=None if d.get("data_size") is None else int(d["data_size"]),
                fit=str(d.get("fit", "crop")),
                background=parse_background(d.get("background")),
            )
        except (TypeError, ValueError) as err:
            raise UserError(f"{where}: a value has the wrong type ({err})") from None
        if pre.in_channels not in (1, 3) or len(pre.mean) != pre.in_channels:
            raise UserError(
                f"{where}: 'in_channels' is {pre.in_channels} with {len(pre.mean)} 'mean' values"
            )
        if pre.fit not in ("crop", "letterbox") or len(pre.background) != 3:
            raise UserError(f"{where}: 'fit' must be crop or letterbox and 'background' RGB")
        return pre

    @classmethod
    def from_config(cls, config: dict, where: str = "config.json") -> Preprocess:
        """A run config's `preprocess`, or a one-line error naming the missing key."""
        if "preprocess" not in config:
            raise UserError(
                f"{where} has no 'preprocess' key: the run cannot say how to prepare images"
            )
        return cls.from_dict(config["preprocess"], f"{where} 'preprocess'")

    @property
    def data_side(self) -> int:
        """Side of the images the model was trained on, before resize and padding."""
        return self.data_size or self.resize or (self.image_size - 2 * self.pad)

    def to_unit(self, x: Tensor) -> Tensor:
        """uint8 (B, C, h, w) -> float (B, C, H, W) in [0, 1], resized and padded."""
        x = x.float().div_(255)
        if self.resize and tuple(x.shape[-2:]) != (self.resize, self.resize):
            x = F.interpolate(
                x,
                size=(self.resize, self.resize),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        return x

    def normalize(self, x: Tensor) -> Tensor:
        mean, std = _channel_stats(self.mean, self.std, x.device, x.dtype)  # (1, C, 1, 1) each
        return (x - mean) / std

    def __call__(self, x: Tensor) -> Tensor:
        return self.normalize(self.to_unit(x))


@functools.lru_cache(maxsize=64)
def _channel_stats(mean: tuple, std: tuple, device: torch.device, dtype) -> tuple[Tensor, Tensor]:
    """Normalization constants on the device, copied there once: a copy from host memory at
    every batch would make the host wait for the device (a CUDA copy synchronises)."""

    def column(values: tuple) -> Tensor:
        return torch.tensor(values, device=device, dtype=dtype).view(1, -1, 1, 1)

    return column(mean), column(std)


PREPARED_BYTES = 1 << 30  # float copies up to 1 GiB are prepared once (Fashion-MNIST: 246 MB)


class DeviceLoader:
    """Seeded, resumable, shardable batches of an in-memory dataset.

    `images` are prepared once when their float copy fits in `prepared_bytes`: scaled, resized
    and padded (`to_unit`), and normalized too when nothing random comes between; a batch
    is then a gather. Larger sets stay uint8 and are prepared batch by batch."""

    def __init__(
        self,
        data: InMemoryDataset,
        batch_size: int,
        preprocess: Preprocess,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        shard_pad: bool = True,
        prepared_bytes: int = PREPARED_BYTES,
    ) -> None:
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.num_classes = data.spec.num_classes
        self.batch_size, self.preprocess, self.shuffle = batch_size, preprocess, shuffle
        self.augment, self.seed, self.drop_last = augment, seed, drop_last
        self.rank, self.world_size = rank, world_size
        # Training shards are padded to equal length (every rank takes the same number of
        # steps); evaluation shards are not, so every test image is counted exactly once.
        self.shard_pad = shard_pad
        self.stage = "raw"  # what self.images hold: raw, unit ([0, 1], sized) or normalized
        self._prepare_all(prepared_bytes)

    def _prepare_all(self, budget: int) -> None:
        n, side = len(self.images), self.preprocess.image_size
        if n == 0 or n * self.preprocess.in_channels * side * side * 4 > budget:
            return
        stage = "unit" if self.augment is not None else "normalized"
        chunks = []
        for raw in self.images.split(4096):  # bounded temporaries; per image, so exact
            x = self.preprocess.to_unit(raw)
            chunks.append(x if stage == "unit" else self.preprocess.normalize(x))
        self.images, self.stage = torch.cat(chunks), stage

    def _order(self, epoch: int) -> Tensor:
        n = len(self.labels)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            if self.shard_pad:
                total = self._per_rank() * self.world_size
                order = torch.cat([order, order[: total - n]]) if total > n else order[:total]
            order = order[self.rank :: self.world_size]
        return order.to(self.device)

    def _per_rank(self) -> int:
        n, w = len(self.labels), self.world_size
        if w == 1:
            return n
        if not self.shard_pad:
            return len(range(self.rank, n, w))
        return n // w if self.drop_last else -(-n // w)

    def __len__(self) -> int:
        per_rank = self._per_rank()
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of one epoch, from batch index `start` on (for exact resume)."""
        order = self._order(epoch)
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.prepare(self.images[idx], self.labels[idx], step_seed=(epoch, i))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.epoch(0)

    def prepare(self, raw: Tensor, y: Tensor, step_seed: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """A batch of `images` (at whatever `stage` they are) made model input."""
        if self.stage == "normalized":
            return raw, y
        x = raw if self.stage == "unit" else self.preprocess.to_unit(raw)
        aug = self.augment
        if aug is None:
            return self.preprocess.normalize(x), y
        g = torch.Generator(device=self.device)
        g.manual_seed(hash((self.seed, self.rank, *step_seed)) & 0x7FFF_FFFF_FFFF)
        if aug.crop_padding:
            x = random_crop(x, aug.crop_padding, g)
        if aug.hflip:
            x = random_hflip(x, g)
        x = self.preprocess.normalize(x)
        if aug.random_erasing > 0:
            x = random_erasing(x, aug.random_erasing, g)
        if aug.mixes:
            x, y = mix_batch(x, y, self.num_classes, aug, g)
        return x, y
