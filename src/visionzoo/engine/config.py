"""TrainConfig: every knob of a training run, with the reason for each default."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from visionzoo.errors import UserError


@dataclass
class TrainConfig:
    # What to train on what.
    model: str = "lenet5"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None  # another folder to search for dataset files
    download: bool = False  # fetch missing dataset files from the official mirrors (checksummed)
    image_size: int | None = (
        None  # model input side; None: the dataset's, padded/resized to the model's minimum
    )
    small_input: bool | None = (
        None  # None: on when the dataset's images are under 64 px and the model has the mode
    )
    model_kwargs: dict[str, Any] = field(
        default_factory=dict
    )  # extra builder arguments (e.g. dropout)
    # "memory": decoded once into uint8 tensors; "workers": imagefolder read by DataLoader workers
    loader: str = "memory"
    workers: int = 2  # DataLoader worker processes for --loader workers
    # Image folders (see visionzoo.data.decode): other-shaped photos are fitted by "crop"
    # (shorter side, centre crop) or "letterbox" (whole image, padded with the background).
    image_fit: str = "crop"
    background: str = "black"  # behind transparency and letterbox bars: black, white, #rrggbb
    strict: bool = False  # an undecodable image is fatal (default: skipped with a warning)
    train_subset: int | None = None  # use only the first N (class-balanced, seeded) training images
    # Optimisation.
    epochs: int = 10
    batch_size: int = 128  # global batch; divided across ranks under torchrun
    optimizer: str = "sgd"  # "sgd" (momentum, Nesterov) or "adamw"
    lr: float = 0.05  # peak learning rate, reached after warm-up
    momentum: float = 0.9  # SGD momentum (He et al. 2015 and most CNN papers)
    nesterov: bool = True  # Nesterov momentum: a free small gain for SGD
    weight_decay: float = (
        5e-4  # L2 for SGD / decoupled for AdamW; 5e-4 suits small CNNs on small data
    )
    no_decay_norm_bias: bool = (
        True  # no weight decay on norm weights and biases (standard modern practice)
    )
    schedule: str = "cosine"  # "cosine" (to 0), "step" (x0.1 at 50% and 75%), or "constant"
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs (fractions allowed)
    label_smoothing: float = 0.0  # Szegedy et al. 2016; 0.1 is the usual value
    grad_clip: float = 0.0  # clip the global gradient norm to this (0: off)
    agc: float = (
        0.0  # adaptive gradient clipping factor lambda (Brock et al. 2021; 0.01 for NFNets, 0: off)
    )
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    ema_decay: float = 0.0  # exponential moving average of the weights (0: off; 0.999 typical)
    # Augmentation (on the device, batched). None: the dataset catalogue's default.
    augment: bool = True  # master switch for the training augmentations below
    crop_padding: int | None = (
        None  # random crop after padding (catalogue default: 2 for 28 px, 4 for CIFAR)
    )
    hflip: bool | None = (
        None  # random horizontal flip (catalogue: on for clothes/objects, off for digits)
    )
    random_erasing: float = 0.0  # probability of erasing a rectangle per image
    mixup: float = 0.0  # mixup alpha (0: off)
    cutmix: float = 0.0  # cutmix alpha (0: off)
    # Speed.
    device: str = "auto"  # "auto": cuda if available, else cpu
    # "auto": bf16 autocast (and TF32 for the rest) on CUDA, fp32 elsewhere; "fp32" (TF32 off),
    # "bf16" or "fp16" (autocast; fp16 uses a gradient scaler, CUDA only)
    precision: str = "auto"
    channels_last: bool | None = None  # NHWC memory layout (None: on for CUDA, off elsewhere)
    compile: bool = False  # compile the whole training step; eager with a message if it fails
    # torch.compile mode: "default", "reduce-overhead" (CUDA graphs), "max-autotune" (slow to
    # compile), "max-autotune-no-cudagraphs"
    compile_mode: str = "default"
    deterministic: bool = False  # deterministic kernels (for bit-exact resume on CUDA; slower)
    threads: int | None = None  # torch CPU threads (None: torch's default, one per core)
    eval_batch_size: int = 1000  # evaluation is cheap per image; large batches amortise overhead
    # Transfer learning.
    init: str | None = None  # RUN_DIR, torchvision[:NAME], timm[:NAME], hf:ORG/NAME or a file
    freeze_epochs: int = 0  # train only the new head for this many epochs, then everything
    layer_decay: float = (
        1.0  # lr multiplier per stage going down from the head (0.7: earlier layers learn slower)
    )
    # Bookkeeping.
    seed: int = 0
    checkpoint_every: int = (
        0  # also save the training state every N optimizer steps (0: at epoch ends only)
    )
    log_every: int = 20  # progress-bar refresh, in steps
    tensorboard: bool | None = (
        None  # TensorBoard event files in RUN/tb (None: when the extra is installed)
    )
    recipe: str | None = None  # the named recipe these values started from

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise UserError(f"training options must be a JSON object, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise UserError(f"unknown training options: {', '.join(unknown)}")
        for name, value in d.items():
            kinds = _KINDS.get(str(fields[name].type), ())
            if kinds and (
                not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
            ):  # bool is an int to isinstance, but True is no epoch count
                raise UserError(f"training option {name!r} cannot be {value!r}")
        return cls(**d)

    def validate(self) -> None:
        for ok, message in self._checks():
            if not ok:
                raise UserError(message)

    def _checks(self) -> list[tuple[bool, str]]:
        at_least = [(n, 1) for n in POSITIVE] + [(n, 0) for n in NON_NEGATIVE]
        return [
            *(
                (
                    getattr(self, name) is None or getattr(self, name) >= low,
                    f"{option_flag(name)} must be >= {low}, got {getattr(self, name)}",
                )
                for name, low in at_least
            ),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (
                self.loader in LOADERS,
                f"--loader must be {' or '.join(LOADERS)}, got {self.loader!r}",
            ),
            (
                self.loader != "workers" or self.dataset.startswith("imagefolder:"),
                f"--loader workers reads imagefolder:PATH datasets, not {self.dataset!r}",
            ),
            (
                re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
                f"--device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}",
            ),
            (
                self.optimizer in ("sgd", "adamw"),
                f"--optimizer must be sgd or adamw, got {self.optimizer!r}",
            ),
            (
                self.schedule in ("cosine", "step", "constant"),
                f"--schedule must be cosine, step or constant, got {self.schedule!r}",
            ),
            (
                self.precision in ("auto", "fp32", "bf16", "fp16"),
                f"--precision must be auto, fp32, bf16 or fp16, got {self.precision!r}",
            ),
            (
                self.compile_mode in COMPILE_MODES,
                f"--compile-mode must be {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}",
            ),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (
                0 <= self.label_smoothing < 1,
                f"--label-smoothing must be in [0, 1), got {self.label_smoothing}",
            ),
            (
                0 <= self.random_erasing <= 1,
                f"--random-erasing must be in [0, 1], got {self.random_erasing}",
            ),
            (0 <= self.ema_decay < 1, f"--ema-decay must be in [0, 1), got {self.ema_decay}"),
            (
                self.freeze_epochs < self.epochs or self.freeze_epochs == 0,
                f"--freeze-epochs ({self.freeze_epochs}) must be < --epochs ({self.epochs})",
            ),
            (
                not (self.freeze_epochs and not self.init),
                "--freeze-epochs needs --init (there is no pre-trained body to freeze)",
            ),
            (
                not (self.grad_clip and self.agc),
                "--grad-clip and --agc are two ways to clip: choose one",
            ),
            (0 < self.layer_decay <= 1, f"--layer-decay must be in (0, 1], got {self.layer_decay}"),
            (
                self.batch_size % self.accumulate == 0,
                f"--batch-size {self.batch_size} is not a multiple of --accumulate",
            ),
        ]


LOADERS = ("memory", "workers")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Options that count something: at least 1, or at least 0 (None, where allowed, means "default").
POSITIVE = ("epochs", "batch_size", "eval_batch_size", "accumulate", "log_every",
            "image_size", "train_subset", "threads")  # fmt: skip
NON_NEGATIVE = ("workers", "checkpoint_every", "freeze_epochs", "crop_padding", "warmup_epochs",
                "weight_decay", "grad_clip", "agc", "mixup", "cutmix")  # fmt: skip
# The JSON types a saved recipe may hold for each annotated type.
_KINDS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "int | None": (int, type(None)),
    "float": (int, float),
    "float | None": (int, float, type(None)),
    "bool": (bool,),
    "bool | None": (bool, type(None)),
    "str": (str,),
    "str | None": (str, type(None)),
    "dict[str, Any]": (dict,),
}


def option_flag(name: str, value: Any = None) -> str:
    """The command-line flag of an option (`--batch-size`), with `value` if given."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else flag.replace("--", "--no-", 1)
    return flag if value is None else f"{flag} {show_value(value)}"


def show_value(value: Any) -> str:
    """An option's value as a user would type it."""
    if isinstance(value, dict):
        return json.dumps(value)
    return "(default)" if value is None else str(value)
