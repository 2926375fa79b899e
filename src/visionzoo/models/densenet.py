"""DenseNet: Densely Connected Convolutional Networks.

Gao Huang, Zhuang Liu, Laurens van der Maaten, Kilian Q. Weinberger. CVPR 2017.
arXiv:1608.06993. https://arxiv.org/abs/1608.06993

Key idea: inside a dense block every layer receives the concatenation of all earlier
feature maps, x_l = H_l([x_0, x_1, ..., x_{l-1}]), and adds only k ("growth rate") new
maps. Features are reused instead of relearned, so the nets are narrow and
parameter-efficient; transitions (BN-ReLU-1x1 conv-2x2 avg-pool) halve the resolution.

DenseNet-BC adds a 1x1 "bottleneck" (4k maps) before each 3x3 conv (B) and halves the
channels at each transition (C, compression 0.5). The ImageNet nets (`densenet121/161/169
/201`) are DenseNet-BC with a 7x7/2 conv + 3x3/2 max-pool stem and four dense blocks; for
a 224x224 input the blocks run at 56, 28, 14, 7 px. The CIFAR nets use a 3x3 conv stem
(2k maps for BC, 16 otherwise) and three dense blocks at 32, 16, 8 px:
`densenet_bc_100` (L=100, k=12, 16 layers per block): 769,162 parameters (computed; the
paper's 0.8M); `densenet_40` (L=40, k=12, no bottleneck or compression): 1,019,722
(the paper's 1.0M).

NOTE: Convolutions carry no bias (torchvision's choice, and the counts above are without);
the authors' Torch code keeps the default biases, which BatchNorm makes redundant.
NOTE: `dropout` drops the new k maps of each dense layer, as torchvision's `drop_rate`;
the paper (CIFAR without augmentation) also puts dropout after each transition conv.
NOTE: `small_input=True` on the ImageNet nets (for 28x28 and 32x32 images) replaces the
7x7 stride-2 stem by a 3x3 stride-1 conv with the same 2k channels and drops the max-pool:
total stride 8 instead of 32. The paper has no such mode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter
from visionzoo.layers import ConvNormAct
from visionzoo.models.base import FeatureInfo, ImageClassifier
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="DenseNet",
    year=2016,
    paper="Densely Connected Convolutional Networks",
    url="https://arxiv.org/abs/1608.06993",
    authors="Gao Huang, Zhuang Liu, Laurens van der Maaten, Kilian Q. Weinberger",
)


class NormActConv(nn.Sequential):
    """The paper's composite function order: BN -> ReLU -> conv (pre-activation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )


