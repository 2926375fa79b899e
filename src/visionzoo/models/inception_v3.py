"""Inception v3: Rethinking the Inception Architecture for Computer Vision.

Christian Szegedy, Vincent Vanhoucke, Sergey Ioffe, Jonathon Shlens, Zbigniew Wojna.
CVPR 2016. https://arxiv.org/abs/1512.00567

Key idea: scale Inception up without blowing up its cost by factorizing convolutions: a 5x5
becomes two 3x3s, an nxn becomes a 1xn followed by an nx1, and grid reductions run a strided
convolution and a pooling branch in parallel instead of pooling first (no representational
bottleneck). With batch normalization everywhere and a batch-normalized auxiliary head, the
42-layer network costs about 5 billion multiply-adds at 299x299.

The network runs on three grids: 35x35 with three `InceptionA` modules (Figure 5), 17x17
with four `InceptionB` modules (Figure 6, n=7) and 8x8 with two `InceptionC` modules (Figure
7), joined by `ReductionA` and `ReductionB` (Figure 10). (torchvision calls the same five
modules InceptionA, C, E and B, D.) One auxiliary classifier on the 17x17 grid runs in
training only, where the forward returns `AuxOutputs(logits, aux_logits, aux_weight)`.
`inception_v3` builds it by default: 27,161,264 parameters, 23,834,568 without it.

NOTE: The layers follow the released TensorFlow implementation, which torchvision and timm
reproduce and whose weights they ship, not Table 1 literally: the stem is 3x3/2, 3x3, 3x3,
max-pool, 1x1 80, 3x3 192, max-pool (Table 1 lists 3x3 80, 3x3/2 192, 3x3 288), and the 35x35
modules keep a 5x5 branch beside the double 3x3 one (Figure 5 replaces the 5x5).
NOTE: The paper does not give the auxiliary loss weight; we use 0.4, the weight of
TF-slim's training script. Label smoothing (Section 7) is a training choice: the engine's
`label_smoothing=0.1`, not part of the model.
NOTE: The auxiliary head pools 5x5 with stride 3, as the paper's, when the 17x17 grid is at
least 17 wide (inputs of 299 and more); below that it pools adaptively to 5x5, so training
works at every size the main network accepts (torchvision's head fails below 299).
NOTE: torchvision's `transform_input` is not built in; ports are verified against torchvision
built with `transform_input=False`, and ported weights expect inputs scaled to [-1, 1].
"""

from __future__ import annotations

from functools import partial

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter, rename_keys
from visionzoo.layers import ConvNormAct
from visionzoo.models.base import (
    AuxOutputs,
    FeatureInfo,
    ImageClassifier,
    init_weights_he,
)
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="Inception",
    year=2015,
    paper="Rethinking the Inception Architecture for Computer Vision",
    url="https://arxiv.org/abs/1512.00567",
    authors="Christian Szegedy, Vincent Vanhoucke, Sergey Ioffe, Jonathon Shlens, Zbigniew Wojna",
)


def conv(
    in_channels: int,
    out_channels: int,
    kernel: int | tuple[int, int],
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
) -> ConvNormAct:
    """Conv (no bias) -> BN (eps 1e-3) -> ReLU; unpadded unless `padding` says otherwise."""
    bn = partial(nn.BatchNorm2d, eps=1e-3)
    return ConvNormAct(in_channels, out_channels, kernel, stride, padding, norm_layer=bn)  # type: ignore[arg-type]


def conv_1xn(channels: int, out_channels: int, n: int = 7) -> ConvNormAct:
    return conv(channels, out_channels, (1, n), padding=(0, n // 2))


def conv_nx1(channels: int, out_channels: int, n: int = 7) -> ConvNormAct:
    return conv(channels, out_channels, (n, 1), padding=(n // 2, 0))


def pool_branch(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.AvgPool2d(3, 1, padding=1), conv(in_channels, out_channels, 1))


class InceptionA(nn.Module):
    """Figure 5 (35x35): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1."""

    def __init__(self, in_channels: int, pool_channels: int) -> None:
        super().__init__()
        self.branch1x1 = conv(in_channels, 64, 1)
        self.branch5x5 = nn.Sequential(conv(in_channels, 48, 1), conv(48, 64, 5, padding=2))
        self.branch3x3dbl = nn.Sequential(
            conv(in_channels, 64, 1), conv(64, 96, 3, padding=1), conv(96, 96, 3, padding=1)
        )
        self.branch_pool = pool_branch(in_channels, pool_channels)
        self.out_channels = 64 + 64 + 96 + pool_channels

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1x1, self.branch5x5, self.branch3x3dbl, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], 1)


class ReductionA(nn.Module):
    """Figure 10 (35x35 -> 17x17): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max-pool/2, concatenated."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = conv(in_channels, 384, 3, stride=2)
        self.branch3x3dbl = nn.Sequential(
            conv(in_channels, 64, 1), conv(64, 96, 3, padding=1), conv(96, 96, 3, stride=2)
        )
        self.branch_pool = nn.MaxPool2d(3, 2)
        self.out_channels = 384 + 96 + in_channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)], 1)


class InceptionB(nn.Module):
    """Figure 6 (17x17), n=7: each 7x7 factorized into 1x7 and 7x1; `mid` inner channels."""

    def __init__(self, in_channels: int, mid: int) -> None:
        super().__init__()
        self.branch1x1 = conv(in_channels, 192, 1)
        self.branch7x7 = nn.Sequential(
            conv(in_channels, mid, 1), conv_1xn(mid, mid), conv_nx1(mid, 192)
        )
        self.branch7x7dbl = nn.Sequential(
            conv(in_channels, mid, 1),
            conv_nx1(mid, mid),
            conv_1xn(mid, mid),
            conv_nx1(mid, mid),
            conv_1xn(mid, 192),
        )
        self.branch_pool = pool_branch(in_channels, 192)
        self.out_channels = 4 * 192

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1x1, self.branch7x7, self.branch7x7dbl, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], 1)


class ReductionB(nn.Module):
    """17x17 -> 8x8: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = nn.Sequential(conv(in_channels, 192, 1), conv(192, 320, 3, stride=2))
        self.branch7x7x3 = nn.Sequential(
            conv(in_channels, 192, 1),
            conv_1xn(192, 192),
            conv_nx1(192, 192),
            conv(192, 192, 3, stride=2),
        )
        self.branch_pool = nn.MaxPool2d(3, 2)
        self.out_channels = 320 + 192 + in_channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch7x7x3(x), self.branch_pool(x)], 1)


