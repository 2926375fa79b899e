"""Squeeze-and-Excitation (Hu, Shen, Sun 2018, arXiv:1709.01507).

Squeeze: global average pool to one value per channel. Excite: a two-layer bottleneck
(1x1 convolutions) produces per-channel gates that rescale the input.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


class SqueezeExcite(nn.Module):
    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        gate_layer: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, H, W) -> (B, C, 1, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))
