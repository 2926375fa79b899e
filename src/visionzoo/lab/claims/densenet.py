"""DenseNet: a DenseNet-BC reaches a ResNet's accuracy with fewer parameters.

Primary: DenseNet-BC's accuracy is no worse than the wider ResNet's (margin 0.5 pp), paired
by seed. The parameter counts (DenseNet-BC must have fewer) are facts beside the verdict.
"""

from __future__ import annotations

from visionzoo.lab.claims.common import cheap_tests, compare, scaled, sgd
from visionzoo.lab.core import Context, claim, curves, intervals, model_cost
from visionzoo.lab.verdict import ClaimResult

MARGIN = 0.005  # "no worse": within 0.5 pp, fixed before running


@claim(
    "densenet",
    title="DenseNet reaches a given accuracy with fewer parameters than a ResNet",
    paper="Huang, Liu, van der Maaten, Weinberger 2016, Densely Connected Convolutional "
    "Networks, arXiv:1608.06993",
    quote="DenseNet-BC (L=100, k=12), 0.8M parameters: 4.51% error on C10+ (ResNet-110, 1.7M: "
    "6.43%)",
    source="reference/small_data_results.md §5 (official README table) and §3 (He et al. Table 6)",
    models=("densenet_bc_100", "densenet_40", "resnet20", "resnet56", "resnet110"),
    rule="Primary: DenseNet-BC minus ResNet-20 test accuracy, paired by seed, 95% interval: "
    "reproduced if it lies above -0.5 pp, not if below, else inconclusive (also when an arm "
    "is at chance or still improving). Fact: the parameter counts.",
)
def densenet(ctx: Context) -> ClaimResult:
    seeds = ctx.seed_list()
    sub = ctx.pick(512, 2_000, None)
    recipe = sgd(
        ctx.pick(1, 10, 300), sub, lr=0.1, weight_decay=1e-4, batch_size=64, channels_last=True,
        **cheap_tests(ctx),
    )  # fmt: skip
    widths = ctx.pick((8, 16, 32), (16, 32, 64), (32, 64, 128))
    dense = ctx.pick(
        {"depth": 22, "growth_rate": 4},
        {"depth": 40, "growth_rate": 8},
        {"depth": 100, "growth_rate": 12},
    )
    res = f"resnet20 w{widths[0]}"
    dn = f"densenet-bc L{dense['depth']} k{dense['growth_rate']}"
    specs = {res: ("resnet20", {"widths": widths}), dn: ("lab_densenet", dict(dense, bc=True))}
    params = {
        k: model_cost(m, ctx.dataset, data_dir=ctx.data_dir, **kw)["params"]
        for k, (m, kw) in specs.items()
    }
    arms = {
        k: [ctx.train(k.replace(" ", "-"), s, model=m, model_kwargs=kw, **recipe) for s in seeds]
        for k, (m, kw) in specs.items()
    }
    facts = {f"parameters, {k}": f"{v:,}" for k, v in params.items()}
    facts["DenseNet-BC has fewer parameters"] = params[dn] < params[res]
    primary = compare(
        f"{dn} no worse than {res}", (dn, arms[dn]), (res, arms[res]), "no_worse",
        ctx.dataset, MARGIN, primary=True,
    )  # fmt: skip

    def draw(fig):
        ax1, ax2 = fig.subplots(1, 2)
        curves(ax1, arms, "test_acc", "test accuracy")
        intervals(ax2, [primary])

    return ClaimResult(
        [primary],
        arms,
        recipe,
        scaled(
            ctx,
            f"DenseNet-BC L={dense['depth']} k={dense['growth_rate']} vs CIFAR ResNet-20 at "
            f"widths {widths}; {recipe['epochs']} epochs on {sub or 'all'} images",
            recipe,
        ),
        facts=facts,
        plot=draw,
    )
