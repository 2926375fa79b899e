"""Image folders too large for memory: torchvision's ImageFolder, transforms v2, workers.

The usual torchvision pipeline, with the same preprocessing as the in-memory path (resize
the shorter side and centre-crop to the training size, pad, normalize) and the
augmentations the catalogue allows. Mixup and cutmix are applied to whole batches on the
device afterwards. The sample order is seeded per epoch and can start mid-epoch, as the
in-memory loader's, so runs stay resumable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from visionzoo.data.augment import AugmentConfig, mix_batch
from visionzoo.data.loader import Preprocess


class _OrderSampler(Sampler[int]):
    def __init__(self, order: list[int]) -> None:
        self.order = order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def folder_transform(pre: Preprocess, train: bool, augment: AugmentConfig | None):
    from torchvision.transforms import v2

    side = pre.resize or pre.data_size or pre.image_size - 2 * pre.pad
    steps = [v2.PILToTensor()]
    if pre.in_channels == 1:
        steps.append(v2.Grayscale(1))
    steps += [v2.Resize(side, antialias=True), v2.CenterCrop(side)]
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
    ) -> None:
        from torchvision.datasets import ImageFolder

        self.dataset = ImageFolder(
            str(root), transform=folder_transform(preprocess, train, augment)
        )
        self.num_classes = len(self.dataset.classes)
        self.batch_size, self.train, self.augment = batch_size, train, augment
        self.num_workers, self.seed, self.device = num_workers, seed, torch.device(device)
        self.rank, self.world_size = rank, world_size

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
        )
        for i, (x, y) in enumerate(loader, start=start):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.train and self.augment is not None and self.augment.mixes:
                g = torch.Generator(device=self.device)
                g.manual_seed(hash((self.seed, self.rank, epoch, i)) & 0x7FFF_FFFF_FFFF)
                x, y = mix_batch(x, y, self.num_classes, self.augment, g)
            yield x, y


def folder_spec(path: str | Path, image_size: int | None):
    """A catalogue entry for a large pre-split folder, without decoding every image.

    Classes come from `PATH/train`'s sub-folders; images are taken as RGB at `image_size`
    (default 224) and normalized with the ImageNet statistics, as torchvision's models expect.
    """
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
        hflip=True, crop_padding=max(1, side // 16),
    )  # fmt: skip
    return spec, root / "train", test
