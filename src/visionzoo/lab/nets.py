"""Lab-only networks: the small twins the history experiments compare.

Key idea: a claim compares two networks that differ in one thing (ReLU or tanh, a 3x3 stack
or one larger kernel, 1x1 reductions or none). Where the registered families have no such
switch, the lab builds the pair here, from the families' own blocks where they exist
(GoogLeNet's `Inception` and `AuxClassifier`, `resnet_cifar`, `densenet_cifar`,
`highway_conv`, `MobileNetV1`, `EfficientNet`, `VisionTransformer`).

`fit` trains these builders through its model-builder entry (`fit(..., model=builder)`,
see `core.lab_source`): they never enter the global registry.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.layers import ConvNormAct
from visionzoo.models.base import AuxOutputs, FeatureInfo, ImageClassifier, init_weights_he

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def conv_bn_act(c_in: int, c_out: int, k: int, act: type[nn.Module] = nn.ReLU) -> nn.Module:
    """The shared `ConvNormAct` ("same" padding, BatchNorm), activation selectable."""
    return ConvNormAct(c_in, c_out, k, act_layer=act, inplace=None)


class _LabNet(ImageClassifier):
    """Shared plumbing: `self.stages` (a ModuleList), GAP or flatten head, `self.classifier`."""

    stages: nn.ModuleList

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


class CNN4(_LabNet):
    """AlexNet Sec. 3.1's "four-layer convolutional neural network": three 5x5 conv + pool
    layers and a linear classifier (cuda-convnet's CIFAR layout), activation selectable.

    `hidden > 0` adds a fully connected hidden layer with dropout (the AlexNet head in
    miniature) for the dropout/augmentation experiment. No batch normalization: the 2012
    networks had none, and it would hide the difference between activations.
    """

    def __init__(
        self,
        act: str = "relu",
        widths: tuple[int, int, int] = (32, 32, 64),
        hidden: int = 0,
        dropout: float = 0.0,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        act_layer = ACTIVATIONS[act]
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.min_image_size = 8
        stages, c, self.feature_info = [], in_channels, []
        for i, w in enumerate(widths):
            stages.append(
                nn.Sequential(
                    nn.Conv2d(c, w, 5, padding=2), act_layer(), nn.MaxPool2d(2, ceil_mode=True)
                )
            )
            self.feature_info.append(FeatureInfo(f"stages.{i}", w, 2 ** (i + 1)))
            c = w
        self.stages = nn.ModuleList(stages)
        self.pooled = 3  # adaptive pool to 3x3: 28 px -> 4x4 maps, 32 px -> 4x4
        features = c * self.pooled**2
        self.hidden: nn.Module
        if hidden:
            self.hidden = nn.Sequential(
                nn.Linear(features, hidden), act_layer(), nn.Dropout(dropout)
            )
            features = hidden
        else:
            self.hidden = nn.Identity()
        self.num_features = features
        self.classifier = nn.Linear(features, num_classes)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = F.adaptive_avg_pool2d(x, self.pooled).flatten(1)  # (B, C, h, w) -> (B, 9C)
        x = self.hidden(x)
        return x if pre_logits else self.classifier(x)


class KernelNet(_LabNet):
    """VGG Sec. 2.3 in miniature: a 3x3 stem, then per stage a C -> C body that is either a
    stack of `n` 3x3 convolutions or one (2n+1)x(2n+1) convolution (the same receptive
    field), then a 1x1 transition to the next width and 2x2 max-pooling; GAP -> linear."""

    def __init__(
        self,
        kernel: str = "stack",  # "stack": n 3x3 layers; "large": one (2n+1)x(2n+1) layer
        n: int = 2,
        widths: tuple[int, ...] = (16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        if kernel not in ("stack", "large"):
            raise ValueError(f"kernel must be 'stack' or 'large', got {kernel!r}")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.min_image_size = 2 ** len(widths)
        self.stem = conv_bn_act(in_channels, widths[0], 3)
        stages, self.feature_info = [], []
        for i, w in enumerate(widths):
            body = (
                [conv_bn_act(w, w, 3) for _ in range(n)]
                if kernel == "stack"
                else [conv_bn_act(w, w, 2 * n + 1)]
            )
            nxt = widths[i + 1] if i + 1 < len(widths) else w
            tail = [conv_bn_act(w, nxt, 1), nn.MaxPool2d(2)] if i + 1 < len(widths) else []
            stages.append(nn.Sequential(*body, *tail))
            self.feature_info.append(
                FeatureInfo(f"stages.{i}", nxt, 2 ** min(i + 1, len(widths) - 1))
            )
        self.stages = nn.ModuleList(stages)
        self.num_features = widths[-1]
        self.classifier = nn.Linear(widths[-1], num_classes)
        init_weights_he(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return super().forward_features(self.stem(x))

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        return super().forward_intermediates(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean((2, 3))  # (B, C, h, w) -> (B, C)
        return x if pre_logits else self.classifier(x)


class NaiveInception(nn.Module):
    """GoogLeNet Figure 2(a), with the pool projection kept so that the output widths equal
    Figure 2(b)'s: 1x1 | 3x3 | 5x5 on the module input, no 1x1 reductions before them."""

    def __init__(self, in_channels: int, spec) -> None:
        from visionzoo.models.googlenet import BasicConv

        super().__init__()
        self.branch1x1 = BasicConv(in_channels, spec.conv1x1, 1)
        self.branch3x3 = BasicConv(in_channels, spec.conv3x3, 3)
        self.branch5x5 = BasicConv(in_channels, spec.conv5x5, 5)
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, 1, padding=1, ceil_mode=True), BasicConv(in_channels, spec.pool_proj, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1x1, self.branch3x3, self.branch5x5, self.branch_pool)
        return torch.cat([b(x) for b in branches], 1)


