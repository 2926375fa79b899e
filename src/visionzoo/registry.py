"""The model registry: every architecture variant is a registered builder.

`register_model` records a builder and its `ModelInfo`; `create_model` builds one by name;
`list_models` lists names with fnmatch wildcards; `get_model_info` returns the card data.
The key idea and the deviations shown on a model's card are read from its family module's
docstring, so the paper text lives in one place: the architecture file.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict, cast

from torch import nn

__all__ = [
    "Family",
    "ModelInfo",
    "UnknownModelError",
    "create_model",
    "get_model_info",
    "list_families",
    "list_models",
    "register_model",
]


@dataclass(frozen=True)
class Family:
    """One architecture family: the paper that introduced it."""

    name: str  # "ResNet"
    year: int  # year of the paper's first public version
    paper: str  # paper title
    url: str  # arXiv or proceedings link
    authors: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """Everything the CLI and the explorer show about one registered variant."""

    name: str
    family: str
    year: int
    paper: str
    paper_url: str
    authors: str
    key_idea: str  # from the module docstring's "Key idea:" paragraph
    notes: tuple[str, ...]  # the docstring's NOTE: paragraphs (deviations from the paper)
    docstring: str  # the whole module docstring
    module: str  # python module that defines the family
    reference_params: int | None  # parameter count of the reference implementation
    params_source: str  # where reference_params comes from ("torchvision 0.29.1", "paper")
    image_size: int  # default input size (square)
    in_channels: int  # default input channels
    num_classes: int  # default number of classes
    min_image_size: int  # smallest input the default configuration accepts
    small_input: bool  # whether the builder takes `small_input=True` (28-32 px images)
    small_input_change: str  # what `small_input=True` changes ("" when small_input is False)
    torchvision_name: str | None  # same architecture in torchvision, for ports and comparisons
    timm_name: str | None  # same architecture in timm
    tags: tuple[str, ...] = ()
    builder: Callable[..., nn.Module] | None = field(repr=False, compare=False, default=None)

    def as_dict(self) -> dict[str, Any]:
        """The card data as JSON-ready values (every field but the builder)."""
        return {
            f.name: list(v) if isinstance(v, tuple) else v
            for f in fields(self)
            if f.name != "builder"
            for v in [getattr(self, f.name)]
        }

    def build(self, **kwargs: Any) -> nn.Module:
        """Call the registered builder."""
        if self.builder is None:
            raise TypeError(f"model {self.name!r} has no builder")
        return self.builder(**kwargs)


class RegisterOptions(TypedDict, total=False):
    """The keyword arguments of `register_model`, for variant tables written as dicts."""

    params: int | None
    params_source: str
    image_size: int
    in_channels: int
    num_classes: int
    min_image_size: int | None
    small_input: str
    torchvision: str | None
    timm: str | None
    tags: tuple[str, ...]


class UnknownModelError(KeyError):
    """An unregistered model name; the message lists the close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


_REGISTRY: dict[str, ModelInfo] = {}
_FAMILY_MODULES = "visionzoo.models"


def parse_docstring(doc: str) -> tuple[str, tuple[str, ...]]:
    """Return (key idea, NOTE paragraphs) from a family module docstring.

    The key idea is the paragraph starting with "Key idea:"; each deviation is a paragraph
    starting with "NOTE:". Paragraphs are separated by blank lines or by the next marker.
    """
    key_idea, kind = "", None
    notes: list[str] = []
    current: list[str] = []

    def flush() -> None:
        nonlocal key_idea
        text = " ".join(s.strip() for s in current).strip()
        if kind == "key" and text:
            key_idea = text
        elif kind == "note" and text:
            notes.append(text)

    for line in inspect.cleandoc(doc or "").splitlines():
        stripped = line.strip()
        marker = re.match(r"^(Key idea|NOTE):\s*(.*)$", stripped)
        if marker or not stripped:
            flush()
            current, kind = [], None
        if marker:
            kind = "key" if marker.group(1) == "Key idea" else "note"
            current = [marker.group(2)]
        elif stripped and kind is not None:
            current.append(stripped)
    flush()
    return key_idea, tuple(notes)


