"""GoogLeNet (Inception v1): Going Deeper with Convolutions.

Christian Szegedy, Wei Liu, Yangqing Jia, Pierre Sermanet, Scott Reed, Dragomir Anguelov,
Dumitru Erhan, Vincent Vanhoucke, Andrew Rabinovich. CVPR 2015. https://arxiv.org/abs/1409.4842

Key idea: the Inception module runs 1x1, 3x3 and 5x5 convolutions and a 3x3 max-pool side by
side and concatenates them; 1x1 "reduction" convolutions before the expensive filters keep
the cost flat, so a 22-layer network fits a 1.5 billion multiply-add budget. Global average
pooling replaces the big fully connected head; two auxiliary classifiers feed gradient in.

The auxiliary classifiers sit on inception (4a) and (4d) and run in training mode only: there
the forward returns `AuxOutputs(logits, aux_logits, aux_weight)`, the auxiliary losses weighted
0.3 as the paper says (`AUX_WEIGHT`); in eval mode it returns the logits alone. `googlenet`
builds them by default: 13,004,888 parameters, of which 6,624,904 are the inference network
(torchvision's published count, `aux_logits=False`).

NOTE: The "5x5" branch uses 3x3 kernels by default, as torchvision's GoogLeNet and the
weights it ships do (a known slip kept for compatibility, pytorch/vision issue #906).
`googlenet(paper_5x5=True)` builds the paper's 5x5 kernels: 7,005,832 parameters without
the auxiliary classifiers, 13,385,816 with them; torchvision weights do not fit it.
NOTE: Every convolution is followed by batch normalization (eps 1e-3) and has no bias, as in
torchvision (whose weights are ported from a TensorFlow re-training); BN postdates the paper.
The paper's local response normalization in the stem is therefore left out.
NOTE: The auxiliary classifiers pool adaptively to 4x4 (as torchvision does) instead of the
paper's 5x5 average pool with stride 3; the two agree in size at a 14x14 map but not in
which pixels they average, and adaptive pooling works at every input size.
NOTE: The final dropout is the paper's 40% (torchvision uses 20%); the auxiliary
classifiers drop 70%. Neither matters at inference.
NOTE: torchvision's `transform_input` (re-normalizing ImageNet-normalized inputs to the
[-1, 1] range the ported TF weights expect) is not built in; ports are verified against
torchvision built with `transform_input=False`, and ported weights expect [-1, 1] inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter, rename_keys
from visionzoo.layers import ConvNormAct
from visionzoo.models.base import (
    AUX_WEIGHT,
    AuxOutputs,
    FeatureInfo,
    ImageClassifier,
    init_weights_he,
)
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="Inception",
    year=2014,
    paper="Going Deeper with Convolutions",
    url="https://arxiv.org/abs/1409.4842",
    authors="Christian Szegedy, Wei Liu, Yangqing Jia, Pierre Sermanet, Scott Reed, "
    "Dragomir Anguelov, Dumitru Erhan, Vincent Vanhoucke, Andrew Rabinovich",
)

BasicConv = partial(ConvNormAct, norm_layer=partial(nn.BatchNorm2d, eps=1e-3))


@dataclass(frozen=True)
class InceptionSpec:
    """One inception row of the paper's Table 1 (output channels of each branch)."""

    name: str  # "3a"
    conv1x1: int  # "#1x1"
    reduce3x3: int  # "#3x3 reduce"
    conv3x3: int  # "#3x3"
    reduce5x5: int  # "#5x5 reduce"
    conv5x5: int  # "#5x5"
    pool_proj: int  # "pool proj"

    @property
    def out_channels(self) -> int:
        return self.conv1x1 + self.conv3x3 + self.conv5x5 + self.pool_proj


# Table 1 of the paper.
INCEPTIONS = (
    InceptionSpec("3a", 64, 96, 128, 16, 32, 32),
    InceptionSpec("3b", 128, 128, 192, 32, 96, 64),
    InceptionSpec("4a", 192, 96, 208, 16, 48, 64),
    InceptionSpec("4b", 160, 112, 224, 24, 64, 64),
    InceptionSpec("4c", 128, 128, 256, 24, 64, 64),
    InceptionSpec("4d", 112, 144, 288, 32, 64, 64),
    InceptionSpec("4e", 256, 160, 320, 32, 128, 128),
    InceptionSpec("5a", 256, 160, 320, 32, 128, 128),
    InceptionSpec("5b", 384, 192, 384, 48, 128, 128),
)


class Inception(nn.Module):
    """Figure 2(b): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool -> 1x1, concatenated."""

    def __init__(self, in_channels: int, spec: InceptionSpec, kernel5x5: int = 3) -> None:
        super().__init__()
        self.branch1x1 = BasicConv(in_channels, spec.conv1x1, 1)
        self.branch3x3 = nn.Sequential(
            BasicConv(in_channels, spec.reduce3x3, 1), BasicConv(spec.reduce3x3, spec.conv3x3, 3)
        )
        self.branch5x5 = nn.Sequential(
            BasicConv(in_channels, spec.reduce5x5, 1),
            BasicConv(spec.reduce5x5, spec.conv5x5, kernel5x5),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, 1, padding=1, ceil_mode=True), BasicConv(in_channels, spec.pool_proj, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1x1, self.branch3x3, self.branch5x5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], 1)  # filter concatenation


