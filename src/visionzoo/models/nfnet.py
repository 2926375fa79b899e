"""NFNet: High-Performance Large-Scale Image Recognition Without Normalization.

Andrew Brock, Soham De, Samuel L. Smith, Karen Simonyan. ICML 2021.
https://arxiv.org/abs/2102.06171

Key idea: drop batch normalization and keep its benefits by other means: residual blocks
h + alpha * f(h / beta) whose input is downscaled by its expected standard deviation beta,
scaled weight standardization with variance-preserving activations, and adaptive gradient
clipping (`visionzoo.engine.agc`) so that large batches and strong augmentation train stably.

Signal propagation (from NF-ResNets, Brock et al. 2021a, arXiv:2101.08692). Every
convolution standardizes its weights per output unit, W_hat = gain * (W - mean(W)) /
(std(W) sqrt(fan_in)) (`ScaledStdConv2d`), so a unit-variance input gives a unit-variance
output; each activation is multiplied by the constant gamma that makes it variance
preserving for a standard normal input (GELU: gamma = 1.7015, DeepMind's sampled constant;
1 / std(GELU(z)) is 1.6999). Block i sees h_i / beta_i with
beta_i = sqrt(Var(h_i)) known analytically: Var(h_{i+1}) = Var(h_i) + alpha^2 (alpha = 0.2),
and each stage's first (transition) block, whose shortcut is a 1x1 convolution of the scaled
input, resets it to 1 + alpha^2. The squeeze-excite output is doubled (its sigmoid gate
halves the variance at initialisation) and each residual branch ends in a scalar "skipinit"
gain initialised to zero, so every block starts as the identity.

NFNet-F0 is a SE-ResNeXt-D-like network. Stem: four 3x3 convolutions (16/2, 32, 64,
128/2 channels/stride). Four stages of bottleneck
blocks, depths (1, 2, 6, 3), widths (256, 512, 1536, 1536), strides (1, 2, 2, 2), bottleneck
ratio 0.5, grouped 3x3 convolutions with group width 128 and an extra 3x3 convolution per
block; transition shortcuts are 2x2 average pooling + 1x1 convolution. Then a 1x1
convolution to 2 x 1536 = 3072 channels, GELU, global average pooling, dropout (0.2 for F0),
and the classifier. 71.5M parameters; 83.6% top-1 at 256x256 (trained at 192x192).

NOTE: `nfnet_f0` is timm's `dm_nfnet_f0`, the layout of DeepMind's released JAX weights:
TensorFlow "SAME" padding (on even sizes a stride-2 3x3 convolution pads one pixel at the
bottom and right only), gamma applied in the activation (not folded into the weights),
skipinit gains, and the pre-activation beta scaling applied after the first activation:
x' = gamma GELU(x) / beta rather than the paper's f(h / beta). Our logits equal timm's.
NOTE: Weight standardization follows timm: (W - mean) / sqrt((var + 1e-5) fan_in); DeepMind's
code computes (W - mean) / sqrt(max(var fan_in, 1e-4)). The two agree except for kernels
with near-zero variance.
NOTE: GELU is the exact erf form (PyTorch and timm); DeepMind's JAX code calls
jax.nn.gelu, whose default is the tanh approximation (they differ by at most 5e-4).
NOTE: Stochastic depth defaults to rate 0.25 with DeepMind's per-block rule (rate x block
index / number of blocks); timm defaults to none.
NOTE: `min_image_size` is 32, the total stride. With SAME padding smaller inputs still run,
but the last stage would see mostly padding. `small_input=True` makes the stem's first
convolution stride 1 (total stride 16): a 32x32 image keeps a 2x2 map in the last stage.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.convert import register_converter, rename_keys
from visionzoo.layers.drop_path import DropPath
from visionzoo.layers.padding import pad_same
from visionzoo.layers.squeeze_excite import SqueezeExcite
from visionzoo.models.base import FeatureInfo, ImageClassifier
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="NFNet",
    year=2021,
    paper="High-Performance Large-Scale Image Recognition Without Normalization",
    url="https://arxiv.org/abs/2102.06171",
    authors="Andrew Brock, Soham De, Samuel L. Smith, Karen Simonyan",
)

# gamma with Var(gamma GELU(z)) ~ 1 for z ~ N(0, 1): DeepMind's constant (nfnets/base.py).
GELU_GAMMA = 1.7015043497085571


class VPGELU(nn.Module):
    """Variance-preserving GELU: gamma * GELU(x), unit variance out for a N(0, 1) input."""

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x) * GELU_GAMMA


class ScaledStdConv2d(nn.Conv2d):
    """Convolution with scaled weight standardization and a learnable per-unit gain.

    W_hat = gain * (W - mean) / sqrt((var + eps) * fan_in), statistics over each output
    unit's fan-in. Padding is TensorFlow "SAME" (dynamic for strided kernels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        eps: float = 1e-5,
    ) -> None:
        dynamic_pad = stride > 1 and kernel_size > 1  # the padding depends on the input size
        padding = 0 if dynamic_pad else kernel_size // 2
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups)
        self.dynamic_pad = dynamic_pad
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        self.eps = eps
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity="linear")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def standardized_weight(self) -> Tensor:
        fan_in = self.weight[0].numel()
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), correction=0, keepdim=True)
        return (self.weight - mean) * torch.rsqrt((var + self.eps) * fan_in) * self.gain

    def forward(self, x: Tensor) -> Tensor:
        if self.dynamic_pad:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        w = self.standardized_weight()
        return F.conv2d(x, w, self.bias, self.stride, self.padding, groups=self.groups)


