"""Patch embedding: split the image into non-overlapping patches and project each to a token."""

from __future__ import annotations

from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """A strided convolution with kernel = stride = patch size, flattened to tokens."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # (B, C, H, W) -> (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D)
