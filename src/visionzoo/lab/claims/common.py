"""What the claims share: the plain CNN recipe, and two arms compared by seed.

`compare` is the one way a claim turns runs into a sub-claim: per-seed test accuracies of
two arms trained with the same seeds, paired; the test-set noise from their disagreements on
the same images; and the validity gates (an arm at chance, an arm still improving).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visionzoo.lab.core import Context
from visionzoo.lab.stats import Interval, mcnemar_se, paired
from visionzoo.lab.verdict import Rule, SubClaim, at_chance, unconverged

Runs = list[dict[str, Any]]


def sgd(epochs: int, subset: int | None, **extra: Any) -> dict[str, Any]:
    """The lab's plain CNN recipe: SGD + Nesterov, cosine, wd 5e-4, batch 128."""
    recipe = dict(
        epochs=epochs,
        train_subset=subset,
        batch_size=128,
        optimizer="sgd",
        lr=0.05,
        weight_decay=5e-4,
        schedule="cosine",
        warmup_epochs=0,
        augment=True,
        eval_batch_size=1000,
    )
    recipe.update(extra)
    return recipe


def cheap_tests(ctx: Context, every: int = 2) -> dict[str, Any]:
    """For claims whose test pass costs more than a training epoch at the quick budget: half
    the test set (5,000 class-balanced images, the same for every arm and seed), every
    `every` epochs and after the last. Other budgets test on everything, every epoch."""
    if ctx.budget != "quick":
        return {}
    return {"test_subset": 5_000, "eval_every": every}


def scaled(ctx: Context, what: str, recipe: dict[str, Any] | None = None) -> list[str]:
    """What the budget changes against the paper (for the JSON and the report), with the
    recipe's test subset and evaluation spacing when it has them (see `cheap_tests`)."""
    if recipe and recipe.get("test_subset"):
        every = recipe.get("eval_every", 1)
        when = "every epoch" if every == 1 else f"every {every} epochs and after the last"
        what += f"; tested on {recipe['test_subset']:,} class-balanced test images, {when}"
    return [f"{ctx.budget} budget: {what}"] if ctx.budget != "full" else [what]


def chance(dataset: str) -> float:
    from visionzoo.data import get_spec

    return 1 / get_spec(dataset).num_classes


def accuracies(runs: Runs, key: str = "test_acc") -> list[float]:
    return [r["final"][key] for r in runs]


def test_noise(a: Runs, b: Runs) -> float:
    """The mean over seeds of the McNemar standard error of acc(a) - acc(b) (0 when a run
    has no correctness vector, e.g. it diverged)."""
    ses = [
        mcnemar_se(x["correct"], y["correct"])
        for x, y in zip(a, b)
        if x.get("correct") and y.get("correct")
    ]
    return sum(ses) / len(ses) if ses else 0.0


def gates(arms: dict[str, Runs], dataset: str) -> list[str | None]:
    """The validity gates every trained arm must pass: above chance, at its plateau."""
    flags: list[str | None] = []
    for name, runs in arms.items():
        flags.append(at_chance(name, accuracies(runs), chance(dataset)))
        points = [[r for r in run["curve"] if "test_acc" in r] for run in runs]  # --eval-every
        tests = [[r["test_acc"] for r in p] for p in points]
        last = points[0][-2:]
        every = last[1].get("epoch", 2) - last[0].get("epoch", 1) if len(last) == 2 else 1
        flags.append(unconverged(name, tests, every))
    return flags


def paired_runs(a: Runs, b: Runs) -> tuple[Runs, Runs]:
    """The runs of two arms that share a seed, in seed order."""
    by_seed = {r["seed"]: r for r in b}
    pairs = [(r, by_seed[r["seed"]]) for r in a if r["seed"] in by_seed]
    return [x for x, _ in pairs], [y for _, y in pairs]


def compare(
    name: str,
    new: tuple[str, Runs],
    old: tuple[str, Runs],
    rule: Rule,
    dataset: str,
    margin: float = 0.0,
    primary: bool = False,
    extra_flags: Sequence[str | None] = (),
    facts: dict[str, Any] | None = None,
    key: str = "test_acc",
) -> SubClaim:
    """acc(new) - acc(old), paired by seed, judged by `rule`; the gates run on both arms.
    `key="train_acc"` compares training accuracy (no test-set noise then)."""
    a, b = paired_runs(new[1], old[1])
    noise = test_noise(a, b) if key == "test_acc" else 0.0
    iv: Interval = paired(accuracies(a, key), accuracies(b, key), se_test=noise)
    flags = [*gates({new[0]: a, old[0]: b}, dataset), *extra_flags]
    return SubClaim.judge(name, iv, rule, margin, primary, flags, facts)
