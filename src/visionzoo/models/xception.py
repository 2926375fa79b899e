"""Xception: Deep Learning with Depthwise Separable Convolutions.

Francois Chollet. CVPR 2017. arXiv:1610.02357. https://arxiv.org/abs/1610.02357

Key idea: take the Inception hypothesis (cross-channel and spatial correlations can be
mapped separately) to its extreme: replace Inception modules by depthwise separable
convolutions (a 1x1 pointwise convolution after a per-channel 3x3 spatial one), stacked
linearly with residual connections. Same parameters as Inception v3, better accuracy.

Layout (Figure 5, 299x299 input): 36 convolutions in 14 modules. Entry flow: 3x3/2 conv
(32 ch) and 3x3 conv (64 ch), both unpadded (149, 147 px), then three residual modules of
two separable convolutions and a 3x3/2 max-pool, with 1x1/2 convolutions on the shortcut:
128 (74 px), 256 (37 px), 728 (19 px) channels. Middle flow: eight residual modules of three
ReLU-separable-conv layers at 728 channels, identity shortcuts. Exit flow: one residual
module 728 -> 1024 (10 px), separable convolutions to 1536 and 2048 channels, global
average pooling, dropout 0.5, logistic regression. Every convolution is followed by BN.

NOTE: Layout and weights follow timm's `legacy_xception` (Keras's Xception, ported), which
is the paper's Figure 5 with its 22,855,952 parameters (Table 3). timm has no dropout
layer; ours keeps the paper's 0.5 (inactive in eval mode, so ports are exact).
NOTE: The separable convolution has no BN or nonlinearity between its depthwise and
pointwise steps (the paper found an intermediate ReLU hurts); BN follows the pointwise step.
NOTE: `small_input=True` (28x28, 32x32 images) makes the first stem convolution stride 1
and pads both stem convolutions ("same"): total stride 16 instead of 32, 2x2 final maps for
32x32 inputs. Weights and parameter count are unchanged. The paper has no such mode.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter, rename_keys
from visionzoo.layers.conv_norm_act import ConvNormAct
from visionzoo.models.base import FeatureInfo, ImageClassifier, init_weights_he
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="Xception",
    year=2016,
    paper="Xception: Deep Learning with Depthwise Separable Convolutions",
    url="https://arxiv.org/abs/1610.02357",
    authors="Francois Chollet",
)


class SeparableConv2d(nn.Module):
    """Depthwise kxk convolution (one filter per channel) -> pointwise 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=pad, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


def relu_sepconv_bn(in_channels: int, out_channels: int, relu: bool = True) -> nn.Sequential:
    """One layer of Figure 5: ReLU -> SeparableConv -> BN (the ReLU leads, the BN trails)."""
    # Not in place: the module's shortcut still needs the unactivated input.
    act = nn.ReLU() if relu else nn.Identity()
    conv = SeparableConv2d(in_channels, out_channels)
    return nn.Sequential(OrderedDict(act=act, conv=conv, bn=nn.BatchNorm2d(out_channels)))


class XceptionModule(nn.Module):
    """A residual module of Figure 5: y = pool(layers(x)) + shortcut(x).

    `repeats` ReLU-SeparableConv-BN layers; with stride 2, a 3x3/2 max-pool ends the branch
    and the shortcut is a strided 1x1 conv + BN. The width grows at the first layer, or at
    the last one (`grow_first=False`, the exit flow's 728 -> 728 -> 1024).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        repeats: int,
        stride: int = 1,
        relu_first: bool = True,  # False where the stem's ReLU just ran (first entry module)
        grow_first: bool = True,
    ) -> None:
        super().__init__()
        widths = [in_channels] + (
            [out_channels] * repeats
            if grow_first
            else [in_channels] * (repeats - 1) + [out_channels]
        )
        self.layers = nn.Sequential(
            *(
                relu_sepconv_bn(widths[i], widths[i + 1], relu_first or i > 0)
                for i in range(repeats)
            )
        )
        self.pool = nn.MaxPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        if stride > 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ConvNormAct(
                in_channels, out_channels, 1, stride, act_layer=None
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.layers(x)) + self.shortcut(x)


def sepconv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """The exit flow's last layers: SeparableConv -> BN -> ReLU."""
    conv = SeparableConv2d(in_channels, out_channels)
    act = nn.ReLU(inplace=True)
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(out_channels), act=act))


