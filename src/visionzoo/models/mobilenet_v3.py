"""MobileNetV3: Searching for MobileNetV3.

Andrew Howard, Mark Sandler, Grace Chu, Liang-Chieh Chen, Bo Chen, Mingxing Tan, Weijun
Wang, Yukun Zhu, Ruoming Pang, Vijay Vasudevan, Quoc V. Le, Hartwig Adam. ICCV 2019.
arXiv:1905.02244. https://arxiv.org/abs/1905.02244

Key idea: let platform-aware architecture search (MnasNet + NetAdapt) pick the blocks, then
hand-tune the ends. The "bneck" is MobileNetV2's inverted residual plus squeeze-and-excite
(gated by a hard sigmoid) in some blocks, and hard-swish x * relu6(x + 3) / 6 in the deep
half; the costly last stage is slimmed by pooling before the final 1x1 layers.

Layout: 3x3/2 conv (16 ch, hard-swish) -> the bneck rows of Table 1 (Large, 15 rows) or
Table 2 (Small, 11 rows) -> 1x1 conv (960 / 576 ch) -> global average pooling -> linear
to 1280 / 1024 (hard-swish, dropout) -> 1000-way linear. Here the rows are grouped into
stages at each stride-2 row, so each stage is one resolution (feature_info).

NOTE: BatchNorm uses eps=1e-3 and momentum 0.01 (TensorFlow's 0.99 decay), as the
reference TensorFlow code and torchvision do; PyTorch's default is eps=1e-5, momentum 0.1.
NOTE: The SE bottleneck width is make_divisible(expanded / 4, 8) and its gate is
hard-sigmoid relu6(x + 3) / 6, as in the reference code and torchvision.
NOTE: `small_input=True` (28x28, 32x32 images) makes the stem and the first stride-2 bneck
stride 1: total stride 8 instead of 32. Weights and parameter count are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter, rename_keys
from visionzoo.layers.conv_norm_act import ConvNormAct
from visionzoo.layers.helpers import make_divisible
from visionzoo.layers.inverted_residual import InvertedResidual, torchvision_block_rules
from visionzoo.layers.squeeze_excite import SqueezeExcite
from visionzoo.models.base import FeatureInfo, ImageClassifier, init_weights_he
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="MobileNet",
    year=2019,
    paper="Searching for MobileNetV3",
    url="https://arxiv.org/abs/1905.02244",
    authors="Andrew Howard, Mark Sandler, Grace Chu, Liang-Chieh Chen, Bo Chen, Mingxing Tan, "
    "Weijun Wang, Yukun Zhu, Ruoming Pang, Vijay Vasudevan, Quoc V. Le, Hartwig Adam",
)

BatchNorm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)


@dataclass(frozen=True)
class BneckRow:
    """One row of Table 1 / Table 2: a single bneck block."""

    kernel: int  # depthwise kernel size
    expanded: int  # "exp size": width of the expansion
    out_channels: int  # "#out"
    se: bool  # squeeze-and-excite after the depthwise convolution
    act: str  # "NL": "RE" (ReLU) or "HS" (hard-swish)
    stride: int  # "s"


TABLE_1_LARGE = (
    BneckRow(3, 16, 16, False, "RE", 1),
    BneckRow(3, 64, 24, False, "RE", 2),
    BneckRow(3, 72, 24, False, "RE", 1),
    BneckRow(5, 72, 40, True, "RE", 2),
    BneckRow(5, 120, 40, True, "RE", 1),
    BneckRow(5, 120, 40, True, "RE", 1),
    BneckRow(3, 240, 80, False, "HS", 2),
    BneckRow(3, 200, 80, False, "HS", 1),
    BneckRow(3, 184, 80, False, "HS", 1),
    BneckRow(3, 184, 80, False, "HS", 1),
    BneckRow(3, 480, 112, True, "HS", 1),
    BneckRow(3, 672, 112, True, "HS", 1),
    BneckRow(5, 672, 160, True, "HS", 2),
    BneckRow(5, 960, 160, True, "HS", 1),
    BneckRow(5, 960, 160, True, "HS", 1),
)
TABLE_2_SMALL = (
    BneckRow(3, 16, 16, True, "RE", 2),
    BneckRow(3, 72, 24, False, "RE", 2),
    BneckRow(3, 88, 24, False, "RE", 1),
    BneckRow(5, 96, 40, True, "HS", 2),
    BneckRow(5, 240, 40, True, "HS", 1),
    BneckRow(5, 240, 40, True, "HS", 1),
    BneckRow(5, 120, 48, True, "HS", 1),
    BneckRow(5, 144, 48, True, "HS", 1),
    BneckRow(5, 288, 96, True, "HS", 2),
    BneckRow(5, 576, 96, True, "HS", 1),
    BneckRow(5, 576, 96, True, "HS", 1),
)


def group_stages(rows: tuple[BneckRow, ...]) -> list[list[int]]:
    """Row indices grouped into stages: a new stage starts at every stride-2 row."""
    stages: list[list[int]] = []
    for i, row in enumerate(rows):
        if not stages or row.stride == 2:
            stages.append([])
        stages[-1].append(i)
    return stages


class MobileNetV3(ImageClassifier):
    """stem -> bneck stages -> 1x1 conv -> pool -> linear + hard-swish -> linear."""

    def __init__(
        self,
        rows: tuple[BneckRow, ...],
        last_channels: int,  # width of the linear layer after pooling (1280 / 1024)
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        dropout: float = 0.2,  # after the hidden linear layer
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.small_input, self.supports_small_input = small_input, True
        stride = 1 if small_input else 2
        self.stem = ConvNormAct(
            in_channels, 16, 3, stride, norm_layer=BatchNorm, act_layer=nn.Hardswish
        )
        self.feature_info = [FeatureInfo("stem", 16, stride)]
        stages, channels, first_downsample = [], 16, small_input
        for i, indices in enumerate(group_stages(rows)):
            blocks = []
            for row in (rows[k] for k in indices):
                s = row.stride
                if s == 2 and first_downsample:  # small_input: the first stride-2 bneck at 1
                    s, first_downsample = 1, False
                blocks.append(self._bneck(channels, row, s))
                channels, stride = row.out_channels, stride * s
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(f"stages.{i}", channels, stride))
        self.stages = nn.Sequential(*stages)
        self.min_image_size = stride  # the last stage sees at least one full-stride cell
        head_channels = 6 * channels  # 960 / 576
        self.conv_head = ConvNormAct(
            channels, head_channels, 1, norm_layer=BatchNorm, act_layer=nn.Hardswish
        )
        self.head_fc = nn.Linear(head_channels, last_channels)
        self.head_act = nn.Hardswish()
        self.dropout = nn.Dropout(dropout)
        self.num_features = last_channels
        self.classifier = nn.Linear(last_channels, num_classes) if num_classes else nn.Identity()
        init_weights_he(self)

    @staticmethod
    def _bneck(in_channels: int, row: BneckRow, stride: int) -> InvertedResidual:
        se = None
        if row.se:
            squeeze = make_divisible(row.expanded // 4, 8)
            se = SqueezeExcite(row.expanded, squeeze, nn.ReLU, gate_layer=nn.Hardsigmoid)
        act = nn.Hardswish if row.act == "HS" else nn.ReLU
        return InvertedResidual(
            in_channels, row.expanded, row.out_channels, row.kernel, stride, act, BatchNorm, se
        )

    def forward_features(self, x: Tensor) -> Tensor:
        return self.conv_head(self.stages(self.stem(x)))  # (B, 960, H/32, W/32) for Large

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean((2, 3))  # global average pooling: (B, C, h, w) -> (B, C)
        x = self.dropout(self.head_act(self.head_fc(x)))
        return x if pre_logits else self.classifier(x)


def torchvision_converter(rows: tuple[BneckRow, ...]):
    """A converter from torchvision's flat `features.N.block.K` to ours for one table."""

    def convert(state_dict: StateDict) -> StateDict:
        rules = [(r"^features\.0\.0\.", "stem.conv."), (r"^features\.0\.1\.", "stem.norm.")]
        for i, indices in enumerate(group_stages(rows)):
            for j, k in enumerate(indices):
                row, prefix = rows[k], f"stages.{i}.{j}"
                has_expand = row.expanded != (rows[k - 1].out_channels if k else 16)
                names = ["expand"] * has_expand + ["dw"] + ["se"] * row.se + ["project"]
                rules += torchvision_block_rules(rf"^features\.{k + 1}\.block\.", prefix, names)
        last = len(rows) + 1
        rules += [
            (rf"^features\.{last}\.0\.", "conv_head.conv."),
            (rf"^features\.{last}\.1\.", "conv_head.norm."),
            (r"^classifier\.0\.", "head_fc."),
            (r"^classifier\.3\.", "classifier."),
        ]
        return rename_keys(state_dict, rules)

    return convert


register_converter("torchvision", "mobilenet_v3_large")(torchvision_converter(TABLE_1_LARGE))
register_converter("torchvision", "mobilenet_v3_small")(torchvision_converter(TABLE_2_SMALL))

_SMALL = "stride-1 stem and first stride-2 bneck at stride 1: total stride 8, not 32"
_COMMON = dict(image_size=224, min_image_size=32, small_input=_SMALL)


@register_model(
    FAMILY,
    params=5_483_032,
    params_source="torchvision 0.29.1",
    torchvision="mobilenet_v3_large",
    **_COMMON,
)
def mobilenet_v3_large(**kwargs) -> MobileNetV3:
    """MobileNetV3-Large 1.0 (Table 1)."""
    return MobileNetV3(TABLE_1_LARGE, last_channels=1280, **kwargs)


@register_model(
    FAMILY,
    params=2_542_856,
    params_source="torchvision 0.29.1",
    torchvision="mobilenet_v3_small",
    **_COMMON,
)
def mobilenet_v3_small(**kwargs) -> MobileNetV3:
    """MobileNetV3-Small 1.0 (Table 2)."""
    return MobileNetV3(TABLE_2_SMALL, last_channels=1024, **kwargs)
