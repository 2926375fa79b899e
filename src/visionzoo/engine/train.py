"""The training engine: `fit`, `train_one_epoch`, `evaluate`.

One loop serves every model: batches come from the in-memory DeviceLoader, the loss is
cross-entropy (soft targets under mixup/cutmix, plus weighted auxiliary losses where a
model has them), and the run folder receives weights, config and per-epoch metrics. The
training state is checkpointed atomically so that `--resume` continues bit-exactly.
"""

from __future__ import annotations

import contextlib
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
    """Loss, top-1, top-5 and the confusion matrix over the loader's data."""
    was_training = model.training
    model.eval()
    device = loader.device
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top5 = torch.zeros((), dtype=torch.long, device=device)
    for x, y in loader.epoch(0):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        pred = logits.argmax(1)
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
    }


# ---------------------------------------------------------------------------------------
# Training


def compute_loss(model: nn.Module, logits: Tensor, y: Tensor, label_smoothing: float) -> Tensor:
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    aux_outputs = getattr(model, "aux_outputs", None) or []
    aux_weights = getattr(model, "aux_weights", None) or [0.3] * len(aux_outputs)
    for aux, weight in zip(aux_outputs, aux_weights):
        loss = loss + weight * F.cross_entropy(aux.float(), y, label_smoothing=label_smoothing)
    return loss


def train_one_epoch(
    state: TrainState,
    loader: DeviceLoader,
    cfg: TrainConfig,
    on_step: Callable[[TrainState, float], None] | None = None,
    save_checkpoint: Callable[[TrainState], None] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """One pass over the training data from `state.batch` on; returns the epoch's averages."""
    model, optimizer = state.model, state.optimizer
    model.train()
    raw_model = dist.unwrap(model)
    micro = cfg.accumulate
    if cfg.agc:
        from visionzoo.engine.agc import adaptive_clip_grad_, agc_parameters

        clip_params = agc_parameters(raw_model)
    for i, (x, y) in enumerate(loader.epoch(state.epoch, start=state.batch), start=state.batch):
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        xs, ys = x.chunk(micro), y.chunk(micro)
        batch_loss = 0.0
        correct = 0.0
        for j, (xm, ym) in enumerate(zip(xs, ys)):
            sync = dist.no_sync(model) if j < len(xs) - 1 else contextlib.nullcontext()
            with sync, autocast():
                logits = model(xm)
                loss = compute_loss(raw_model, logits, ym, cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at step {state.step + 1} (epoch "
                    f"{state.epoch + 1}, batch {i + 1}); the last good checkpoint is kept: "
                    "lower --lr, add --grad-clip, or check the data"
                )
            scaled = loss * (len(ym) / len(y))
            (state.scaler.scale(scaled) if state.scaler else scaled).backward()
            batch_loss += loss.item() * len(ym)
            target = ym.argmax(1) if ym.dim() == 2 else ym
            correct += float((logits.argmax(1) == target).sum())
        if state.scaler:
            state.scaler.unscale_(optimizer)
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if cfg.agc:
            adaptive_clip_grad_(clip_params, clip_factor=cfg.agc)
        if state.scaler:
            state.scaler.step(optimizer)
            state.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.scheduler.step()
        if state.ema is not None:
            state.ema.update_parameters(raw_model)
        state.step += 1
        state.batch = i + 1
        state.sums["loss"] += batch_loss
        state.sums["correct"] += correct
        state.sums["seen"] += len(y)
        if on_step:
            on_step(state, batch_loss / len(y))
        if save_checkpoint and cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            save_checkpoint(state)
    # on the training device: NCCL reduces device tensors only
    sums = torch.tensor(
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


def make_autocast(precision: str, device: torch.device):
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


def build_model_for(cfg: TrainConfig, spec) -> tuple[nn.Module, Preprocess]:
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


def git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


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
    from visionzoo.runs import atomic_write

    if not dist.is_main():
        return
    atomic_write(path, lambda f: torch.save(checkpoint_dict(state, cfg), f))


def load_checkpoint(path: Path, state: TrainState, cfg: TrainConfig) -> None:
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
        dist.unwrap(state.model).load_state_dict(ckpt["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
        if state.ema is not None and ckpt["ema"] is not None:
            state.ema.load_state_dict(ckpt["ema"])
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
