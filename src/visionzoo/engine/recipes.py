"""Named recipes: sets of TrainConfig values that work for a kind of model and data.

`--recipe NAME` starts from these values; flags given on the command line override them;
the resolved values are saved in the run's config.json.
"""

from __future__ import annotations

from typing import Any

from visionzoo.errors import UserError

RECIPES: dict[str, dict[str, Any]] = {
    # make demo: LeNet-5 on Fashion-MNIST, >= 90% test accuracy in about a minute on 2 cores.
    "demo": dict(
        epochs=12, batch_size=128, optimizer="sgd", lr=0.05, weight_decay=5e-4,
        schedule="cosine", warmup_epochs=0.3, augment=False, eval_batch_size=2000,
    ),
    # Small CNNs (LeNet, CIFAR ResNets, DenseNet-BC) on 28-32 px data: SGD + cosine + crop/flip.
    "small-cnn": dict(
        epochs=30, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
        weight_decay=5e-4, schedule="cosine", warmup_epochs=1, label_smoothing=0.0,
        augment=True,
    ),
    # He et al. 2015 section 4.2, the CIFAR ResNet recipe (step schedule, wd 1e-4, bs 128).
    "resnet-cifar": dict(
        epochs=164, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
        weight_decay=1e-4, schedule="step", warmup_epochs=0, augment=True,
    ),
    # Vision Transformers on small data need strong regularisation (DeiT-style, scaled down).
    "vit-small-data": dict(
        epochs=100, batch_size=128, optimizer="adamw", lr=1e-3, weight_decay=0.05,
        schedule="cosine", warmup_epochs=5, label_smoothing=0.1, augment=True,
        random_erasing=0.25, mixup=0.8, cutmix=1.0, ema_decay=0.0, grad_clip=1.0,
    ),
    # Modern CNNs (ConvNeXt, EfficientNet) trained from scratch: AdamW, smoothing, EMA.
    "modern-cnn": dict(
        epochs=60, batch_size=128, optimizer="adamw", lr=2e-3, weight_decay=0.05,
        schedule="cosine", warmup_epochs=3, label_smoothing=0.1, augment=True,
        random_erasing=0.25, mixup=0.2, cutmix=1.0, ema_decay=0.999,
    ),
    # NFNets: no normalization, so adaptive gradient clipping keeps large batches stable.
    "nfnet": dict(
        epochs=60, batch_size=128, optimizer="sgd", lr=0.1, nesterov=True, weight_decay=2e-5,
        schedule="cosine", warmup_epochs=3, label_smoothing=0.1, agc=0.01, augment=True,
    ),
    # Fine-tuning a pre-trained body: freeze the head-less body briefly, lower lr below.
    "finetune": dict(
        epochs=10, batch_size=64, optimizer="sgd", lr=0.01, weight_decay=1e-4,
        schedule="cosine", warmup_epochs=0, freeze_epochs=2, layer_decay=0.7, augment=True,
    ),
}  # fmt: skip
# GPU variants (Goyal et al. 2017: batch x k, lr x k, linear warm-up): fewer, larger steps
# for a GPU that LeNet-5 at batch 128 leaves bound by kernel launches. LeNet-5 has no batch
# norm and loses accuracy beyond batch 256 (measured on CPU, Fashion-MNIST: 91.06% at epoch 10
# with 256; 90.61% after 15 epochs with 512 and lr 0.1).
RECIPES["demo-gpu"] = {
    **RECIPES["demo"], "epochs": 15, "batch_size": 256, "lr": 0.1, "warmup_epochs": 1,
    "eval_batch_size": 5000,
}  # fmt: skip
RECIPES["small-cnn-gpu"] = {
    **RECIPES["small-cnn"], "batch_size": 512, "lr": 0.4, "warmup_epochs": 3,
    "eval_batch_size": 5000,
}  # fmt: skip


def auto_recipe(model: str | None, device: str = "auto") -> str:
    """`--recipe auto`: demo for LeNets, small-cnn for other models; their -gpu variants when
    the run goes to CUDA."""
    import torch

    base = "demo" if (model or "").startswith("lenet") else "small-cnn"
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return f"{base}-gpu" if cuda else base


def resolve_recipe(
    name: str | None, model: str | None = None, device: str | None = None
) -> dict[str, Any]:
    if name is None:
        return {}
    if name == "auto":
        name = auto_recipe(model, device or "auto")
    if name not in RECIPES:
        import difflib

        close = difflib.get_close_matches(name, RECIPES, n=3)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise UserError(f"unknown recipe {name!r}{hint} (known: auto, {', '.join(RECIPES)})")
    return dict(RECIPES[name], recipe=name)