class NFBlock(nn.Module):
    """NF bottleneck: h + alpha * skipinit_gain * 2 SE(conv1x1(conv3x3(conv3x3(conv1x1(.))))).

    The branch and a transition block's shortcut both start from gamma GELU(h) / beta.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        beta: float,
        alpha: float = 0.2,
        group_width: int = 128,
        drop_prob: float = 0.0,
    ) -> None:
        super().__init__()
        mid = out_channels // 2  # bottleneck ratio 0.5
        groups = mid // group_width
        self.alpha, self.beta = alpha, beta
        self.downsample: nn.Module | None = None
        if in_channels != out_channels or stride > 1:  # transition block: avg-pool + 1x1 conv
            pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
            self.downsample = nn.Sequential(
                OrderedDict(
                    pool=pool if stride > 1 else nn.Identity(),
                    conv=ScaledStdConv2d(in_channels, out_channels, 1),
                )
            )
        self.act1 = VPGELU()
        self.conv1 = ScaledStdConv2d(in_channels, mid, 1)
        self.act2 = VPGELU()
        self.conv2 = ScaledStdConv2d(mid, mid, 3, stride=stride, groups=groups)
        self.act2b = VPGELU()
        self.conv2b = ScaledStdConv2d(mid, mid, 3, groups=groups)  # F-series' extra 3x3 conv
        self.act3 = VPGELU()
        self.conv3 = ScaledStdConv2d(mid, out_channels, 1)
        self.se = SqueezeExcite(out_channels, out_channels // 2)
        self.drop_path = DropPath(drop_prob)
        self.skipinit_gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(x) / self.beta
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.act2(out))
        out = self.conv2b(self.act2b(out))
        out = self.conv3(self.act3(out))
        out = 2.0 * self.se(out)  # the sigmoid gate halves the variance at init
        out = self.drop_path(out) * self.skipinit_gain
        return shortcut + self.alpha * out


class NFNet(ImageClassifier):
    """Stem (4 convs) -> four stages of NF blocks -> 1x1 conv -> GELU -> pool -> fc."""

    supports_small_input = True

    def __init__(
        self,
        depths: Sequence[int],
        widths: Sequence[int] = (256, 512, 1536, 1536),
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 256,
        alpha: float = 0.2,
        dropout: float = 0.2,
        drop_path_rate: float = 0.25,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.small_input = in_channels, image_size, small_input
        self.min_image_size = 16 if small_input else 32
        stem_stride, stem_width = (1 if small_input else 2), 128
        self.stem = nn.Sequential(
            OrderedDict(
                conv1=ScaledStdConv2d(in_channels, 16, 3, stride=stem_stride),
                act2=VPGELU(),
                conv2=ScaledStdConv2d(16, 32, 3),
                act3=VPGELU(),
                conv3=ScaledStdConv2d(32, 64, 3),
                act4=VPGELU(),
                conv4=ScaledStdConv2d(64, stem_width, 3, stride=2),
            )
        )
        num_blocks, index, stages = sum(depths), 0, []
        channels, expected_var, stride = stem_width, 1.0, 2 * stem_stride
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                blocks.append(
                    NFBlock(
                        channels,
                        width,
                        stride=2 if i > 0 and j == 0 else 1,
                        beta=math.sqrt(expected_var),
                        alpha=alpha,
                        drop_prob=drop_path_rate * index / num_blocks,
                    )
                )
                # A transition block's shortcut sees the unit-variance input: variance resets.
                expected_var = (1.0 if j == 0 else expected_var) + alpha**2
                channels, index = width, index + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [
            FeatureInfo(f"stages.{i}", w, stride * 2**i) for i, w in enumerate(widths)
        ]
        self.num_features = 2 * widths[-1]
        self.final_conv = ScaledStdConv2d(widths[-1], self.num_features, 1)
        self.final_act = VPGELU()
        self.head_drop = nn.Dropout(dropout)
        self.num_classes = num_classes
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        if num_classes > 0:  # DeepMind's head init: N(0, 0.01) weights, zero bias
            nn.init.normal_(self.classifier.get_parameter("weight"), 0.0, 0.01)
            nn.init.zeros_(self.classifier.get_parameter("bias"))

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))  # (B, 3, H, W) -> (B, 1536, H/32, W/32)
        return self.final_act(self.final_conv(x))  # -> (B, 3072, H/32, W/32)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean((2, 3))  # (B, C, H, W) -> (B, C)
        return x if pre_logits else self.classifier(self.head_drop(x))


@register_model(
    FAMILY,
    params=71_489_284,
    params_source="timm 1.0.31 dm_nfnet_f0 (counted here; timm results CSV 71.49M)",
    image_size=256,
    min_image_size=32,
    small_input="stem's first conv stride 1 instead of 2 (total stride 16; min input 16x16)",
    timm="dm_nfnet_f0",
)
def nfnet_f0(**kwargs) -> NFNet:
    """NFNet-F0: depths (1, 2, 6, 3), widths (256, 512, 1536, 1536), dropout 0.2."""
    return NFNet(depths=(1, 2, 6, 3), **kwargs)


@register_converter("timm", "nfnet_*")
def _from_timm(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    rules = [(r"\.attn_last\.", ".se."), (r"^head\.fc\.", "classifier.")]
    return rename_keys(state_dict, rules)
