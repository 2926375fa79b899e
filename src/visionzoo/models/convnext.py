"""ConvNeXt: A ConvNet for the 2020s.

Zhuang Liu, Hanzi Mao, Chao-Yuan Wu, Christoph Feichtenhofer, Trevor Darrell, Saining Xie.
CVPR 2022. https://arxiv.org/abs/2201.03545

Key idea: modernize a ResNet-50 step by step towards a Swin Transformer's design, keeping
only convolutions: patchify stem, (3, 3, 9, 3) stages, depthwise 7x7 convolution, an
inverted-bottleneck MLP with GELU, one LayerNorm per block, separate downsampling layers.
The pure ConvNet matches Swin at every scale.

The roadmap (ImageNet-1k top-1 of the ResNet-50-sized model, the paper's Figure 2): the
ViT-style training recipe (300 epochs, AdamW, Mixup/CutMix/RandAugment, stochastic depth,
label smoothing) lifts ResNet-50 from 76.1 to 78.8; stage ratio (3, 4, 6, 3) -> (3, 3, 9, 3)
79.4; a 4x4/4 "patchify" stem instead of 7x7/2 conv + max-pool 79.5; ResNeXt-ify (depthwise
3x3 convolution, width 64 -> 96) 80.5; inverted bottleneck (hidden width 4x) 80.6; move the
depthwise convolution up (79.9) and widen it to 7x7 80.6; micro design: ReLU -> GELU 80.6,
one activation per block 81.3, one norm per block 81.4, BatchNorm -> LayerNorm 81.5,
separate 2x2/2 downsampling layers with a LayerNorm before each 82.0 (ConvNeXt-T).

Block (`ConvNeXtBlock`): x + gamma * Linear(GELU(Linear(LN(DwConv7x7(x))))), the two
linear layers being the 1x1 convolutions of the inverted bottleneck run channels-last;
gamma is the layer scale of CaiT (Touvron et al. 2021), initialised to 1e-6, and the
residual branch is dropped per sample by stochastic depth (rate linear in block index).

The two 1x1 convolutions are `nn.Linear` layers on a channels-last tensor (same arithmetic),
and the head is global average pooling -> LayerNorm -> Linear, both as in the official code
and torchvision. Stochastic depth defaults to the paper's ImageNet-1k rates, which are also
torchvision's: 0.1 (T), 0.4 (S), 0.5 (B, L).

NOTE: `small_input=True` (28x28 and 32x32 images) patchifies with a 2x2/2 stem instead of
4x4/4, so the total stride is 16 and a 32x32 image keeps a 2x2 map in the last stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from visionzoo.convert import register_converter, rename_keys
from visionzoo.layers.drop_path import DropPath, drop_path_rates
from visionzoo.layers.mlp import Mlp
from visionzoo.layers.norm import LayerNorm2d
from visionzoo.models.base import FeatureInfo, ImageClassifier
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="ConvNeXt",
    year=2022,
    paper="A ConvNet for the 2020s",
    url="https://arxiv.org/abs/2201.03545",
    authors="Zhuang Liu, Hanzi Mao, Chao-Yuan Wu, Christoph Feichtenhofer, Trevor Darrell, "
    "Saining Xie",
)

LN_EPS = 1e-6  # the official code's LayerNorm epsilon


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 -> LayerNorm -> 1x1 (4x wider) -> GELU -> 1x1, scaled, plus the input."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: int = 4,
        layer_scale: float = 1e-6,
        drop_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_ratio * dim, act_layer=nn.GELU)
        self.layer_scale = nn.Parameter(torch.full((dim,), layer_scale))
        self.drop_path = DropPath(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv_dw(x).permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
        x = self.layer_scale * self.mlp(self.norm(x))
        x = self.drop_path(x.permute(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W)
        return x.add_(shortcut)  # in place, as torchvision: saves a tensor per block


class ConvNeXtStage(nn.Module):
    """An optional downsampling layer (LayerNorm + 2x2/2 conv), then `depth` blocks."""

    def __init__(
        self, in_dim: int, dim: int, depth: int, drop_probs: Sequence[float], downsample: bool
    ) -> None:
        super().__init__()
        self.downsample = (
            nn.Sequential(LayerNorm2d(in_dim, eps=LN_EPS), nn.Conv2d(in_dim, dim, 2, stride=2))
            if downsample
            else nn.Identity()
        )
        self.blocks = nn.Sequential(*(ConvNeXtBlock(dim, drop_prob=p) for p in drop_probs))

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXt(ImageClassifier):
    """Patchify stem -> four stages (downsampling between them) -> pool -> LayerNorm -> fc."""

    supports_small_input = True

    def __init__(
        self,
        depths: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        drop_path_rate: float = 0.0,
        dropout: float = 0.0,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        patch = 2 if small_input else 4
        self.in_channels, self.image_size, self.small_input = in_channels, image_size, small_input
        self.min_image_size = patch * 8  # the three 2x2/2 downsamplings need a 8x8 patch grid
        self.num_features = widths[-1]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], kernel_size=patch, stride=patch),
            LayerNorm2d(widths[0], eps=LN_EPS),
        )
        rates = drop_path_rates(drop_path_rate, sum(depths))
        stages, start = [], 0
        for i, (depth, width) in enumerate(zip(depths, widths)):
            in_dim = widths[max(i - 1, 0)]
            stages.append(ConvNeXtStage(in_dim, width, depth, rates[start : start + depth], i > 0))
            start += depth
        self.stages = nn.Sequential(*stages)
        self.feature_info = [
            FeatureInfo(f"stages.{i}", w, patch * 2**i) for i, w in enumerate(widths)
        ]
        self.head_norm = nn.LayerNorm(self.num_features, eps=LN_EPS)
        self.head_drop = nn.Dropout(dropout)
        self.num_classes = num_classes
        self.reset_classifier(num_classes)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Truncated normal (std 0.02) weights and zero biases, as the official code does."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))  # (B, 3, H, W) -> (B, C, H/32, W/32)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_norm(x.mean((2, 3)))  # (B, C, H, W) -> (B, C)
        return x if pre_logits else self.classifier(self.head_drop(x))


_SMALL = "patchify stem 2x2/2 instead of 4x4/4 (total stride 16; min input 16x16)"
_SOURCE = "torchvision 0.29.1 (ConvNeXt_*_Weights.IMAGENET1K_V1 num_params)"
_COMMON = dict(params_source=_SOURCE, image_size=224, min_image_size=32, small_input=_SMALL)


@register_model(
    FAMILY, params=28_589_128, torchvision="convnext_tiny", timm="convnext_tiny", **_COMMON
)
def convnext_tiny(**kwargs) -> ConvNeXt:
    """ConvNeXt-T: C = (96, 192, 384, 768), B = (3, 3, 9, 3)."""
    kwargs.setdefault("drop_path_rate", 0.1)
    return ConvNeXt((3, 3, 9, 3), (96, 192, 384, 768), **kwargs)


@register_model(
    FAMILY, params=50_223_688, torchvision="convnext_small", timm="convnext_small", **_COMMON
)
def convnext_small(**kwargs) -> ConvNeXt:
    """ConvNeXt-S: C = (96, 192, 384, 768), B = (3, 3, 27, 3)."""
    kwargs.setdefault("drop_path_rate", 0.4)
    return ConvNeXt((3, 3, 27, 3), (96, 192, 384, 768), **kwargs)


@register_model(
    FAMILY, params=88_591_464, torchvision="convnext_base", timm="convnext_base", **_COMMON
)
def convnext_base(**kwargs) -> ConvNeXt:
    """ConvNeXt-B: C = (128, 256, 512, 1024), B = (3, 3, 27, 3)."""
    kwargs.setdefault("drop_path_rate", 0.5)
    return ConvNeXt((3, 3, 27, 3), (128, 256, 512, 1024), **kwargs)


@register_model(
    FAMILY, params=197_767_336, torchvision="convnext_large", timm="convnext_large", **_COMMON
)
def convnext_large(**kwargs) -> ConvNeXt:
    """ConvNeXt-L: C = (192, 384, 768, 1536), B = (3, 3, 27, 3)."""
    kwargs.setdefault("drop_path_rate", 0.5)
    return ConvNeXt((3, 3, 27, 3), (192, 384, 768, 1536), **kwargs)


def _squeeze_layer_scale(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision keeps the layer scale as (C, 1, 1); ours is (C,) on channels-last."""
    return {k: v.flatten() if k.endswith("layer_scale") else v for k, v in state_dict.items()}


