"""The contract every visionzoo model follows.

`forward(x) == forward_head(forward_features(x))`; `forward_features` returns the features
before global pooling, `forward_head` pools and classifies (`pre_logits=True` stops before
the classifier). `num_features` is the width the classifier sees, `in_channels` the input
channels, `reset_classifier(n)` swaps the head for `n` classes (0 removes it), and
`forward_intermediates(x)` returns one feature map per stage, described by `feature_info`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class FeatureInfo:
    """One level of a multi-scale feature pyramid."""

    name: str  # the stage's module name, e.g. "stages.2"
    channels: int  # output channels of the level
    stride: int  # total downsampling from the input, e.g. 8


class InputTooSmallError(ValueError):
    """An input smaller than the architecture can take."""


class ImageClassifier(nn.Module):
    """Base class: shared plumbing of the model contract.

    Subclasses set `num_features`, `in_channels`, `image_size`, `min_image_size`,
    `feature_info` and a `classifier` module, and implement `forward_features`,
    `forward_head` and `forward_intermediates`.
    """

    num_features: int
    in_channels: int
    image_size: int
    min_image_size: int = 1
    small_input: bool = False  # True when built in the small-input (28x28, 32x32) mode
    supports_small_input: bool = False  # whether the family offers that mode
    feature_info: list[FeatureInfo]

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        raise NotImplementedError

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """The stem's output, then each stage's: the default for `stem -> stages` models."""
        if not (hasattr(self, "stem") and hasattr(self, "stages")):
            raise NotImplementedError(f"{type(self).__name__} must define forward_intermediates")
        x = self.stem(x)
        out = [x]
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error for inputs the network cannot take."""
        if x.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_channels} input channels, "
                f"got {x.shape[1]}"
            )
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if min(h, w) < self.min_image_size:
            hint = (
                "; for small images build it with small_input=True"
                if self.supports_small_input and not self.small_input
                else ""
            )
            raise InputTooSmallError(
                f"{type(self).__name__} needs inputs of at least "
                f"{self.min_image_size}x{self.min_image_size} pixels, got {h}x{w}{hint}"
            )

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer with a fresh one for `num_classes` (0: identity)."""
        self.num_classes = num_classes
        self.classifier = (
            nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        )


class FeatureExtractor(nn.Module):
    """Wrap a model so that calling it returns its multi-scale feature maps."""

    def __init__(self, model: ImageClassifier) -> None:
        super().__init__()
        self.model = model
        self.feature_info = list(model.feature_info)

    def forward(self, x: Tensor) -> list[Tensor]:
        self.model.check_input(x)
        return self.model.forward_intermediates(x)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def init_weights_he(module: nn.Module) -> None:
    """Kaiming-normal convolutions and zero biases, as He et al. 2015 initialise."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