class ExpandedBranch(nn.Module):
    """Figure 7's split: `stem`, then a 1x3 and a 3x1 side by side, concatenated."""

    def __init__(self, stem: nn.Sequential, channels: int, out_channels: int) -> None:
        super().__init__()
        self.stem = stem
        self.conv1x3 = conv_1xn(channels, out_channels, 3)
        self.conv3x1 = conv_nx1(channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        return torch.cat([self.conv1x3(x), self.conv3x1(x)], 1)


class InceptionC(nn.Module):
    """Figure 7 (8x8): expanded filter banks, 1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = conv(in_channels, 320, 1)
        self.branch3x3 = ExpandedBranch(nn.Sequential(conv(in_channels, 384, 1)), 384, 384)
        stem = nn.Sequential(conv(in_channels, 448, 1), conv(448, 384, 3, padding=1))
        self.branch3x3dbl = ExpandedBranch(stem, 384, 384)
        self.branch_pool = pool_branch(in_channels, 192)
        self.out_channels = 320 + 2 * 384 + 2 * 384 + 192

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1x1, self.branch3x3, self.branch3x3dbl, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], 1)


@torch.fx.wrap  # branches on the map's size: torch.fx records it as one call
def aux_pool(x: Tensor) -> Tensor:
    """(B, 768, 17, 17) -> (B, 768, 5, 5) by 5x5/3 average pooling; adaptive below 17x17."""
    if min(x.shape[-2:]) >= 17:
        return F.avg_pool2d(x, 5, 3)
    return F.adaptive_avg_pool2d(x, 5)  # small inputs: no 17x17 grid to pool


class AuxClassifier(nn.Module):
    """On the 17x17 grid: avg-pool 5x5/3 -> 1x1 conv 128 -> 5x5 conv 768 (BN) -> linear."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.reduce = conv(in_channels, 128, 1)
        self.conv = conv(128, 768, 5)  # the batch-normalized "fully connected" layer
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.reduce(aux_pool(x)))  # (B, 768, 5, 5) -> (B, 768, 1, 1)
        return self.fc(x.mean((2, 3)))


