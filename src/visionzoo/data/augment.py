"""Data augmentation on whole batches, on the device, with per-sample randomness.

Every random draw comes from a generator seeded by (seed, step), so a resumed run sees the
same augmentations as an uninterrupted one. Images arrive as float (B, C, H, W) in [0, 1]
(crop and flip) or normalized (erasing, mixup, cutmix); labels leave as class indices, or
as soft (B, num_classes) targets once mixup or cutmix has mixed them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentConfig:
    crop_padding: int = 0  # random crop after zero-padding each side by this many pixels
    hflip: bool = False  # flip half the images left-right (never for digits)
    random_erasing: float = 0.0  # probability of erasing one random rectangle per image
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing of image pairs (0: off)
    cutmix_alpha: float = 0.0  # Beta(alpha, alpha) box pasting between pairs (0: off)
    mix_prob: float = 1.0  # probability that a batch is mixed at all when either is on

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def to_dict(self) -> dict:
        return asdict(self)


def random_crop(x: Tensor, padding: int, g: torch.Generator) -> Tensor:
    """Zero-pad by `padding`, then cut an HxW window at a random offset per image."""
    if padding <= 0:
        return x
    B, C, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (B,), generator=g, device=g.device).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (B,), generator=g, device=g.device).to(x.device)
    rows = (oy[:, None] + torch.arange(H, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(B, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(
        0, 3, 1, 2
    )  # (B, H, W, C) -> (B, C, H, W)


def random_hflip(x: Tensor, g: torch.Generator) -> Tensor:
    flip = torch.rand(x.shape[0], generator=g, device=g.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_erasing(x: Tensor, p: float, g: torch.Generator) -> Tensor:
    """Zhong et al. 2017: erase one rectangle (area 2-33%, aspect 0.3-3.3) with probability p."""
    B, C, H, W = x.shape
    dev = g.device
    apply = torch.rand(B, generator=g, device=dev) < p
    area = torch.empty(B, device=dev).uniform_(0.02, 0.33, generator=g) * H * W
    log_r = torch.empty(B, device=dev).uniform_(math.log(0.3), math.log(1 / 0.3), generator=g)
    h = (area * log_r.exp()).sqrt().clamp(1, H).floor()
    w = (area / log_r.exp()).sqrt().clamp(1, W).floor()
    top = (torch.rand(B, generator=g, device=dev) * (H - h + 1)).floor()
    left = (torch.rand(B, generator=g, device=dev) * (W - w + 1)).floor()
    yy = torch.arange(H, device=dev)[None, :, None]
    xx = torch.arange(W, device=dev)[None, None, :]
    mask = (
        (yy >= top[:, None, None]) & (yy < (top + h)[:, None, None])
        & (xx >= left[:, None, None]) & (xx < (left + w)[:, None, None])
        & apply[:, None, None]
    )  # fmt: skip
    return x.masked_fill(mask[:, None].to(x.device), 0.0)  # 0 is the mean after normalization


def mix_batch(
    x: Tensor, y: Tensor, num_classes: int, cfg: AugmentConfig, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) with the batch reversed as partner.

    Every choice is drawn on the device and applied with `torch.where`: no host sync."""
    dev = g.device
    target = F.one_hot(y, num_classes).to(x.dtype)
    partner = x.flip(0)
    mixed = torch.rand((), generator=g, device=dev) < cfg.mix_prob
    if cfg.cutmix_alpha > 0 and cfg.mixup_alpha > 0:
        use_cutmix = torch.rand((), generator=g, device=dev) < 0.5
    else:
        use_cutmix = torch.full((), cfg.cutmix_alpha > 0, device=dev)  # a fill: no host copy
    lam_mix = (
        _beta_sample(cfg.mixup_alpha, g) if cfg.mixup_alpha > 0 else torch.ones((), device=dev)
    )
    lam_cut = (
        _beta_sample(cfg.cutmix_alpha, g) if cfg.cutmix_alpha > 0 else torch.ones((), device=dev)
    )
    box, kept = _cutmix_box(x.shape[-2:], lam_cut, g)  # (H, W), the share of x left
    cut_x = torch.where(box.to(x.device), partner, x)
    mix_x = lam_mix.to(x.device) * x + (1 - lam_mix.to(x.device)) * partner
    lam = torch.where(mixed, torch.where(use_cutmix, kept, lam_mix), 1.0).to(x.device, x.dtype)
    choice = (mixed & use_cutmix).to(x.device), (mixed & ~use_cutmix).to(x.device)
    x = torch.where(choice[0], cut_x, torch.where(choice[1], mix_x, x))
    return x, lam * target + (1 - lam) * target.flip(0)


def _cutmix_box(size, lam: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """A box of about (1 - lam) of the image at a random centre, clipped to the image."""
    H, W = size
    dev = g.device
    cut = (1 - lam).sqrt()
    half_h, half_w = (H * cut).floor().div(2).floor(), (W * cut).floor().div(2).floor()
    cy = torch.randint(0, H, (), generator=g, device=dev)
    cx = torch.randint(0, W, (), generator=g, device=dev)
    y0, y1 = (cy - half_h).clamp(min=0), (cy + half_h).clamp(max=H)
    x0, x1 = (cx - half_w).clamp(min=0), (cx + half_w).clamp(max=W)
    yy = torch.arange(H, device=dev)[:, None]
    xx = torch.arange(W, device=dev)[None, :]
    box = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)  # (H, W)
    return box, 1 - (y1 - y0) * (x1 - x0) / (H * W)


def _beta_sample(alpha: float, g: torch.Generator) -> Tensor:
    a = torch._standard_gamma(torch.full((2,), alpha, device=g.device), generator=g)
    return a[0] / a.sum()
