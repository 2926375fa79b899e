"""The dataset catalogue: what each dataset is, where it lives, and which augmentations fit.

Entries know their classes, channels, size, mean/std and the augmentations that keep the
label: flips for clothes and objects, never for digits (a flipped 2 is not a 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RemoteFile:
    name: str  # file name as published
    md5: str  # MD5 of the published file
    payload_md5: str | None = None  # MD5 of the decompressed content (repackaged copies match)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    classes: tuple[str, ...]
    channels: int
    size: int  # native side length in pixels
    mean: tuple[float, ...]  # per-channel mean of the training images, in [0, 1]
    std: tuple[float, ...]
    train_size: int
    test_size: int
    format: str  # "idx", "cifar-bin", "imagefolder", "synthetic"
    hflip: bool = False  # horizontal flip keeps the label
    crop_padding: int = 0  # random-crop padding that keeps the object in view (0: no crop)
    random_erasing: bool = False
    mixup: bool = True  # mixup/cutmix make sense (label mixing)
    mirrors: tuple[str, ...] = ()  # base URLs, tried in order
    files: dict[str, tuple[RemoteFile, ...]] = field(default_factory=dict)  # split -> files
    system_dirs: tuple[str, ...] = ()  # folders where a system package puts the files
    source: str = ""  # citation / home page
    fit: str = "crop"  # how other-shaped images are fitted: "crop" or "letterbox"
    background: tuple[int, int, int] = (0, 0, 0)  # behind transparency (black: MNIST-like)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    description="Zalando's article images: 70,000 28x28 grayscale, 10 classes (Xiao et al. 2017)",
    classes=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    channels=1,
    size=28,
    mean=(0.2860,),
    std=(0.3530,),
    train_size=60_000,
    test_size=10_000,
    format="idx",
    hflip=True,
    crop_padding=2,
    random_erasing=True,
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    # MD5s of the published .gz files (zalandoresearch/fashion-mnist README); the payload MD5s
    # are of the decompressed IDX bytes, computed from Debian's dataset-fashion-mnist package.
    files={
        "train": (
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                       "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                       "9018921c3c673c538a1fc5bad174d6f9"),
        ),
        "test": (
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                       "8181f5470baa50b63fa0f6fddb340f0a"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                       "15d484375f8d13e6eb1aabb0c3f46965"),
        ),
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    source="https://github.com/zalandoresearch/fashion-mnist",
)  # fmt: skip

MNIST = DatasetSpec(
    name="mnist",
    description="Handwritten digits: 70,000 28x28 grayscale, 10 classes (LeCun et al. 1998)",
    classes=tuple(str(d) for d in range(10)),
    channels=1,
    size=28,
    mean=(0.1307,),
    std=(0.3081,),
    train_size=60_000,
    test_size=10_000,
    format="idx",
    hflip=False,
    crop_padding=2,
    random_erasing=False,
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    files={
        "train": (
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ),
        "test": (
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                       "2646ac647ad5339dbf082846283269ea"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                       "27ae3e4e09519cfbb04c329615203637"),
        ),
    },
    system_dirs=("/usr/share/datasets/mnist",),
    source="http://yann.lecun.com/exdb/mnist/",
)  # fmt: skip

CIFAR10 = DatasetSpec(
    name="cifar10",
    description="Tiny images: 60,000 32x32 colour, 10 classes (Krizhevsky 2009)",
    classes=(
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ),
    channels=3,
    size=32,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    train_size=50_000,
    test_size=10_000,
    format="cifar-bin",
    hflip=True,
    crop_padding=4,
    random_erasing=True,
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    # The binary version: fixed-size records, no pickle.
    files={"archive": (RemoteFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),)},
    system_dirs=("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
    source="https://www.cs.toronto.edu/~kriz/cifar.html",
)  # fmt: skip

SYNTHETIC = DatasetSpec(
    name="synthetic",
    description="Generated 28x28 grayscale shapes, 10 classes: for tests, no files needed",
    classes=tuple(f"class{i}" for i in range(10)),
    channels=1,
    size=28,
    mean=(0.5,),
    std=(0.25,),
    train_size=2_000,
    test_size=500,
    format="synthetic",
    hflip=False,
    crop_padding=2,
)

CATALOGUE: dict[str, DatasetSpec] = {s.name: s for s in (FASHION_MNIST, MNIST, CIFAR10, SYNTHETIC)}
ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}
