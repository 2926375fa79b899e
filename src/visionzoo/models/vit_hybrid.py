"""Hybrid Vision Transformer: ResNet features as the patch tokens (ViT paper, section 3.1).

Alexey Dosovitskiy, Lucas Beyer, Alexander Kolesnikov, Dirk Weissenborn, Xiaohua Zhai, Thomas
Unterthiner, Mostafa Dehghani, Matthias Minderer, Georg Heigold, Sylvain Gelly, Jakob
Uszkoreit, Neil Houlsby. ICLR 2021. https://arxiv.org/abs/2010.11929

Key idea: instead of raw image patches, feed the Transformer the feature map of a CNN: each
1x1 "patch" of a ResNet's stride-16 map is projected to a token. The CNN supplies local
inductive bias; the encoder (here ViT-B: 768 wide, 12 layers) mixes the tokens globally.
The paper's hybrids beat pure ViTs at small compute budgets.

The CNN is the paper's "R50" as modified for BiT: a ResNet-50 whose BatchNorms are
GroupNorms (32 groups) and whose convolutions standardize their weights, with the fourth
stage removed and the third stage extended from 6 to 9 blocks, so that stages (3, 4, 9)
end at stride 16 with 1024 channels; a 1x1 convolution projects them to 768-wide tokens.

NOTE: Convolutions use TensorFlow's "SAME" padding (asymmetric, more on the bottom/right
for stride 2), as the paper's JAX code and timm's `vit_base_r50_s16_224`, whose weights port
here; PyTorch's symmetric padding would shift the stride-2 layers by a pixel.
NOTE: `small_input=True` (28x28/32x32 data) replaces the 7x7 stride-2 stem convolution and
its max-pool by a 3x3 stride-1 convolution: stride 4 in all, an 8x8 token grid at 32 px
(image_size 32; image_size=28 gives 7x7).
NOTE: Input size, position embeddings and attention maps work as for the plain ViT
(visionzoo.models.vit): exact `image_size` inputs, bicubic interpolation of loaded position
embeddings, `cls_attention`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.convert import register_converter
from visionzoo.layers.padding import pad_same
from visionzoo.models.vit import CONFIGS, FAMILY, VisionTransformer, _from_timm
from visionzoo.registry import register_model


class StdConv2d(nn.Conv2d):
    """Convolution with weight standardization (Qiao et al. 2019, arXiv:1903.10520): each
    filter is shifted and scaled to zero mean and unit variance before use. SAME padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.flatten(1)  # (out, in, k, k) -> (out, in*k*k)
        mean, var = w.mean(1, keepdim=True), w.var(1, unbiased=False, keepdim=True)
        w = ((w - mean) / (var + 1e-8).sqrt()).view_as(self.weight)
        x = pad_same(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, w, None, self.stride)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


class Downsample(nn.Module):
    """The projection shortcut: 1x1 standardized convolution (with the stride), GroupNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = StdConv2d(in_channels, out_channels, 1, stride)
        self.norm = group_norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride here) -> 1x1 expand, GroupNorm after each, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        mid = out_channels // 4
        needs_projection = stride != 1 or in_channels != out_channels
        self.downsample = (
            Downsample(in_channels, out_channels, stride) if needs_projection else None
        )
        self.conv1, self.norm1 = StdConv2d(in_channels, mid, 1), group_norm(mid)
        self.conv2, self.norm2 = StdConv2d(mid, mid, 3, stride), group_norm(mid)
        self.conv3, self.norm3 = StdConv2d(mid, out_channels, 1), group_norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        x = self.norm3(self.conv3(x))
        return F.relu(x + shortcut)


class ResNetStem(nn.Module):
    """7x7 stride-2 convolution, GroupNorm, ReLU, 3x3 stride-2 max-pool (stride 4).

    Small-input mode: one 3x3 stride-1 convolution, no pooling (stride 1)."""

    def __init__(self, in_channels: int, channels: int = 64, small_input: bool = False) -> None:
        super().__init__()
        self.small_input = small_input
        self.conv = StdConv2d(
            in_channels, channels, 3 if small_input else 7, 1 if small_input else 2
        )
        self.norm = group_norm(channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm(self.conv(x)))
        if self.small_input:
            return x
        return F.max_pool2d(pad_same(x, 3, 2, value=float("-inf")), 3, 2)


class HybridEmbed(nn.Module):
    """ResNet stages (3, 4, 9) to a stride-16, 1024-channel map, a 1x1 projection to D, tokens."""

    def __init__(self, in_channels: int, embed_dim: int, depths=(3, 4, 9), small_input=False):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.stem = ResNetStem(in_channels, 64, small_input)
        self.backbone.stages = nn.ModuleList()
        channels = 64
        for i, depth in enumerate(depths):
            out = 256 * 2**i
            stage = nn.Module()
            stage.blocks = nn.Sequential(
                *(Bottleneck(channels if j == 0 else out, out, 2 if i and j == 0 else 1)
                  for j in range(depth))
            )  # fmt: skip
            self.backbone.stages.append(stage)
            channels = out
        self.proj = nn.Conv2d(channels, embed_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.backbone.get_submodule("stem")(x)  # (B, C, H, W) -> (B, 64, H/4, W/4)
        for stage in self.backbone.get_submodule("stages").children():
            x = stage.get_submodule("blocks")(x)  # ... -> (B, 1024, H/16, W/16)
        x = self.proj(x)  # -> (B, D, H/16, W/16)
        return x.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D)


_SMALL = "3x3 stride-1 stem without max-pool: stride 4, image_size 32 (8x8 tokens)"


# timm's default vit_base_r50_s16_224 has no head (num_classes=0, 97,890,112 parameters, the
# ImageNet-21k feature extractor); the count is timm's with num_classes=1000.
_SOURCE = "timm 1.0.31 vit_base_r50_s16_224(num_classes=1000)"


@register_model(FAMILY, params=98_659_112, params_source=_SOURCE, timm="vit_base_r50_s16_224",
                min_image_size=224, small_input=_SMALL)  # fmt: skip
def vit_b_r50_s16(
    num_classes: int = 1000,
    in_channels: int = 3,
    image_size: int = 224,
    small_input: bool = False,
    **kwargs,
) -> VisionTransformer:
    """R50 + ViT-B/16: ResNet stages (3, 4, 9) as the patch embedding, stride 16."""
    embed = HybridEmbed(in_channels, CONFIGS["base"].embed_dim, (3, 4, 9), small_input)
    return VisionTransformer(
        CONFIGS["base"],
        16,
        num_classes,
        in_channels,
        image_size,
        small_input,
        patch_embed=embed,
        **kwargs,
    )


register_converter("timm", "vit_b_r50_s16")(_from_timm)
