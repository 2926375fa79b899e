"""The contract every visionzoo model follows.

`forward(x) == forward_head(forward_features(x))`; `forward_features` returns the features
before global pooling, `forward_head` pools and classifies (`pre_logits=True` stops before
the classifier). `num_features` is the width the classifier sees, `in_channels` the input
channels, `reset_classifier(n)` swaps the head for `n` classes (0 removes it), and
`forward_intermediates(x)` returns one feature map per stage, described by `feature_info`.

timm's habits: `forward_intermediates(x, indices=..., intermediates_only=...)` with timm's
meaning (`indices`: an int n for the last n levels, or a list; `intermediates_only=False`:
`(forward_features(x), maps)`; `True`: the maps), and `pretrained_cfg` / `default_cfg`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, cast

import torch
import torch.fx
from torch import Tensor, nn


@dataclass(frozen=True)
class FeatureInfo:
    """One level of a multi-scale feature pyramid."""

    name: str  # the stage's module name, e.g. "stages.2"
    channels: int  # output channels of the level
    stride: int  # total downsampling from the input, e.g. 8


AUX_WEIGHT = 0.3  # GoogLeNet, Section 5: the auxiliary losses are "weighted by 0.3"


class AuxOutputs(NamedTuple):
    """A training-mode forward of a model with auxiliary classifiers (GoogLeNet, Inception v3),
    like torchvision's `GoogLeNetOutputs`: the loss is
    `CE(logits) + aux_weight * sum(CE(a) for a in aux_logits)`."""

    logits: Tensor
    aux_logits: tuple[Tensor, ...]  # in network order
    aux_weight: float = AUX_WEIGHT


def main_logits(output: Tensor | AuxOutputs) -> Tensor:
    """The logits of a forward's output, with or without auxiliary classifiers."""
    return output.logits if isinstance(output, AuxOutputs) else output


class InputTooSmallError(ValueError):
    """An input smaller than the architecture can take."""


class InputContract(NamedTuple):
    """What a model accepts, in plain values (so torch.fx can record it as a call argument)."""

    name: str  # the model's class name, for messages
    in_channels: int
    min_size: int  # smallest side
    small_hint: bool  # whether "build it with small_input=True" would help a too-small input
    fixed_size: int = 0  # >0: the only side length accepted (position embeddings, flattening)
    fixed_why: str = ""  # why the size is fixed, e.g. "position embeddings for a 14x14 grid"


@torch.fx.wrap
def check_image_batch(x: Tensor, contract: InputContract) -> Tensor:
    """Return `x` if `contract` accepts it, else raise a one-line error.

    Wrapped for torch.fx: a traced graph records this as one call that runs on real tensors,
    so `symbolic_trace` and `create_feature_extractor` see no Python branch on a shape, and
    the traced module keeps the same clear errors as the eager one.
    """
    name = contract.name
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if x.shape[1] != contract.in_channels:
        raise ValueError(
            f"{name} was built for {contract.in_channels} input channels, got {x.shape[1]}"
        )
    h, w = x.shape[-2], x.shape[-1]  # no int(): torch.export keeps symbolic sizes symbolic
    if min(h, w) < contract.min_size:
        hint = "; for small images build it with small_input=True" if contract.small_hint else ""
        raise InputTooSmallError(
            f"{name} needs inputs of at least {contract.min_size}x{contract.min_size} pixels, "
            f"got {h}x{w}{hint}"
        )
    size = contract.fixed_size
    if size and (h, w) != (size, size):
        raise ValueError(
            f"{name} was built for {size}x{size} inputs ({contract.fixed_why}), got {h}x{w}; "
            f"build it with image_size={h} or resize the images"
        )
    return x


