"""Weight converters: torchvision / timm state dicts onto visionzoo models.

Each family module registers a converter for the sources it supports:

    @register_converter("torchvision", "resnet*")
    def _from_torchvision(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        return rename_keys(state_dict, [(r"^layer(\\d)\\.", ...), ...])

`port_weights(model, state_dict, source)` converts, then checks that keys and shapes match
exactly and names every mismatch; nothing is loaded unless everything matches. The
reference state dicts in tests come from torchvision's and timm's own constructors (no
download); `load_pretrained(model, "torchvision:resnet50")` fetches real ImageNet weights
through torchvision's or timm's hub code for users who are online.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

StateDict = dict[str, Tensor]
# A key renaming: a regex and its replacement (a template, or a function of the match).
Rule = tuple[str, str | Callable[[re.Match[str]], str]]
Converter = Callable[[StateDict], StateDict]

SOURCES = ("torchvision", "timm", "hf")  # the built-in sources; register_converter adds others
_CONVERTERS: list[tuple[str, str, Converter]] = []


class WeightMismatchError(ValueError):
    """A state dict that does not fit the model; the message names the keys or shapes."""


def register_converter(source: str, *patterns: str) -> Callable[[Converter], Converter]:
    """Register `fn` as the converter from `source` for model names matching `patterns`.

    `source` is a built-in one (torchvision, timm, hf) or a new name of your own (a lowercase
    identifier, e.g. "mmpretrain"); `port_weights(model, state_dict, source)` then uses it.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", source):
        raise ValueError(f"weight source names are lowercase identifiers, got {source!r}")

    def decorator(fn: Converter) -> Converter:
        for pattern in patterns:
            _CONVERTERS.append((source, pattern, fn))
        return fn

    return decorator


def known_sources() -> list[str]:
    """Every source some converter is registered for."""
    import visionzoo.hub  # noqa: F401  (registers the hf and extra timm converters)
    from visionzoo.registry import list_models

    list_models()  # loads the families
    return sorted({src for src, _, _ in _CONVERTERS})


def get_converter(model_name: str, source: str) -> Converter:
    import visionzoo.hub  # noqa: F401  (registers the hf and extra timm converters)
    from visionzoo.registry import get_model_info

    get_model_info(model_name)  # loads the families; unknown names raise with suggestions
    for src, pattern, fn in _CONVERTERS:
        if src == source and fnmatch.fnmatchcase(model_name, pattern):
            return fn
    raise WeightMismatchError(f"no {source} converter for {model_name!r}")


def rename_keys(state_dict: StateDict, rules: Iterable[Rule]) -> StateDict:
    """Apply regex substitutions to every key, in order; values are kept as they are."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: StateDict = {}
    for key, value in state_dict.items():
        for pattern, repl in compiled:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def check_state_dict(model: nn.Module, state_dict: StateDict, what: str = "state dict") -> None:
    """Raise WeightMismatchError naming missing, unexpected and wrongly shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            shown = ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        name = getattr(model, "model_name", None) or type(model).__name__
        raise WeightMismatchError(f"{what} does not fit {name}: " + "; ".join(problems))


def port_weights(model: nn.Module, state_dict: StateDict, source: str) -> nn.Module:
    """Convert a `source` ("torchvision" or "timm") state dict and load it into `model`."""
    from visionzoo.models.base import FeatureExtractor

    if isinstance(model, FeatureExtractor):  # features_only=True: load into the wrapped model
        port_weights(model.model, state_dict, source)
        return model
    name = getattr(model, "model_name", None)
    if name is None:
        raise ValueError("port_weights needs a model built by visionzoo.create_model")
    converted = get_converter(name, source)(dict(state_dict))
    check_state_dict(model, converted, what=f"the {source} state dict")
    model.load_state_dict(converted, strict=True)
    return model


def build_reference(model_name: str, source: str, **kwargs: Any) -> nn.Module:
    """The same architecture built by torchvision or timm, randomly initialised (no download)."""
    from visionzoo.registry import get_model_info

    info = get_model_info(model_name)
    if source == "torchvision":
        if not info.torchvision_name:
            raise WeightMismatchError(f"torchvision has no {model_name!r}")
        import torchvision

        return torchvision.models.get_model(info.torchvision_name, weights=None, **kwargs)
    if source == "timm":
        if not info.timm_name:
            raise WeightMismatchError(f"timm has no {model_name!r}")
        import timm

        return timm.create_model(info.timm_name, pretrained=False, **kwargs)
    raise ValueError(f"unknown weight source {source!r}; expected one of {SOURCES}")


def load_pretrained(model: nn.Module, spec: str) -> nn.Module:
    """Load weights named by `spec` (see `visionzoo.pretrained.load_pretrained`)."""
    from visionzoo.pretrained import load_pretrained as load

    return load(model, spec)


@torch.no_grad()
def max_logit_diff(ours: nn.Module, reference: nn.Module, x: Tensor) -> float:
    """Largest absolute difference between the two models' logits, both in eval mode."""
    ours.eval()
    reference.eval()
    a, b = ours(x), reference(x)
    if isinstance(b, tuple):  # torchvision's Inception returns (logits, aux) namedtuples
        b = b[0]
    return float((a - b).abs().max())


def verify_port(
    model_name: str,
    source: str,
    image_size: int | None = None,
    batch_size: int = 2,
    model_kwargs: dict | None = None,
    reference_kwargs: dict | None = None,
    seed: int = 0,
) -> float:
    """Build ours and the reference, port the reference's weights, return the max logit diff.

    The reference is built by torchvision or timm with random weights (no download), so this
    runs offline; the input is random, at `image_size` (default: the variant's smallest).
    """
    from visionzoo.registry import create_model, get_model_info

    info = get_model_info(model_name)
    torch.manual_seed(seed)
    reference = build_reference(model_name, source, **(reference_kwargs or {}))
    ours = create_model(model_name, **(model_kwargs or {}))
    port_weights(ours, reference.state_dict(), source)
    size = image_size or max(info.min_image_size, 32)
    x = torch.randn(batch_size, info.in_channels, size, size)
    return max_logit_diff(ours, reference, x)