@register_converter("torchvision", "convnext_*")
def _from_torchvision(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    # torchvision: features.0 stem, features.{1,3,5,7} the stages' blocks, features.{2,4,6}
    # the downsampling layers; each block is a Sequential (0 dwconv, 2 norm, 3 fc1, 5 fc2).
    rules = [(r"^features\.0\.", "stem.")]
    for i in range(4):
        rules.append((rf"^features\.{2 * i + 1}\.(\d+)\.", rf"stages.{i}.blocks.\1."))
        if i > 0:
            rules.append((rf"^features\.{2 * i}\.", f"stages.{i}.downsample."))
    rules += [
        (r"\.block\.0\.", ".conv_dw."),
        (r"\.block\.2\.", ".norm."),
        (r"\.block\.3\.", ".mlp.fc1."),
        (r"\.block\.5\.", ".mlp.fc2."),
        (r"^classifier\.0\.", "head_norm."),
        (r"^classifier\.2\.", "classifier."),
    ]
    return _squeeze_layer_scale(rename_keys(state_dict, rules))


@register_converter("timm", "convnext_*")
def _from_timm(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    rules = [
        (r"\.gamma$", ".layer_scale"),
        (r"^head\.norm\.", "head_norm."),
        (r"^head\.fc\.", "classifier."),
    ]
    return rename_keys(state_dict, rules)
