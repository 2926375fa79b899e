"""MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications.

Andrew G. Howard, Menglong Zhu, Bo Chen, Dmitry Kalenichenko, Weijun Wang, Tobias Weyand,
Marco Andreetto, Hartwig Adam. 2017. arXiv:1704.04861. https://arxiv.org/abs/1704.04861

Key idea: factor each standard convolution into a 3x3 depthwise convolution (one filter per
channel) and a 1x1 pointwise convolution that mixes channels: about 1/N + 1/9 of the cost.
Two global knobs trade accuracy for cost: the width multiplier alpha thins every layer
(cost and parameters ~ alpha^2), the resolution multiplier rho shrinks the input (cost ~ rho^2).

Layout (Table 1, 224x224): 3x3/2 conv (32 ch) -> 13 depthwise separable layers -> global
average pooling -> 1000-way linear. Stage shapes: 112 (64 ch), 56 (128), 28 (256), 14 (512,
six layers), 7 (1024) px; 28 layers counting depthwise and pointwise separately.
`width_multiplier` is alpha (variants 1.0, 0.75, 0.5, 0.25) and `resolution_multiplier`
is rho: the model's input size is round(image_size * rho) (rho = 160/224 gives 160x160).
The architecture does not depend on rho, only the input does.

NOTE: Layout and weights follow timm's `mobilenetv1_100`, which is the paper's Table 1,
reading its second-to-last "Conv dw / s2" (on a 7x7 map whose size does not change) as
stride 1, as the reference TensorFlow code does. Layers are grouped into five stages, one
per resolution.
NOTE: ReLU6 min(max(x, 0), 6) instead of the paper's ReLU (Figure 3), as in the reference
TensorFlow code and timm; it is robust in low-precision arithmetic.
NOTE: Channel counts alpha * c are rounded to multiples of 8 (`make_divisible`), as in the
reference code; for alpha in {1, 0.75, 0.5, 0.25} they are exact (all multiples of 8).
NOTE: `small_input=True` (28x28, 32x32 images) makes the stem and the first stride-2
separable layer stride 1: total stride 8 instead of 32. Weights and parameter count are
unchanged. The paper has no such mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter, rename_keys
from visionzoo.layers.conv_norm_act import ConvNormAct
from visionzoo.layers.helpers import make_divisible
from visionzoo.models.base import FeatureInfo, ImageClassifier, init_weights_he
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="MobileNet",
    year=2017,
    paper="MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
    url="https://arxiv.org/abs/1704.04861",
    authors="Andrew G. Howard, Menglong Zhu, Bo Chen, Dmitry Kalenichenko, Weijun Wang, "
    "Tobias Weyand, Marco Andreetto, Hartwig Adam",
)


@dataclass(frozen=True)
class StageRow:
    """Consecutive depthwise separable layers of Table 1 at one resolution."""

    stride: int  # of the first layer's depthwise convolution
    out_channels: int  # of every pointwise convolution in the stage
    repeats: int  # number of separable layers


TABLE_1 = (
    StageRow(1, 64, 1),  # 112x112: dw/s1 + 1x1 32->64
    StageRow(2, 128, 2),  # 56x56
    StageRow(2, 256, 2),  # 28x28
    StageRow(2, 512, 6),  # 14x14: the "5x" block plus its strided entry
    StageRow(2, 1024, 2),  # 7x7
)


class DepthwiseSeparableConv(nn.Module):
    """Figure 3 right: 3x3 depthwise conv -> BN -> ReLU6 -> 1x1 pointwise conv -> BN -> ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.dw = ConvNormAct(
            in_channels, in_channels, 3, stride, groups=in_channels, act_layer=nn.ReLU6
        )
        self.pw = ConvNormAct(in_channels, out_channels, 1, act_layer=nn.ReLU6)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(ImageClassifier):
    """stem 3x3/2 -> five stages of depthwise separable layers -> pool -> FC."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,  # base resolution, scaled by rho
        width_multiplier: float = 1.0,  # alpha
        resolution_multiplier: float = 1.0,  # rho
        dropout: float = 0.0,  # before the classifier (none in timm's model)
        small_input: bool = False,
        rows: tuple[StageRow, ...] = TABLE_1,
    ) -> None:
        super().__init__()
        if width_multiplier <= 0 or resolution_multiplier <= 0:
            raise ValueError("width and resolution multipliers must be positive")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.image_size = round(image_size * resolution_multiplier)
        self.width_multiplier, self.resolution_multiplier = width_multiplier, resolution_multiplier
        self.small_input, self.supports_small_input = small_input, True
        channels = make_divisible(32 * width_multiplier)
        stride = 1 if small_input else 2
        self.stem = ConvNormAct(in_channels, channels, 3, stride, act_layer=nn.ReLU6)
        self.feature_info = [FeatureInfo("stem", channels, stride)]
        stages, first_downsample = [], small_input
        for i, row in enumerate(rows):
            s = row.stride
            if s == 2 and first_downsample:  # small_input: keep the first stride-2 stage at 1
                s, first_downsample = 1, False
            out = make_divisible(row.out_channels * width_multiplier)
            blocks = []
            for j in range(row.repeats):
                blocks.append(DepthwiseSeparableConv(channels, out, s if j == 0 else 1))
                channels = out
            stride *= s
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(f"stages.{i}", channels, stride))
        self.stages = nn.Sequential(*stages)
        self.min_image_size = stride  # the last stage sees at least one full-stride cell
        self.num_features = channels
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes) if num_classes else nn.Identity()
        init_weights_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))  # (B, 1024 alpha, H/32, W/32)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(x.mean((2, 3)))  # global average pooling: (B, C, h, w) -> (B, C)
        return x if pre_logits else self.classifier(x)


@register_converter("timm", "mobilenet_v1*")
def _from_timm(state_dict: StateDict) -> StateDict:
    """timm's conv_stem/bn1 and blocks.I.J.{conv_dw,bn1,conv_pw,bn2} -> ours."""
    rules = [
        (r"^conv_stem\.", "stem.conv."),
        (r"^bn1\.", "stem.norm."),
        (r"^blocks\.(\d+)\.(\d+)\.conv_dw\.", r"stages.\1.\2.dw.conv."),
        (r"^blocks\.(\d+)\.(\d+)\.bn1\.", r"stages.\1.\2.dw.norm."),
        (r"^blocks\.(\d+)\.(\d+)\.conv_pw\.", r"stages.\1.\2.pw.conv."),
        (r"^blocks\.(\d+)\.(\d+)\.bn2\.", r"stages.\1.\2.pw.norm."),
    ]
    return rename_keys(state_dict, rules)


