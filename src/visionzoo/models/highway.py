"""Highway Networks: Training Very Deep Networks.

Rupesh Kumar Srivastava, Klaus Greff, Juergen Schmidhuber. "Highway Networks", ICML 2015
Deep Learning Workshop, arXiv:1505.00387; full paper "Training Very Deep Networks", NIPS 2015,
arXiv:1507.06228. https://arxiv.org/abs/1507.06228

Key idea: gate each layer like an LSTM cell, y = H(x) * T(x) + x * (1 - T(x)), with a
learned transform gate T(x) = sigmoid(W_T x + b_T). With b_T negative the layer starts
close to the identity (carry behaviour), so information and gradients cross hundreds of
layers and plain SGD trains very deep nets; plain nets of the same depth do not train.

Variants, each with a plain twin (the same layers, no gates: y = H(x)):
- the optimisation study on MNIST (Fig. 1): nets of depth 10, 20, 50 and 100 with 50
  units per highway layer and 71 per plain layer, about 5,000 parameters per layer either
  way (`highway_fc_10/20/50/100`, `plain_fc_10/20/50/100`).
- the 10-layer convolutional nets on MNIST (Table 1: 9 conv layers + softmax, width 16:
  39K parameters, 99.43 %; width 32: 151K, 99.55 %) (`highway_conv_w16`, `highway_conv_w32`,
  `plain_conv_w16`, `plain_conv_w32`).
Other depths and widths: `highway_fc(depth, width, gated)`, `highway_conv(depth, width,
gated)`; `gate_bias` and `act_layer` (nn.ReLU or nn.Tanh, the paper's two choices) too.

NOTE: The transform gate bias starts at -2 (`gate_bias`): the paper advises a negative
value "e.g. -1, -3" (arXiv:1507.06228 Sec. 2.2) and tunes it per experiment; -2 is the
middle of that range, so T(x) is about 0.12 at initialisation.
NOTE: The layout of the convolutional nets is our reconstruction, since the paper gives
only depth, width and parameter counts: a plain 3x3 conv, eight 3x3 highway conv layers,
2x2 max-pooling after layers 3, 6 and 9 (28 -> 14 -> 7 -> 3 px) and a softmax layer on
the flattened 3x3 maps. It gives 38,730 and 151,178 parameters, the paper's 39K and 151K.
NOTE: Depth counts the hidden layers, as we read Sec. 3.1: a plain fully connected first
layer (784 -> 50, it changes the width and so cannot carry), then depth - 1 highway (or
plain) layers, then the softmax layer, which is not counted.
NOTE: Weights are He-normal (fan-in) and biases zero, in highway and plain nets alike;
the paper does not fix one initialisation.
NOTE: Both kinds flatten the image, so the net is built for one input size (`image_size`,
28 by default) and refuses any other. The fully connected nets return their features as
(B, D, 1, 1) maps, and `forward_intermediates` returns every hidden state that way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from visionzoo.models.base import FeatureInfo, ImageClassifier, InputContract
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="Highway Networks",
    year=2015,
    paper="Training Very Deep Networks",
    url="https://arxiv.org/abs/1507.06228",
    authors="Rupesh Kumar Srivastava, Klaus Greff, Juergen Schmidhuber",
)


class PlainLayer(nn.Module):
    """y = H(x) = act(W_H x + b_H): a fully connected (or 3x3 conv) layer."""

    def __init__(self, dim: int, conv: bool = False, act_layer: Callable[[], nn.Module] = nn.ReLU):
        super().__init__()
        self.transform = nn.Conv2d(dim, dim, 3, padding=1) if conv else nn.Linear(dim, dim)
        self.act = act_layer()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.transform(x))


class HighwayLayer(PlainLayer):
    """y = H(x) * T(x) + x * (1 - T(x)), T(x) = sigmoid(W_T x + b_T), b_T < 0 at first."""

    def __init__(
        self,
        dim: int,
        conv: bool = False,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        gate_bias: float = -2.0,
    ) -> None:
        super().__init__(dim, conv, act_layer)
        self.gate = nn.Conv2d(dim, dim, 3, padding=1) if conv else nn.Linear(dim, dim)
        self.gate_bias = gate_bias

    def forward(self, x: Tensor) -> Tensor:
        t = torch.sigmoid(self.gate(x))  # transform gate; the carry gate is 1 - t
        return super().forward(x) * t + x * (1 - t)


class HighwayNet(ImageClassifier):
    """Flatten -> plain first layer -> `depth - 1` highway (or plain) layers -> linear.

    `conv=True`: a plain 3x3 conv, then `depth - 1` 3x3 conv layers, split into three
    stages that each end in 2x2 max-pooling; the classifier reads the flattened last map.
    """

    def __init__(
        self,
        depth: int = 10,
        width: int = 50,
        gated: bool = True,
        conv: bool = False,
        gate_bias: float = -2.0,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        if depth < 1 or (conv and depth < 3):
            raise ValueError(f"depth must be at least {3 if conv else 1}, got {depth}")
        if gate_bias >= 0 and gated:
            raise ValueError(f"the transform gate bias must start negative, got {gate_bias}")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.min_image_size, self.conv, self.gated = image_size, conv, gated
        if conv:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), act_layer())
        else:
            self.stem = nn.Sequential(
                nn.Flatten(), nn.Linear(in_channels * image_size**2, width), act_layer()
            )  # (B, C, H, W) -> (B, C*H*W) -> (B, D)

        def layer() -> nn.Module:
            if gated:
                return HighwayLayer(width, conv, act_layer, gate_bias)
            return PlainLayer(width, conv, act_layer)

        self.layers = nn.ModuleList(layer() for _ in range(depth - 1))
        # Conv nets: 2x2 max-pooling after the last layer of each third of the net.
        self.pool_after = {round(depth * i / 3) - 1 for i in (1, 2, 3)} if conv else set()
        self.pool = nn.MaxPool2d(2)
        side = image_size // 8 if conv else 1  # 28 -> 14 -> 7 -> 3
        self.num_features = width * side * side
        # One level per pooled map (conv) or per hidden layer (FC, "stride" = the image).
        self.feature_info = [FeatureInfo("stem", width, 1 if conv else image_size)]
        stride = 1
        for i in range(depth - 1):
            if i + 1 in self.pool_after:
                stride *= 2
                self.feature_info.append(FeatureInfo(f"layers.{i}", width, stride))
            elif not conv:
                self.feature_info.append(FeatureInfo(f"layers.{i}", width, image_size))
        self.classifier = (
            nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        )
        self._init_weights(gate_bias)

    @torch.no_grad()
    def _init_weights(self, gate_bias: float) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, HighwayLayer):
                nn.init.constant_(m.gate.get_parameter("bias"), gate_bias)

    def input_contract(self) -> InputContract:
        why = "its layers flatten the image"
        return super().input_contract()._replace(fixed_size=self.image_size, fixed_why=why)

    def _run(self, x: Tensor, keep: bool) -> tuple[Tensor, list[Tensor]]:
        x = self.stem(x)
        if 0 in self.pool_after:
            x = self.pool(x)
        states = [x]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 in self.pool_after:
                x = self.pool(x)
            if keep and (i + 1 in self.pool_after or not self.conv):
                states.append(x)
        return x, states

    def forward_features(self, x: Tensor) -> Tensor:
        x, _ = self._run(x, keep=False)
        return x if self.conv else x[:, :, None, None]  # FC: (B, D) -> (B, D, 1, 1)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.flatten(1)  # (B, D, h, w) -> (B, D*h*w)
        return x if pre_logits else self.classifier(x)

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Own loop: the levels are highway layer states (fully connected ones as 1x1 maps)."""
        _, states = self._run(x, keep=True)
        return [s if self.conv else s[:, :, None, None] for s in states]


