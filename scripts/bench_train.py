"""Training throughput and time to accuracy on Fashion-MNIST (issue 5's performance figures).

1. Throughput: images/s of full training steps (forward, backward, SGD step) with
   augmentation on (random crop with 2 px padding, horizontal flip), fed two ways in the same
   process, alternating: visionzoo's in-memory on-device batches, and the conventional
   torchvision pipeline (FashionMNIST dataset, RandomCrop/RandomHorizontalFlip/ToTensor/
   Normalize transforms, DataLoader with 2 workers). Median of the rounds.
2. Time to accuracy: wall clock from the start of `fit` (data already on disk) until the
   end of the first epoch whose test accuracy reaches the target, evaluation included.

Results go to results/train_bench/ with the environment. Usage:
    python scripts/bench_train.py throughput [--models lenet5,resnet20] [--steps 60] [--rounds 3]
    python scripts/bench_train.py tta --model lenet5 --target 0.91 [--recipe small-cnn] [--epochs N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from visionzoo.bench.timing import environment
from visionzoo.data import DeviceLoader, load_dataset
from visionzoo.data.augment import AugmentConfig
from visionzoo.engine.config import TrainConfig
from visionzoo.engine.train import build_model_for

OUT = Path("results/train_bench")
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def torchvision_loader(root: Path, batch_size: int, pad: int, workers: int):
    from torchvision import datasets, transforms

    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in DEBIAN.glob("*.gz"):  # torchvision reads the unpacked files in ROOT/FashionMNIST/raw
        target = raw / f.name.removesuffix(".gz")
        if not target.exists():
            target.write_bytes(gzip.decompress(f.read_bytes()))
    steps = [transforms.Pad(pad)] if pad else []
    steps += [
        transforms.RandomCrop(28 + 2 * pad, padding=2),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.2860,), (0.3530,)),
    ]
    ds = datasets.FashionMNIST(
        str(root), train=True, download=False, transform=transforms.Compose(steps)
    )
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=True,
        drop_last=True,
    )


def time_steps(model, opt, batches, steps: int) -> float:
    """Images per second over `steps` training steps drawn from the iterator `batches`."""
    model.train()
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(y)
    return n / (time.perf_counter() - t0)


def cycle(make):
    while True:
        yield from make()


def throughput(models: list[str], steps: int, rounds: int, batch_size: int) -> dict:
    data = load_dataset("fashion-mnist", "train")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            cfg = TrainConfig(model=name, dataset="fashion-mnist")
            model, pre = build_model_for(cfg, data.spec)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            aug = AugmentConfig(crop_padding=2, hflip=True)
            ours_loader = DeviceLoader(data, batch_size, pre, shuffle=True, augment=aug, seed=0)
            ours = cycle(ours_loader.epoch)
            tv_loader = torchvision_loader(Path(tmp), batch_size, pre.pad, workers=2)
            theirs = cycle(tv_loader.__iter__)
            time_steps(model, opt, ours, 5)  # warm-up both paths (workers start, caches fill)
            time_steps(model, opt, theirs, 5)
            a, b = [], []
            for _ in range(rounds):  # alternate so that drift on the machine hits both alike
                a.append(time_steps(model, opt, ours, steps))
                b.append(time_steps(model, opt, theirs, steps))
            results[name] = {
                "visionzoo_in_memory_img_s": statistics.median(a),
                "torchvision_dataloader_img_s": statistics.median(b),
                "ratio": statistics.median(a) / statistics.median(b),
                "rounds_visionzoo": a,
                "rounds_torchvision": b,
                "input": f"{pre.in_channels}x{pre.image_size}x{pre.image_size}",
            }
            print(
                f"{name}: visionzoo {results[name]['visionzoo_in_memory_img_s']:,.0f} img/s, "
                f"torchvision pipeline {results[name]['torchvision_dataloader_img_s']:,.0f} img/s, "
                f"ratio {results[name]['ratio']:.2f}x",
                flush=True,
            )
    return {
        "batch_size": batch_size,
        "steps_per_round": steps,
        "rounds": rounds,
        "augmentation": "random crop (pad 2) + horizontal flip",
        "results": results,
    }


def time_to_accuracy(model: str, target: float, recipe: str, overrides: dict) -> dict:
    from visionzoo.engine.fit import fit
    from visionzoo.engine.recipes import resolve_recipe

    values = {**resolve_recipe(recipe), **overrides, "model": model, "dataset": "fashion-mnist"}
    cfg = TrainConfig.from_dict(values)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fit(cfg, Path(tmp) / "run", quiet=False)
        total = time.perf_counter() - t0
        records = [
            json.loads(x) for x in (Path(tmp) / "run/metrics.jsonl").read_text().splitlines()
        ]
    # Wall clock from the start of fit() to the end of each epoch's evaluation.
    reached = next(
        (
            {"epoch": r["epoch"], "wall_s": r["wall_s"], "test_acc": r["test_acc"]}
            for r in records
            if r["test_acc"] >= target
        ),
        None,
    )
    return {
        "model": model,
        "target": target,
        "recipe": cfg.to_dict(),
        "reached": reached,
        "total_wall_s": total,
        "best_test_acc": max(r["test_acc"] for r in records),
        "curve": [{k: r[k] for k in ("epoch", "test_acc", "train_acc", "time_s")} for r in records],
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--models", default="lenet5,resnet20")
    t.add_argument("--steps", type=int, default=60)
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--batch-size", type=int, default=128)
    a = sub.add_parser("tta")
    a.add_argument("--model", required=True)
    a.add_argument("--target", type=float, required=True)
    a.add_argument("--recipe", default="small-cnn")
    a.add_argument("--set", nargs="*", default=[], help="overrides KEY=JSON, e.g. epochs=20")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.what == "throughput":
        result = throughput(args.models.split(","), args.steps, args.rounds, args.batch_size)
        path = OUT / f"throughput-{stamp}.json"
    else:
        overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
        result = time_to_accuracy(args.model, args.target, args.recipe, overrides)
        path = OUT / f"tta-{args.model}-{stamp}.json"
        print(
            json.dumps(
                {
                    k: result[k]
                    for k in ("model", "target", "reached", "best_test_acc", "total_wall_s")
                }
            )
        )
    result["environment"] = environment()
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
