"""Transfer: pre-training then fine-tuning beats training from scratch on a small set.

A ResNet-20 is pre-trained once on the claim's dataset (Fashion-MNIST by default), then its
body is fine-tuned on a small folder of MNIST digits with a new 10-class head; the scratch
arm trains the same net on the same digits from random weights, with the same seeds.
Primary: fine-tuned minus scratch test accuracy on the digits is positive.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from visionzoo.errors import UserError
from visionzoo.lab.claims.common import compare, scaled, sgd
from visionzoo.lab.core import Context, claim, curves, intervals
from visionzoo.lab.verdict import ClaimResult


def write_digits_folder(root: Path, n_train: int, n_test: int, data_dir: str | None) -> Path:
    """An imagefolder of MNIST digits: `train/` the first n_train of a balanced subset of the
    training set, `test/` a balanced subset of the official test set (PNG files)."""
    from torchvision.io import write_png

    from visionzoo.data import load_dataset
    from visionzoo.engine.train import balanced_subset

    for split, n in (("train", n_train), ("test", n_test)):
        data = balanced_subset(load_dataset("mnist", split, data_dir), n, seed=0)
        for i, (img, label) in enumerate(zip(data.images, data.labels.tolist())):
            folder = root / split / f"digit{label}"
            folder.mkdir(parents=True, exist_ok=True)
            write_png(img, str(folder / f"{i:05d}.png"))
    return root


@claim(
    "transfer",
    title="Pre-training then fine-tuning beats training from scratch on a small labelled set",
    paper="Yosinski et al. 2014, How transferable are features in deep neural networks?; "
    "Dosovitskiy et al. 2020 (ViT, Table 5: pre-train, then fine-tune)",
    quote="the issue's claim: pre-training then fine-tuning beats training from scratch on a "
    "small labelled set (ViT Table 5: CIFAR-10 98.13% after ImageNet pre-training)",
    source="reference/small_data_results.md §6 (transfer figures); the protocol is the lab's",
    models=("resnet20",),
    rule="Primary: fine-tuned minus scratch test accuracy on the digits, paired by seed, 95% "
    "interval: reproduced if it lies above 0, not if below, else inconclusive (also when an "
    "arm is at chance or still improving).",
)
def transfer(ctx: Context) -> ClaimResult:
    seeds = ctx.seed_list()
    widths = ctx.pick((4, 8, 16), (8, 16, 32), (16, 32, 64))
    n_train, n_test = ctx.pick((100, 200), (1_000, 2_000), (1_000, 10_000))
    pre_recipe = sgd(ctx.pick(1, 4, 30), ctx.pick(512, 20_000, None))
    source = ctx.dataset if ctx.dataset != "mnist" else "fashion-mnist"
    try:
        mnist_dir = ctx.data_dir_for("mnist")
        ctx.test_size("mnist")
    except Exception as err:  # noqa: BLE001
        raise UserError(f"the transfer claim fine-tunes on MNIST digits: {err}") from None
    ctx.use_dataset("mnist")
    net = {"model": "resnet20", "model_kwargs": {"widths": widths}}
    pre = ctx.train("pretrain", 0, dataset=source, **net, **pre_recipe)
    assert ctx.work is not None
    folder = write_digits_folder(Path(tempfile.mkdtemp(dir=ctx.work)), n_train, n_test, mnist_dir)
    ft_recipe = sgd(ctx.pick(4, 15, 30), None, lr=0.02, batch_size=64, crop_padding=2, hflip=False)
    digits = f"imagefolder:{folder}"
    finetune = dict(init=pre["run_dir"], freeze_epochs=1, layer_decay=0.7)
    arms = {
        "fine-tuned": [
            ctx.train("finetune", s, dataset=digits, **net, **finetune, **ft_recipe) for s in seeds
        ],
        "scratch": [ctx.train("scratch", s, dataset=digits, **net, **ft_recipe) for s in seeds],
    }
    primary = compare(
        "fine-tuned beats scratch", ("fine-tuned", arms["fine-tuned"]),
        ("scratch", arms["scratch"]), "greater", "mnist", primary=True,
    )  # fmt: skip

    def draw(fig):
        ax1, ax2 = fig.subplots(1, 2)
        curves(ax1, arms, "test_acc", "test accuracy (digits)")
        intervals(ax2, [primary])

    return ClaimResult(
        [primary],
        arms,
        {"pretrain": pre_recipe, "finetune": ft_recipe, "finetune_only": finetune},
        scaled(
            ctx,
            f"ResNet-20 widths {widths}; pre-training {pre_recipe['epochs']} epochs on "
            f"{pre_recipe['train_subset'] or 'all'} {source} images; digits: {n_train} "
            f"training images, {n_test} test images",
        ),
        facts={f"pre-training test accuracy on {source}": f"{100 * pre['final']['test_acc']:.2f}%"},
        extra={
            "dataset": f"mnist digits ({n_train} train / {n_test} test), pre-trained on {source}",
            "pretrain": {"dataset": source, **pre["final"], "curve": pre["curve"]},
        },
        plot=draw,
    )
