"""A generated dataset for tests: 10 classes of noisy shapes that a small CNN can learn."""

from __future__ import annotations

import torch


def make_synthetic(n: int, num_classes: int = 10, size: int = 28, channels: int = 1, seed: int = 0):
    """uint8 images (n, C, size, size) and labels; each class is a bar at its own angle."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angles = labels.float() * torch.pi / num_classes
    shift = (torch.rand(n, 2, generator=g) - 0.5) * 0.4
    dist = (xx - shift[:, 0, None, None]) * torch.sin(angles)[:, None, None] - (
        yy - shift[:, 1, None, None]
    ) * torch.cos(angles)[:, None, None]
    img = torch.exp(-(dist**2) / 0.02)  # (n, H, W): a soft bar through the centre
    img = img + 0.25 * torch.rand(n, size, size, generator=g)
    img = (img.clamp(0, 1) * 255).to(torch.uint8)
    return img[:, None].expand(n, channels, size, size).contiguous(), labels
