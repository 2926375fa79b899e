"""EfficientNet: compound scaling beats scaling depth, width or resolution alone.

The compound arm scales a small base net by the paper's phi = 1 coefficients; each single-
dimension arm scales one dimension until its multiply-adds match the compound arm's (within
5%, or its comparison is inconclusive), counted with `bench.profile`. Primary: compound
minus the best single-dimension arm, paired by seed; the others are secondaries. A scaled
arm that ends below the unscaled base was not trained to its plateau: inconclusive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from visionzoo.lab.claims.common import accuracies, cheap_tests, compare, scaled
from visionzoo.lab.core import Context, claim, curves, intervals, model_cost
from visionzoo.lab.verdict import ClaimResult, below_base

FLOP_TOLERANCE = 0.05


def macs_of(ctx: Context, width: float, depth: float, resolution: int) -> int:
    kw = {"width": width, "depth": depth}
    return model_cost(
        "lab_efficientnet", ctx.dataset, image_size=resolution, data_dir=ctx.data_dir, **kw
    )["macs"]


def match(cost: Callable[[float], int], target: int, lo: float = 1.0, hi: float = 4.0) -> float:
    """The scale factor in [lo, hi] whose cost is closest to `target` (cost grows with it)."""
    best = lo
    for _ in range(12):
        mid = (lo + hi) / 2
        if abs(cost(mid) - target) < abs(cost(best) - target):
            best = mid
        lo, hi = (mid, hi) if cost(mid) < target else (lo, mid)
    return best


@claim(
    "efficientnet",
    title="Compound scaling beats scaling depth, width or resolution alone at equal FLOPs",
    paper="Tan, Le 2019, EfficientNet: Rethinking Model Scaling for CNNs, arXiv:1905.11946",
    quote="compound scaling: depth d = 1.2^phi, width w = 1.1^phi, resolution r = 1.15^phi, "
    "alpha * beta^2 * gamma^2 ~ 2 (Eq. 3; Fig. 8: compound scaling beats single-dimension "
    "scaling of B0 at equal FLOPs) [paraphrase; not in the reference file]",
    source="the paper (Sec. 3.3, Eq. 3, Fig. 8); visionzoo.models.efficientnet (ALPHA, BETA, "
    "GAMMA)",
    models=("efficientnet_b0", "efficientnet_b1"),
    rule="Single-dimension arms are FLOP-matched to the compound arm within 5%. Primary: "
    "compound minus the best single-dimension arm's test accuracy, paired by seed, 95% "
    "interval: reproduced if above 0, not if below, else inconclusive (also when MACs differ "
    "by more than 5%, an arm is at chance or still improving, or a scaled arm ends below the "
    "base). Secondaries: compound against each single-dimension arm.",
)
def efficientnet(ctx: Context) -> ClaimResult:
    from visionzoo.models.efficientnet import ALPHA, BETA, GAMMA

    seeds = ctx.seed_list()
    w0, d0, r0 = ctx.pick((0.25, 0.25, 16), (0.25, 0.25, 16), (1.0, 1.0, 32))
    recipe = dict(
        epochs=ctx.pick(1, 8, 60),
        train_subset=ctx.pick(256, 1_500, None),
        batch_size=128,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.05,
        schedule="cosine",
        warmup_epochs=ctx.pick(0, 1, 3),
        label_smoothing=0.1,
        augment=True,
        channels_last=True,  # the same arithmetic, faster on CPUs and GPUs
        **cheap_tests(ctx, every=1),
    )
    compound = (w0 * BETA, d0 * ALPHA, round(r0 * GAMMA))
    target = macs_of(ctx, *compound)
    k_d = match(lambda k: macs_of(ctx, w0, d0 * k, r0), target)
    k_w = match(lambda k: macs_of(ctx, w0 * k, d0, r0), target)
    k_r = match(lambda k: macs_of(ctx, w0, d0, round(r0 * k)), target)
    specs = {
        "base": (w0, d0, r0),
        "compound": compound,
        "depth only": (w0, d0 * k_d, r0),
        "width only": (w0 * k_w, d0, r0),
        "resolution only": (w0, d0, round(r0 * k_r)),
    }
    macs = {k: macs_of(ctx, *v) for k, v in specs.items()}
    arms: dict[str, list[dict[str, Any]]] = {}
    for k, (w, dep, r) in specs.items():
        kw = {"width": w, "depth": dep}
        arms[k] = [
            ctx.train(k.split(" ")[0], s, model="lab_efficientnet", model_kwargs=kw,
                      image_size=r, **recipe) for s in seeds
        ]  # fmt: skip
    base = accuracies(arms["base"])
    flags = {
        k: [
            f"{k} MACs differ from compound by {100 * abs(macs[k] / target - 1):.1f}%"
            if abs(macs[k] / target - 1) > FLOP_TOLERANCE
            else None,
            below_base(k, accuracies(arms[k]), base),
        ]
        for k in ("depth only", "width only", "resolution only")
    }
    means = {k: sum(accuracies(arms[k])) / len(seeds) for k in flags}
    best = max(means, key=lambda k: means[k])
    comp_flag = below_base("compound", accuracies(arms["compound"]), base)
    subs = [
        compare(f"compound beats the best single arm ({best})", ("compound", arms["compound"]),
                (best, arms[best]), "greater", ctx.dataset, primary=True,
                extra_flags=[comp_flag, *flags[best]]),
        *[compare(f"compound beats {k}", ("compound", arms["compound"]), (k, arms[k]),
                  "greater", ctx.dataset, extra_flags=[comp_flag, *flags[k]])
          for k in flags if k != best],
    ]  # fmt: skip
    facts = {
        f"{k}: width, depth, resolution; MACs": f"{w:.3f}, {d:.3f}, {r} px; {macs[k]:,}"
        for k, (w, d, r) in specs.items()
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
            f"base width {w0}, depth {d0}, {r0} px; {recipe['epochs']} epochs on "
            f"{recipe['train_subset'] or 'all'} images",
            recipe,
        ),
        facts=facts,
        plot=draw,
    )
