"""VGG: Very Deep Convolutional Networks for Large-Scale Image Recognition.

Karen Simonyan, Andrew Zisserman. ICLR 2015. https://arxiv.org/abs/1409.1556

Key idea: depth matters, and small filters buy it cheaply. Only 3x3 convolutions (stride 1,
padding 1) and 2x2 max-pooling, in five stages whose width doubles from 64 to 512; a stack
of two 3x3 layers sees as far as one 5x5 with fewer parameters and one more non-linearity.
Configurations A, B, D, E have 11, 13, 16 and 19 weight layers (Table 1).

The `_bn` twins put batch normalization (Ioffe & Szegedy 2015) after every convolution;
they are torchvision's, not the paper's. Parameter counts equal torchvision's to the unit.

NOTE: The paper's fixed 224x224 crop gives a 7x7 map before fc6; we pool adaptively to 7x7
(as torchvision does), so other input sizes work. The paper's test-time trick of turning the
fully connected layers into convolutions (dense evaluation) is not implemented.
NOTE: Configurations A-LRN (A with local response normalization) and C (1x1 convolutions in
the last three stages) of Table 1 are not built; torchvision has neither.
NOTE: The convolutions keep their bias in the `_bn` twins, as torchvision's do, although the
batch normalization that follows makes it redundant.
NOTE: The paper initializes the deeper nets from the trained A; we initialize every
configuration from scratch (He et al. for convolutions, N(0, 0.01) for linear layers), as
the paper's footnote says works equally well with Glorot initialization.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter
from visionzoo.layers import ConvNormAct
from visionzoo.models.base import FeatureInfo, ImageClassifier, init_weights_he
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="VGG",
    year=2014,
    paper="Very Deep Convolutional Networks for Large-Scale Image Recognition",
    url="https://arxiv.org/abs/1409.1556",
    authors="Karen Simonyan, Andrew Zisserman",
)


@dataclass(frozen=True)
class VGGStage:
    """One row group of Table 1: `conv3-<width>` layers, then a 2x2 max-pool."""

    width: int  # output channels of every 3x3 convolution in the stage
    depths: tuple[int, int, int, int]  # how many 3x3 layers in configurations A, B, D, E


# Table 1 of the paper, one row per stage; columns are configurations A, B, D, E.
STAGES = (
    VGGStage(64, (1, 2, 2, 2)),
    VGGStage(128, (1, 2, 2, 2)),
    VGGStage(256, (2, 2, 3, 4)),
    VGGStage(512, (2, 2, 3, 4)),
    VGGStage(512, (2, 2, 3, 4)),
)
CONFIGS = ("A", "B", "D", "E")


def stage_depths(config: str) -> list[int]:
    column = CONFIGS.index(config)
    return [stage.depths[column] for stage in STAGES]


class VGG(ImageClassifier):
    """Five stages of 3x3 convolutions and max-pooling -> fc6 -> fc7 -> fc8."""

    supports_small_input = True

    def __init__(
        self,
        config: str = "D",  # a column of Table 1: "A", "B", "D" or "E"
        batch_norm: bool = False,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        dropout: float = 0.5,  # after fc6 and fc7 (Section 3.1)
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.small_input = in_channels, image_size, small_input
        norm = nn.BatchNorm2d if batch_norm else None
        stages, stride, self.feature_info = [], 1, []
        for i, (stage, depth) in enumerate(zip(STAGES, stage_depths(config))):
            layers: list[nn.Module] = []
            for _ in range(depth):
                layers.append(ConvNormAct(in_channels, stage.width, 3, bias=True, norm_layer=norm))
                in_channels = stage.width
            if not (small_input and i == len(STAGES) - 1):  # small inputs keep the last map
                layers.append(nn.MaxPool2d(2, 2))
                stride *= 2
            stages.append(nn.Sequential(*layers))
            self.feature_info.append(FeatureInfo(f"stages.{i}", stage.width, stride))
        self.stages = nn.Sequential(*stages)
        self.min_image_size = stride
        self.pooled_size = 1 if small_input else 7
        self.fc6 = self._fc(in_channels * self.pooled_size**2, 4096, dropout)
        self.fc7 = self._fc(4096, 4096, dropout)
        self.num_features, self.num_classes = 4096, num_classes
        self.classifier = nn.Linear(4096, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    @staticmethod
    def _fc(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
        layers = [("fc", nn.Linear(in_features, out_features)), ("act", nn.ReLU(inplace=True))]
        return nn.Sequential(OrderedDict(layers + [("drop", nn.Dropout(dropout))]))

    @torch.no_grad()
    def _init_weights(self) -> None:
        init_weights_he(self)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(x)  # (B, 512, 7, 7) at 224

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = F.adaptive_avg_pool2d(x, self.pooled_size).flatten(1)  # (B, 512, 7, 7) -> (B, 25088)
        x = self.fc7(self.fc6(x))
        return x if pre_logits else self.classifier(x)


_SMALL = (
    "no max-pool after the fifth stage (total stride 16, so 28x28 fits); "
    "fc6 reads globally pooled features (512 instead of 512x7x7)"
)


_COMMON = dict(params_source="torchvision 0.29.1 (VGG weights meta)", small_input=_SMALL,
               min_image_size=32)  # fmt: skip


@register_model(FAMILY, params=132_863_336, torchvision="vgg11", **_COMMON)
def vgg11(**kwargs) -> VGG:
    """Configuration A: 11 weight layers."""
    return VGG("A", batch_norm=False, **kwargs)


@register_model(FAMILY, params=132_868_840, torchvision="vgg11_bn", **_COMMON)
def vgg11_bn(**kwargs) -> VGG:
    """Configuration A with batch normalization after every convolution."""
    return VGG("A", batch_norm=True, **kwargs)


@register_model(FAMILY, params=133_047_848, torchvision="vgg13", **_COMMON)
def vgg13(**kwargs) -> VGG:
    """Configuration B: 13 weight layers."""
    return VGG("B", batch_norm=False, **kwargs)


@register_model(FAMILY, params=133_053_736, torchvision="vgg13_bn", **_COMMON)
def vgg13_bn(**kwargs) -> VGG:
    """Configuration B with batch normalization after every convolution."""
    return VGG("B", batch_norm=True, **kwargs)


@register_model(FAMILY, params=138_357_544, torchvision="vgg16", **_COMMON)
def vgg16(**kwargs) -> VGG:
    """Configuration D: 16 weight layers."""
    return VGG("D", batch_norm=False, **kwargs)


@register_model(FAMILY, params=138_365_992, torchvision="vgg16_bn", **_COMMON)
def vgg16_bn(**kwargs) -> VGG:
    """Configuration D with batch normalization after every convolution."""
    return VGG("D", batch_norm=True, **kwargs)


@register_model(FAMILY, params=143_667_240, torchvision="vgg19", **_COMMON)
def vgg19(**kwargs) -> VGG:
    """Configuration E: 19 weight layers."""
    return VGG("E", batch_norm=False, **kwargs)


@register_model(FAMILY, params=143_678_248, torchvision="vgg19_bn", **_COMMON)
def vgg19_bn(**kwargs) -> VGG:
    """Configuration E with batch normalization after every convolution."""
    return VGG("E", batch_norm=True, **kwargs)


@register_converter("torchvision", "vgg*")
def _from_torchvision(state_dict: StateDict) -> StateDict:
    """torchvision numbers every conv, BN, ReLU and pool in one `features` Sequential.

    The configuration is read from the state dict itself (8, 10, 13 or 16 convolutions), so a
    state dict of another configuration converts to its own keys and is then refused.
    """
    convs = sorted({int(k.split(".")[1]) for k, v in state_dict.items()
                    if k.startswith("features.") and v.dim() == 4})  # fmt: skip
    batch_norm = any(k.endswith("running_mean") for k in state_dict)
    totals = {sum(stage_depths(c)): c for c in CONFIGS}
    if len(convs) not in totals:
        return dict(state_dict)  # not a VGG: check_state_dict names the mismatches
    depths = stage_depths(totals[len(convs)])
    mapping, index = {}, 0
    for s, depth in enumerate(depths):
        for j in range(depth):
            mapping[f"features.{index}."] = f"stages.{s}.{j}.conv."
            if batch_norm:
                mapping[f"features.{index + 1}."] = f"stages.{s}.{j}.norm."
            index += 3 if batch_norm else 2  # conv, (bn), relu
        index += 1  # max-pool
    mapping.update(
        {"classifier.0.": "fc6.fc.", "classifier.3.": "fc7.fc.", "classifier.6.": "classifier."}
    )
    out = {}
    for key, value in state_dict.items():
        prefix = key[: key.rindex(".") + 1]
        out[mapping.get(prefix, prefix) + key[len(prefix) :]] = value
    return out