class Xception(ImageClassifier):
    """stem (two convs) -> entry flow (3 modules) -> middle flow (8) -> exit flow -> pool -> FC."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 299,
        middle_repeats: int = 8,  # modules in the middle flow
        dropout: float = 0.5,  # before the logistic regression (the paper's ImageNet setup)
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.small_input, self.supports_small_input = small_input, True
        stride, pad = (1, 1) if small_input else (2, 0)
        self.stem = nn.Sequential(
            ConvNormAct(in_channels, 32, 3, stride, padding=pad),
            ConvNormAct(32, 64, 3, 1, padding=pad),
        )
        self.entry = nn.Sequential(
            XceptionModule(64, 128, 2, 2, relu_first=False),
            XceptionModule(128, 256, 2, 2),
            XceptionModule(256, 728, 2, 2),
        )
        self.middle = nn.Sequential(*(XceptionModule(728, 728, 3) for _ in range(middle_repeats)))
        self.exit = nn.Sequential(
            XceptionModule(728, 1024, 2, 2, grow_first=False),
            sepconv_bn_relu(1024, 1536),
            sepconv_bn_relu(1536, 2048),
        )
        self.feature_info = [
            FeatureInfo("stem", 64, stride),
            FeatureInfo("entry.0", 128, stride * 2),
            FeatureInfo("entry.1", 256, stride * 4),
            FeatureInfo("entry.2", 728, stride * 8),
            FeatureInfo("middle", 728, stride * 8),
            FeatureInfo("exit", 2048, stride * 16),
        ]
        self.min_image_size = stride * 16  # the exit flow sees at least one full-stride cell
        self.num_features = 2048
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2048, num_classes) if num_classes else nn.Identity()
        init_weights_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.entry(self.stem(x))  # (B, 728, H/16, W/16)
        return self.exit(self.middle(x))  # (B, 2048, H/32, W/32)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(x.mean((2, 3)))  # global average pooling: (B, C, h, w) -> (B, C)
        return x if pre_logits else self.classifier(x)

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Own loop: the levels are the stem, each entry-flow block, the middle and exit flows."""
        x = self.stem(x)
        out = [x]
        for module in self.entry:
            x = module(x)
            out.append(x)
        x = self.middle(x)
        out.append(x)
        out.append(self.exit(x))
        return out


_BN_KEYS = "weight|bias|running_mean|running_var|num_batches_tracked"


def _timm_module(i: int) -> str:
    """timm's block1..block12 -> entry.0-2, middle.0-7, exit.0."""
    return f"entry.{i - 1}" if i <= 3 else f"middle.{i - 4}" if i <= 11 else "exit.0"


@register_converter("timm", "xception")
def _from_timm(state_dict: StateDict) -> StateDict:
    """timm's conv1..4/bn1..4/blockN.rep.K/skip/fc names -> ours."""
    rules = [(rf"^conv{i}\.", f"stem.{i - 1}.conv.") for i in (1, 2)]
    rules += [(rf"^bn{i}\.", f"stem.{i - 1}.norm.") for i in (1, 2)]
    for i in (3, 4):
        rules += [
            (rf"^conv{i}\.conv1\.", f"exit.{i - 2}.conv.depthwise."),
            (rf"^conv{i}\.pointwise\.", f"exit.{i - 2}.conv.pointwise."),
            (rf"^bn{i}\.", f"exit.{i - 2}.bn."),
        ]
    for i in range(1, 13):
        prefix = _timm_module(i)
        rules += [
            (rf"^block{i}\.skip\.", f"{prefix}.shortcut.conv."),
            (rf"^block{i}\.skipbn\.", f"{prefix}.shortcut.norm."),
        ]
        # rep = [ReLU, SepConv, BN] per layer (block1 lacks the first ReLU): layer = index // 3.
        for k in range(9):
            layer = f"{prefix}.layers.{k // 3}"
            rules += [
                (rf"^block{i}\.rep\.{k}\.conv1\.", f"{layer}.conv.depthwise."),
                (rf"^block{i}\.rep\.{k}\.pointwise\.", f"{layer}.conv.pointwise."),
                (rf"^block{i}\.rep\.{k}\.({_BN_KEYS})$", rf"{layer}.bn.\1"),
            ]
    rules.append((r"^fc\.", "classifier."))
    return rename_keys(state_dict, rules)


@register_model(
    FAMILY,
    params=22_855_952,
    params_source="timm 1.0.31 legacy_xception (= paper Table 3)",
    image_size=299,
    min_image_size=32,  # the total stride: the exit flow sees one full-stride cell
    small_input="stride-1, padded stem: total stride 16 instead of 32",
    timm="legacy_xception",
)
def xception(**kwargs) -> Xception:
    """Xception (Figure 5): entry, middle (8 modules) and exit flows."""
    return Xception(**kwargs)