_SMALL = "stride-1 stem and first stride-2 layer (128 ch) at stride 1: total stride 8, not 32"
_COMMON = dict(image_size=224, min_image_size=32, small_input=_SMALL)
_TIMM = "timm 1.0.31 mobilenetv1_100"
_TIMM_AT = "timm 1.0.31 efficientnet._gen_mobilenet_v1(channel_multiplier={})"


@register_model(FAMILY, params=4_231_976, params_source=_TIMM, timm="mobilenetv1_100", **_COMMON)
def mobilenet_v1(**kwargs) -> MobileNetV1:
    """1.0 MobileNet-224 (Table 1)."""
    return MobileNetV1(width_multiplier=1.0, **kwargs)


@register_model(FAMILY, params=2_585_560, params_source=_TIMM_AT.format(0.75), **_COMMON)
def mobilenet_v1_075(**kwargs) -> MobileNetV1:
    """0.75 MobileNet-224 (Table 6: 2.6M parameters)."""
    return MobileNetV1(width_multiplier=0.75, **kwargs)


@register_model(FAMILY, params=1_331_592, params_source=_TIMM_AT.format(0.5), **_COMMON)
def mobilenet_v1_050(**kwargs) -> MobileNetV1:
    """0.5 MobileNet-224 (Table 6: 1.3M parameters)."""
    return MobileNetV1(width_multiplier=0.5, **kwargs)


@register_model(FAMILY, params=470_072, params_source=_TIMM_AT.format(0.25), **_COMMON)
def mobilenet_v1_025(**kwargs) -> MobileNetV1:
    """0.25 MobileNet-224 (Table 6: 0.5M parameters)."""
    return MobileNetV1(width_multiplier=0.25, **kwargs)
