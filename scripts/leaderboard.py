"""The zoo's own accuracy table: each family's small-input variant trained on Fashion-MNIST.

One recipe per kind of model (CNNs: small-cnn; efficient nets: modern-cnn; transformers:
vit-small-data; their -gpu variants where they exist and the run is on CUDA), `--seeds`
seeds. Every finished run is added to results/leaderboard/MODEL.json at once, so the table
fills in pieces: a later call skips the (model, seed) pairs already there, and `--budget-s`
ends a call before a run that would start past it. After each run the Markdown table
results/leaderboard/leaderboard.md is rewritten: test accuracy (mean ± SD), parameters,
multiply-adds, training seconds, the device, and the published Fashion-MNIST row where the
benchmark has one (../shared/reference/small_data_results.md, section 2).

    python scripts/leaderboard.py --data-dir DIR [--families ResNet,VGG] [--seeds 3]
        [--budget-s 600] [--epochs N] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from visionzoo.bench.timing import environment
from visionzoo.engine.config import TrainConfig
from visionzoo.engine.fit import fit
from visionzoo.engine.recipes import RECIPES
from visionzoo.registry import get_model_info, list_models

OUT = Path("results/leaderboard")
# Published Fashion-MNIST rows (zalandoresearch/fashion-mnist README, via small_data_results.md).
PUBLISHED = {
    "ResNet": ("ResNet18", 0.949), "MobileNet": ("MobileNet", 0.950),
    "DenseNet": ("DenseNet-BC 768K params", 0.954), "WideResNet": ("WRN40-4 8.9M params", 0.967),
    "VGG": ("VGG16 26M parameters", 0.935), "Inception": ("GoogleNet", 0.937),
    "AlexNet": ("AlexNet with Triplet loss", 0.899),
}  # fmt: skip
TRANSFORMERS = ("ViT", "Swin", "CSWin", "DeiT", "MLP-Mixer", "CaiT")
EFFICIENT = ("MobileNet", "EfficientNet", "ShuffleNet", "SqueezeNet", "MnasNet", "ConvNeXt",
             "GhostNet", "RegNet")  # fmt: skip


def family_models() -> dict[str, str]:
    """Each family's smallest registered model for 28-32 px input (natively, or with a
    small-input mode); variants kept for history (plain*, *_2012, *_paper) only when alone."""
    best: dict[str, tuple[bool, int, str]] = {}
    for name in list_models():
        info = get_model_info(name)
        if not (info.small_input or info.image_size <= 32):
            continue
        ablation = name.startswith("plain") or name.endswith(("_2012", "_paper"))
        key = (ablation, info.reference_params or 0, name)
        best[info.family] = min(best.get(info.family, key), key)
    return {family: name for family, (_, _, name) in sorted(best.items())}


def recipe_for(family: str, cuda: bool) -> str:
    if family in TRANSFORMERS:
        return "vit-small-data"
    if family == "NFNet":
        return "nfnet"
    name = "modern-cnn" if family in EFFICIENT else "small-cnn"
    return f"{name}-gpu" if cuda and f"{name}-gpu" in RECIPES else name


def train_one(args, family: str, model: str, seed: int) -> dict:
    cuda = torch.device(args.device).type == "cuda"
    recipe = recipe_for(family, cuda)
    values = {**RECIPES[recipe], "recipe": recipe, "model": model, "dataset": args.dataset,
              "data_dir": args.data_dir, "device": args.device, "seed": seed,
              "threads": args.threads}  # fmt: skip
    if args.epochs:
        values["epochs"] = args.epochs
    if args.train_subset:
        values["train_subset"] = args.train_subset
    with tempfile.TemporaryDirectory() as tmp:
        final = fit(TrainConfig.from_dict(values), Path(tmp) / "run", quiet=args.quiet)
    return {"seed": seed, "recipe": recipe, "epochs": values["epochs"], **final}


def table(out: Path) -> str:
    """The Markdown table of every results/leaderboard/*.json."""
    rows = [
        "| family | model | test acc (mean ± SD) | seeds | params | MACs | train s | device "
        "| published (Fashion-MNIST README) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        accs = [run["test_acc"] for run in r["runs"]]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        seconds = statistics.mean(run["train_seconds"] for run in r["runs"])
        ref = PUBLISHED.get(r["family"])
        rows.append(
            f"| {r['family']} | `{r['model']}` | {statistics.mean(accs):.2%} ± {sd:.2%} | "
            f"{len(accs)} | {r['params']:,} | {r['macs']:,} | {seconds:.0f} | {r['device']} | "
            + (f"{ref[0]}: {ref[1]:.1%}" if ref else "-")
            + " |"
        )
    return "\n".join(rows) + "\n"


def record_run(args, family: str, model: str, result: dict) -> None:
    from visionzoo.lab.core import model_cost

    path = Path(args.out) / f"{model}.json"
    if path.is_file():
        data = json.loads(path.read_text())
    else:
        cost = model_cost(model, args.dataset, data_dir=args.data_dir)
        data = {"family": family, "model": model, "dataset": args.dataset, "runs": [],
                "params": cost.get("params"), "macs": cost.get("macs"),
                "device": environment().get("cuda_device") or "cpu"}  # fmt: skip
    data["runs"].append(result)
    data["published"] = PUBLISHED.get(family)  # (row, accuracy) for the explorer's card
    data["environment"] = environment()
    path.write_text(json.dumps(data, indent=1, default=str))
    (Path(args.out) / "leaderboard.md").write_text(table(Path(args.out)))


def done_seeds(args, model: str) -> set[int]:
    path = Path(args.out) / f"{model}.json"
    return {r["seed"] for r in json.loads(path.read_text())["runs"]} if path.is_file() else set()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--families", help="comma-separated family names (default: all)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (smoke runs)")
    p.add_argument("--train-subset", type=int, help="train on N images (smoke runs)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget-s", type=float, default=float("inf"))
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    start, models = time.monotonic(), family_models()
    wanted = args.families.split(",") if args.families else list(models)
    for family in wanted:
        model = models[family]
        for seed in sorted(set(range(args.seeds)) - done_seeds(args, model)):
            if time.monotonic() - start > args.budget_s:
                print(f"budget spent: stopped before {model} seed {seed}")
                return
            print(f"{family}: {model} seed {seed}", flush=True)
            record_run(args, family, model, train_one(args, family, model, seed))


if __name__ == "__main__":
    main()