class ScaledAux(nn.Module):
    """GoogLeNet Sec. 5's auxiliary classifier with its widths divided by `div` like the body
    (avg-pool 4x4 -> 1x1 conv 128/div -> fc 1024/div -> dropout 70% -> linear), so the
    heads do not outweigh a shrunken body."""

    def __init__(self, in_channels: int, num_classes: int, div: float) -> None:
        from visionzoo.models.googlenet import BasicConv

        super().__init__()
        self.conv = BasicConv(in_channels, int(128 / div), 1)
        self.fc1 = nn.Linear(int(128 / div) * 16, int(1024 / div))
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Linear(int(1024 / div), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, 4)).flatten(1)  # (B, C, H, W) -> (B, 16 C')
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class MiniGoogLeNet(ImageClassifier):
    """GoogLeNet's Table 1 with every width divided by `div` (any positive number), for
    28-32 px images: a 3x3 stem, inception (3a, 3b) at 14x14, (4a-4e) at 7x7, (5a, 5b) at
    4x4, GAP, dropout 0.4, linear. `reduce=False` swaps in `NaiveInception`; `aux=True`
    adds the two auxiliary classifiers after 4a and 4d (`ScaledAux`), whose logits a
    training-mode forward returns in an `AuxOutputs` for the engine's loss (weight 0.3)."""

    def __init__(
        self,
        reduce: bool = True,
        aux: bool = True,
        div: float = 4,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
    ) -> None:
        from dataclasses import replace

        from visionzoo.models.googlenet import INCEPTIONS, BasicConv, Inception

        super().__init__()
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.min_image_size = 8
        self.stem = BasicConv(in_channels, int(192 / div), 3)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        blocks, c, outs = {}, int(192 / div), {}
        for spec in INCEPTIONS:
            fields = ("conv1x1", "reduce3x3", "conv3x3", "reduce5x5", "conv5x5", "pool_proj")
            widths: dict[str, Any] = {f: max(1, int(getattr(spec, f) / div)) for f in fields}
            small = replace(spec, **widths)
            blocks[spec.name] = (
                Inception(c, small, kernel5x5=5) if reduce else NaiveInception(c, small)
            )
            c = outs[spec.name] = small.out_channels
        self.blocks = nn.ModuleDict(blocks)
        w4a, w4d = (outs[k] for k in ("4a", "4d"))
        self.aux1 = ScaledAux(w4a, num_classes, div) if aux else None
        self.aux2 = ScaledAux(w4d, num_classes, div) if aux else None
        self.dropout = nn.Dropout(0.4)
        self.num_features = c
        self.classifier = nn.Linear(c, num_classes)
        self.feature_info = [
            FeatureInfo("blocks.3b", outs["3b"], 2),
            FeatureInfo("blocks.4e", outs["4e"], 4),
            FeatureInfo("blocks.5b", c, 8),
        ]
        init_weights_he(self)

    def _run(
        self, x: Tensor, taps: list[Tensor] | None = None, aux: list[Tensor] | None = None
    ) -> Tensor:
        x = self.stem(x)
        for name, block in self.blocks.items():
            if name in ("3a", "4a", "5a"):
                x = self.pool(x)  # 28 -> 14 -> 7 -> 4
            x = block(x)
            head = {"4a": self.aux1, "4d": self.aux2}.get(name)
            if head is not None and aux is not None:
                aux.append(head(x))
            if taps is not None and name in ("3b", "4e", "5b"):
                taps.append(x)
        return x

    def forward(self, x: Tensor) -> Tensor | AuxOutputs:  # type: ignore[override]
        """Logits; in training mode with auxiliary classifiers, `AuxOutputs`."""
        if not (self.training and self.aux1 is not None):
            return super().forward(x)
        aux: list[Tensor] = []
        x = self._run(x, aux=aux)
        return AuxOutputs(self.forward_head(x), tuple(aux))

    def forward_features(self, x: Tensor) -> Tensor:
        return self._run(x)

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        taps: list[Tensor] = []
        self._run(x, taps)
        return taps

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(x.mean((2, 3)))  # (B, C, h, w) -> (B, C)
        return x if pre_logits else self.classifier(x)


