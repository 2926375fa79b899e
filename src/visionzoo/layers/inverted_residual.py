"""The inverted residual with linear bottleneck (Sandler et al. 2018, arXiv:1801.04381).

1x1 expansion -> kxk depthwise -> optional squeeze-and-excitation -> 1x1 linear projection,
with an identity shortcut between the thin ends when the shapes match. MobileNetV2
introduced it; MobileNetV3's "bneck" and EfficientNet's MBConv are the same block with SE,
other activations and (EfficientNet) stochastic depth.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from visionzoo.layers.conv_norm_act import ConvNormAct
from visionzoo.layers.drop_path import DropPath


class InvertedResidual(nn.Module):
    """y = x + project(se(depthwise(expand(x)))) when stride 1 and in == out, else no `x +`.

    The projection has no activation: a ReLU on the thin bottleneck would destroy
    information (the paper's "linear bottleneck"). The expansion is left out when
    `expanded_channels == in_channels` (expansion ratio 1). `se` is a ready-built module
    (or None); `drop_prob` drops the residual branch per sample (stochastic depth).
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        act_layer: Callable[..., nn.Module] = nn.ReLU6,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        se: nn.Module | None = None,
        drop_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.use_shortcut = stride == 1 and in_channels == out_channels
        mid = expanded_channels
        self.expand = (
            ConvNormAct(in_channels, mid, 1, norm_layer=norm_layer, act_layer=act_layer)
            if mid != in_channels
            else nn.Identity()
        )
        self.dw = ConvNormAct(
            mid, mid, kernel_size, stride, groups=mid, norm_layer=norm_layer, act_layer=act_layer
        )
        self.se = se if se is not None else nn.Identity()
        self.project = ConvNormAct(mid, out_channels, 1, norm_layer=norm_layer, act_layer=None)
        self.drop_path = DropPath(drop_prob) if drop_prob > 0 else nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        branch = self.project(self.se(self.dw(self.expand(x))))
        return x + self.drop_path(branch) if self.use_shortcut else branch


def torchvision_block_rules(tv_block: str, ours: str, names: list[str]) -> list[tuple[str, str]]:
    """Renaming rules for one torchvision MBConv/bneck block (`tv_block` a regex ending in
    `block\\.`, whose children are numbered in order) to ours (`ours.{expand,dw,se,project}`):
    the SE child keeps its inner names, the others are torchvision's Conv2dNormActivation
    (`K.0` conv, `K.1` BN) -> our ConvNormAct (`conv`, `norm`)."""
    rules = []
    for k, name in enumerate(names):
        tv = rf"{tv_block}{k}\."
        if name == "se":
            rules.append((tv, f"{ours}.se."))
        else:
            rules += [(tv + r"0\.", f"{ours}.{name}.conv."), (tv + r"1\.", f"{ours}.{name}.norm.")]
    return rules
