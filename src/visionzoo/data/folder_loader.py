"""Image folders too large for memory: files decoded by DataLoader workers, batch by batch.

Each worker reads its files through `visionzoo.data.decode` (the same path as the in-memory
folders and `predict`: EXIF, 16-bit, transparency, the crop or letterbox rule, JPEG draft
decoding at the training side), then applies the augmentations the catalogue allows with
torchvision's transforms v2. Mixup and cutmix are applied to whole batches on the device
afterwards. A file that fails to decode is dropped from its batch and reported once, or is
fatal with `strict`. The sample order is seeded per epoch and can start mid-epoch, as the
in-memory loader's, so runs stay resumable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from visionzoo.data.augment import AugmentConfig, mix_batch
from visionzoo.data.decode import DecodeRule, ImageDecodeError, decode, parse_background
from visionzoo.data.folders import FolderOptions, list_folder
from visionzoo.data.idx import DatasetError
from visionzoo.data.loader import Preprocess


class _OrderSampler(Sampler[int]):
    def __init__(self, order: list[int]) -> None:
        self.order = order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def folder_transform(pre: Preprocess, train: bool, augment: AugmentConfig | None):
    """uint8 (C, S, S) from `decode` -> normalized float, augmented when training."""
    from torchvision.transforms import v2

    steps = []
    if pre.resize and pre.resize != pre.data_side:
        steps.append(v2.Resize([pre.resize, pre.resize], antialias=True))
    if pre.pad:
        steps.append(v2.Pad(pre.pad))
    if train and augment is not None:
        if augment.crop_padding:
            steps.append(v2.RandomCrop(pre.image_size, padding=augment.crop_padding))
        if augment.hflip:
            steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)]
    if train and augment is not None and augment.random_erasing:
        steps.append(v2.RandomErasing(p=augment.random_erasing, value=0))
    return v2.Compose(steps)


class FolderImages(Dataset):
    """The files of a class-folder tree, decoded one at a time; a failure is returned, not
    raised, so that the main process can name it in one line."""

    def __init__(self, files: list[str], labels: list[int], rule: DecodeRule, transform) -> None:
        self.files, self.labels, self.rule, self.transform = files, labels, rule, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor | None, int, str | None]:
        try:
            return self.transform(decode(self.files[i], self.rule)), self.labels[i], None
        except ImageDecodeError as err:
            return None, self.labels[i], str(err)


def _collate(items) -> tuple[Tensor, Tensor, list[str]]:
    ok = [(x, y) for x, y, err in items if err is None]
    failed = [err for _, _, err in items if err is not None]
    if not ok:
        return torch.empty(0), torch.empty(0, dtype=torch.long), failed
    return torch.stack([x for x, _ in ok]), torch.tensor([y for _, y in ok]), failed


class FolderLoader:
    """DataLoader-backed batches with the DeviceLoader interface (`epoch`, `len`)."""

    def __init__(
        self,
        root: str | Path,
        preprocess: Preprocess,
        batch_size: int,
        train: bool,
        augment: AugmentConfig | None = None,
        num_workers: int = 2,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        strict: bool = False,
    ) -> None:
        listing = list_folder(Path(root), split=False)
        rule = DecodeRule(
            preprocess.data_side, preprocess.in_channels, preprocess.fit,
            parse_background(preprocess.background),
        )  # fmt: skip
        transform = folder_transform(preprocess, train, augment)
        self.dataset = FolderImages(listing.files, listing.labels, rule, transform)
        self.num_classes = len(listing.classes)
        self.batch_size, self.train, self.augment = batch_size, train, augment
        self.num_workers, self.seed, self.device = num_workers, seed, torch.device(device)
        self.rank, self.world_size, self.strict = rank, world_size, strict
        self.reported: set[str] = set()

    def _order(self, epoch: int) -> list[int]:
        n = len(self.dataset)
        if self.train:
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            )
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size].tolist()

    def __len__(self) -> int:
        return -(-len(self._order(0)) // self.batch_size)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        torch.manual_seed(self.seed * 100_003 + epoch * 1_000 + start)  # worker transforms' seed
        order = self._order(epoch)[start * self.batch_size :]
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=_OrderSampler(order),
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
            collate_fn=_collate,
        )
        for i, (x, y, failed) in enumerate(loader, start=start):
            self._report(failed)
            if not len(y):
                continue
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.train and self.augment is not None and self.augment.mixes:
                g = torch.Generator(device=self.device)
                g.manual_seed(hash((self.seed, self.rank, epoch, i)) & 0x7FFF_FFFF_FFFF)
                x, y = mix_batch(x, y, self.num_classes, self.augment, g)
            yield x, y

    def _report(self, failed: list[str]) -> None:
        if failed and self.strict:
            raise DatasetError(f"{failed[0]} (--strict)")
        new = [f for f in failed if f not in self.reported]
        if new:
            self.reported.update(new)
            shown = "; ".join(new[:5])
            print(
                f"visionzoo: warning: skipped {len(new)} unreadable image(s) "
                f"({len(self.reported)} so far): {shown}",
                file=sys.stderr,
            )


def folder_spec(path: str | Path, options: FolderOptions | int | None = None):
    """A catalogue entry for a large pre-split folder, without decoding every image.

    Classes come from `PATH/train`'s sub-folders; images are taken as RGB at the options'
    `image_size` (default 224), fitted by their `fit` rule on their `background`, and
    normalized with the ImageNet statistics, as torchvision's models expect.
    """
    if not isinstance(options, FolderOptions):
        options = FolderOptions(image_size=options)
    image_size = options.image_size
    from dataclasses import replace

    from visionzoo.data.catalogue import CATALOGUE
    from visionzoo.data.idx import DatasetError

    root = Path(path).expanduser()
    test = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or test is None:
        raise DatasetError(f"--loader workers needs {root}/train and {root}/test (or val) folders")
    classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    side = image_size or 224
    spec = replace(
        CATALOGUE["synthetic"], name=f"imagefolder:{root}", description=f"images under {root}",
        classes=classes, channels=3, size=side, mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), train_size=0, test_size=0, format="imagefolder",
        hflip=True, crop_padding=max(1, side // 16), fit=options.fit,
        background=parse_background(options.background),
    )  # fmt: skip
    return spec, root / "train", test