class InceptionV3(ImageClassifier):
    """Stem -> 3 x InceptionA -> ReductionA -> 4 x InceptionB -> ReductionB -> 2 x InceptionC."""

    supports_small_input = True

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 299,
        aux_logits: bool = True,  # the auxiliary classifier on the 17x17 grid (training only)
        aux_weight: float = 0.4,  # TF-slim's weight; the paper gives none
        dropout: float = 0.5,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.small_input = in_channels, image_size, small_input
        self.conv1a = conv(in_channels, 32, 3, stride=1 if small_input else 2)
        self.conv2a = conv(32, 32, 3)
        self.conv2b = conv(32, 64, 3, padding=1)
        self.pool1 = nn.Identity() if small_input else nn.MaxPool2d(3, 2)
        self.conv3b = conv(64, 80, 1)
        self.conv4a = conv(80, 192, 3)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.mixed5 = nn.Sequential(InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64))
        self.mixed6 = nn.Sequential(
            ReductionA(288), *[InceptionB(768, mid) for mid in (128, 160, 160, 192)]
        )
        self.mixed7 = nn.Sequential(ReductionB(768), InceptionC(1280), InceptionC(2048))
        self.aux_weight, self.num_classes, self.num_features = aux_weight, num_classes, 2048
        self.aux = AuxClassifier(768, num_classes) if aux_logits and num_classes > 0 else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2048, num_classes) if num_classes > 0 else nn.Identity()
        self.min_image_size = 21 if small_input else 75  # smallest sides that reach mixed7
        strides = (1, 1, 2, 4, 8) if small_input else (2, 4, 8, 16, 32)
        taps = (("conv2b", 64), ("conv4a", 192), ("mixed5", 288), ("mixed6", 768), ("mixed7", 2048))
        self.feature_info = [FeatureInfo(n, c, s) for (n, c), s in zip(taps, strides)]
        init_weights_he(self)

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Own loop: the levels sit in a flat layer list with pools between, not stages."""
        c2 = self.conv2b(self.conv2a(self.conv1a(x)))
        c4 = self.conv4a(self.conv3b(self.pool1(c2)))
        m5 = self.mixed5(self.pool2(c4))
        m6 = self.mixed6(m5)
        return [c2, c4, m5, m6, self.mixed7(m6)]

    def _to_17x17(self, x: Tensor) -> Tensor:
        x = self.conv2b(self.conv2a(self.conv1a(x)))  # (B, 64, 147, 147) at 299
        x = self.pool2(self.conv4a(self.conv3b(self.pool1(x))))  # (B, 192, 35, 35)
        return self.mixed6(self.mixed5(x))  # (B, 768, 17, 17)

    def forward(self, x: Tensor) -> Tensor | AuxOutputs:  # type: ignore[override]
        """Logits; in training mode with the auxiliary classifier, `AuxOutputs`."""
        if not (self.training and self.aux is not None):
            return super().forward(x)
        x = self._to_17x17(self.check_input(x))
        aux = self.aux(x)
        return AuxOutputs(self.forward_head(self.mixed7(x)), (aux,), self.aux_weight)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.mixed7(self._to_17x17(x))  # (B, 2048, 8, 8)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(x.mean((2, 3)))  # global average pool: (B, 2048, H, W) -> (B, 2048)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        """New main and auxiliary classifiers for `num_classes`; 0 drops the auxiliary one."""
        super().reset_classifier(num_classes)
        if self.aux is not None:
            self.aux = AuxClassifier(768, num_classes) if num_classes > 0 else None


_SMALL = "the first conv has stride 1 (was 2) and the first max-pool is dropped (total stride 8)"


@register_model(FAMILY, params=27_161_264, image_size=299, min_image_size=75, small_input=_SMALL,
                params_source="torchvision 0.29.1 (Inception_V3_Weights, with the auxiliary "
                "classifier); 23,834,568 without it", torchvision="inception_v3")  # fmt: skip
def inception_v3(**kwargs) -> InceptionV3:
    """Inception v3 with its auxiliary classifier (pass aux_logits=False to drop it)."""
    return InceptionV3(**kwargs)


_TOP_LEVEL = [(rf"^Conv2d_{n}_\dx\d\.", f"conv{n}.") for n in ("1a", "2a", "2b", "3b", "4a")]
_GRIDS = [(rf"^Mixed_{g}{c}\.", f"mixed{g}.{i}.") for g, cs in (("5", "bcd"), ("6", "abcde"),
          ("7", "abc")) for i, c in enumerate(cs)]  # fmt: skip
_EXPANDED = [  # InceptionC (torchvision's InceptionE) only: mixed7.1 and mixed7.2
    (r"^(mixed7\.[12])\.branch3x3_1\.", r"\1.branch3x3.stem.0."),
    (r"^(mixed7\.[12])\.branch3x3_2a\.", r"\1.branch3x3.conv1x3."),
    (r"^(mixed7\.[12])\.branch3x3_2b\.", r"\1.branch3x3.conv3x1."),
    (
        r"^(mixed7\.[12])\.branch3x3dbl_([12])\.",
        lambda m: f"{m[1]}.branch3x3dbl.stem.{int(m[2]) - 1}.",
    ),
    (r"^(mixed7\.[12])\.branch3x3dbl_3a\.", r"\1.branch3x3dbl.conv1x3."),
    (r"^(mixed7\.[12])\.branch3x3dbl_3b\.", r"\1.branch3x3dbl.conv3x1."),
]
_CHAINS = [  # branch5x5_2 -> branch5x5.1 (a Sequential); the pool branch's conv follows its pool
    (r"\.(branch[0-9a-z]+)_(\d)\.", lambda m: f".{m[1]}.{int(m[2]) - 1}."),
    (r"\.branch_pool\.(conv|bn)\.", r".branch_pool.1.\1."),
    (r"^AuxLogits\.conv0\.", "aux.reduce."),
    (r"^AuxLogits\.conv1\.", "aux.conv."),
    (r"^AuxLogits\.fc\.", "aux.fc."),
    (r"^fc\.", "classifier."),
    (r"\.bn\.", ".norm."),  # BasicConv2d's bn -> ConvNormAct's norm
]


@register_converter("torchvision", "inception_v3")
def _from_torchvision(state_dict: StateDict) -> StateDict:
    return rename_keys(state_dict, _TOP_LEVEL + _GRIDS + _EXPANDED + _CHAINS)  # type: ignore[arg-type]
