"""VGG: a stack of two 3x3 convolutions matches one 5x5 with fewer parameters.

Primary: the stack's accuracy is no worse than the 5x5 net's (margin 0.5 pp), paired by
seed. Secondary: the stack is better. The parameter counts are facts, not evidence.
"""

from __future__ import annotations

from visionzoo.lab.claims.common import compare, scaled, sgd
from visionzoo.lab.core import Context, claim, curves, intervals, model_cost
from visionzoo.lab.verdict import ClaimResult

MARGIN = 0.005  # "no worse": within 0.5 pp, fixed before running


@claim(
    "vgg",
    title="A stack of 3x3 convolutions matches one larger kernel with fewer parameters",
    paper="Simonyan, Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image "
    "Recognition, arXiv:1409.1556",
    quote='"a stack of two 3x3 conv. layers (without spatial pooling in between) has an '
    'effective receptive field of 5x5" ... "we decrease the number of parameters"; the shallow '
    'net with 5x5 layers had "top-1 error ... 7% higher than that of B"',
    source="reference/small_data_results.md §8 (Sec. 2.3 and 4.1, verified quotes; 18C^2 vs "
    "25C^2 derived)",
    models=("vgg11", "vgg13", "vgg16", "vgg19"),
    rule="Primary: test accuracy of two 3x3 layers minus one 5x5, paired by seed, 95% "
    "interval (t over seeds, McNemar test-set noise): reproduced if it lies above -0.5 pp, "
    "not if below, else inconclusive; inconclusive too if an arm is at chance or still "
    "improving. Secondary: the stack is better (interval above 0). Fact: parameter counts.",
)
def vgg(ctx: Context) -> ClaimResult:
    seeds = ctx.seed_list()
    widths = ctx.pick((8, 16, 32), (16, 32, 64), (64, 128, 256))
    recipe = sgd(ctx.pick(1, 10, 30), ctx.pick(256, 5_000, None))
    arms, params = {}, {}
    for kernel, label in (("stack", "two 3x3"), ("large", "one 5x5")):
        kw = {"kernel": kernel, "n": 2, "widths": widths}
        params[label] = model_cost("lab_kernel_net", ctx.dataset, data_dir=ctx.data_dir, **kw)[
            "params"
        ]
        arms[label] = [
            ctx.train(f"kernel-{kernel}", s, model="lab_kernel_net", model_kwargs=kw, **recipe)
            for s in seeds
        ]
    facts = {f"parameters, {k}": f"{v:,}" for k, v in params.items()}
    facts["stack has fewer parameters"] = params["two 3x3"] < params["one 5x5"]
    new, old = ("two 3x3", arms["two 3x3"]), ("one 5x5", arms["one 5x5"])
    subs = [
        compare("3x3 stack no worse than 5x5", new, old, "no_worse", ctx.dataset, MARGIN, True),
        compare("3x3 stack better than 5x5", new, old, "greater", ctx.dataset),
    ]

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
            f"KernelNet widths {widths}, 3 stages, BN, GAP head (not VGG's 5 stages and "
            f"4096-wide FC layers); {recipe['epochs']} epochs on "
            f"{recipe['train_subset'] or 'all'} images",
        ),
        facts=facts,
        plot=draw,
    )
