"""ResNet: Deep Residual Learning for Image Recognition.

Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. CVPR 2016. arXiv:1512.03385.
https://arxiv.org/abs/1512.03385

Key idea: let each block learn a residual F(x) and add its input back, y = relu(F(x) + x).
Identity shortcuts carry signal and gradient through hundreds of layers, so deeper nets
stop being harder to optimise than shallower ones (the "degradation" of plain nets).
BasicBlock (two 3x3 convs) for 18/34 layers, Bottleneck (1x1-3x3-1x1) for 50/101/152.

Shortcuts where the shape changes, in the paper's terms: option A pads the identity with
zero channels (no parameters), B projects with a 1x1 convolution only there (torchvision's
and the default), C projects everywhere. `shortcut=None` removes the shortcuts: the plain
twins (`plain18`, `plain34`) of the paper's Table 2, which with option A have exactly the
residual nets' parameters. The CIFAR nets of Section 4.2 live in `resnet_cifar.py`.

Stage shapes for a 224x224 input: stem conv 7x7/2 + max-pool 3x3/2 -> 56x56 (64 ch);
stages 1-4 -> 56, 28, 14, 7 px with 64, 128, 256, 512 channels (x4 for Bottleneck);
global average pooling -> 1000-way linear layer.

NOTE: In Bottleneck the stride sits on the 3x3 convolution by default, as in torchvision
("ResNet v1.5", about 0.5 % better top-1); the paper puts it on the first 1x1 convolution.
`stride_in_1x1=True` gives the paper's version (same parameters, different features).
NOTE: `small_input=True` (for 28x28 and 32x32 images) swaps the 7x7 stride-2 stem for a 3x3
stride-1 convolution and drops the max-pool: total stride 8 instead of 32. The paper has no
such mode; it is the usual adaptation for CIFAR-sized inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter, rename_keys
from visionzoo.layers import ConvNormAct
from visionzoo.models.base import FeatureInfo, ImageClassifier, init_weights_he
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="ResNet",
    year=2015,
    paper="Deep Residual Learning for Image Recognition",
    url="https://arxiv.org/abs/1512.03385",
    authors="Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun",
)

SHORTCUTS = ("A", "B", "C", None)


class ZeroPadShortcut(nn.Module):
    """Option A: identity, subsampled by `stride`, with zero channels appended (no params)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = out_channels - in_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # the positions a stride-s conv sees
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, C, H, W) -> (B, C + extra, H, W)


def make_shortcut(kind: str | None, in_channels: int, out_channels: int, stride: int):
    """The shortcut of a block: None (plain net), identity, zero padding or a projection."""
    if kind not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {kind!r}")
    if kind is None:
        return None
    changes = stride != 1 or in_channels != out_channels
    if kind == "C" or (kind == "B" and changes):
        return ConvNormAct(in_channels, out_channels, 1, stride, act_layer=None)
    return ZeroPadShortcut(in_channels, out_channels, stride) if changes else nn.Identity()


