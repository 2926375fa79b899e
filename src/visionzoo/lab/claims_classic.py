"""Claims 1-5: LeNet-5, AlexNet, VGG, GoogLeNet, and degradation (Highway Networks, ResNet).

Each function trains its arms through `Context.train` (the engine's `fit`) with one recipe
for all arms, then applies the verdict rule stated in its `rule` text.
"""

from __future__ import annotations

import math
from typing import Any

from visionzoo.lab.core import (
    Context,
    bars,
    binomial_se,
    claim,
    combine,
    curves,
    difference,
    mean,
    pct,
    std_error,
    verdict_greater,
)


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


def scaled(ctx: Context, what: str) -> list[str]:
    """What the budget changes against the paper (for the JSON and the report)."""
    return [f"{ctx.budget} budget: {what}"] if ctx.budget != "full" else [what]


def train_error(run: dict[str, Any]) -> float:
    acc = run["final"].get("train_acc")
    return 1 - acc if acc is not None else 1.0


# ---------------------------------------------------------------------------------------
# 2. AlexNet: ReLU vs tanh; dropout and augmentation

TARGET_TRAIN_ERROR = {"cifar10": 0.25, "fashion-mnist": 0.10, "mnist": 0.02}


def epochs_to(curve: list[dict[str, Any]], target: float) -> float | None:
    """Epochs (linearly interpolated, from 0.9 error at epoch 0) until the epoch's training
    error first reaches `target`; None if it never does."""
    prev_e, prev_err = 0.0, 0.9
    for r in curve:
        err = 1 - r["train_acc"]
        if err <= target:
            if prev_err <= err:
                return float(r["epoch"])
            return prev_e + (prev_err - target) / (prev_err - err) * (r["epoch"] - prev_e)
        prev_e, prev_err = float(r["epoch"]), err
    return None


def clean_train_accuracy(run_dir: str, dataset: str, data_dir, subset: int | None, seed: int):
    """Top-1 on the run's own training images, in eval mode, without augmentation."""
    from visionzoo.data import DeviceLoader, Preprocess, load_dataset
    from visionzoo.engine.train import balanced_subset, evaluate
    from visionzoo.runs import load_run

    run = load_run(run_dir)
    data = load_dataset(dataset, "train", data_dir)
    if subset:
        data = balanced_subset(data, subset, seed)
    pre = Preprocess.from_dict(run.config["preprocess"])
    return evaluate(run.model, DeviceLoader(data, 1000, pre), data.spec.num_classes)["top1"]


