"""EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks.

Mingxing Tan, Quoc V. Le. ICML 2019. arXiv:1905.11946. https://arxiv.org/abs/1905.11946

Key idea: scale depth, width and resolution together with one compound coefficient phi:
depth d = alpha^phi, width w = beta^phi, resolution r = gamma^phi, with alpha = 1.2,
beta = 1.1, gamma = 1.15 found by a small grid search on B0 under alpha * beta^2 * gamma^2
~ 2, so that FLOPS grow by about 2^phi. B0 itself is a searched MBConv network.

B0 (Table 1, 224x224): 3x3/2 conv (32 ch) -> seven stages of MBConv blocks (one
`MBConvRow` per row of the table) -> 1x1 conv to 1280 -> pooling -> dropout -> FC. B1-B7
scale each row: channels by `make_divisible(c * w)`, repeats by `ceil(n * d)`, input size
r. The published multipliers (w, d, r, dropout), from the reference code, are rounded
readings of the rule; the phi each one implies (log w / log beta, log d / log alpha,
log(r / 224) / log gamma):

    variant  w    d    r    dropout  phi(w) phi(d) phi(r)
    B1       1.0  1.1  240  0.2      0.0    0.52   0.49
    B2       1.1  1.2  260  0.3      1.0    1.0    1.07
    B3       1.2  1.4  300  0.3      1.91   1.85   2.09
    B4       1.4  1.8  380  0.4      3.53   3.22   3.78
    B5       1.6  2.2  456  0.4      4.93   4.32   5.09
    B6       1.8  2.6  528  0.5      6.17   5.24   6.14
    B7       2.0  3.1  600  0.5      7.27   6.21   7.05

`compound_scaling(phi)` gives the exact rule; the registered variants use the published
multipliers, which fix the architectures (and torchvision's parameter counts).

NOTE: BatchNorm follows torchvision per variant so its weights port exactly: B0-B4 use
PyTorch's default (eps 1e-5, momentum 0.1), B5-B7 the reference TensorFlow setting (eps
1e-3, momentum 0.01, i.e. decay 0.99), which the paper's code uses for every variant.
NOTE: Stochastic depth (`drop_path_rate`, 0.2 by default) drops block i of N with
probability rate * i / N, the reference code's rule, and only in blocks with a shortcut.
NOTE: The SE bottleneck is a quarter of the block's *input* channels (se_ratio 0.25), as in
the reference code; the swish activation is SiLU, x * sigmoid(x).
NOTE: `small_input=True` (28x28, 32x32 images) makes the stem and the first MBConv6 stage
(24 ch) stride 1: total stride 8 instead of 32. Weights and parameter count are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter, rename_keys
from visionzoo.layers.conv_norm_act import ConvNormAct
from visionzoo.layers.helpers import make_divisible, round_repeats
from visionzoo.layers.inverted_residual import InvertedResidual, torchvision_block_rules
from visionzoo.layers.squeeze_excite import SqueezeExcite
from visionzoo.models.base import FeatureInfo, ImageClassifier, init_weights_he
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="EfficientNet",
    year=2019,
    paper="EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
    url="https://arxiv.org/abs/1905.11946",
    authors="Mingxing Tan, Quoc V. Le",
)

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases (Section 4)


@dataclass(frozen=True)
class MBConvRow:
    """One MBConv row (stage) of Table 1."""

    expand_ratio: int  # the "6" of MBConv6
    kernel: int  # depthwise kernel size (k3x3 or k5x5)
    stride: int  # of the first block: 2 where the next row's resolution halves
    out_channels: int  # "#Channels"
    repeats: int  # "#Layers"


STEM_CHANNELS, HEAD_CHANNELS = 32, 1280  # Table 1 stages 1 and 9
TABLE_1_B0 = (
    MBConvRow(1, 3, 1, 16, 1),  # stage 2, 112x112
    MBConvRow(6, 3, 2, 24, 2),  # stage 3, 112x112 -> 56x56
    MBConvRow(6, 5, 2, 40, 2),  # stage 4, 56x56 -> 28x28
    MBConvRow(6, 3, 2, 80, 3),  # stage 5, 28x28 -> 14x14
    MBConvRow(6, 5, 1, 112, 3),  # stage 6, 14x14
    MBConvRow(6, 5, 2, 192, 4),  # stage 7, 14x14 -> 7x7
    MBConvRow(6, 3, 1, 320, 1),  # stage 8, 7x7
)


@dataclass(frozen=True)
class Scaling:
    """The multipliers of one variant."""

    width: float  # w: channel multiplier
    depth: float  # d: repeats multiplier
    resolution: int  # r * 224: input size
    dropout: float  # before the classifier


def compound_scaling(phi: float) -> Scaling:
    """The rule of Eq. 3: d = alpha^phi, w = beta^phi, r = gamma^phi (dropout not scaled)."""
    return Scaling(BETA**phi, ALPHA**phi, round(224 * GAMMA**phi), 0.2)


def scale_rows(rows: tuple[MBConvRow, ...], width: float, depth: float) -> list[MBConvRow]:
    """Width by make_divisible(c * w, 8), depth by ceil(n * d), row by row."""
    return [
        replace(
            r,
            out_channels=make_divisible(r.out_channels * width),
            repeats=round_repeats(r.repeats, depth),
        )
        for r in rows
    ]


class MBConv(InvertedResidual):
    """Mobile inverted bottleneck (MnasNet): 1x1 expand -> kxk depthwise -> SE -> 1x1 linear
    projection, swish activations, stochastic depth on the residual branch."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
        drop_prob: float,
        norm_layer: Callable[[int], nn.Module],
    ) -> None:
        expanded = make_divisible(in_channels * expand_ratio)
        se = SqueezeExcite(expanded, max(1, in_channels // 4), nn.SiLU)
        super().__init__(
            in_channels,
            expanded,
            out_channels,
            kernel_size,
            stride,
            nn.SiLU,
            norm_layer,
            se,
            drop_prob,
        )


class EfficientNet(ImageClassifier):
    """stem 3x3/2 -> one stage of MBConv blocks per (scaled) row -> 1x1 conv -> pool -> FC."""

    def __init__(
        self,
        scaling: Scaling,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int | None = None,  # default: the variant's resolution
        drop_path_rate: float = 0.2,  # stochastic depth of the last block
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        small_input: bool = False,
        rows: tuple[MBConvRow, ...] = TABLE_1_B0,
    ) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.image_size = image_size or scaling.resolution
        self.small_input, self.supports_small_input = small_input, True
        norm = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        stem = make_divisible(STEM_CHANNELS * scaling.width)
        stride = 1 if small_input else 2
        self.stem = ConvNormAct(in_channels, stem, 3, stride, norm_layer=norm, act_layer=nn.SiLU)
        self.feature_info = [FeatureInfo("stem", stem, stride)]
        scaled = scale_rows(rows, scaling.width, scaling.depth)
        total, index, channels, first_downsample = (
            sum(r.repeats for r in scaled),
            0,
            stem,
            small_input,
        )
        stages = []
        for i, row in enumerate(scaled):
            s = row.stride
            if s == 2 and first_downsample:  # small_input: keep the first stride-2 row at 1
                s, first_downsample = 1, False
            blocks = []
            for j in range(row.repeats):
                drop_prob = drop_path_rate * index / total
                blocks.append(
                    MBConv(
                        channels,
                        row.out_channels,
                        row.expand_ratio,
                        row.kernel,
                        s if j == 0 else 1,
                        drop_prob,
                        norm,
                    )
                )
                channels, index = row.out_channels, index + 1
            stride *= s
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(f"stages.{i}", channels, stride))
        self.stages = nn.Sequential(*stages)
        self.min_image_size = stride  # the last stage sees at least one full-stride cell
        self.num_features = make_divisible(HEAD_CHANNELS * scaling.width)
        self.conv_head = ConvNormAct(
            channels, self.num_features, 1, norm_layer=norm, act_layer=nn.SiLU
        )
        self.dropout = nn.Dropout(scaling.dropout)
        self.classifier = (
            nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        )
        init_weights_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.conv_head(self.stages(self.stem(x)))  # (B, 1280 w, H/32, W/32)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(x.mean((2, 3)))  # global average pooling: (B, C, h, w) -> (B, C)
        return x if pre_logits else self.classifier(x)


@register_converter("torchvision", "efficientnet_b*")
def _from_torchvision(state_dict: StateDict) -> StateDict:
    """torchvision's `features.S.J.block.K` -> ours `stages.S-1.J.{expand,dw,se,project}`."""
    rules = [(r"^features\.0\.0\.", "stem.conv."), (r"^features\.0\.1\.", "stem.norm.")]
    for i, row in enumerate(TABLE_1_B0):
        names = ["expand"] * (row.expand_ratio != 1) + ["dw", "se", "project"]
        tv_block = rf"^features\.{i + 1}\.(\d+)\.block\."
        rules += torchvision_block_rules(tv_block, rf"stages.{i}.\1", names)
    last = len(TABLE_1_B0) + 1
    rules += [
        (rf"^features\.{last}\.0\.", "conv_head.conv."),
        (rf"^features\.{last}\.1\.", "conv_head.norm."),
        (r"^classifier\.1\.", "classifier."),
    ]
    return rename_keys(state_dict, rules)


VARIANTS = {  # published (w, d, r, dropout) of the reference code
    "b0": Scaling(1.0, 1.0, 224, 0.2),
    "b1": Scaling(1.0, 1.1, 240, 0.2),
    "b2": Scaling(1.1, 1.2, 260, 0.3),
    "b3": Scaling(1.2, 1.4, 300, 0.3),
    "b4": Scaling(1.4, 1.8, 380, 0.4),
    "b5": Scaling(1.6, 2.2, 456, 0.4),
    "b6": Scaling(1.8, 2.6, 528, 0.5),
    "b7": Scaling(2.0, 3.1, 600, 0.5),
}
# torchvision's B5-B7 (and the paper's code) use TensorFlow's BatchNorm settings
_tf_bn = partial(EfficientNet, bn_eps=1e-3, bn_momentum=0.01)
_SMALL = "stride-1 stem and first MBConv6 stage (24 ch) at stride 1: total stride 8, not 32"


def _register(variant: str, params: int):
    scaling = VARIANTS[variant]
    return register_model(
        FAMILY,
        params=params,
        params_source="torchvision 0.29.1",
        image_size=scaling.resolution,
        min_image_size=32,  # the total stride: the last stage sees one full-stride cell
        small_input=_SMALL,
        torchvision=f"efficientnet_{variant}",
    )


@_register("b0", 5_288_548)
def efficientnet_b0(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b0"], **kwargs)


@_register("b1", 7_794_184)
def efficientnet_b1(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b1"], **kwargs)


@_register("b2", 9_109_994)
def efficientnet_b2(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b2"], **kwargs)


@_register("b3", 12_233_232)
def efficientnet_b3(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b3"], **kwargs)


@_register("b4", 19_341_616)
def efficientnet_b4(**kwargs) -> EfficientNet:
    return EfficientNet(VARIANTS["b4"], **kwargs)


@_register("b5", 30_389_784)
def efficientnet_b5(**kwargs) -> EfficientNet:
    return _tf_bn(VARIANTS["b5"], **kwargs)


@_register("b6", 43_040_704)
def efficientnet_b6(**kwargs) -> EfficientNet:
    return _tf_bn(VARIANTS["b6"], **kwargs)


@_register("b7", 66_347_960)
def efficientnet_b7(**kwargs) -> EfficientNet:
    return _tf_bn(VARIANTS["b7"], **kwargs)


assert math.isclose(ALPHA * BETA**2 * GAMMA**2, 2.0, rel_tol=0.05)  # the FLOPS constraint