class DenseLayer(nn.Module):
    """H_l: [BN-ReLU-Conv1x1 (bn_size*k maps)] -> BN-ReLU-Conv3x3 (k maps)."""

    def __init__(
        self, in_channels: int, growth_rate: int, bn_size: int | None = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        mid = bn_size * growth_rate if bn_size else in_channels
        self.bottleneck = NormActConv(in_channels, mid, 1) if bn_size else None
        self.composite = NormActConv(mid, growth_rate, 3)
        self.drop = nn.Dropout(dropout)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = torch.cat(features, 1)  # [x_0, ..., x_{l-1}]: (B, C0 + (l-1)k, H, W)
        if self.bottleneck is not None:
            x = self.bottleneck(x)
        return self.drop(self.composite(x))  # (B, k, H, W)


class DenseBlock(nn.Module):
    """`num_layers` DenseLayers; the output concatenates the input and every new map."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, **layer_kwargs)
            for i in range(num_layers)
        )
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv1x1 (compress to theta * m maps) -> 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(ImageClassifier):
    """stem -> (DenseBlock -> Transition) x (n-1) -> DenseBlock -> BN-ReLU -> pool -> linear.

    `bn_size=None` removes the bottleneck (plain DenseNet); `compression=1.0` keeps every
    channel at the transitions. `stem="cifar"` is the paper's 3x3 conv (no BN, no pool).
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        stem_width: int = 64,
        bn_size: int | None = 4,
        compression: float = 0.5,
        dropout: float = 0.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        small_input: bool = False,
        stem: str = "imagenet",
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.supports_small_input = stem == "imagenet"
        self.small_input = small_input or stem == "cifar"
        # Step 1: the stem.
        if stem == "cifar":
            # a plain convolution: BN comes next, in the first dense layer
            self.stem = ConvNormAct(
                in_channels, stem_width, 3, bias=False, norm_layer=None, act_layer=None
            )
        else:
            k, s = (3, 1) if small_input else (7, 2)
            self.stem = ConvNormAct(in_channels, stem_width, k, s)
        self.stem_pool = nn.Identity() if self.small_input else nn.MaxPool2d(3, 2, 1)
        stride = 1 if self.small_input else 2
        self.feature_info = [FeatureInfo("stem", stem_width, stride)]
        stride *= 1 if self.small_input else 2
        # Step 2: dense blocks, with a transition after every block but the last.
        self.blocks, self.transitions = nn.ModuleList(), nn.ModuleList()
        channels = stem_width
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, channels, growth_rate, bn_size=bn_size, dropout=dropout)
            self.blocks.append(block)
            channels = block.out_channels
            self.feature_info.append(FeatureInfo(f"blocks.{i}", channels, stride))
            if i < len(block_config) - 1:
                out = int(channels * compression)
                self.transitions.append(Transition(channels, out))
                channels, stride = out, stride * 2
        # Step 3: the head (the last block's output is normalised once more).
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)
        # Each 2x2 average pool needs a 2x2 input, and batch-1 training needs more than one
        # value per BatchNorm channel: the last block must see at least 2x2 maps.
        self.min_image_size = stride if stem == "imagenet" else 2 * stride
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem_pool(self.stem(x))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        return self.act(self.norm(x))  # (B, C, H/32, W/32)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean((2, 3))  # global average pooling: (B, C, h, w) -> (B, C)
        return x if pre_logits else self.classifier(x)

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Own loop: a transition layer runs between dense blocks, after the block's map."""
        x = self.stem(x)
        out = [x]
        x = self.stem_pool(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            out.append(x)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        return out


_TV_RULES = [
    (r"^features\.conv0\.", "stem.conv."),
    (r"^features\.norm0\.", "stem.norm."),
    (r"^features\.norm5\.", "norm."),
    (r"\.norm1\.", ".bottleneck.norm."),
    (r"\.conv1\.", ".bottleneck.conv."),
    (r"\.norm2\.", ".composite.norm."),
    (r"\.conv2\.", ".composite.conv."),
]


@register_converter("torchvision", "densenet*")
def _from_torchvision(state_dict: StateDict) -> StateDict:
    """features.denseblockI.denselayerJ / transitionI / norm5 -> blocks / transitions / norm."""

    def rename(key: str) -> str:
        key = re.sub(
            r"^features\.denseblock(\d+)\.denselayer(\d+)\.",
            lambda m: f"blocks.{int(m[1]) - 1}.layers.{int(m[2]) - 1}.",
            key,
        )
        key = re.sub(
            r"^features\.transition(\d+)\.", lambda m: f"transitions.{int(m[1]) - 1}.", key
        )
        for pattern, repl in _TV_RULES:
            key = re.sub(pattern, repl, key)
        return key

    return {rename(k): v for k, v in state_dict.items()}


_SMALL = (
    "3x3 stride-1 stem conv (same 2k channels) instead of 7x7 stride 2, no max-pool: "
    "total stride 8, inputs from 8x8 (28x28 and 32x32 work)"
)
_TV = "torchvision 0.29.1"
_COMMON = dict(image_size=224, min_image_size=32, small_input=_SMALL)


@register_model(FAMILY, params=7_978_856, params_source=_TV, torchvision="densenet121", **_COMMON)
def densenet121(**kwargs) -> DenseNet:
    return DenseNet(32, (6, 12, 24, 16), 64, **kwargs)


@register_model(FAMILY, params=28_681_000, params_source=_TV, torchvision="densenet161", **_COMMON)
def densenet161(**kwargs) -> DenseNet:
    return DenseNet(48, (6, 12, 36, 24), 96, **kwargs)


@register_model(FAMILY, params=14_149_480, params_source=_TV, torchvision="densenet169", **_COMMON)
def densenet169(**kwargs) -> DenseNet:
    return DenseNet(32, (6, 12, 32, 32), 64, **kwargs)


@register_model(FAMILY, params=20_013_928, params_source=_TV, torchvision="densenet201", **_COMMON)
def densenet201(**kwargs) -> DenseNet:
    return DenseNet(32, (6, 12, 48, 32), 64, **kwargs)


def densenet_cifar(depth: int = 100, growth_rate: int = 12, bc: bool = True, **kwargs):
    """A CIFAR DenseNet of L = `depth` layers: 3 blocks of (L-4)/6 (BC) or (L-4)/3 layers."""
    per_block, rest = divmod(depth - 4, 6 if bc else 3)
    if rest or per_block < 1:
        raise ValueError(f"depth must be 6n+4 (BC) or 3n+4, got {depth}")
    kwargs.pop("small_input", None)  # always small-input: nothing to switch
    kwargs.setdefault("image_size", 32)
    kwargs.setdefault("num_classes", 10)
    stem_width = 2 * growth_rate if bc else 16
    bn_size, compression = (4, 0.5) if bc else (None, 1.0)
    blocks = (per_block,) * 3
    return DenseNet(growth_rate, blocks, stem_width, bn_size, compression, stem="cifar", **kwargs)


_CIFAR = dict(image_size=32, num_classes=10, min_image_size=8)


@register_model(FAMILY, params=769_162, params_source="computed; paper Table 2: 0.8M", **_CIFAR)
def densenet_bc_100(**kwargs) -> DenseNet:
    """DenseNet-BC (L=100, k=12) for CIFAR: 4.51 % error on C10+ (official README)."""
    return densenet_cifar(100, 12, bc=True, **kwargs)


@register_model(FAMILY, params=1_019_722, params_source="computed; paper Table 2: 1.0M", **_CIFAR)
def densenet_40(**kwargs) -> DenseNet:
    """DenseNet (L=40, k=12) for CIFAR, no bottleneck or compression: 5.24 % on C10+."""
    return densenet_cifar(40, 12, bc=False, **kwargs)