def _take_indices(indices: int | Sequence[int] | None, count: int) -> list[int]:
    """timm's `feature_take_indices`: None: all; n: the last n; a list (negatives from the end).

    The levels come back in network order, as timm's models collect them."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ValueError(f"indices={indices}: there are {count} levels")
        return list(range(count - indices, count))
    out = [i + count if i < 0 else i for i in indices]
    if any(not 0 <= i < count for i in out):
        raise ValueError(f"indices {list(indices)} out of range for {count} levels")
    return sorted(set(out))  # as timm collects them: in network order, once each


def _timm_intermediates(impl):
    """Give a model's own `forward_intermediates(x[, indices])` timm's keywords.

    Called as before (`forward_intermediates(x)`, `intermediates_only` not given) it returns
    what the model's own method returns: the list of every level. With `intermediates_only`
    given, timm's meaning: `indices` (None: every level, n: the last n, or a list; a ViT's
    levels are its blocks, a CNN's its `feature_info` levels), `True`: the list of maps,
    `False`: `(forward_features(x), maps)`.
    """
    takes_indices = "indices" in inspect.signature(impl).parameters

    @functools.wraps(impl)
    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool | None = None,
    ):
        if norm:
            raise ValueError("forward_intermediates(norm=True) is not supported by visionzoo")
        if output_fmt != "NCHW":
            raise ValueError(f"forward_intermediates: output_fmt {output_fmt!r}: only 'NCHW'")
        if intermediates_only is None and indices is None:
            return impl(self, x)
        if takes_indices:  # levels are blocks (ViTs): the model selects them itself
            maps = impl(self, x, indices=_take_indices(indices, len(self.blocks)))
        else:
            maps = impl(self, x)
            maps = [maps[i] for i in _take_indices(indices, len(maps))]
        if intermediates_only is None or intermediates_only:
            return maps
        return self.forward_features(x), maps

    forward_intermediates._visionzoo_timm = True
    return forward_intermediates


class ImageClassifier(nn.Module):
    """Base class: shared plumbing of the model contract.

    Subclasses set `num_features`, `in_channels`, `image_size`, `min_image_size`,
    `feature_info` and a `classifier` module, and implement `forward_features`,
    `forward_head` and `forward_intermediates`.
    """

    num_features: int
    in_channels: int
    image_size: int
    classifier: nn.Module
    min_image_size: int = 1
    small_input: bool = False  # True when built in the small-input (28x28, 32x32) mode
    supports_small_input: bool = False  # whether the family offers that mode
    stage_layout: str = "NCHW"  # "NHWC": `stages` run on (B, H, W, C) maps (Swin)
    feature_info: list[FeatureInfo]
    # How create_model built it, so a run can rebuild it from its config.json
    model_name: str | None = None  # the registry name (None when built without the registry)
    model_kwargs: Mapping[str, Any] = MappingProxyType({})  # the builder's keyword arguments
    # What load_pretrained loaded (spec, its Preprocess), and a pretrained_cfg set by hand
    _pretrained_weights: tuple[str, Any] | None = None
    _pretrained_cfg_set: dict[str, Any] | None = None

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("forward_intermediates")
        if own is not None and not getattr(own, "_visionzoo_timm", False):
            cls.forward_intermediates = _timm_intermediates(own)

    def _stage_maps(self, x: Tensor) -> list[Tensor]:
        """The default for `[stem ->] stages` models: runs `embed` (or `stem`, then `stem_pool`)
        and `stages`, keeping the outputs that `feature_info` names ("stem", "stages.i");
        stages on (B, H, W, C) maps (`stage_layout = "NHWC"`) come back as (B, C, H, W)."""
        if not hasattr(self, "stages"):
            raise NotImplementedError(f"{type(self).__name__} must define forward_intermediates")
        keep = {info.name for info in self.feature_info}
        out = []
        if hasattr(self, "embed"):
            x = cast(Callable[[Tensor], Tensor], self.embed)(x)
        elif hasattr(self, "stem"):
            x = self.get_submodule("stem")(x)
            if "stem" in keep:
                out.append(x)
            x = self.get_submodule("stem_pool")(x) if hasattr(self, "stem_pool") else x
        for i, stage in enumerate(self.get_submodule("stages").children()):
            x = stage(x)
            if f"stages.{i}" in keep:
                out.append(x.permute(0, 3, 1, 2) if self.stage_layout == "NHWC" else x)
        return out

    forward_intermediates = _timm_intermediates(_stage_maps)

    @property
    def pretrained_cfg(self) -> dict:
        """timm's `pretrained_cfg`: input size, mean, std, interpolation, crop_pct, classes,
        from the weights loaded by `load_pretrained` (their preprocessing) or the model."""
        if self._pretrained_cfg_set is not None:
            return self._pretrained_cfg_set
        from visionzoo.pretrained import IMAGENET_MEAN, IMAGENET_STD

        weights = self._pretrained_weights  # (spec, Preprocess | None)
        spec, pre = weights if weights else (None, None)
        channels = self.in_channels
        size = (pre.crop or pre.resize) if pre else self.image_size
        mean = pre.mean if pre else (IMAGENET_MEAN if channels == 3 else (0.5,) * channels)
        std = pre.std if pre else (IMAGENET_STD if channels == 3 else (0.5,) * channels)
        crop_pct = (pre.crop / pre.resize if pre.crop else 1.0) if pre else 0.875
        first_conv = next((n for n, m in self.named_modules() if isinstance(m, nn.Conv2d)), None)
        classifier = next(
            (n for n, m in self.named_modules() if m is self.get_classifier()), "classifier"
        )
        return {
            "architecture": self.model_name or type(self).__name__,
            "source": spec,
            "num_classes": getattr(self, "num_classes", None),
            "input_size": (channels, size, size),
            "fixed_input_size": bool(self.input_contract().fixed_size),
            "interpolation": pre.interpolation if pre else "bilinear",
            "crop_pct": round(crop_pct, 4),
            "crop_mode": "center",
            "mean": tuple(mean),
            "std": tuple(std),
            "first_conv": first_conv,
            "classifier": classifier,
        }

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict) -> None:
        self._pretrained_cfg_set = dict(cfg)

    @property
    def default_cfg(self) -> dict:
        """timm's older name for `pretrained_cfg`."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict) -> None:
        self.pretrained_cfg = cfg

    def forward(self, x: Tensor) -> Tensor:
        x = check_image_batch(x, self.input_contract())
        return self.forward_head(self.forward_features(x))

    def input_contract(self) -> InputContract:
        """The inputs this network can take; subclasses with a fixed size override it."""
        small_hint = self.supports_small_input and not self.small_input
        return InputContract(type(self).__name__, self.in_channels, self.min_image_size, small_hint)

    def check_input(self, x: Tensor) -> Tensor:
        """Return `x`, or raise a clear error for inputs the network cannot take."""
        return check_image_batch(x, self.input_contract())

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer with a fresh one for `num_classes` (0: identity)."""
        self.num_classes = num_classes
        self.classifier = (
            nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        )


class FeatureInfoList(list):
    """A list of FeatureInfo with timm's accessors: `channels()`, `reduction()`, `module_name()`."""

    def channels(self) -> list[int]:
        return [f.channels for f in self]

    def reduction(self) -> list[int]:
        return [f.stride for f in self]

    def module_name(self) -> list[str]:
        return [f.name for f in self]


class FeatureExtractor(nn.Module):
    """Wrap a model so that calling it returns its multi-scale feature maps (timm's
    `features_only=True`): the levels `out_indices` of `feature_info` (default: all)."""

    def __init__(self, model: ImageClassifier, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        n = len(model.feature_info)
        indices = tuple(range(n)) if out_indices is None else tuple(i % n for i in out_indices)
        if out_indices is not None and any(not -n <= i < n for i in out_indices):
            raise ValueError(
                f"{type(model).__name__} has feature levels 0..{n - 1}, got {out_indices}"
            )
        self.model = model
        self.out_indices = indices
        self.feature_info = FeatureInfoList(model.feature_info[i] for i in indices)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = check_image_batch(x, self.model.input_contract())
        maps = self.model.forward_intermediates(x)
        return [maps[i] for i in self.out_indices]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def init_weights_he(module: nn.Module) -> None:
    """Kaiming-normal convolutions and zero biases, as He et al. 2015 initialise."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