def highway_fc(depth: int = 10, width: int = 50, gated: bool = True, **kwargs) -> HighwayNet:
    """A fully connected highway net of `depth` layers (`gated=False`: its plain twin)."""
    return HighwayNet(depth, width, gated, conv=False, **kwargs)


def highway_conv(depth: int = 9, width: int = 16, gated: bool = True, **kwargs) -> HighwayNet:
    """A convolutional highway net of `depth` conv layers (`gated=False`: its plain twin)."""
    return HighwayNet(depth, width, gated, conv=True, **kwargs)


_COMMON = dict(image_size=28, in_channels=1, num_classes=10, min_image_size=28)
_FC = "computed; paper: ~5,000 parameters per layer (arXiv:1507.06228 Sec. 3.1)"
_CONV = "computed; paper Table 1: {}"


@register_model(FAMILY, params=85_660, params_source=_FC, **_COMMON)
def highway_fc_10(**kwargs) -> HighwayNet:
    return highway_fc(10, 50, **kwargs)


@register_model(FAMILY, params=136_660, params_source=_FC, **_COMMON)
def highway_fc_20(**kwargs) -> HighwayNet:
    return highway_fc(20, 50, **kwargs)


@register_model(FAMILY, params=289_660, params_source=_FC, **_COMMON)
def highway_fc_50(**kwargs) -> HighwayNet:
    return highway_fc(50, 50, **kwargs)


@register_model(FAMILY, params=544_660, params_source=_FC, **_COMMON)
def highway_fc_100(**kwargs) -> HighwayNet:
    return highway_fc(100, 50, **kwargs)


@register_model(FAMILY, params=102_463, params_source=_FC, **_COMMON)
def plain_fc_10(**kwargs) -> HighwayNet:
    return highway_fc(10, 71, gated=False, **kwargs)


@register_model(FAMILY, params=153_583, params_source=_FC, **_COMMON)
def plain_fc_20(**kwargs) -> HighwayNet:
    return highway_fc(20, 71, gated=False, **kwargs)


@register_model(FAMILY, params=306_943, params_source=_FC, **_COMMON)
def plain_fc_50(**kwargs) -> HighwayNet:
    return highway_fc(50, 71, gated=False, **kwargs)


@register_model(FAMILY, params=562_543, params_source=_FC, **_COMMON)
def plain_fc_100(**kwargs) -> HighwayNet:
    return highway_fc(100, 71, gated=False, **kwargs)


@register_model(FAMILY, params=38_730, params_source=_CONV.format("39K"), **_COMMON)
def highway_conv_w16(**kwargs) -> HighwayNet:
    return highway_conv(9, 16, **kwargs)


@register_model(FAMILY, params=151_178, params_source=_CONV.format("151K"), **_COMMON)
def highway_conv_w32(**kwargs) -> HighwayNet:
    return highway_conv(9, 32, **kwargs)


@register_model(
    FAMILY, params=20_170, params_source="computed (highway_conv_w16 less its gates)", **_COMMON
)
def plain_conv_w16(**kwargs) -> HighwayNet:
    return highway_conv(9, 16, gated=False, **kwargs)


@register_model(
    FAMILY, params=77_194, params_source="computed (highway_conv_w32 less its gates)", **_COMMON
)
def plain_conv_w32(**kwargs) -> HighwayNet:
    return highway_conv(9, 32, gated=False, **kwargs)
