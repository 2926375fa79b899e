"""Optimizer and learning-rate schedule, built from a TrainConfig."""

from __future__ import annotations

import math

import torch
from torch import nn

from visionzoo.engine.config import TrainConfig


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights and other 1-d parameters (gains, layer scales) get no decay."""
    return param.ndim <= 1 or name.endswith(".bias")


def stage_scales(model: nn.Module, layer_decay: float) -> dict[str, float]:
    """Learning-rate multiplier per parameter: 1 for the last top-level module (the head),
    `layer_decay`^k for the k-th module before it, so earlier layers learn slower."""
    children = [name for name, m in model.named_children() if any(True for _ in m.parameters())]
    scales = {}
    for name, _ in model.named_parameters():
        top = name.split(".")[0]
        k = len(children) - 1 - children.index(top) if top in children else 0
        scales[name] = layer_decay**k
    return scales


def build_optimizer(model: nn.Module, cfg: TrainConfig, device=None) -> torch.optim.Optimizer:
    """SGD or AdamW; on CUDA the fused kernels, and under --compile a learning rate held in a
    tensor (the scheduler fills it in place, so the compiled step is not recompiled)."""
    optimizer = _optimizer(model, cfg, torch.device(device or "cpu").type == "cuda")
    if cfg.compile:
        for group in optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
    return optimizer


def _optimizer(model: nn.Module, cfg: TrainConfig, fused: bool) -> torch.optim.Optimizer:
    scales = stage_scales(model, cfg.layer_decay) if cfg.layer_decay < 1 else {}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        decay = 0.0 if (cfg.no_decay_norm_bias and is_no_decay(name, p)) else cfg.weight_decay
        groups.setdefault((decay, scales.get(name, 1.0)), []).append(p)
    param_groups = [
        {"params": ps, "weight_decay": wd, "lr_scale": scale, "lr": cfg.lr * scale}
        for (wd, scale), ps in groups.items()
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(0.9, 0.999), fused=fused or None)
    return torch.optim.SGD(
        param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
        fused=fused or None,
    )  # fmt: skip


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":
        return 0.1 ** sum(progress >= m for m in (0.5, 0.75))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, cfg.schedule)
    )
