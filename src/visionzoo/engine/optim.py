"""Optimizer and learning-rate schedule, built from a TrainConfig."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from torch import nn

from visionzoo.engine.config import TrainConfig


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights and other 1-d parameters (gains, layer scales) get no decay."""
    return param.ndim <= 1 or name.endswith(".bias")


_FLOWS = {"entry": 0, "middle": 1, "exit": 2}  # Xception
# Where a parameter's block sits in network order, by family layout; first match wins.
_BLOCKS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[float, ...]]], ...] = (
    (re.compile(r"^stages\.(\d+)\.downsample\."), lambda m: (int(m[1]), 0)),  # with block 0
    (re.compile(r"^stages\.(\d+)\.(?:blocks\.)?(\d+)\."), lambda m: (int(m[1]), int(m[2]))),
    (re.compile(r"^blocks\.(\d+)\.layers\.(\d+)\."), lambda m: (int(m[1]), int(m[2]))),
    (re.compile(r"^transitions\.(\d+)\."), lambda m: (int(m[1]), math.inf)),  # DenseNet
    (re.compile(r"^(?:blocks|layers)\.(\d+)\."), lambda m: (int(m[1]),)),
    (re.compile(r"^(entry|middle|exit)\.(\d+)\."), lambda m: (_FLOWS[m[1]], int(m[2]))),
)


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Layer index per parameter, as timm's `group_matcher(coarse=False)` numbers them: the
    stem or embedding (everything before the first block) is 0, each block its place in
    network order, the head (`classifier`, `head*`) the last. A stage's downsampling layer
    joins the stage's first block and a final norm or conv the last block, as in timm.
    Models without blocks count each top-level module as one.
    """
    names = [name for name, _ in model.named_parameters()]
    tops = list(dict.fromkeys(name.split(".")[0] for name in names))

    def block(name: str) -> tuple[float, ...] | None:
        for pattern, key in _BLOCKS:
            match = pattern.match(name)
            if match:
                return (1, *key(match))
        return None

    found = any(block(name) is not None for name in names)
    keys: dict[str, tuple[float, ...] | None] = {}
    blocks: list[tuple[float, ...]] = []
    for name in names:
        key = block(name) if found else (1, tops.index(name.split(".")[0]))
        if name.startswith(("classifier.", "head")):
            key = (math.inf,)
        elif key is not None:
            blocks.append(key)
        elif not blocks:
            key = (0,)  # the stem; None: after the blocks (a final norm or conv)
        keys[name] = key
    last_block = max(blocks, default=(0,))
    filled = {name: key or last_block for name, key in keys.items()}
    order = {key: i for i, key in enumerate(sorted(set(filled.values())))}
    return {name: order[key] for name, key in filled.items()}


def stage_scales(model: nn.Module, layer_decay: float) -> dict[str, float]:
    """Learning-rate multiplier per parameter: 1 for the head, `layer_decay`^k for the layer k
    places before it (`layer_ids`), so earlier layers learn slower (BEiT, timm)."""
    ids = layer_ids(model)
    last = max(ids.values(), default=0)
    return {name: layer_decay ** (last - i) for name, i in ids.items()}


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
        decay = 0.0 if (not cfg.decay_norm_bias and is_no_decay(name, p)) else cfg.weight_decay
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
