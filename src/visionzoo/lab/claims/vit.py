"""ViT with little data: a ViT trails a CNN of similar size, and the gap narrows with data.

Both nets train at 10% and 100% of the training set with the same number of optimizer steps
(ten times the epochs at 10%), so only the data changes. Primary: at 10% the CNN beats the
ViT, paired by seed. Secondary: the gap narrows from 10% to 100%. Train and test accuracy
of every arm are reported (overfitting shows as the difference).
"""

from __future__ import annotations

import math
from typing import Any

from visionzoo.lab.claims.common import accuracies, compare, gates, paired_runs, scaled
from visionzoo.lab.claims.common import test_noise as noise_of
from visionzoo.lab.core import Context, claim, curves, intervals, model_cost
from visionzoo.lab.stats import paired
from visionzoo.lab.verdict import ClaimResult, SubClaim


@claim(
    "vit",
    title="With little data a ViT trails a CNN of similar size; the gap narrows as data grows",
    paper="Dosovitskiy et al. 2020, An Image is Worth 16x16 Words, arXiv:2010.11929",
    quote='"Transformers lack some of the inductive biases inherent to CNNs, such as '
    "translation equivariance and locality, and therefore do not generalize well when trained "
    'on insufficient amounts of data." ... "ResNets perform better with smaller pre-training '
    'datasets but plateau sooner than ViT"',
    source="reference/small_data_results.md §6 (arXiv v2 text, verified)",
    models=("vit_tiny_patch16", "vit_small_patch16", "vit_b_16", "resnet20"),
    rule="Equal optimizer steps at 10% and 100% of the data. Primary: CNN minus ViT test "
    "accuracy at 10%, paired by seed, 95% interval: reproduced if above 0, not if below, else "
    "inconclusive (also when an arm is at chance or still improving). Secondary: the gap at "
    "10% minus the gap at 100% is positive. Train and test accuracy reported for every arm.",
)
def vit(ctx: Context) -> ClaimResult:
    seeds = ctx.seed_list()
    full = ctx.pick(1_000, 8_000, None)
    n_full = full or ctx.train_size()
    small = max(100, n_full // 10)
    e_full = ctx.pick(1, 4, 100)
    e_small = round(e_full * n_full / small)  # the same optimizer steps on a tenth of the data
    recipe = dict(
        batch_size=128, optimizer="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine",
        label_smoothing=0.1, augment=True, channels_last=True,
    )  # fmt: skip
    vit_kw = ctx.pick(
        {"embed_dim": 32, "depth": 2, "num_heads": 2},
        {"embed_dim": 48, "depth": 4, "num_heads": 3},
        {"embed_dim": 192, "depth": 12, "num_heads": 3},
    )
    cnn_w = ctx.pick((4, 8, 16), (8, 16, 32), (32, 64, 128))
    models = {"ViT": ("lab_vit", vit_kw), "ResNet-20": ("resnet20", {"widths": cnn_w})}
    params = {
        k: model_cost(m, ctx.dataset, data_dir=ctx.data_dir, **kw)["params"]
        for k, (m, kw) in models.items()
    }
    fractions = {"10%": (small, e_small), "100%": (full, e_full)}
    arms: dict[str, list[dict[str, Any]]] = {}
    for frac, (n, epochs) in fractions.items():
        warmup = ctx.pick(0, 0.5, 5) * epochs / e_full
        for k, (m, kw) in models.items():
            arms[f"{k} {frac}"] = [
                ctx.train(f"{k}-{frac.rstrip('%')}", s, model=m, model_kwargs=kw, epochs=epochs,
                          train_subset=n, warmup_epochs=warmup, eval_every=epochs // e_full,
                          **recipe)
                for s in seeds
            ]  # fmt: skip
    d = ctx.dataset
    primary = compare("CNN beats ViT at 10% of the data", ("ResNet-20 10%", arms["ResNet-20 10%"]),
                      ("ViT 10%", arms["ViT 10%"]), "greater", d, primary=True)  # fmt: skip
    gap = {}
    for f in fractions:
        cnn, vit_runs = paired_runs(arms[f"ResNet-20 {f}"], arms[f"ViT {f}"])
        gap[f] = ([c - v for c, v in zip(accuracies(cnn), accuracies(vit_runs))],
                  noise_of(cnn, vit_runs))  # fmt: skip
    iv = paired(gap["10%"][0], gap["100%"][0], se_test=math.hypot(gap["10%"][1], gap["100%"][1]))
    narrowing = SubClaim.judge("the gap narrows from 10% to 100%", iv, "greater",
                               flags=gates(arms, d))  # fmt: skip
    subs = [primary, narrowing]
    facts: dict[str, Any] = {f"parameters, {k}": f"{v:,}" for k, v in params.items()}
    for k, runs in arms.items():
        tr = [r["final"].get("train_acc") or 0.0 for r in runs]
        te = accuracies(runs)
        facts[f"{k}: train / test accuracy"] = (
            f"{100 * sum(tr) / len(tr):.2f}% / {100 * sum(te) / len(te):.2f}%"
        )
    facts["optimizer steps per arm"] = f"about {math.ceil(n_full / 128) * e_full:,}"

    def draw(fig):
        ax1, ax2 = fig.subplots(1, 2)
        curves(ax1, arms, "test_acc", "test accuracy")
        intervals(ax2, subs)

    return ClaimResult(
        subs,
        arms,
        {**recipe, "epochs": {"10%": e_small, "100%": e_full}},
        scaled(
            ctx,
            f"ViT {vit_kw} vs ResNet-20 widths {cnn_w}; {small:,} and {n_full:,} training "
            f"images, {e_small} and {e_full} epochs (equal steps)",
        ),
        facts=facts,
        extra={"train_images": {"10%": small, "100%": n_full}},
        plot=draw,
    )