class BasicBlock(nn.Module):
    """y = relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)); Fig. 2 / Fig. 5 left."""

    expansion = 1

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, shortcut: str | None = "B"
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, width, 3, stride)
        self.conv2 = ConvNormAct(width, width, 3, act_layer=None)
        self.shortcut = make_shortcut(shortcut, in_channels, width, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.conv2(self.conv1(x))
        if self.shortcut is not None:
            # in place, as torchvision: no new tensor per block
            residual += self.shortcut(x)
        return self.act(residual)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), plus the shortcut; Fig. 5 right.

    The stride sits on the 3x3 convolution (torchvision, "v1.5") unless `stride_in_1x1`
    (the paper).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        shortcut: str | None = "B",
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        mid, out = width, width * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNormAct(in_channels, mid, 1, s1)
        self.conv2 = ConvNormAct(mid, mid, 3, s3)
        self.conv3 = ConvNormAct(mid, out, 1, act_layer=None)
        self.shortcut = make_shortcut(shortcut, in_channels, out, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.conv3(self.conv2(self.conv1(x)))
        if self.shortcut is not None:
            residual += self.shortcut(x)  # in place (see BasicBlock)
        return self.act(residual)


class ResNet(ImageClassifier):
    """stem -> stages of residual blocks (the first of each stage strides, except stage 1)
    -> global average pooling -> linear.

    `stem="imagenet"`: 7x7/2 conv + 3x3/2 max-pool (or, with `small_input`, a 3x3/1 conv and
    no pool); `stem="cifar"`: one 3x3/1 conv (He et al. Section 4.2). `widths` are the base
    widths per stage (block outputs are `width * block.expansion`).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        small_input: bool = False,
        stem: str = "imagenet",
        stem_width: int | None = None,
        shortcut: str | None = "B",
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if stride_in_1x1 and not issubclass(block, Bottleneck):
            raise ValueError("stride_in_1x1 applies to Bottleneck blocks (ResNet-50 and deeper)")
        extra = {"stride_in_1x1": True} if stride_in_1x1 else {}
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.supports_small_input = stem == "imagenet"
        self.small_input = small_input or stem == "cifar"
        stem_width = stem_width or widths[0]
        # Step 1: the stem.
        if self.small_input:
            self.stem = ConvNormAct(in_channels, stem_width, 3, 1)
            self.stem_pool: nn.Module = nn.Identity()
            stride = 1
        else:
            self.stem = ConvNormAct(in_channels, stem_width, 7, 2)
            self.stem_pool = nn.MaxPool2d(3, 2, 1)
            stride = 2
        self.feature_info = [FeatureInfo("stem", stem_width, stride)]
        stride *= 1 if self.small_input else 2
        # Step 2: the stages.
        stages, channels = [], stem_width
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                s = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(channels, width, s, shortcut, **extra))
                channels = width * block.expansion
            stride *= 2 if i > 0 else 1
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(f"stages.{i}", channels, stride))
        self.stages = nn.Sequential(*stages)
        self.min_image_size = stride  # the last stage sees at least one full-stride cell
        # Step 3: the head.
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        init_weights_he(self)
        if zero_init_residual:  # Goyal et al. 2017: each block starts as the identity
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    last = m.conv2 if isinstance(m, BasicBlock) else m.conv3
                    nn.init.zeros_(last.get_parameter("norm.weight"))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem_pool(self.stem(x)))  # (B, C, H/32, W/32)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean((2, 3))  # global average pooling: (B, C, h, w) -> (B, C)
        return x if pre_logits else self.classifier(x)


@register_converter("torchvision", "resnet*")
def _from_torchvision(state_dict: StateDict) -> StateDict:
    """torchvision's conv1/bn1/layerN/downsample/fc names -> ours."""
    rules = [(r"^conv1\.", "stem.conv."), (r"^bn1\.", "stem.norm."), (r"^fc\.", "classifier.")]
    rules += [(rf"^layer{i}\.", f"stages.{i - 1}.") for i in range(1, 5)]
    rules += [
        (r"\.conv(\d)\.", r".conv\1.conv."),
        (r"\.bn(\d)\.", r".conv\1.norm."),
        (r"\.downsample\.0\.", ".shortcut.conv."),
        (r"\.downsample\.1\.", ".shortcut.norm."),
    ]
    return rename_keys(state_dict, rules)


_SMALL = (
    "3x3 stride-1 stem conv instead of 7x7 stride 2, no max-pool: total stride 8, "
    "inputs from 8x8 (28x28 and 32x32 work)"
)
_TV = "torchvision 0.29.1"
_COMMON = dict(image_size=224, min_image_size=32, small_input=_SMALL)


@register_model(FAMILY, params=11_689_512, params_source=_TV, torchvision="resnet18", **_COMMON)
def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model(FAMILY, params=21_797_672, params_source=_TV, torchvision="resnet34", **_COMMON)
def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model(FAMILY, params=25_557_032, params_source=_TV, torchvision="resnet50", **_COMMON)
def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model(FAMILY, params=44_549_160, params_source=_TV, torchvision="resnet101", **_COMMON)
def resnet101(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model(FAMILY, params=60_192_808, params_source=_TV, torchvision="resnet152", **_COMMON)
def resnet152(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 8, 36, 3), **kwargs)


_PLAIN = "computed: the ResNet's count less its projection shortcuts (= option A ResNet)"


@register_model(FAMILY, params=11_515_688, params_source=_PLAIN, **_COMMON)
def plain18(**kwargs) -> ResNet:
    """Plain-18 of Table 2: ResNet-18's layers without shortcuts."""
    return ResNet(BasicBlock, (2, 2, 2, 2), shortcut=None, **kwargs)


@register_model(FAMILY, params=21_623_848, params_source=_PLAIN, **_COMMON)
def plain34(**kwargs) -> ResNet:
    """Plain-34 of Table 2 (the paper's Fig. 3 middle): ResNet-34 without shortcuts."""
    return ResNet(BasicBlock, (3, 4, 6, 3), shortcut=None, **kwargs)