class AuxClassifier(nn.Module):
    """Section 5: avg-pool to 4x4 -> 1x1 conv 128 -> fc 1024 + ReLU -> dropout 70% -> linear."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv(in_channels, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, 4)).flatten(1)  # (B, C, H, W) -> (B, 2048)
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


# The network in order: stem, then inception modules with max-pools between the groups.
LAYERS = ("conv1", "pool1", "conv2", "conv3", "pool2", "inception3a", "inception3b", "pool3",
          "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "pool4",
          "inception5a", "inception5b")  # fmt: skip
AUX_TAPS = {"inception4a": "aux1", "inception4d": "aux2"}


class GoogLeNet(ImageClassifier):
    """Stem -> inception (3a)-(5b) -> global average pool -> dropout -> linear."""

    supports_small_input = True

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        aux_logits: bool = True,  # the two auxiliary classifiers (training only)
        aux_weight: float = AUX_WEIGHT,  # "weighted by 0.3" (Section 5)
        paper_5x5: bool = False,  # True: real 5x5 kernels (torchvision uses 3x3)
        dropout: float = 0.4,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.small_input = in_channels, image_size, small_input
        self.conv1 = BasicConv(in_channels, 64, 7, stride=1 if small_input else 2)
        self.pool1 = nn.Identity() if small_input else nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv(64, 64, 1)
        self.conv3 = BasicConv(64, 192, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.pool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.pool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        width, channels = 192, {}
        for spec in INCEPTIONS:
            self.add_module(f"inception{spec.name}", Inception(width, spec, 5 if paper_5x5 else 3))
            width = channels[spec.name] = spec.out_channels
        self.aux_weight = aux_weight
        self.num_classes, self.num_features = num_classes, 1024
        self.aux1: AuxClassifier | None = None
        self.aux2: AuxClassifier | None = None
        if aux_logits and num_classes > 0:
            self._make_aux(num_classes)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()
        self.min_image_size = 4 if small_input else 15  # smallest sides that reach inception5b
        strides = (1, 1, 2, 4, 8) if small_input else (2, 4, 8, 16, 32)
        taps = (("conv1", 64), ("conv3", 192), ("inception3b", channels["3b"]),
                ("inception4e", channels["4e"]), ("inception5b", channels["5b"]))  # fmt: skip
        self.feature_info = [FeatureInfo(n, c, s) for (n, c), s in zip(taps, strides)]
        init_weights_he(self)

    def _make_aux(self, num_classes: int) -> None:
        widths = {spec.name: spec.out_channels for spec in INCEPTIONS}
        self.aux1 = AuxClassifier(widths["4a"], num_classes)
        self.aux2 = AuxClassifier(widths["4d"], num_classes)

    def _run(
        self, x: Tensor, taps: list[Tensor] | None = None, aux: list[Tensor] | None = None
    ) -> Tensor:
        """The layers in order; collects the feature_info maps in `taps` and the auxiliary
        logits in `aux` when given."""
        tap_names = {info.name for info in self.feature_info}
        for name in LAYERS:
            x = getattr(self, name)(x)
            if aux is not None and name in AUX_TAPS:
                aux.append(getattr(self, AUX_TAPS[name])(x))
            if taps is not None and name in tap_names:
                taps.append(x)
        return x

    def forward(self, x: Tensor) -> Tensor | AuxOutputs:  # type: ignore[override]
        """Logits; in training mode with auxiliary classifiers, `AuxOutputs`."""
        if not (self.training and self.aux1 is not None):
            return super().forward(x)
        aux: list[Tensor] = []
        x = self._run(self.check_input(x), aux=aux)
        return AuxOutputs(self.forward_head(x), tuple(aux), self.aux_weight)

    def forward_features(self, x: Tensor) -> Tensor:
        return self._run(x)  # (B, 1024, 7, 7) at 224

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Own loop: the levels are taps in a flat layer list (`_run`), not stages."""
        taps: list[Tensor] = []
        self._run(x, taps)
        return taps

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(x.mean((2, 3)))  # global average pool: (B, 1024, H, W) -> (B, 1024)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        """New main and auxiliary classifiers for `num_classes`; 0 drops the auxiliary ones."""
        super().reset_classifier(num_classes)
        if self.aux1 is not None and num_classes > 0:
            self._make_aux(num_classes)
        elif num_classes <= 0:
            self.aux1 = self.aux2 = None


_SMALL = "conv1 has stride 1 (was 2) and the first max-pool is dropped (total stride 8, was 32)"


@register_model(FAMILY, params=13_004_888, min_image_size=15, small_input=_SMALL,
                params_source="torchvision 0.29.1 GoogLeNet(aux_logits=True); 6,624,904 "
                "without the auxiliary classifiers (GoogLeNet_Weights meta)",
                torchvision="googlenet")  # fmt: skip
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet with its two auxiliary classifiers (pass aux_logits=False to drop them)."""
    return GoogLeNet(**kwargs)


@register_converter("torchvision", "googlenet")
def _from_torchvision(state_dict: StateDict) -> StateDict:
    branches = {"1": "branch1x1", "2": "branch3x3", "3": "branch5x5", "4": "branch_pool"}
    rules = [(rf"\.branch{i}\.", f".{name}.") for i, name in branches.items()]
    rules += [(r"^fc\.", "classifier."), (r"\.bn\.", ".norm.")]  # BasicConv2d's bn -> norm
    return rename_keys(state_dict, rules)
