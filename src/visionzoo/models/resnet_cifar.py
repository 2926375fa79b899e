"""ResNet on CIFAR-10 (Section 4.2 of Deep Residual Learning for Image Recognition).

Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun. CVPR 2016. arXiv:1512.03385.
https://arxiv.org/abs/1512.03385

Key idea: the paper's depth study on 32x32 images. 6n+2 weighted layers: a 3x3 conv, three
stages of n BasicBlocks with 16, 32, 64 filters on 32, 16, 8 px maps, global average
pooling, a 10-way linear layer. With identity shortcuts (option A) deeper is better
(ResNet-110: 6.43 % error); plain twins get worse as they get deeper (Fig. 6).

Exact parameter counts with option A shortcuts (computed; the paper rounds): ResNet-20
269,722 (0.27M), -32 464,154 (0.46M), -44 658,586 (0.66M), -56 853,018 (0.85M), -110
1,727,962 (1.7M). The plain nets `plain20` ... `plain110` have exactly the same parameters:
option A shortcuts are parameter-free.

Configure depth and width for the degradation experiment with `resnet_cifar(depth=6n+2,
widths=(16, 32, 64), shortcut="A" | "B" | "C" | None)`.

NOTE: These networks are small-input by design (a 3x3 stride-1 stem, total stride 4); they
accept any input of at least 8x8 pixels (final 2x2 maps), 28x28 MNIST digits included.
There is no `small_input` switch.
NOTE: Option A pads the new channels with zeros after the identity channels; the paper
does not say where the zero channels go (some code pads on both sides: same function, up to
a permutation of the new channels).
"""

from __future__ import annotations

from visionzoo.models.resnet import FAMILY, BasicBlock, ResNet
from visionzoo.registry import register_model

__all__ = ["FAMILY", "resnet_cifar"]


def resnet_cifar(
    depth: int = 20,
    widths: tuple[int, ...] = (16, 32, 64),
    shortcut: str | None = "A",
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    **kwargs,
) -> ResNet:
    """A 6n+2-layer CIFAR ResNet (`shortcut=None`: the plain net of the same depth)."""
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"CIFAR ResNets have 6n+2 layers (20, 32, 44, 56, 110...), got {depth}")
    n = (depth - 2) // 6
    kwargs.pop("small_input", None)  # always small-input: nothing to switch
    model = ResNet(
        BasicBlock,
        (n,) * len(widths),
        widths,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        stem="cifar",
        shortcut=shortcut,
        **kwargs,
    )
    # Total stride 4, but the final BatchNorm needs more than one value per channel to train
    # on a single image: ask for 8x8 (final 2x2 maps).
    model.min_image_size = 8
    return model


_COMMON = dict(image_size=32, num_classes=10, min_image_size=8)
_SRC = "computed (option A); paper Table 6: {}"


@register_model(FAMILY, params=269_722, params_source=_SRC.format("0.27M"), **_COMMON)
def resnet20(**kwargs) -> ResNet:
    return resnet_cifar(20, **kwargs)


@register_model(FAMILY, params=464_154, params_source=_SRC.format("0.46M"), **_COMMON)
def resnet32(**kwargs) -> ResNet:
    return resnet_cifar(32, **kwargs)


@register_model(FAMILY, params=658_586, params_source=_SRC.format("0.66M"), **_COMMON)
def resnet44(**kwargs) -> ResNet:
    return resnet_cifar(44, **kwargs)


@register_model(FAMILY, params=853_018, params_source=_SRC.format("0.85M"), **_COMMON)
def resnet56(**kwargs) -> ResNet:
    return resnet_cifar(56, **kwargs)


@register_model(FAMILY, params=1_727_962, params_source=_SRC.format("1.7M"), **_COMMON)
def resnet110(**kwargs) -> ResNet:
    return resnet_cifar(110, **kwargs)


_PLAIN = "computed: equal to the option A ResNet of the same depth (paper Sec. 4.2)"


@register_model(FAMILY, params=269_722, params_source=_PLAIN, **_COMMON)
def plain20(**kwargs) -> ResNet:
    return resnet_cifar(20, shortcut=None, **kwargs)


@register_model(FAMILY, params=464_154, params_source=_PLAIN, **_COMMON)
def plain32(**kwargs) -> ResNet:
    return resnet_cifar(32, shortcut=None, **kwargs)


@register_model(FAMILY, params=658_586, params_source=_PLAIN, **_COMMON)
def plain44(**kwargs) -> ResNet:
    return resnet_cifar(44, shortcut=None, **kwargs)


@register_model(FAMILY, params=853_018, params_source=_PLAIN, **_COMMON)
def plain56(**kwargs) -> ResNet:
    return resnet_cifar(56, shortcut=None, **kwargs)


@register_model(FAMILY, params=1_727_962, params_source=_PLAIN, **_COMMON)
def plain110(**kwargs) -> ResNet:
    return resnet_cifar(110, shortcut=None, **kwargs)
