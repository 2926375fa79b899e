"""Pretrained weights from anywhere: torchvision, timm, Hugging Face, or a file on disk.

    load_pretrained(model, "torchvision")             # torchvision's default for this model
    load_pretrained(model, "torchvision:ResNet50_Weights.IMAGENET1K_V1")
    load_pretrained(model, "timm:convnext_tiny.fb_in1k")
    load_pretrained(model, "hf:google/vit-base-patch16-224")
    load_pretrained(model, "resnet50-0676ba61.pth")   # .pth/.pt/.bin/.safetensors

A file's layout (ours, torchvision's, timm's, transformers') is detected from its keys: every
registered converter for the model is tried and the one whose result fits exactly is used.
Files are read without executing pickle code (`torch.load(weights_only=True)`, safetensors).

Downloads go to the libraries' own caches: torchvision's files to `$TORCH_HOME/hub/checkpoints`,
Hugging Face files (timm's and transformers') to the Hugging Face cache, or to
`$VISIONZOO_HOME/weights/ORG/NAME/` (default `~/.cache/visionzoo`) for files placed by hand.
Without a network the user gets one line naming the file, where to put it, and the local-file
alternative; the network is probed once per host with a short timeout, and `HF_HUB_OFFLINE=1`
is honoured.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from visionzoo.convert import (
    WeightMismatchError,
    check_state_dict,
    get_converter,
    known_sources,
)
from visionzoo.errors import UserError

StateDict = dict[str, Tensor]
FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
HF_HOST, TORCHVISION_HOST = "huggingface.co", "download.pytorch.org"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

__all__ = [
    "Preprocess",
    "Weights",
    "fetch_weights",
    "load_pretrained",
    "load_state_dict_file",
    "port_detected",
]


@dataclass(frozen=True)
class Preprocess:
    """The evaluation transform the weights were published with."""

    resize: int  # shorter side after resizing (or both sides when `crop` is 0)
    crop: int  # centre crop side; 0: no crop, the image is resized to resize x resize
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"


@dataclass
class Weights:
    """A fetched checkpoint: its tensors (in the source's layout) and its metadata."""

    spec: str
    source: str  # the converter to use: "torchvision", "timm", "hf", or "" (detect)
    state_dict: StateDict = field(repr=False)
    categories: list[str] | None = None
    preprocess: Preprocess | None = None
    accuracy: dict[str, float] = field(default_factory=dict)  # published top-1 / top-5


# -- the network, probed once ---------------------------------------------------------------

_NETWORK: dict[str, bool] = {}


def network_available(host: str, timeout: float = 3.0) -> bool:
    """Whether `host` answers on port 443 (asked once per process and host)."""
    if host == HF_HOST and os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    if host not in _NETWORK:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _NETWORK[host] = True
        except OSError:
            _NETWORK[host] = False
    return _NETWORK[host]


def weights_dir() -> Path:
    """Where files placed by hand are looked up: $VISIONZOO_HOME/weights."""
    home = os.environ.get("VISIONZOO_HOME") or Path.home() / ".cache" / "visionzoo"
    return Path(home) / "weights"


def offline_error(what: str, url: str, folder: Path, filename: str) -> UserError:
    return UserError(
        f"no network to download {what} ({url}): put {filename} in {folder}/, "
        f"or pass a downloaded file: --weights PATH/{filename}"
    )


# -- files --------------------------------------------------------------------------------


def load_state_dict_file(path: str | Path) -> StateDict:
    """Tensors from a .safetensors, .pth, .pt or .bin file, never executing pickled code.

    Training checkpoints are unwrapped ({"state_dict": ...}, {"model": ...}) and a
    DistributedDataParallel "module." prefix is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no weights file {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle.UnpicklingError and friends: one line, no traceback
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"{path} cannot be read as plain tensors ({first[:160]}); save "
                "model.state_dict() with torch.save or safetensors"
            ) from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path} holds no state dict (a mapping of names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def port_detected(model: nn.Module, state_dict: StateDict, sources: list[str] | None = None) -> str:
    """Load `state_dict` in whichever layout fits (ours, then each source's); return its name."""
    from visionzoo.models.base import FeatureExtractor
    from visionzoo.models.migrate import migrate_state_dict

    target = model.model if isinstance(model, FeatureExtractor) else model
    name = getattr(target, "model_name", None)
    if name is None:
        raise UserError("loading weights needs a model built by visionzoo.create_model")
    attempts: list[str] = []
    candidates = ["visionzoo"] + (sources or known_sources())
    for source in candidates:
        if source == "visionzoo":
            converted = migrate_state_dict(target, state_dict)
        else:
            try:
                converted = get_converter(name, source)(dict(state_dict))
            except WeightMismatchError:
                continue
        try:
            check_state_dict(target, converted, what=f"as {source} weights, the file")
        except WeightMismatchError as err:
            attempts.append(str(err))
            continue
        target.load_state_dict(converted, strict=True)
        return source
    best = min(attempts, key=len) if attempts else f"no converter for {name}"
    raise UserError(f"the weights fit {name} in no known layout; closest: {best}")


# -- sources ------------------------------------------------------------------------------


def hub_checkpoints() -> Path:
    """Where torch.hub keeps downloaded weights: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hub_checkpoint(url: str, what: str) -> Path:
    """The file for `url` in torch.hub's cache, downloaded there when missing and online."""
    folder = hub_checkpoints()
    path = folder / os.path.basename(url)
    if not path.is_file():
        if not network_available(TORCHVISION_HOST):
            raise offline_error(what, url, folder, path.name)
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)
    return path


def _torchvision_weights(model_name: str, ref: str) -> Weights:
    from torchvision.models import get_model_weights, get_weight

    from visionzoo.registry import get_model_info

    ref = ref or get_model_info(model_name).torchvision_name or ""
    if not ref:
        raise UserError(f"torchvision has no {model_name}: use timm[:NAME], hf:ORG/NAME or a file")
    try:
        enum = get_weight(ref) if "." in ref else get_model_weights(ref).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise UserError(f"torchvision has no weights {ref!r} for {model_name}") from None
    path = _hub_checkpoint(enum.url, f"torchvision {enum}")
    tf = enum.transforms()
    interpolation = getattr(tf.interpolation, "value", str(tf.interpolation))
    preprocess = Preprocess(tf.resize_size[0], tf.crop_size[0], tuple(tf.mean), tuple(tf.std),
                            interpolation)  # fmt: skip
    accuracy = {
        k.lower(): v for k, v in enum.meta.get("_metrics", {}).get("ImageNet-1K", {}).items()
    }
    categories = list(enum.meta.get("categories") or []) or None
    state = load_state_dict_file(path)
    return Weights(f"torchvision:{enum}", "torchvision", state, categories, preprocess, accuracy)


def _hf_file(repo: str, filenames: tuple[str, ...], what: str) -> Path:
    """The first of `filenames` found in repo's folder here, the Hugging Face cache, or online."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    folder = weights_dir() / repo
    for filename in filenames:
        if (folder / filename).is_file():
            return folder / filename
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached)
    if not network_available(HF_HOST):
        raise offline_error(what, f"https://huggingface.co/{repo}", folder, filenames[0])
    from huggingface_hub.utils import EntryNotFoundError, RepositoryNotFoundError

    for filename in filenames:
        try:
            return Path(hf_hub_download(repo, filename))
        except EntryNotFoundError:
            continue
        except RepositoryNotFoundError:
            raise UserError(f"no Hugging Face repository {repo}") from None
    raise UserError(f"{repo} has none of {', '.join(filenames)}")


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _timm_weights(model_name: str, ref: str) -> Weights:
    import timm
    from timm.data import ImageNetInfo

    from visionzoo.registry import get_model_info

    ref = ref or get_model_info(model_name).timm_name or model_name
    cfg = timm.models.get_pretrained_cfg(ref)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(f"timm has no pretrained weights named {ref!r}")
    if cfg.hf_hub_id:
        path = _hf_file(cfg.hf_hub_id, WEIGHT_FILES, f"timm {ref}")
    else:
        path = _hub_checkpoint(str(cfg.url), f"timm {ref}")
    crop = cfg.input_size[-1]
    preprocess = Preprocess(int(crop / (cfg.crop_pct or 1.0)), crop, tuple(cfg.mean),
                            tuple(cfg.std), cfg.interpolation or "bilinear")  # fmt: skip
    categories = None
    if cfg.num_classes == 1000:
        names = ImageNetInfo()
        categories = [names.index_to_description(i) for i in range(1000)]
    return Weights(f"timm:{ref}", "timm", load_state_dict_file(path), categories, preprocess)


def _hf_preprocess(config: dict) -> Preprocess:
    size = config.get("size", 224)
    mean = tuple(config.get("image_mean", IMAGENET_MEAN))
    std = tuple(config.get("image_std", IMAGENET_STD))
    interpolation = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(config.get("resample", 2))
    if isinstance(size, dict) and "shortest_edge" in size:
        side = size["shortest_edge"]
        crop_pct = config.get("crop_pct") or 1.0
        if side >= 384:  # ConvNeXt's processor: no crop from 384 px up
            return Preprocess(side, 0, mean, std, interpolation or "bicubic")
        return Preprocess(int(side / crop_pct), side, mean, std, interpolation or "bicubic")
    side = size["height"] if isinstance(size, dict) else int(size)
    return Preprocess(side, 0, mean, std, interpolation or "bilinear")


def _hf_weights(model_name: str, repo: str) -> Weights:
    if repo.count("/") != 1:
        raise UserError(f"hf:{repo}: expected hf:ORG/NAME, e.g. hf:google/vit-base-patch16-224")
    path = _hf_file(repo, WEIGHT_FILES, f"hf:{repo}")
    config, preprocess = {}, None
    for filename in ("config.json", "preprocessor_config.json"):
        candidate = path.with_name(filename)
        if not candidate.is_file():
            try:
                candidate = _hf_file(repo, (filename,), f"hf:{repo} {filename}")
            except UserError:
                continue
        data = json.loads(candidate.read_text())
        if filename == "config.json":
            config = data
        else:
            preprocess = _hf_preprocess(data)
    from visionzoo.hub import hf_config_refusal

    if refusal := hf_config_refusal(repo, model_name, config):
        raise UserError(refusal)
    labels = config.get("id2label") or {}
    categories = [labels[str(i)] for i in range(len(labels))] if labels else None
    return Weights(f"hf:{repo}", "hf", load_state_dict_file(path), categories, preprocess)


def fetch_weights(model_name: str, spec: str) -> Weights:
    """The checkpoint named by `spec`, with its metadata (downloaded once, then cached)."""
    source, _, ref = spec.partition(":")
    if source == "torchvision":
        return _torchvision_weights(model_name, ref)
    if source == "timm":
        return _timm_weights(model_name, ref)
    if source == "hf":
        return _hf_weights(model_name, ref)
    path = Path(spec).expanduser()
    if path.suffix in FILE_SUFFIXES or path.exists():
        return Weights(str(path), "", load_state_dict_file(path))
    raise UserError(
        f"unknown weights {spec!r}: use torchvision[:NAME], timm[:NAME], hf:ORG/NAME, "
        f"or a {'/'.join(FILE_SUFFIXES)} file"
    )


def load_pretrained(model: nn.Module, spec: str | Weights) -> nn.Module:
    """Load the weights named by `spec` into `model` (built by `create_model`) and return it."""
    from visionzoo.models.base import FeatureExtractor, ImageClassifier

    target = model.model if isinstance(model, FeatureExtractor) else cast(ImageClassifier, model)
    name = getattr(target, "model_name", None) or type(target).__name__
    weights = spec if isinstance(spec, Weights) else fetch_weights(name, spec)
    sources = [weights.source] if weights.source else None
    port_detected(model, weights.state_dict, sources)
    target._pretrained_weights = (weights.spec, weights.preprocess)  # for pretrained_cfg
    target._pretrained_cfg_set = None
    return model


# -- prediction ---------------------------------------------------------------------------


def prepare_image(image: Tensor, pre: Preprocess) -> Tensor:
    """uint8 (C, H, W) -> float (3, S, S): the weights' resize, centre crop and normalization."""
    # torchvision's classic functional ops: the ones its weights' ImageClassification runs.
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if image.shape[0] == 4:  # RGB + alpha: the colour channels
        image = image[:3]
    elif image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    mode = InterpolationMode(pre.interpolation)
    if pre.crop:
        x = TF.resize(image, [pre.resize], interpolation=mode, antialias=True)
        x = TF.center_crop(x, [pre.crop])
    else:
        x = TF.resize(image, [pre.resize, pre.resize], interpolation=mode, antialias=True)
    x = x.float() / 255.0
    return TF.normalize(x, list(pre.mean), list(pre.std))


def classify_images(
    model_name: str, spec: str, paths: list, topk: int = 5
) -> list[list[tuple[str, float]]]:
    """Top-`topk` (class name, probability) per image, for `model_name` with published weights."""
    from visionzoo.predict import read_image
    from visionzoo.registry import create_model

    weights = fetch_weights(model_name, spec)
    if not weights.categories:
        raise UserError(f"{weights.spec} names no classes; predict needs labelled weights")
    pre = weights.preprocess or Preprocess(256, 224)
    model = create_model(
        model_name, num_classes=len(weights.categories), image_size=pre.crop or pre.resize
    )
    load_pretrained(model, weights)
    batch = torch.stack([prepare_image(read_image(p), pre) for p in paths])
    with torch.no_grad():
        probs = model.eval()(batch).softmax(-1)
    top = probs.topk(min(topk, probs.shape[1]), dim=-1)
    return [
        [(weights.categories[i], float(p)) for p, i in zip(ps.tolist(), idx.tolist())]
        for ps, idx in zip(top.values, top.indices)
    ]


# -- evaluation on an ImageNet-format folder ----------------------------------------------


def imagenet_wnids() -> list[str]:
    """ImageNet-1k's WordNet ids in the class order of torchvision's, timm's and HF's weights."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_label_name(i) for i in range(info.num_classes())]


def folder_samples(root: str | Path, num_classes: int) -> tuple[list[tuple[Path, int]], str]:
    """(image, class index) for every image of an ImageNet-format validation folder.

    Class sub-folders are named by WordNet id (n01440764, ...: mapped to the weights' order,
    ImageNet-1k's sorted ids) or by class index (0 .. num_classes-1). Returns the layout too.
    """
    from visionzoo.data.folders import IMAGE_SUFFIXES

    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"imagefolder: no folder {root}")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(
            f"imagefolder: {root} has no class sub-folders (n01440764/, ... or 0/, ...)"
        )
    names = [p.name for p in classes]
    if all(n.isdigit() for n in names):
        layout, index = "index", {n: int(n) for n in names}
        bad = [n for n in names if int(n) >= num_classes]
        what = f"class indices 0..{num_classes - 1}"
    else:
        if num_classes != 1000:
            raise UserError(
                f"imagefolder: WordNet-id folders need ImageNet-1k weights (1000 classes, these "
                f"have {num_classes}); name the folders by class index 0..{num_classes - 1}"
            )
        layout, wnids = "wnid", imagenet_wnids()
        index = {w: i for i, w in enumerate(wnids)}
        bad = [n for n in names if n not in index]
        what = "ImageNet-1k WordNet ids (n01440764, ...)"
    if bad:
        shown = ", ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
        raise UserError(f"imagefolder: {root} has folders that are not {what}: {shown}")
    samples = [
        (path, index[folder.name])
        for folder in classes
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    ]
    if not samples:
        raise UserError(
            f"imagefolder: no images under {root} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return samples, layout


def evaluate_folder(model_name: str, spec: str, root: str | Path, batch_size: int = 50) -> dict:
    """Top-1 / top-5 of `model_name` with published weights on an ImageNet-format folder,
    with the weights' own preprocessing, beside the accuracy published for them (if known)."""
    from visionzoo.predict import read_image
    from visionzoo.registry import create_model

    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    weights = fetch_weights(model_name, spec)
    num_classes = len(weights.categories) if weights.categories else 1000
    samples, layout = folder_samples(root, num_classes)
    pre = weights.preprocess or Preprocess(256, 224)
    model = create_model(model_name, num_classes=num_classes, image_size=pre.crop or pre.resize)
    load_pretrained(model, weights)
    model.eval()
    top1 = top5 = 0
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            x = torch.stack([prepare_image(read_image(p), pre) for p, _ in chunk])
            y = torch.tensor([label for _, label in chunk])
            top = model(x).topk(min(5, num_classes), dim=-1).indices
            top1 += int((top[:, 0] == y).sum())
            top5 += int((top == y[:, None]).any(-1).sum())
    n = len(samples)
    acc = weights.accuracy
    return {
        "model": model_name,
        "weights": weights.spec,
        "folder": str(root),
        "layout": layout,
        "n": n,
        "classes": len({label for _, label in samples}),
        "top1": top1 / n,
        "top5": top5 / n,
        "published_top1": round(acc["acc@1"] / 100, 6) if "acc@1" in acc else None,
        "published_top5": round(acc["acc@5"] / 100, 6) if "acc@5" in acc else None,
        "preprocess": {
            "resize": pre.resize,
            "crop": pre.crop,
            "mean": list(pre.mean),
            "std": list(pre.std),
            "interpolation": pre.interpolation,
        },
    }
