"""The pretrained gallery: one photo through every architecture whose ImageNet weights are cached.

Only torchvision's published weights are looked for, in the folder `visionzoo predict MODEL
--weights torchvision` downloads them to (`$TORCH_HOME/hub/checkpoints`, under the file name of
the weights' URL). Listing them touches no network: it checks file names on disk. Predicting
goes through `visionzoo.pretrained` (fetch_weights, load_pretrained, prepare_image): the same
preprocessing and class names as `visionzoo predict MODEL --weights torchvision`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import torch

from visionzoo.registry import get_model_info, list_models

_LOCK = threading.Lock()  # one gallery run at a time (memory); no other lock is taken


def checkpoints_dir() -> Path:
    """Where torchvision's weights are cached: $TORCH_HOME/hub/checkpoints."""
    from visionzoo.pretrained import hub_checkpoints

    return hub_checkpoints()


def expected_files() -> list[dict[str, Any]]:
    """Every registered model with torchvision ImageNet weights, with the file they come in."""
    from torchvision.models import get_model_weights

    out = []
    for name in list_models():
        info = get_model_info(name)
        if not info.torchvision_name:
            continue
        try:
            enum = get_model_weights(info.torchvision_name).DEFAULT
        except (ValueError, KeyError, AttributeError):
            continue
        out.append(
            {
                "model": name,
                "family": info.family,
                "year": info.year,
                "weights": f"torchvision:{enum}",
                "file": os.path.basename(enum.url),
                "url": enum.url,
            }
        )
    return sorted(out, key=lambda e: (e["year"], e["model"]))


def cached_models() -> list[dict[str, Any]]:
    """The entries of `expected_files` whose file is in the cache (no network is asked)."""
    folder = checkpoints_dir()
    return [e for e in expected_files() if (folder / e["file"]).is_file()]


def how_to() -> dict[str, Any]:
    folder = checkpoints_dir()
    return {
        "folder": str(folder),
        "command": "visionzoo predict resnet50 --weights torchvision photo.jpg",
        "text": (
            "Online, visionzoo predict MODEL --weights torchvision photo.jpg downloads a "
            f"model's ImageNet weights into {folder}/; offline, put the file named below (from "
            "its URL) in that folder. Reload this page to see them here."
        ),
    }


def gallery() -> dict[str, Any]:
    """GET /api/gallery: the cached architectures (by year), the missing ones, and how to add."""
    expected = expected_files()
    folder = checkpoints_dir()
    cached = [e for e in expected if (folder / e["file"]).is_file()]
    have = {e["model"] for e in cached}
    missing = [
        {"model": e["model"], "year": e["year"], "file": e["file"], "url": e["url"]}
        for e in expected
        if e["model"] not in have
    ]
    return {"models": cached, "missing": missing, "how_to": how_to()}


def classify(model_name: str, image: torch.Tensor, topk: int = 5) -> dict[str, Any]:
    """Top-`topk` of one uint8 (C, H, W) image, as `classify_images` computes it, with timings."""
    from visionzoo.pretrained import Preprocess, fetch_weights, load_pretrained, prepare_image
    from visionzoo.registry import create_model

    start = time.perf_counter()
    weights = fetch_weights(model_name, "torchvision")
    pre = weights.preprocess or Preprocess(256, 224)
    categories = weights.categories or []
    model = create_model(
        model_name, num_classes=len(categories) or 1000, image_size=pre.crop or pre.resize
    )
    load_pretrained(model, weights)
    model.eval()
    x = prepare_image(image, pre)[None]
    load_ms = (time.perf_counter() - start) * 1000
    with torch.no_grad():
        start = time.perf_counter()
        probs = model(x).softmax(-1)[0]
        latency_ms = (time.perf_counter() - start) * 1000
    top = probs.topk(min(topk, probs.shape[0]))
    return {
        "weights": weights.spec,
        "top": [
            {"name": categories[i] if categories else str(i), "p": float(p)}
            for p, i in zip(top.values.tolist(), top.indices.tolist())
        ],
        "latency_ms": round(latency_ms, 1),
        "load_ms": round(load_ms, 1),
        "input": pre.crop or pre.resize,
    }


def predict_all(image: torch.Tensor, topk: int = 5) -> dict[str, Any]:
    """POST /api/gallery/predict: every cached model on one image, in order of year."""
    from visionzoo.errors import UserError

    results = []
    with _LOCK:
        for entry in cached_models():
            row = {k: entry[k] for k in ("model", "family", "year", "file")}
            try:
                row.update(classify(entry["model"], image, topk))
            except (UserError, RuntimeError, ValueError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else "failed"
                row["error"] = first[:300]
            results.append(row)
    return {"results": results, "how_to": how_to()}