def register_model(
    family: Family, **options: Any
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name; registering a name twice is an error.

    `options` are the `RegisterOptions` keys: `params` (reference parameter count),
    `params_source`, `image_size`, `in_channels`, `num_classes`, `min_image_size`,
    `small_input` (what `small_input=True` changes; "" for none), `torchvision` and `timm`
    (the same architecture's names there) and `tags`. Model files keep shared options in
    plain dicts, hence `Any`; unknown keys are a TypeError at import.
    """
    unknown = set(options) - set(RegisterOptions.__annotations__)
    if unknown:
        raise TypeError(f"register_model got unknown options {sorted(unknown)}")
    opts = cast(RegisterOptions, options)
    image_size: int = opts.get("image_size", 224)
    min_image_size = opts.get("min_image_size")
    small_input = opts.get("small_input", "")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name].module}")
        module = sys.modules.get(fn.__module__)
        doc = (module.__doc__ if module else None) or ""
        key_idea, notes = parse_docstring(doc)
        _REGISTRY[name] = ModelInfo(
            name=name,
            family=family.name,
            year=family.year,
            paper=family.paper,
            paper_url=family.url,
            authors=family.authors,
            key_idea=key_idea,
            notes=notes,
            docstring=inspect.cleandoc(doc),
            module=fn.__module__,
            reference_params=opts.get("params"),
            params_source=opts.get("params_source", ""),
            image_size=image_size,
            in_channels=opts.get("in_channels", 3),
            num_classes=opts.get("num_classes", 1000),
            min_image_size=min_image_size if min_image_size is not None else image_size,
            small_input=bool(small_input),
            small_input_change=small_input,
            torchvision_name=opts.get("torchvision"),
            timm_name=opts.get("timm"),
            tags=tuple(opts.get("tags", ())),
            builder=fn,
        )
        return fn

    return decorator


def _load_families() -> None:
    """Import the model package once, so every family registers its variants."""
    importlib.import_module(_FAMILY_MODULES)


def _lookup(name: str) -> ModelInfo:
    _load_families()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
    prefix = [n for n in _REGISTRY if n.startswith(name.split("_")[0])][:5] if name else []
    hint = list(dict.fromkeys(close + prefix))[:5]
    msg = f"unknown model {name!r}"
    msg += f"; did you mean: {', '.join(hint)}?" if hint else "; see `visionzoo list`"
    raise UnknownModelError(msg)


def unregister_model(name: str) -> ModelInfo:
    """Remove a registered model and return its ModelInfo (for models registered at run time,
    e.g. an experiment's temporary variants); unknown names raise UnknownModelError."""
    info = _lookup(name)
    del _REGISTRY[name]
    return info


def is_registered(name: str) -> bool:
    """Whether `name` is a registered model (never raises)."""
    _load_families()
    return name in _REGISTRY


def get_model_info(name: str) -> ModelInfo:
    """The ModelInfo of a registered model; unknown names raise UnknownModelError."""
    return _lookup(name)


def list_models(pattern: str | list[str] = "*", family: str | None = None) -> list[str]:
    """Registered names matching one or more fnmatch patterns, sorted."""
    _load_families()
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    names = [
        n
        for n, info in _REGISTRY.items()
        if any(fnmatch.fnmatchcase(n, p) for p in patterns)
        and (family is None or info.family.lower() == family.lower())
    ]
    return sorted(names, key=_natural_key)


def list_families() -> list[str]:
    _load_families()
    return sorted({info.family for info in _REGISTRY.values()})


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def create_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
    features_only: bool = False,
    out_indices: Any = None,
    pretrained: bool = False,
    weights: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    `num_classes`, `in_channels` and `image_size` default to the variant's own (ImageNet:
    1000 classes, 3 channels, 224 px). Other keyword arguments go to the builder (for
    example `small_input=True`, `dropout=0.2`). With `features_only=True` the model is
    wrapped so that calling it returns its multi-scale feature maps (`out_indices` picks
    levels of `feature_info`, as in timm). `weights` loads any `load_pretrained` spec
    ("torchvision", "timm:NAME", "hf:ORG/NAME", a file); `pretrained=True` is
    `weights="torchvision"`, or "timm" for models torchvision does not have.
    """
    info = _lookup(name)
    build_kwargs: dict[str, Any] = dict(kwargs)
    build_kwargs["num_classes"] = info.num_classes if num_classes is None else num_classes
    build_kwargs["in_channels"] = info.in_channels if in_channels is None else in_channels
    build_kwargs["image_size"] = info.image_size if image_size is None else image_size
    from visionzoo.models.base import FeatureExtractor, ImageClassifier

    model = info.build(**build_kwargs)
    if not isinstance(model, ImageClassifier):
        raise TypeError(f"the builder of {name!r} returned a {type(model).__name__}, "
                        "not an ImageClassifier")  # fmt: skip
    model.model_name, model.model_kwargs = name, dict(build_kwargs)
    if pretrained and not weights:
        weights = "torchvision" if info.torchvision_name else "timm"
    if weights:
        from visionzoo.pretrained import load_pretrained

        load_pretrained(model, weights)
    if features_only:
        return FeatureExtractor(model, out_indices)
    return model
