"""Degradation: deep plain nets train worse; highway shortcuts keep very deep nets trainable.

The registered fully connected twins `highway_fc_N` / `plain_fc_N` (parameter-matched: the
plain net is wider) at 50 and 100 layers, each depth and kind with its own learning rate,
the one with the lowest training loss in a short grid (the claim is about optimisation, so
the choice never looks at test images). Primary: at 100 layers the highway net reaches a
higher training accuracy than the plain net, paired by seed.
"""

from __future__ import annotations

from typing import Any

from visionzoo.lab.claims.common import compare, scaled
from visionzoo.lab.core import Context, claim, curves, intervals, model_cost
from visionzoo.lab.verdict import ClaimResult

DEPTHS = (50, 100)
LR_GRID = (0.01, 0.03, 0.1, 0.3)


def recipe_for(ctx: Context, epochs: int, lr: float) -> dict[str, Any]:
    """Plain SGD with momentum on unaugmented images, as in the paper's MNIST experiments."""
    return dict(
        epochs=epochs,
        train_subset=ctx.pick(256, 10_000, None),
        batch_size=128,
        optimizer="sgd",
        lr=lr,
        weight_decay=0.0,
        schedule="cosine",
        warmup_epochs=0,
        augment=False,
        eval_batch_size=1000,
    )


def best_lr(ctx: Context, model: str) -> tuple[float, dict[float, float]]:
    """The grid's learning rate with the lowest final training loss (seed 0, short runs)."""
    losses = {}
    for lr in ctx.pick(LR_GRID[1:3], LR_GRID, LR_GRID):
        short = recipe_for(ctx, ctx.pick(1, 2, 5), lr)
        run = ctx.train(f"grid-{model}-lr{lr}", 0, model=model, **short)
        loss = run["final"].get("train_loss")
        losses[lr] = loss if loss is not None and loss == loss else float("inf")
    return min(losses, key=lambda lr: losses[lr]), losses


@claim(
    "degradation",
    title="Deeper plain nets train worse; highway shortcuts keep very deep nets trainable",
    paper="Srivastava, Greff, Schmidhuber 2015 (arXiv:1507.06228); He, Zhang, Ren, Sun 2015 "
    "(arXiv:1512.03385)",
    quote='"The 100-layer highway network performed more than 2 orders of magnitude better '
    'compared to a similarly-sized plain network" (Srivastava et al., Sec. 3); "The deep plain '
    'nets suffer from increased depth, and exhibit higher training error when going deeper" '
    "(He et al., Fig. 6)",
    source="reference/small_data_results.md §3 and §4",
    models=("highway_fc_50", "highway_fc_100", "plain_fc_50", "plain_fc_100"),
    rule="Each net's learning rate is the grid's lowest final training loss. Primary: "
    "highway_fc_100 minus plain_fc_100 training accuracy, paired by seed, 95% interval: "
    "reproduced if it lies above 0, not if below, else inconclusive (also when an arm is at "
    "chance or still improving; a plain net at chance is inconclusive, not evidence). "
    "Secondary: plain_fc_50 minus plain_fc_100 (degradation); highway_fc_100 no worse than "
    "highway_fc_50 within 0.5 pp. Fact: parameter counts.",
)
def degradation(ctx: Context) -> ClaimResult:
    seeds = ctx.seed_list()
    epochs = ctx.pick(1, 10, 40)
    arms, lrs, grids, params = {}, {}, {}, {}
    for depth in DEPTHS:
        for kind in ("highway", "plain"):
            model = f"{kind}_fc_{depth}"
            params[model] = model_cost(model, ctx.dataset, data_dir=ctx.data_dir)["params"]
            lrs[model], grids[model] = best_lr(ctx, model)
            recipe = recipe_for(ctx, epochs, lrs[model])
            arms[model] = [ctx.train(model, s, model=model, **recipe) for s in seeds]
    d = ctx.dataset

    def arm(name: str) -> tuple[str, list[dict[str, Any]]]:
        return name, arms[name]

    subs = [
        compare("highway beats plain at 100 layers (training accuracy)", arm("highway_fc_100"),
                arm("plain_fc_100"), "greater", d, primary=True, key="train_acc"),
        compare("plain 50 trains better than plain 100", arm("plain_fc_50"), arm("plain_fc_100"),
                "greater", d, key="train_acc"),
        compare("highway 100 no worse than highway 50", arm("highway_fc_100"),
                arm("highway_fc_50"), "no_worse", d, 0.005, key="train_acc"),
        compare("highway beats plain at 100 layers (test accuracy)", arm("highway_fc_100"),
                arm("plain_fc_100"), "greater", d),
    ]  # fmt: skip
    facts: dict[str, Any] = {f"parameters, {k}": f"{v:,}" for k, v in params.items()}
    facts.update({f"learning rate, {k}": v for k, v in lrs.items()})

    def draw(fig):
        ax1, ax2 = fig.subplots(1, 2)
        curves(ax1, arms, "train_loss", "training loss")
        ax1.set_yscale("log")
        intervals(ax2, subs)

    return ClaimResult(
        subs,
        arms,
        recipe_for(ctx, epochs, 0.0) | {"lr": "per net, from the grid", "lr_grid": grids},
        scaled(
            ctx,
            f"{epochs} epochs on {recipe_for(ctx, 1, 0)['train_subset'] or 'all'} "
            f"{d} images (the paper: MNIST, 400 epochs)",
        ),  # fmt: skip
        facts=facts,
        plot=draw,
    )
