"""GoogLeNet: 1x1 reductions buy depth and width at constant compute.

The paper's claim is that reductions let the network grow "without an uncontrolled blow-up
in computational complexity". So the naive net (no reductions, Figure 2a) is compared with a
reduced net made wider until it needs the same multiply-adds (within 5%), both with
auxiliary classifiers scaled to the body. Primary: the reduced net's accuracy is higher,
paired by seed. Secondary: the auxiliary classifiers help (reduced with vs without them).
"""

from __future__ import annotations

from typing import Any

from visionzoo.lab.claims.common import cheap_tests, compare, scaled, sgd
from visionzoo.lab.core import Context, claim, curves, intervals, model_cost
from visionzoo.lab.verdict import ClaimResult

MAC_TOLERANCE = 0.05  # the two arms' multiply-adds agree within 5%


def matched_div(ctx: Context, naive_div: float) -> tuple[float, dict[str, int]]:
    """The width divisor of the reduced net whose multiply-adds match the naive net's at
    `naive_div` (bisection)."""

    def macs(reduce: bool, div: float) -> int:
        kw: dict[str, Any] = {"reduce": reduce, "aux": True, "div": div}
        return model_cost("lab_googlenet", ctx.dataset, data_dir=ctx.data_dir, **kw)["macs"]

    target = macs(False, naive_div)
    lo, hi = naive_div / 4, naive_div  # multiply-adds fall as the divisor grows
    for _ in range(10):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs(True, mid) > target else (lo, mid)
    best = round((lo + hi) / 2, 3)
    return best, {"naive": target, "reduced": macs(True, best)}


@claim(
    "googlenet",
    title="1x1 reductions let an inception net grow wider at the same computation, and the "
    "wider net is more accurate",
    paper="Szegedy et al. 2014, Going Deeper with Convolutions, arXiv:1409.4842",
    quote='1x1 convolutions "are used to compute reductions before the expensive 3x3 and 5x5 '
    'convolutions" (Sec. 4), allowing "for increasing the number of units at each stage '
    'significantly without an uncontrolled blow-up in computational complexity" [wording '
    "from the paper, not in the reference file]",
    source="the paper (Sec. 4, 5); not transcribed in reference/small_data_results.md",
    models=("googlenet",),
    rule="Arms: the naive net and a wider reduced net with multiply-adds within 5%, aux heads "
    "scaled to the body. Primary: reduced minus naive test accuracy, paired by seed, 95% "
    "interval: reproduced if above 0, not if below, else inconclusive (also when the MACs do "
    "not match or an arm is at chance or still improving). Secondary: aux heads help.",
)
def googlenet(ctx: Context) -> ClaimResult:
    seeds = ctx.seed_list()
    naive_div = ctx.pick(16, 8, 2)
    div, macs = matched_div(ctx, naive_div)
    recipe = sgd(
        ctx.pick(1, 8, 30), ctx.pick(256, 2_000, None), channels_last=True, **cheap_tests(ctx)
    )
    variants = {
        "reduced (wider)": {"reduce": True, "aux": True, "div": div},
        "naive": {"reduce": False, "aux": True, "div": naive_div},
        "reduced, no aux": {"reduce": True, "aux": False, "div": div},
    }
    arms: dict[str, list[dict[str, Any]]] = {}
    for label, kw in variants.items():
        name = label.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
        arms[label] = [
            ctx.train(name, s, model="lab_googlenet", model_kwargs=kw, **recipe) for s in seeds
        ]
    mismatch = abs(macs["reduced"] / macs["naive"] - 1)
    flag = f"MACs differ by {100 * mismatch:.1f}%" if mismatch > MAC_TOLERANCE else None
    d = ctx.dataset
    red = ("reduced (wider)", arms["reduced (wider)"])
    subs = [
        compare("wider reduced net beats naive at equal MACs", red, ("naive", arms["naive"]),
                "greater", d, primary=True, extra_flags=[flag]),
        compare("auxiliary classifiers help", red,
                ("reduced, no aux", arms["reduced, no aux"]), "greater", d),
    ]  # fmt: skip
    facts = {
        "multiply-adds naive / reduced": f"{macs['naive']:,} / {macs['reduced']:,}",
        "width divisors naive / reduced": f"{naive_div} / {div}",
    }

    def draw(fig):
        ax1, ax2 = fig.subplots(1, 2)
        curves(ax1, arms, "test_acc", "test accuracy")
        intervals(ax2, subs)

    return ClaimResult(
        subs,
        arms,
        recipe,
        scaled(
            ctx,
            f"Table 1 widths / {naive_div} (naive) and / {div} (reduced); "
            f"{recipe['epochs']} epochs on {recipe['train_subset'] or 'all'} images",
            recipe,
        ),
        facts=facts,
        plot=draw,
    )
