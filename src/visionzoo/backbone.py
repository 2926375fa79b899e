"""Detection and segmentation backbones: a model's feature maps as torchvision expects them.

    body = visionzoo.backbone("resnet50", out_indices=(1, 2, 3, 4), weights="torchvision")
    body(x)            # OrderedDict {"0": (B, 256, H/4, W/4), ..., "3": (B, 2048, H/32, W/32)}
    body.out_channels  # [256, 512, 1024, 2048]: FeaturePyramidNetwork's in_channels_list

    fpn = visionzoo.backbone("resnet50", out_indices=(1, 2, 3, 4), fpn_channels=256)
    torchvision.models.detection.FasterRCNN(fpn, num_classes=91)

`out_indices` index the model's `feature_info` (timm's convention), so `resnet50`'s 0 is the
stem (stride 2) and 1-4 are its four stages (strides 4-32); ViTs give four evenly spaced
blocks' token maps, all at stride 16. Keys are "0", "1", ... in that order, which is what
torchvision's FPN, anchor generator and RoI pooling expect.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import cast

from torch import Tensor, nn

from visionzoo.errors import UserError
from visionzoo.models.base import FeatureInfo, ImageClassifier

__all__ = ["Backbone", "FPNBackbone", "backbone", "select_levels"]


def select_levels(model: ImageClassifier, out_indices: Sequence[int] | None) -> tuple[int, ...]:
    """Validate `out_indices` against the model's levels (negative counts from the end)."""
    n = len(model.feature_info)
    if out_indices is None:
        return tuple(range(n))
    picked = []
    for i in out_indices:
        if not -n <= i < n:
            name = getattr(model, "model_name", None) or type(model).__name__
            raise UserError(f"{name} has feature levels 0..{n - 1}; out_indices has {i}")
        picked.append(i % n)
    return tuple(picked)


class Backbone(nn.Module):
    """A classifier without its head; calling it returns the selected levels' maps by key.

    `out_channels` is the list of the levels' widths, or an int when one level is selected
    (then torchvision's FasterRCNN takes the backbone as it is). `feature_info` lists the
    selected levels (name, channels, stride).
    """

    def __init__(self, model: ImageClassifier, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        self.out_indices = select_levels(model, out_indices)
        self.feature_info: list[FeatureInfo] = [model.feature_info[i] for i in self.out_indices]
        model.reset_classifier(0)  # the head is not used: keep no parameters without gradient
        self.model = model
        channels = [f.channels for f in self.feature_info]
        self.out_channels: int | list[int] = channels[0] if len(channels) == 1 else channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.model.forward_intermediates(x)
        return OrderedDict((str(k), maps[i]) for k, i in enumerate(self.out_indices))


class FPNBackbone(nn.Module):
    """Backbone + torchvision's FeaturePyramidNetwork (with its extra max-pooled level), the
    same composition as torchvision's BackboneWithFPN; `out_channels` is the FPN's width."""

    def __init__(self, body: Backbone, fpn_channels: int = 256) -> None:
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        super().__init__()
        channels = body.out_channels if isinstance(body.out_channels, list) else [body.out_channels]
        self.body = body
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = fpn_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


def backbone(
    name: str,
    out_indices: Sequence[int] | None = None,
    weights: str | None = None,
    fpn_channels: int | None = None,
    **kwargs,
) -> Backbone | FPNBackbone:
    """Build `name` as a backbone; `weights` is any `load_pretrained` spec ("torchvision",
    "timm:NAME", "hf:ORG/NAME", a file); `fpn_channels` adds a feature pyramid."""
    from visionzoo.pretrained import load_pretrained
    from visionzoo.registry import create_model

    model = create_model(name, **kwargs)
    if weights:
        load_pretrained(model, weights)
    body = Backbone(cast(ImageClassifier, model), out_indices)
    return FPNBackbone(body, fpn_channels) if fpn_channels else body
