"""Claims 6-10: DenseNet, depthwise-separable convolutions, EfficientNet scaling, ViT with
little data, and transfer learning."""

from __future__ import annotations

import math
from typing import Any

from visionzoo.lab.claims_classic import scaled
from visionzoo.lab.core import (
    NOT,
    PARTLY,
    REPRODUCED,
    Context,
    arm_summary,
    binomial_se,
    claim,
    curves,
    difference,
    model_cost,
    pm,
)

# ---------------------------------------------------------------------------------------
# 9. ViT with little data


def _train_size(ctx: Context) -> int:
    from visionzoo.data import load_dataset

    return len(load_dataset(ctx.dataset, "train", ctx.data_dir_for(ctx.dataset)).labels)


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
    rule="gap = CNN - ViT test accuracy. Reproduced if the gap at 10% of the data is > 2 SE "
    "AND it shrinks from 10% to 100% by > 2 SE; partly if only one of the two holds, or both "
    "only in the mean; not if the ViT does not trail at 10%.",
)
def vit(ctx: Context) -> dict[str, Any]:
    seeds = ctx.seed_list(1, 2, 3)
    full = ctx.pick(1_000, 20_000, None)
    n_full = full or _train_size(ctx)
    small = max(100, n_full // 10)
    e_full = ctx.pick(1, 4, 100)
    recipe = dict(
        batch_size=128,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        schedule="cosine",
        warmup_epochs=ctx.pick(0, 0.5, 5),
        label_smoothing=0.1,
        augment=True,
    )
    vit_kw = ctx.pick(
        {"embed_dim": 32, "depth": 2, "num_heads": 2},
        {"embed_dim": 48, "depth": 4, "num_heads": 3},
        {"embed_dim": 192, "depth": 12, "num_heads": 3},
    )
    cnn_w = ctx.pick((4, 8, 16), (8, 16, 32), (32, 64, 128))
    models = {"ViT": ("lab_vit", vit_kw), "ResNet-20": ("resnet20", {"widths": cnn_w})}
    costs = {
        k: model_cost(m, ctx.dataset, data_dir=ctx.data_dir, **kw) for k, (m, kw) in models.items()
    }
    fractions = {"10%": (small, e_full * 4), "100%": (full, e_full)}
    arms: dict[str, list[dict[str, Any]]] = {}
    for frac, (n, epochs) in fractions.items():
        for k, (m, kw) in models.items():
            arms[f"{k} {frac}"] = [
                ctx.train(
                    f"{k}-{frac.rstrip('%')}",
                    s,
                    model=m,
                    model_kwargs=kw,
                    epochs=epochs,
                    train_subset=n,
                    **recipe,
                )
                for s in seeds
            ]
    floor = binomial_se(0.9, ctx.test_size())
    acc = {k: arm_summary(v, floor=floor) for k, v in arms.items()}
    gaps = {
        f: [c - v for c, v in zip(acc[f"ResNet-20 {f}"]["values"], acc[f"ViT {f}"]["values"])]
        for f in fractions
    }
    f2 = math.sqrt(2) * floor
    g10 = difference(gaps["10%"], [0.0] * len(seeds), f2, 0.0)
    g100 = difference(gaps["100%"], [0.0] * len(seeds), f2, 0.0)
    narrowing = difference(gaps["10%"], gaps["100%"], f2, f2)
    trails, narrows = g10["diff"] > 2 * g10["se"], narrowing["diff"] > 2 * narrowing["se"]
    if g10["diff"] <= 0:
        verdict = NOT
    elif trails and narrows:
        verdict = REPRODUCED
    else:
        verdict = PARTLY
    summary = (
        f"CNN - ViT at 10% ({small:,} images): {pm(g10['diff'], g10['se'])}; at 100% "
        f"({n_full:,}): {pm(g100['diff'], g100['se'])}; the gap narrows by "
        f"{pm(narrowing['diff'], narrowing['se'])} (ViT {costs['ViT']['params']:,} vs CNN "
        f"{costs['ResNet-20']['params']:,} parameters)"
    )

    def draw(fig):
        ax1, ax2 = fig.subplots(1, 2)
        curves(ax1, arms, "test_acc", "test accuracy")
        for k in models:
            ax2.errorbar(
                [small, n_full],
                [acc[f"{k} {f}"]["mean"] for f in fractions],
                yerr=[2 * acc[f"{k} {f}"]["se"] for f in fractions],
                marker="o",
                capsize=4,
                label=k,
            )
        ax2.set_xscale("log")
        ax2.set_xlabel("training images")
        ax2.set_ylabel("test accuracy")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)

    return {
        "verdict": verdict,
        "summary": summary,
        "figures": {
            "costs": costs,
            "accuracy": acc,
            "gaps": gaps,
            "gap_at_10": g10,
            "gap_at_100": g100,
            "narrowing": narrowing,
            "train_images": {"10%": small, "100%": n_full},
        },
        "scaled_down": scaled(
            ctx,
            f"ViT {vit_kw} with 4x4 patches vs ResNet-20 widths {cnn_w}; "
            f"'100%' = {n_full:,} images for {e_full} epochs, '10%' = {small:,} "
            f"for {e_full * 4} epochs (paper: ImageNet vs JFT-300M "
            "pre-training)",
        ),
        "recipe": dict(recipe, epochs={f: e for f, (_, e) in fractions.items()}),
        "arms": arms,
        "_plot": draw,
    }
