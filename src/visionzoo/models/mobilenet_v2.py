"""MobileNetV2: Inverted Residuals and Linear Bottlenecks.

Mark Sandler, Andrew Howard, Menglong Zhu, Andrey Zhmoginov, Liang-Chieh Chen. CVPR 2018.
arXiv:1801.04381. https://arxiv.org/abs/1801.04381

Key idea: turn the residual block inside out. Shortcuts connect thin bottlenecks; each
block expands them t-fold with a 1x1 convolution, filters with a cheap 3x3 depthwise
convolution, and projects back with a *linear* 1x1 convolution, because a ReLU in a
low-dimensional space destroys information.

Layout (Table 2, 224x224 input): 3x3/2 conv (32 ch) -> 17 inverted residuals in 7 rows
(t, c, n, s) -> 1x1 conv to 1280 -> global average pooling -> dropout -> 1000-way linear.
Stage shapes: 112 (16 ch), 56 (24), 28 (32), 14 (64, 96), 7 (160, 320) px.

NOTE: Channel counts scaled by the width multiplier are rounded to multiples of 8
(`make_divisible`), as the reference TensorFlow and torchvision code do; the paper just
multiplies. At width 1.0 nothing changes.
NOTE: `small_input=True` (28x28, 32x32 images) makes the stem and the first stride-2 row
(24 channels) stride 1: total stride 8 instead of 32, a 4x4 final map for 32x32 inputs.
The weights and the parameter count are unchanged. The paper has no such mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter, rename_keys
from visionzoo.layers.conv_norm_act import ConvNormAct
from visionzoo.layers.helpers import make_divisible
from visionzoo.layers.inverted_residual import InvertedResidual
from visionzoo.models.base import FeatureInfo, ImageClassifier, init_weights_he
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="MobileNet",
    year=2018,
    paper="MobileNetV2: Inverted Residuals and Linear Bottlenecks",
    url="https://arxiv.org/abs/1801.04381",
    authors="Mark Sandler, Andrew Howard, Menglong Zhu, Andrey Zhmoginov, Liang-Chieh Chen",
)


@dataclass(frozen=True)
class BottleneckRow:
    """One row of the paper's Table 2: `repeats` inverted residuals, the first strided."""

    expand_ratio: int  # t: expansion factor of the 1x1 convolution
    out_channels: int  # c
    repeats: int  # n
    stride: int  # s, of the first block of the row


TABLE_2 = (
    BottleneckRow(1, 16, 1, 1),
    BottleneckRow(6, 24, 2, 2),
    BottleneckRow(6, 32, 3, 2),
    BottleneckRow(6, 64, 4, 2),
    BottleneckRow(6, 96, 3, 1),
    BottleneckRow(6, 160, 3, 2),
    BottleneckRow(6, 320, 1, 1),
)


class MobileNetV2(ImageClassifier):
    """stem 3x3/2 -> one stage of inverted residuals per Table 2 row -> 1x1 conv -> pool -> FC."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        width_multiplier: float = 1.0,  # alpha of the paper (Section 6.1)
        dropout: float = 0.2,  # before the classifier (torchvision's value)
        small_input: bool = False,
        rows: tuple[BottleneckRow, ...] = TABLE_2,
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.small_input, self.supports_small_input = small_input, True
        stem_width = make_divisible(32 * width_multiplier)
        stride = 1 if small_input else 2
        self.stem = ConvNormAct(in_channels, stem_width, 3, stride, act_layer=nn.ReLU6)
        self.feature_info = [FeatureInfo("stem", stem_width, stride)]
        stages, channels, first_downsample = [], stem_width, small_input
        for i, row in enumerate(rows):
            s = row.stride
            if s == 2 and first_downsample:  # small_input: keep the first stride-2 row at 1
                s, first_downsample = 1, False
            out = make_divisible(row.out_channels * width_multiplier)
            blocks = []
            for j in range(row.repeats):
                hidden = int(round(channels * row.expand_ratio))
                blocks.append(InvertedResidual(channels, hidden, out, 3, s if j == 0 else 1))
                channels = out
            stride *= s
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(f"stages.{i}", channels, stride))
        self.stages = nn.Sequential(*stages)
        self.min_image_size = stride  # the last stage sees at least one full-stride cell
        self.num_features = make_divisible(1280 * max(1.0, width_multiplier))
        self.conv_head = ConvNormAct(channels, self.num_features, 1, act_layer=nn.ReLU6)
        self.dropout = nn.Dropout(dropout)
        self.classifier = (
            nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        )
        init_weights_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.conv_head(self.stages(self.stem(x)))  # (B, 1280, H/32, W/32)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(x.mean((2, 3)))  # global average pooling: (B, C, h, w) -> (B, C)
        return x if pre_logits else self.classifier(x)


def block_prefixes(expand: bool) -> list[tuple[str, str]]:
    """torchvision's InvertedResidual children -> ours (expand and dw are ConvBNAct, the
    projection a bare conv and BN)."""
    tv = ["0.0", "0.1", "1.0", "1.1", "2", "3"] if expand else ["0.0", "0.1", "1", "2"]
    ours = ["expand.conv", "expand.norm"] if expand else []
    return list(zip(tv, ours + ["dw.conv", "dw.norm", "project.conv", "project.norm"]))


@register_converter("torchvision", "mobilenet_v2")
def _from_torchvision(state_dict: StateDict) -> StateDict:
    """torchvision's flat `features.N.conv.K` -> ours `stages.i.j.{expand,dw,project}`."""
    rules, k = [(r"^features\.0\.0\.", "stem.conv."), (r"^features\.0\.1\.", "stem.norm.")], 1
    for i, row in enumerate(TABLE_2):
        for j in range(row.repeats):
            for tv, ours in block_prefixes(row.expand_ratio != 1):
                rules.append(
                    (rf"^features\.{k}\.conv\.{re.escape(tv)}\.", f"stages.{i}.{j}.{ours}.")
                )
            k += 1
    rules += [
        (rf"^features\.{k}\.0\.", "conv_head.conv."),
        (rf"^features\.{k}\.1\.", "conv_head.norm."),
        (r"^classifier\.1\.", "classifier."),
    ]
    return rename_keys(state_dict, rules)


_SMALL = "stride-1 stem and first stride-2 row (24 ch) at stride 1: total stride 8, not 32"


@register_model(
    FAMILY,
    params=3_504_872,
    params_source="torchvision 0.29.1",
    image_size=224,
    min_image_size=32,  # the total stride: the last stage sees one full-stride cell
    small_input=_SMALL,
    torchvision="mobilenet_v2",
)
def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNetV2 1.0 (Table 2, width multiplier 1.0, 224x224)."""
    return MobileNetV2(width_multiplier=1.0, **kwargs)
