"""TrainConfig: every knob of a training run, with the reason for each default."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from visionzoo.errors import UserError


def option(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    """A TrainConfig field: its default, its `--help` text and the values it may take."""
    return field(default=default, metadata={"help": help, "choices": choices})


LOADERS = ("memory", "workers")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
IMAGE_FITS = ("crop", "letterbox")


@dataclass
class TrainConfig:
    """Every knob of a training run; each field's metadata holds its help text and choices,
    from which `visionzoo train` builds its flags."""

    # What to train on what.
    model: str = option("lenet5", "registered model name")
    dataset: str = option("fashion-mnist", "dataset name or imagefolder:PATH")
    data_dir: str | None = option(None, "another folder to search for dataset files")
    download: bool = option(
        False, "fetch missing dataset files from the official mirrors (checksummed)"
    )
    image_size: int | None = option(
        None, "model input side; default: the dataset's, padded/resized to the model's minimum"
    )
    small_input: bool | None = option(
        None, "the model's small-input stem; default: on for images under 64 px when it has one"
    )
    model_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "extra builder arguments (e.g. dropout)"}
    )
    loader: str = option(
        "memory",
        "memory: decoded once into uint8 tensors; workers: imagefolder read by DataLoader workers",
        LOADERS,
    )
    workers: int = option(2, "DataLoader worker processes for --loader workers")
    image_fit: str = option(
        "crop",
        "image folders: fit other-shaped photos by crop (shorter side, centre crop) or "
        "letterbox (whole image, padded with the background)",
        IMAGE_FITS,
    )
    background: str = option(
        "black", "behind transparency and letterbox bars: black, white or #rrggbb"
    )
    strict: bool = option(False, "an undecodable image is fatal (default: skipped, with a warning)")
    train_subset: int | None = option(
        None, "use only the first N (class-balanced, seeded) training images"
    )
    test_subset: int | None = option(
        None, "evaluate on N class-balanced test images, the same N whatever the seed"
    )
    # Optimisation.
    epochs: int = option(10, "training epochs")
    batch_size: int = option(128, "global batch; divided across ranks under torchrun")
    optimizer: str = option("sgd", "sgd (momentum, Nesterov) or adamw", OPTIMIZERS)
    lr: float = option(0.05, "peak learning rate, reached after warm-up")
    momentum: float = option(0.9, "SGD momentum (He et al. 2015 and most CNN papers)")
    nesterov: bool = option(True, "Nesterov momentum: a free small gain for SGD")
    weight_decay: float = option(
        5e-4, "L2 for SGD, decoupled for AdamW; 5e-4 suits small CNNs on small data"
    )
    decay_norm_bias: bool = option(
        False,
        "weight decay on norm weights and biases too (off is the standard modern practice)",
    )
    schedule: str = option(
        "cosine", "cosine (to 0), step (x0.1 at 50% and 75%) or constant", SCHEDULES
    )
    warmup_epochs: float = option(0.0, "linear warm-up from 0, in epochs (fractions allowed)")
    label_smoothing: float = option(0.0, "Szegedy et al. 2016; 0.1 is the usual value")
    grad_clip: float = option(0.0, "clip the global gradient norm to this (0: off)")
    agc: float = option(
        0.0, "adaptive gradient clipping factor (Brock et al. 2021; 0.01 for NFNets; 0: off)"
    )
    accumulate: int = option(1, "gradient accumulation steps per optimizer step")
    ema_decay: float = option(
        0.0, "exponential moving average of the weights (0: off; 0.999 typical)"
    )
    # Augmentation (on the device, batched). None: the dataset catalogue's default.
    augment: bool = option(True, "master switch for the training augmentations below")
    crop_padding: int | None = option(
        None, "random crop after padding (catalogue default: 2 for 28 px, 4 for CIFAR)"
    )
    hflip: bool | None = option(
        None, "random horizontal flip (catalogue: on for clothes and objects, off for digits)"
    )
    random_erasing: float = option(0.0, "probability of erasing a rectangle per image")
    mixup: float = option(0.0, "mixup alpha (0: off)")
    cutmix: float = option(0.0, "cutmix alpha (0: off)")
    # Speed.
    device: str = option("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps")
    precision: str = option(
        "auto",
        "auto: bf16 autocast (and TF32 for the rest) on CUDA, fp32 elsewhere; fp32 (TF32 off); "
        "bf16 or fp16 autocast (fp16 uses a gradient scaler, CUDA only)",
        PRECISIONS,
    )
    channels_last: bool | None = option(
        None, "NHWC memory layout (default: on for CUDA, off elsewhere)"
    )
    compile: bool = option(
        False, "compile the whole training step; eager, with a message, if that fails"
    )
    compile_mode: str = option(
        "default",
        "torch.compile mode: reduce-overhead uses CUDA graphs; max-autotune is slow to compile",
        COMPILE_MODES,
    )
    deterministic: bool = option(
        False, "deterministic kernels (for bit-exact resume on CUDA; slower)"
    )
    threads: int | None = option(None, "torch CPU threads (default: torch's, one per core)")
    eval_batch_size: int = option(
        1000, "evaluation batch; cheap per image, so large batches amortise overhead"
    )
    eval_every: int = option(
        1, "evaluate on the test set every N epochs, and after the last (1: every epoch)"
    )
    # Transfer learning.
    init: str | None = option(
        None, "start from RUN_DIR, torchvision[:NAME], timm[:NAME], hf:ORG/NAME or a file"
    )
    freeze_epochs: int = option(0, "train only the new head for this many epochs, then all")
    layer_decay: float = option(
        1.0, "lr multiplier per stage going down from the head (0.7: earlier layers learn slower)"
    )
    # Bookkeeping.
    seed: int = option(0, "random seed (data order, initialisation, augmentation)")
    checkpoint_every: int = option(
        0, "also save the training state every N optimizer steps (0: at epoch ends only)"
    )
    log_every: int = option(20, "progress-bar refresh, in steps")
    tensorboard: bool | None = option(
        None, "TensorBoard event files in RUN/tb (default: when the extra is installed)"
    )
    recipe: str | None = option(None, "the named recipe these values started from")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise UserError(f"training options must be a JSON object, got {type(d).__name__}")
        d = migrate(d)
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
            *(
                (False, message)
                for f in dataclasses.fields(self)
                if (message := choice_error(f.name, getattr(self, f.name)))
            ),
            (
                self.loader != "workers" or self.dataset.startswith("imagefolder:"),
                f"--loader workers reads imagefolder:PATH datasets, not {self.dataset!r}",
            ),
            (
                re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
                f"--device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}",
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


# Options that count something: at least 1, or at least 0 (None, where allowed, means "default").
POSITIVE = ("epochs", "batch_size", "eval_batch_size", "eval_every", "accumulate", "log_every",
            "image_size", "train_subset", "test_subset", "threads")  # fmt: skip
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


# Saved configs from before a field was renamed: old key -> (new key, value converter).
RENAMED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "no_decay_norm_bias": ("decay_norm_bias", lambda v: not v if isinstance(v, bool) else v),
}


def migrate(d: dict[str, Any]) -> dict[str, Any]:
    """A saved config with its renamed keys under their current names."""
    out = dict(d)
    for old, (new, convert) in RENAMED.items():
        if old in out:
            value = convert(out.pop(old))
            out.setdefault(new, value)
    return out


def choice_error(name: str, value: Any) -> str | None:
    """Why `value` is not one of the field's choices (None when it is, or it has none)."""
    choices = {f.name: f for f in dataclasses.fields(TrainConfig)}[name].metadata.get("choices")
    if not choices or value in choices:
        return None
    one_of = ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]
    return f"{option_flag(name)} must be {one_of}, got {value!r}"


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
