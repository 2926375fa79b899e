"""Depthwise-separable convolutions: 8-9x fewer multiply-adds for a small loss of accuracy.

Primary: a separable MobileNet v1's accuracy is no worse than the same net with standard
3x3 convolutions, within 1.5 pp (the paper's Table 4 loses 1.1 pp), paired by seed. The
multiply-add ratio and the latency by width multiplier are deterministic or machine
measurements: facts beside the verdict, counted and timed with the bench module.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable
from typing import Any

import torch

from visionzoo.lab.claims.common import compare, scaled, sgd
from visionzoo.lab.core import Context, claim, curves, intervals
from visionzoo.lab.verdict import ClaimResult

MARGIN = 0.015  # "a small reduction in accuracy": at most 1.5 pp, fixed before running


def alternating_latency_ms(
    models: dict[str, torch.nn.Module], inputs: dict[str, torch.Tensor], repeats: int
) -> dict[str, dict[str, float]]:
    """Median and quartiles of batch-1 forward latency in ms, the models taking turns
    (`bench.timing.time_alternating`), so other work on the machine falls on all alike."""
    from visionzoo.bench.timing import time_alternating

    with torch.inference_mode():
        fns: dict[str, Callable[[], Any]] = {
            n: functools.partial(m.eval(), inputs[n]) for n, m in models.items()
        }
        times = time_alternating(fns, repeats, warmup=2)
    out = {}
    for name, ts in times.items():
        ms = [1000 * t for t in ts]
        q = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
        out[name] = {"median": statistics.median(ms), "q1": q[0], "q3": q[2], "repeats": repeats}
    return out


def measure_widths(alphas: tuple[float, ...], size: int, repeats: int) -> dict[str, dict]:
    """MACs, parameters and measured latency of MobileNet v1 (separable and standard)."""
    from visionzoo.bench.profile import count_flops
    from visionzoo.lab.nets import lab_mobilenet

    rows, models, inputs = {}, {}, {}
    for alpha, standard in [(a, False) for a in alphas] + [(alphas[0], True)]:
        name = f"{'standard' if standard else 'separable'} a={alpha}"
        model = lab_mobilenet(alpha, standard, small_input=False, image_size=size).eval()
        x = torch.randn(1, 3, size, size)
        models[name], inputs[name] = model, x
        rows[name] = {
            "alpha": alpha,
            "standard": standard,
            "macs": count_flops(model, x) // 2,
            "params": sum(p.numel() for p in model.parameters()),
        }
    for name, lat in alternating_latency_ms(models, inputs, repeats).items():
        rows[name]["latency_ms"] = lat
    return rows


@claim(
    "separable",
    title="Depthwise-separable convolutions need 8-9x fewer multiply-adds for a small loss of "
    "accuracy",
    paper="Howard et al. 2017, MobileNets, arXiv:1704.04861; Chollet 2017, Xception",
    quote='"MobileNet uses 3x3 depthwise separable convolutions which uses between 8 to 9 '
    "times less computation than standard convolutions at only a small reduction in "
    'accuracy" [wording from the paper, not transcribed in the reference file]',
    source="the MobileNets paper (Sec. 3.1, Table 4: Conv MobileNet 71.7% / 4866M mult-adds vs "
    "MobileNet 70.6% / 569M) [unverified: not in reference/small_data_results.md]",
    models=(
        "mobilenet_v1",
        "mobilenet_v1_075",
        "mobilenet_v1_050",
        "mobilenet_v1_025",
        "xception",
    ),  # fmt: skip
    rule="Primary: separable minus standard test accuracy, paired by seed, 95% interval: "
    "reproduced if it lies above -1.5 pp, not if below, else inconclusive (also when an arm "
    "is at chance or still improving). Facts, not evidence: the multiply-add ratio at 224 px "
    "and the batch-1 latency by width multiplier on this machine.",
)
def separable(ctx: Context) -> ClaimResult:
    alphas = (1.0, 0.75, 0.5, 0.25)
    repeats, size = ctx.pick(2, 10, 50), ctx.pick(64, 224, 224)
    rows = measure_widths(alphas, size, repeats)
    base, std = rows["separable a=1.0"], rows["standard a=1.0"]
    facts: dict[str, Any] = {
        f"multiply-adds standard / separable at {size} px": f"{std['macs'] / base['macs']:.2f}x",
        "latency standard / separable (batch 1)": (
            f"{std['latency_ms']['median'] / base['latency_ms']['median']:.2f}x"
        ),
        "latency by width multiplier (ms)": ", ".join(
            f"{a}: {rows[f'separable a={a}']['latency_ms']['median']:.1f}" for a in alphas
        ),
    }
    seeds = ctx.seed_list()
    alpha_train = ctx.pick(0.25, 0.25, 1.0)
    sub = ctx.pick(256, 6_000, None)
    recipe = sgd(ctx.pick(1, 10, 30), sub)
    arms = {}
    for standard in (False, True):
        label = "standard" if standard else "separable"
        kw = {"width_multiplier": alpha_train, "standard": standard, "small_input": False}
        arms[label] = [
            ctx.train(f"mobilenet-{label}", s, model="lab_mobilenet", model_kwargs=kw, **recipe)
            for s in seeds
        ]
    primary = compare(
        "separable no worse than standard", ("separable", arms["separable"]),
        ("standard", arms["standard"]), "no_worse", ctx.dataset, MARGIN, primary=True,
    )  # fmt: skip

    def draw(fig):
        ax1, ax2, ax3 = fig.subplots(1, 3)
        for n, row in rows.items():
            ax1.errorbar(
                row["macs"] / 1e6, row["latency_ms"]["median"], fmt="o",
                yerr=[[row["latency_ms"]["median"] - row["latency_ms"]["q1"]],
                      [row["latency_ms"]["q3"] - row["latency_ms"]["median"]]],
            )  # fmt: skip
            ax1.annotate(n, (row["macs"] / 1e6, row["latency_ms"]["median"]), fontsize=7)
        ax1.set_xscale("log")
        ax1.set_xlabel(f"multiply-adds at {size} px (M)")
        ax1.set_ylabel("latency, batch 1 (ms, median, quartiles)")
        ax1.grid(alpha=0.3)
        curves(ax2, arms, "test_acc", "test accuracy")
        intervals(ax3, [primary])

    return ClaimResult(
        [primary],
        arms,
        recipe,
        scaled(
            ctx,
            f"accuracy arms: MobileNet v1 at alpha {alpha_train}, 32 px (28 padded), "
            f"{recipe['epochs']} epochs on {sub or 'all'} images; latency: {repeats} timed "
            "repeats after 2 warm-ups, the models taking turns",
        ),
        facts=facts,
        extra={"widths": rows},
        plot=draw,
    )
