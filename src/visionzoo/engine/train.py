"""The training engine: `fit`, `train_one_epoch`, `evaluate`.

One loop serves every model: batches come from the in-memory DeviceLoader, the loss is
cross-entropy (soft targets under mixup/cutmix, plus weighted auxiliary losses where a
model has them), and the run folder receives weights, config and per-epoch metrics. The
training state is checkpointed atomically so that `--resume` continues bit-exactly.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.data import AugmentConfig, DeviceLoader, Preprocess
from visionzoo.data.datasets import InMemoryDataset
from visionzoo.engine import distributed as dist
from visionzoo.engine.config import TrainConfig
from visionzoo.errors import UserError
from visionzoo.models.base import AuxOutputs, main_logits
from visionzoo.registry import create_model, get_model_info


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    """Everything that changes during training, i.e. everything a checkpoint must hold."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any = None
    scaler: Any = None
    epoch: int = 0  # epoch in progress
    batch: int = 0  # next batch index within the epoch
    step: int = 0  # optimizer steps taken
    sums: dict[str, float] = field(
        default_factory=lambda: {"loss": 0.0, "correct": 0.0, "seen": 0.0}
    )
    history: list[dict[str, Any]] = field(default_factory=list)  # the metrics.jsonl records


# ---------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DeviceLoader,
    num_classes: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Loss, top-1, top-5 and the confusion matrix over the loader's data, and "correct": for
    each image this process evaluated, in the loader's order, whether its top-1 was right."""
    was_training = model.training
    model.eval()
    device = loader.device
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top5 = torch.zeros((), dtype=torch.long, device=device)
    correct: list[Tensor] = []
    for x, y in loader.epoch(0):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        pred = logits.argmax(1)
        correct.append(pred == y)
        confusion += torch.bincount(y * num_classes + pred, minlength=num_classes**2).view(
            num_classes, num_classes
        )
        k = min(5, num_classes)
        top5 += (logits.topk(k, 1).indices == y[:, None]).any(1).sum()
    confusion, loss_sum, top5 = dist.all_reduce_sum(confusion, loss_sum, top5)
    model.train(was_training)
    n = int(confusion.sum())
    per_class = (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()
    return {
        "loss": float(loss_sum) / max(n, 1),
        "top1": float(confusion.diag().sum()) / max(n, 1),
        "top5": float(top5) / max(n, 1),
        "per_class": per_class,
        "confusion": confusion.cpu().tolist(),
        "n": n,
        "correct": torch.cat(correct).cpu() if correct else torch.zeros(0, dtype=torch.bool),
    }


# ---------------------------------------------------------------------------------------
# Training


def compute_loss(output: Tensor | AuxOutputs, y: Tensor, label_smoothing: float) -> Tensor:
    """Cross-entropy of the logits, plus the weighted auxiliary losses of an `AuxOutputs`."""
    loss = F.cross_entropy(main_logits(output).float(), y, label_smoothing=label_smoothing)
    if isinstance(output, AuxOutputs):
        for aux in output.aux_logits:
            aux_loss = F.cross_entropy(aux.float(), y, label_smoothing=label_smoothing)
            loss = loss + output.aux_weight * aux_loss
    return loss


class EpochMeter:
    """The epoch's loss and accuracy sums and the finite-loss count, kept on the device.

    Nothing here synchronises the host except `read`, called every `--log-every` batches while a
    progress bar shows, before every checkpoint and at the end of the epoch. A NaN or infinite
    loss makes the running loss sum non-finite for good, so `good` (the steps since `base`
    whose running sum was finite) gives the first bad step exactly, without reading anything
    at each step. Each step costs a handful of small kernels (an eager GPU step is bound by
    kernel launches, so the meter keeps to in-place adds on three scalars).
    """

    def __init__(self, sums: dict[str, float], step: int, device: torch.device) -> None:
        self.loss = torch.tensor(sums["loss"], dtype=torch.float64, device=device)
        self.correct = torch.tensor(round(sums["correct"]), dtype=torch.long, device=device)
        self.good = torch.zeros((), dtype=torch.long, device=device)
        self.seen = sums["seen"]
        self.base = step

    @torch.no_grad()
    def add(self, loss: Tensor, n: int, logits: Tensor, target: Tensor) -> None:
        """Count one (micro-)batch: `loss` is its mean over `n` images."""
        self.loss.add_(loss, alpha=n)
        self.correct.add_((logits.argmax(1) == target).sum())

    def finite(self) -> Tensor:
        return self.loss.abs() < math.inf  # NaN < inf is False too

    @torch.no_grad()
    def end_step(self) -> None:
        self.good.add_(self.finite())

    def tallies(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.loss, self.correct, self.good

    def read(self, state: TrainState, check: bool = True) -> dict[str, float]:
        """One host sync: the sums, after raising TrainingDiverged if a loss was not finite.

        Every rank checks at the same steps (the flag is all-reduced: any rank's NaN stops
        them all); `check=False` reads the sums alone, for rank 0's progress bar."""
        finite = self.finite()
        bad = dist.all_reduce_sum((~finite).long())[0] if check else torch.zeros_like(self.good)
        loss, correct, bad, good, mine = torch.stack(
            (self.loss, self.correct.double(), bad.double(), self.good.double(), finite.double())
        ).tolist()
        if bad:
            first = self.base + int(good) + 1 if not mine else None
            raise TrainingDiverged(self._message(state, first))
        if check:
            self.base = state.step
            self.good.zero_()
        state.sums = {"loss": loss, "correct": correct, "seen": self.seen}
        return state.sums

    def _message(self, state: TrainState, first: int | None) -> str:
        offset = state.step - state.batch  # steps taken before this epoch's first batch
        where = (
            f"at step {first} (epoch {state.epoch + 1}, batch {first - offset})"
            if first is not None
            else f"on another process between step {self.base + 1} and {state.step}"
        )
        return (
            f"the loss became NaN or infinite {where}, found at step {state.step}; the last "
            "good checkpoint is kept: lower --lr, add --grad-clip, or check the data"
        )


class Stepper:
    """One optimizer step (forward, loss, backward, clipping, update) on a batch; under
    --compile the whole step is one torch.compile'd function, with eager as the fallback."""

    def __init__(
        self, state: TrainState, cfg: TrainConfig, autocast, log=None, channels_last=False
    ) -> None:
        self.state, self.cfg, self.autocast = state, cfg, autocast
        self.channels_last = channels_last
        self.raw = dist.unwrap(state.model)
        self.clip_params = None
        if cfg.agc:
            from visionzoo.engine.agc import agc_parameters

            self.clip_params = agc_parameters(self.raw)
        self.log = log or (lambda message: None)
        self.compiled = torch.compile(self.step, mode=cfg.compile_mode) if cfg.compile else None
        self.trusted = False

    def __call__(self, x: Tensor, y: Tensor, meter: EpochMeter) -> None:
        if self.compiled is None:
            return self.step(x, y, meter)
        if self.trusted:
            return self.compiled(x, y, meter)
        model, optimizer = self.raw, self.state.optimizer
        saved = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
        tallies = [t.clone() for t in meter.tallies()]
        try:
            self.compiled(x, y, meter)
            self.trusted = True  # compiled and ran once: no more snapshots
        except Exception as err:  # noqa: BLE001 - any failure falls back to eager
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            self.log(
                f"torch.compile failed ({type(err).__name__}: {first}); training in eager mode"
            )
            model.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
            optimizer.zero_grad(set_to_none=True)
            for tally, value in zip(meter.tallies(), tallies):
                tally.copy_(value)
            self.compiled = None
            self.step(x, y, meter)

    def step(self, x: Tensor, y: Tensor, meter: EpochMeter) -> None:
        state, cfg = self.state, self.cfg
        model, optimizer, scaler = state.model, state.optimizer, state.scaler
        if cfg.accumulate == 1:  # the common case, without the split's extra kernels
            self.forward_backward(model, scaler, x, y, 1.0, meter)
        else:
            xs, ys = x.chunk(cfg.accumulate), y.chunk(cfg.accumulate)
            for j, (xm, ym) in enumerate(zip(xs, ys)):
                sync = dist.no_sync(model) if j < len(xs) - 1 else contextlib.nullcontext()
                with sync:
                    self.forward_backward(model, scaler, xm, ym, len(ym) / len(y), meter)
        meter.end_step()
        self.update(model, optimizer, scaler)

    def forward_backward(self, model, scaler, x: Tensor, y: Tensor, weight: float, meter) -> None:
        """Forward, loss and backward of one (micro-)batch whose loss weighs `weight`."""
        with self.autocast():
            output = model(x)
            loss = compute_loss(output, y, self.cfg.label_smoothing)
        scaled = loss * weight if weight != 1.0 else loss
        (scaler.scale(scaled) if scaler else scaled).backward()
        meter.add(loss, len(y), main_logits(output), y.argmax(1) if y.dim() == 2 else y)

    def update(self, model: nn.Module, optimizer, scaler) -> None:
        if scaler:
            scaler.unscale_(optimizer)
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        if self.clip_params is not None:
            from visionzoo.engine.agc import adaptive_clip_grad_

            adaptive_clip_grad_(self.clip_params, clip_factor=self.cfg.agc)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def train_one_epoch(
    state: TrainState,
    loader: DeviceLoader,
    cfg: TrainConfig,
    on_step: Callable[[TrainState, dict[str, float]], None] | None = None,
    save_checkpoint: Callable[[TrainState], None] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    stepper: Stepper | None = None,
) -> dict[str, float]:
    """One pass over the training data from `state.batch` on; returns the epoch's averages.

    `on_step` (the progress display) gets the running sums every `cfg.log_every` steps; each
    call reads the device once. Without it the host waits for the device only at checkpoints
    and at the end of the epoch."""
    state.model.train()
    stepper = stepper or Stepper(state, cfg, autocast, channels_last=bool(cfg.channels_last))
    meter = EpochMeter(state.sums, state.step, loader.device)
    for i, (x, y) in enumerate(loader.epoch(state.epoch, start=state.batch), start=state.batch):
        if stepper.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        stepper(x, y, meter)
        meter.seen += len(y)
        state.scheduler.step()
        if state.ema is not None:
            state.ema.update_parameters(stepper.raw)
        state.step, state.batch = state.step + 1, i + 1
        if on_step and state.batch % cfg.log_every == 0:
            on_step(state, meter.read(state, check=dist.world_size() == 1))
        if save_checkpoint and cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            meter.read(state)  # checkpoints hold known-finite state only
            save_checkpoint(state)
    meter.read(state)
    sums = torch.tensor(  # on the training device: NCCL reduces device tensors only
        [state.sums[k] for k in ("loss", "correct", "seen")],
        dtype=torch.float64,
        device=loader.device,
    )
    loss_sum, correct_sum, seen = dist.all_reduce_sum(sums)[0].tolist()
    return {"train_loss": float(loss_sum / seen), "train_acc": float(correct_sum / seen)}


# ---------------------------------------------------------------------------------------
# Setting a run up


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    device = torch.device(name)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        raise UserError(f"--device {name}: this machine has {count} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps asked for, but MPS is not available on this machine")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """--precision auto: bf16 autocast on CUDA, fp32 elsewhere (CPU results stay as they were)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """--channels-last, or by default on CUDA only."""
    return device.type == "cuda" if cfg.channels_last is None else cfg.channels_last


def make_autocast(precision: str, device: torch.device):
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device; use bf16 on CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def balanced_subset(data: InMemoryDataset, n: int, seed: int) -> InMemoryDataset:
    """The first n images of a seeded, class-interleaved order: every class equally present."""
    if n >= len(data):
        return data
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=g)
    labels = data.labels[order]
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        rank[idx] = torch.arange(len(idx))
    chosen = order[torch.argsort(rank * len(data) + torch.arange(len(data)), stable=True)[:n]]
    return data.subset(chosen.sort().values)


def augment_config(cfg: TrainConfig, spec) -> AugmentConfig | None:
    if not cfg.augment:
        return None
    return AugmentConfig(
        crop_padding=spec.crop_padding if cfg.crop_padding is None else cfg.crop_padding,
        hflip=spec.hflip if cfg.hflip is None else cfg.hflip,
        random_erasing=cfg.random_erasing,
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
    )


def build_model_for(cfg: TrainConfig, spec, source=None) -> tuple[nn.Module, Preprocess]:
    """The model for `spec` and its preprocessing: the registry's `cfg.model`, or `source`
    (a module, or a builder called like a registered one)."""
    if source is not None:
        return _build_from(source, cfg, spec)
    info = get_model_info(cfg.model)
    kwargs = dict(cfg.model_kwargs)
    small = cfg.small_input
    if small is None:
        small = bool(info.small_input) and spec.size < 64
    if small:
        if not info.small_input:
            raise UserError(
                f"{cfg.model} has no small-input mode (it needs >= {info.min_image_size} px)"
            )
        kwargs["small_input"] = True
    min_size = 1 if small else info.min_image_size
    if (
        not small
        and info.min_image_size > spec.size
        and cfg.image_size is None
        and info.min_image_size > spec.size + 8
    ):
        min_size = info.min_image_size  # upsample: e.g. an ImageNet model on 28 px data
    pre = Preprocess.for_model(spec, min_size, cfg.image_size)
    model = create_model(
        cfg.model,
        num_classes=spec.num_classes,
        in_channels=spec.channels,
        image_size=pre.image_size,
        **kwargs,
    )
    return model, pre


def _build_from(source, cfg: TrainConfig, spec) -> tuple[nn.Module, Preprocess]:
    from visionzoo.registry import is_registered

    min_size = get_model_info(cfg.model).min_image_size if is_registered(cfg.model) else 1
    pre = Preprocess.for_model(spec, min_size or 1, cfg.image_size)
    if isinstance(source, nn.Module):
        return source, pre
    model = source(
        num_classes=spec.num_classes, in_channels=spec.channels, image_size=pre.image_size,
        **cfg.model_kwargs,
    )  # fmt: skip
    model.model_kwargs = dict(cfg.model_kwargs)
    return model, pre


# ---------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_dict(state: TrainState, cfg: TrainConfig) -> dict[str, Any]:
    raw = dist.unwrap(state.model)
    return {
        "model_name": cfg.model,
        "model": raw.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "epoch": state.epoch,
        "batch": state.batch,
        "step": state.step,
        "sums": dict(state.sums),
        "history": state.history,
    }


def save_checkpoint(path: Path, state: TrainState, cfg: TrainConfig) -> None:
    from visionzoo.utils import atomic_write

    if not dist.is_main():
        return
    atomic_write(path, lambda f: torch.save(checkpoint_dict(state, cfg), f))


def load_checkpoint(path: Path, state: TrainState, cfg: TrainConfig) -> None:
    from visionzoo.models.migrate import migrate_state_dict

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise UserError(
            f"{path}: corrupt or unreadable training state ({type(err).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("model_name") != cfg.model:
        found = ckpt.get("model_name") if isinstance(ckpt, dict) else "?"
        raise UserError(f"{path} is the training state of {found!r}, not {cfg.model!r}")
    try:
        model = dist.unwrap(state.model)
        model.load_state_dict(migrate_state_dict(model, ckpt["model"]))
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
        if state.ema is not None and ckpt["ema"] is not None:
            state.ema.load_state_dict(migrate_state_dict(state.ema, ckpt["ema"]))
        if state.scaler is not None and ckpt["scaler"] is not None:
            state.scaler.load_state_dict(ckpt["scaler"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(
            f"{path} does not fit this run's model or optimizer: {str(err).splitlines()[0]}"
        ) from None
    torch.set_rng_state(ckpt["rng_cpu"])
    if ckpt["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
    state.epoch, state.batch, state.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
    state.sums = dict(ckpt["sums"])
    state.history = list(ckpt["history"])