# ---------------------------------------------------------------------------------------
# Builders (passed to `fit` as `model=`, never registered)


def lab_cnn4(**kwargs) -> CNN4:
    return CNN4(**kwargs)


def lab_kernel_net(**kwargs) -> KernelNet:
    return KernelNet(**kwargs)


def lab_googlenet(**kwargs) -> MiniGoogLeNet:
    return MiniGoogLeNet(**kwargs)


def lab_highway_conv(depth: int = 20, width: int = 16, gated: bool = True, **kwargs):
    from visionzoo.models.highway import highway_conv

    return highway_conv(depth, width, gated, **kwargs)


def lab_densenet(depth: int = 40, growth_rate: int = 12, bc: bool = True, **kwargs):
    from visionzoo.models.densenet import densenet_cifar

    return densenet_cifar(depth, growth_rate, bc, **kwargs)


def lab_mobilenet(width_multiplier: float = 1.0, standard: bool = False, **kwargs):
    """MobileNet v1 at `width_multiplier`; `standard=True`: every depthwise separable layer
    replaced by a full 3x3 convolution of the same input/output widths (the paper's
    Table 4 "Conv MobileNet")."""
    from visionzoo.models.mobilenet_v1 import DepthwiseSeparableConv, MobileNetV1

    kwargs.setdefault("small_input", True)
    model = MobileNetV1(width_multiplier=width_multiplier, **kwargs)
    if standard:
        stages: Any = model.stages
        for stage in stages:
            for i, block in enumerate(stage):
                if isinstance(block, DepthwiseSeparableConv):
                    dw: Any = block.dw
                    pw: Any = block.pw
                    stride = dw.conv.stride[0]
                    conv = ConvNormAct(
                        dw.conv.in_channels, pw.conv.out_channels, 3, stride, act_layer=nn.ReLU6
                    )
                    init_weights_he(conv)
                    stage[i] = conv
    return model


def lab_efficientnet(width: float = 0.25, depth: float = 0.5, **kwargs):
    """EfficientNet-B0's rows scaled by (width, depth), small-input stem; the resolution is
    the run's image size."""
    from visionzoo.models.efficientnet import EfficientNet, Scaling

    kwargs.setdefault("small_input", True)
    kwargs.setdefault("drop_path_rate", 0.1)
    return EfficientNet(Scaling(width, depth, kwargs.get("image_size") or 32, 0.2), **kwargs)


def lab_vit(
    embed_dim: int = 48,
    depth: int = 4,
    num_heads: int = 3,
    mlp_ratio: int = 2,
    patch_size: int = 4,
    **kwargs,
):
    """A Vision Transformer of the given size, `patch_size` patches of the run's images."""
    from visionzoo.models.vit import VisionTransformer, ViTConfig

    config = ViTConfig(embed_dim, depth, embed_dim * mlp_ratio, num_heads)
    kwargs.pop("small_input", None)
    return VisionTransformer(config, patch_size, **kwargs)


BUILDERS = (
    lab_cnn4,
    lab_kernel_net,
    lab_googlenet,
    lab_highway_conv,
    lab_densenet,
    lab_mobilenet,
    lab_efficientnet,
    lab_vit,
)


MIN_SIZES = {"lab_mobilenet": 32}  # stride 32 without small_input: pad 28 px images to 32