@claim(
    "alexnet",
    title="ReLU trains several times faster than tanh; dropout and augmentation shrink the "
    "train-test gap",
    paper="Krizhevsky, Sutskever, Hinton 2012, ImageNet Classification with Deep CNNs, NIPS",
    quote='"A four-layer convolutional neural network with ReLUs (solid line) reaches a 25% '
    "training error rate on CIFAR-10 six times faster than an equivalent network with tanh "
    'neurons" (Figure 1); dropout and augmentation are the paper\'s two ways to "reduce '
    'overfitting" (Sec. 4)',
    source="reference/small_data_results.md §7 (Figure 1 caption, Sec. 3.1); Sec. 4 wording "
    "from the paper's section title, not in the reference file",
    models=("alexnet", "alexnet_2012"),
    rule="(a) speed: per seed, ratio = epochs tanh needs / epochs ReLU needs to reach the "
    "target training error (CIFAR-10 25% as in the paper, Fashion-MNIST 10%, MNIST 2%, "
    "fixed before running; tanh never reaching it counts as the whole budget, neither "
    "reaching it as ratio 1); reproduced if the mean log ratio exceeds log 3 and 2 SE, partly "
    "if it is above 0, else not. (b) gap (clean training accuracy - test accuracy): "
    "dropout and augmentation each must shrink it by more than 2 SE. Overall: all sub-claims "
    "reproduced -> reproduced; none -> not; else partly.",
)
def alexnet(ctx: Context) -> dict[str, Any]:
    seeds = ctx.seed_list(1, 2, 5)
    target = TARGET_TRAIN_ERROR.get(ctx.dataset, 0.25)
    widths = ctx.pick((8, 8, 16), (32, 32, 64), (32, 32, 64))
    # (a) ReLU vs tanh: no regularization of any kind, constant lr, as in Figure 1.
    # lr 0.05 (the lab's usual rate, shared by both activations): at 0.01 neither net reached
    # the 10% target in the quick budget's epochs, which leaves nothing to compare.
    speed_recipe = sgd(
        ctx.pick(2, 10, 40),
        ctx.pick(512, 8_000, None),
        lr=0.05,
        schedule="constant",
        weight_decay=0.0,
        augment=False,
        nesterov=False,
    )
    speed = {
        act: [
            ctx.train(
                f"cnn4-{act}",
                s,
                model="lab_cnn4",
                model_kwargs={"act": act, "widths": widths},
                **speed_recipe,
            )
            for s in seeds
        ]
        for act in ("relu", "tanh")
    }
    log_ratios, per_seed = [], []
    for r_relu, r_tanh in zip(speed["relu"], speed["tanh"]):
        t_relu, t_tanh = epochs_to(r_relu["curve"], target), epochs_to(r_tanh["curve"], target)
        censored = t_tanh is None
        if t_relu is None:
            ratio = 1.0 if t_tanh is None else 0.0
        else:
            t_tanh_eff = t_tanh if t_tanh is not None else float(speed_recipe["epochs"])
            ratio = t_tanh_eff / max(t_relu, 1e-9)
        per_seed.append(
            {
                "epochs_relu": t_relu,
                "epochs_tanh": t_tanh,
                "ratio": ratio,
                "tanh_censored": censored,
            }
        )
        log_ratios.append(math.log(max(ratio, 1e-6)))
    m_log = mean(log_ratios)
    t_relu_mean = mean(p["epochs_relu"] or speed_recipe["epochs"] for p in per_seed)
    se_log = std_error(log_ratios, math.log(1 + 1 / max(t_relu_mean, 1.0)))  # 1-epoch resolution
    v_speed = verdict_greater(m_log, se_log, margin=math.log(3))
    # (b) dropout and augmentation: a hidden FC layer, small training set, clean train acc.
    sub = ctx.pick(512, 4_000, 10_000)
    gap_recipe = sgd(ctx.pick(1, 10, 60), sub, lr=0.02, weight_decay=0.0)
    variants = {
        "none": (0.0, False),
        "dropout": (0.5, False),
        "augment": (0.0, True),
        "dropout+augment": (0.5, True),
    }
    gap_runs: dict[str, list[dict[str, Any]]] = {}
    for label, (p, aug) in variants.items():
        runs = []
        for s in seeds:
            run = ctx.train(
                f"cnn4-{label}",
                s,
                model="lab_cnn4",
                model_kwargs={"widths": widths, "hidden": 256, "dropout": p},
                **dict(gap_recipe, augment=aug),
            )
            run["final"]["clean_train_acc"] = clean_train_accuracy(
                run["run_dir"], ctx.dataset, ctx.data_dir_for(ctx.dataset), sub, s
            )
            run["final"]["gap"] = run["final"]["clean_train_acc"] - run["final"]["test_acc"]
            runs.append(run)
        gap_runs[label] = runs
    n_test, n_train = ctx.test_size(), sub or 60_000
    gaps = {k: [r["final"]["gap"] for r in v] for k, v in gap_runs.items()}
    floor = math.hypot(binomial_se(0.9, n_test), binomial_se(0.95, n_train))
    sub_v = {"relu_faster": v_speed}
    gap_diffs = {}
    for label in ("dropout", "augment"):
        d = difference(gaps["none"], gaps[label], floor, floor)
        gap_diffs[label] = d
        sub_v[f"{label}_shrinks_gap"] = verdict_greater(d["diff"], d["se"])
    verdict = combine(sub_v.values())
    ratio = math.exp(m_log)
    unreached = sum(p["epochs_relu"] is None for p in per_seed)
    censored = sum(p["tanh_censored"] for p in per_seed)
    caveat = (
        f"; ReLU never reached it in {unreached} of {len(per_seed)} seeds, so that ratio "
        "measures nothing"
        if unreached
        else f"; tanh never reached it in {censored} of {len(per_seed)} seeds (counted as "
        "the whole budget, a lower bound)"
        if censored
        else ""
    )
    summary = (
        f"tanh needs {ratio:.2f}x the epochs of ReLU to reach {pct(target)} training error "
        f"(x{math.exp(m_log - 2 * se_log):.2f}-x{math.exp(m_log + 2 * se_log):.2f}, 2 SE; "
        f"paper: 6x{caveat}); train-test gap without regularization "
        f"{pct(mean(gaps['none']))}, with "
        f"dropout {pct(mean(gaps['dropout']))}, augmentation {pct(mean(gaps['augment']))}, both "
        f"{pct(mean(gaps['dropout+augment']))}"
    )

    def draw(fig):
        ax1, ax2 = fig.subplots(1, 2)
        curves(ax1, speed, "train_acc", "training error", error=True)
        ax1.axhline(target, ls="--", c="k", lw=0.8)
        ax1.set_title(f"ReLU vs tanh (target {pct(target)})", fontsize=9)
        labels = list(gaps)
        bars(
            ax2,
            labels,
            [mean(gaps[k]) for k in labels],
            [std_error(gaps[k], floor) for k in labels],
            "train - test accuracy",
        )
        ax2.set_title("generalization gap", fontsize=9)

    notes = scaled(
        ctx,
        f"CNN4 widths {widths} (paper: cuda-convnet's CIFAR net), same lr for "
        "both activations (paper: tuned per network)",
    )
    notes.append(
        f"speed arms: {speed_recipe['epochs']} epochs on "
        f"{speed_recipe['train_subset'] or 'all'} images; gap arms: "
        f"{gap_recipe['epochs']} epochs on {sub} images"
    )
    return {
        "verdict": verdict,
        "summary": summary,
        "sub_verdicts": sub_v,
        "figures": {
            "target_train_error": target,
            "per_seed": per_seed,
            "ratio": ratio,
            "log_ratio": {"mean": m_log, "se": se_log},
            "gaps": gaps,
            "gap_reduction": gap_diffs,
        },
        "scaled_down": notes,
        "recipe": {"speed": speed_recipe, "gap": gap_recipe},
        "arms": {
            **{f"cnn4-{k}": v for k, v in speed.items()},
            **{f"cnn4-{k}": v for k, v in gap_runs.items()},
        },
        "_plot": draw,
    }
