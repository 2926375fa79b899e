"""Training throughput and time to accuracy on Fashion-MNIST (issue 5's performance figures).

1. Throughput: images/s of full training steps (forward, backward, SGD step) with
   augmentation on (random crop with 2 px padding, horizontal flip), fed two ways in the same
   process, alternating: visionzoo's in-memory on-device batches, and the conventional
   torchvision pipeline (FashionMNIST dataset, RandomCrop/RandomHorizontalFlip/ToTensor/
   Normalize transforms, DataLoader with 2 workers). Median of the rounds.
2. Time to accuracy: wall clock from the start of `fit` (data already on disk) until the
   end of the first epoch whose test accuracy reaches the target, evaluation included.

3. GPU mode (`gpu`), one run within --budget-s (default 240 s, a hard limit: a watchdog ends
   the process; the JSON is rewritten after every measurement): a plain PyTorch loop (LeNet-5,
   data on the device, eager fp32, batch 128, SGD) against the engine at the same settings and
   at its defaults (--recipe auto, bf16, channels_last, compiled); time to 91% (LeNet-5) and
   to 94% (ResNet-20), stopping at the budget if not reached; images/s; peak memory. In order:
   plain_loop, engine_plain_settings, lenet5 (demo-gpu, eager), lenet5_demo_recipe (batch
   128), host_syncs (CUDA's sync debug mode over one epoch), resnet20_compiled
   (small-cnn-gpu), lenet5_compiled, lenet5_compiled_cudagraphs (mode reduce-overhead),
   resnet20_small_cnn_recipe (batch 128, eager), resnet20_compiled_cudagraphs; `--only`
   picks some.

Results go to results/train_bench/ (GPU mode: results/gpu/) with the environment. Usage:
    python scripts/bench_train.py throughput [--models lenet5,resnet20] [--steps 60] [--rounds 3]
    python scripts/bench_train.py tta --model lenet5 --target 0.91 [--recipe small-cnn] [--epochs N]
    python scripts/bench_train.py gpu --data-dir DIR [--budget-s 240] [--no-compile] [--only ...]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
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


# ---------------------------------------------------------------------------------------
# GPU mode: one run, one budget, every figure written as soon as it is measured


class Report:
    """The results file: rewritten (atomically) after every measurement, and by the watchdog."""

    def __init__(self, path: Path, header: dict) -> None:
        self.path, self.data, self.lock = path, {**header, "measurements": {}}, threading.RLock()
        self.current: str | None = None
        self.write()

    def add(self, name: str, result: dict) -> None:
        with self.lock:
            self.data["measurements"][name] = result
            self.write()

    def epoch(self, curve: list[dict], target: float) -> None:
        """The running measurement's curve so far: kept if the hard limit cuts it off."""
        reached = next((r for r in curve if r["test_acc"] >= target), None)
        partial = {"running": True, "target": target, "reached": reached is not None,
                   "train_seconds_to_target": reached and reached["train_seconds"],
                   "wall_s_to_target": reached and reached["wall_s"], "curve": curve}  # fmt: skip
        if self.current is not None:
            self.add(self.current, partial)

    def write(self) -> None:
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, default=str))
            os.replace(tmp, self.path)


REPORT: Report | None = None  # the GPU mode's results file, for engine_run's epoch records


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def plain_loop(args, device: torch.device) -> dict:
    """The baseline: LeNet-5, the whole training set already on the device as float, eager,
    fp32, batch 128, SGD with momentum; no augmentation, no syncs but the timer's."""
    data = load_dataset(args.dataset, "train", args.data_dir)
    model, pre = build_model_for(TrainConfig(model="lenet5", dataset=args.dataset), data.spec)
    model.to(device).train()
    x_all = pre(data.images.to(device))  # (N, 1, 32, 32), normalized
    y_all = data.labels.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = len(y_all) // 128

    def run(steps: int) -> None:
        for i in range(steps):
            j = i % batches * 128
            loss = F.cross_entropy(model(x_all[j : j + 128]), y_all[j : j + 128])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run(20)
    sync(device)
    t0 = time.perf_counter()
    run(args.plain_steps)
    sync(device)
    seconds = time.perf_counter() - t0
    return {
        "images_per_s": args.plain_steps * 128 / seconds, "steps": args.plain_steps,
        "seconds": seconds, "batch_size": 128, "precision": "fp32", "compiled": False,
    }  # fmt: skip


def engine_run(args, device, model: str, overrides: dict, target: float, deadline: float):
    """`fit` with `overrides` until `target` test accuracy, the recipe's end or the deadline."""
    from visionzoo.engine.fit import fit
    from visionzoo.engine.recipes import resolve_recipe

    values = {**resolve_recipe("auto", model, str(device)), "model": model,
              "dataset": args.dataset, "data_dir": args.data_dir, "device": str(device),
              **overrides}  # fmt: skip
    cfg = TrainConfig.from_dict(values)
    curve: list[dict] = []

    def stop(record: dict) -> bool:
        curve.append({k: record[k] for k in CURVE_KEYS})
        if REPORT is not None:
            REPORT.epoch(curve, target)
        return record["test_acc"] >= target or time.monotonic() > deadline

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        final = fit(cfg, Path(tmp) / "run", quiet=args.quiet, stop=stop)
    return summarise(cfg, curve, final, target, device)


def sync_count(args, device: torch.device) -> dict:
    """Host syncs in one LeNet-5 epoch of `fit` (set-up and evaluation included), counted by
    CUDA's sync debug mode, with the lines that cause the most."""
    if device.type != "cuda":
        return {"skipped": "CUDA only"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = engine_run(args, device, "lenet5", {"epochs": 1}, 1.1, float("inf"))
        finally:
            torch.cuda.set_sync_debug_mode(0)
    where = collections.Counter(
        f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)
    )
    steps = result["final"]["steps"]
    total = sum(where.values())
    return {"syncs": total, "steps": steps, "syncs_per_step": total / max(steps, 1),
            "top": where.most_common(8)}  # fmt: skip


CURVE_KEYS = ("epoch", "test_acc", "train_acc", "images_per_s", "time_s", "train_seconds", "wall_s")


def summarise(cfg: TrainConfig, curve: list[dict], final: dict, target: float, device) -> dict:
    reached = next((r for r in curve if r["test_acc"] >= target), None)
    steady = [r["images_per_s"] for r in curve[1:]] or [r["images_per_s"] for r in curve]
    first, rest = curve[0]["time_s"], [r["time_s"] for r in curve[1:]]
    return {
        "model": cfg.model, "target": target, "recipe": cfg.to_dict(),
        "reached": reached is not None,
        "epoch_reached": reached and reached["epoch"],
        "train_seconds_to_target": reached and reached["train_seconds"],
        "wall_s_to_target": reached and reached["wall_s"],  # from fit() start: data, eval, compile
        "stopped": "target" if reached else ("budget" if len(curve) < cfg.epochs else "epochs"),
        "best_test_acc": max(r["test_acc"] for r in curve),
        "images_per_s": statistics.median(steady),  # epochs after the first (compile, warm-up)
        "first_epoch_extra_s": first - statistics.median(rest) if rest else None,
        "peak_memory_mib": peak_memory_mib(device),
        "final": final, "curve": curve,
    }  # fmt: skip


def gpu_plan(args) -> list[tuple[str, Callable]]:
    """(name, fn(deadline)) in order of importance; each is skipped when the budget is spent."""
    dev = torch.device(args.device)
    compiled = {"compile": True} if args.compile else {}
    # The plain loop's settings exactly: SGD with momentum 0.9 and nothing else (no weight
    # decay, no Nesterov, a constant lr), so the ratio measures the engine's overhead alone.
    plain = dict(batch_size=128, precision="fp32", channels_last=False, augment=False,
                 epochs=3, lr=0.05, momentum=0.9, nesterov=False, weight_decay=0.0,
                 schedule="constant", warmup_epochs=0, eval_batch_size=5000)  # fmt: skip
    plan = {
        "plain_loop": lambda d: plain_loop(args, dev),
        "engine_plain_settings": lambda d: engine_run(args, dev, "lenet5", plain, 1.1, d),
        "lenet5": lambda d: engine_run(args, dev, "lenet5", {}, args.lenet_target, d),
        "lenet5_demo_recipe": lambda d: engine_run(
            args, dev, "lenet5", _recipe("demo"), args.lenet_target, d
        ),
        "host_syncs": lambda d: sync_count(args, dev),
        "resnet20_compiled": lambda d: engine_run(
            args, dev, "resnet20", compiled, args.resnet_target, d
        ),
        "lenet5_compiled": lambda d: engine_run(
            args, dev, "lenet5", compiled, args.lenet_target, d
        ),
        "lenet5_compiled_cudagraphs": lambda d: engine_run(
            args,
            dev,
            "lenet5",
            {**compiled, "compile_mode": "reduce-overhead"},
            args.lenet_target,
            d,
        ),  # fmt: skip
        "resnet20_small_cnn_recipe": lambda d: engine_run(
            args, dev, "resnet20", _recipe("small-cnn"), args.resnet_target, d
        ),
        "resnet20_compiled_cudagraphs": lambda d: engine_run(
            args,
            dev,
            "resnet20",
            {**compiled, "compile_mode": "reduce-overhead"},
            args.resnet_target,
            d,
        ),  # fmt: skip
    }
    names = args.only.split(",") if args.only else list(plan)
    return [(n, plan[n]) for n in names if n in plan and (args.compile or "compiled" not in n)]


def _recipe(name: str) -> dict:
    from visionzoo.engine.recipes import resolve_recipe

    return resolve_recipe(name)


def ratios(measured: dict) -> dict:
    plain = measured.get("plain_loop", {}).get("images_per_s")
    out = {}
    for name in ("engine_plain_settings", "lenet5", "lenet5_demo_recipe", "lenet5_compiled",
                 "lenet5_compiled_cudagraphs"):  # fmt: skip
        ours = measured.get(name, {}).get("images_per_s")
        if plain and ours:
            out[f"{name}_vs_plain_loop"] = ours / plain
    return out


def gpu_bench(args) -> Path:
    start = time.monotonic()
    hard, soft = start + args.budget_s, start + args.budget_s - args.reserve_s
    path = Path(args.out) / f"train-{time.strftime('%Y%m%d-%H%M%S')}.json"
    global REPORT
    report = REPORT = Report(path, {"budget_s": args.budget_s, "args": vars(args),
                                    "environment": environment(), "status": "running"})  # fmt: skip
    watchdog = threading.Timer(args.budget_s, _stop_everything, (report, start))
    watchdog.daemon = True
    watchdog.start()
    plan = gpu_plan(args)
    report.data["plan"] = [name for name, _ in plan]
    for name, measure in plan:
        if time.monotonic() > soft - args.min_s:
            report.add(name, {"skipped": SKIPPED})
            continue
        report.current = name
        print(f"[{time.monotonic() - start:6.1f}s] {name}", flush=True)
        try:
            result = measure(soft)
        except Exception as err:  # noqa: BLE001 - record it and go on with the next figure
            result = {"error": f"{type(err).__name__}: {str(err).strip()[:500]}"}
        result["measured_in_s"] = time.monotonic() - start
        report.add(name, result)
        print(f"  {_short(result)}", flush=True)
    watchdog.cancel()
    report.data.update(ratios=ratios(report.data["measurements"]), status="done",
                       total_s=time.monotonic() - start, hard_limit_s=hard - start)  # fmt: skip
    report.write()
    return path


def _stop_everything(report: Report, start: float) -> None:
    """The hard limit: whatever runs now is cut off; what was measured is already written."""
    with report.lock:
        _cut_off(report, start)
    print(f"budget reached: wrote {report.path}", flush=True)
    os._exit(3)


def _cut_off(report: Report, start: float) -> None:
    measured = report.data["measurements"]
    running = measured.get(report.current) if report.current is not None else None
    if report.current is not None and (running is None or running.get("running")):
        measured[report.current] = {"reached": False, **(running or {}), "stopped": "budget",
                                    "cut_off": CUT_OFF}  # fmt: skip
    for name in report.data.get("plan", []):
        measured.setdefault(name, {"skipped": SKIPPED})
    report.data.update(status="stopped at the hard budget limit", total_s=time.monotonic() - start)
    report.data["ratios"] = ratios(report.data["measurements"])
    report.write()


SKIPPED = "the budget was spent before this measurement"
CUT_OFF = "the hard budget limit ended this measurement (compiling, or an epoch, ran past it)"


def _short(result: dict) -> str:
    keys = ("images_per_s", "reached", "train_seconds_to_target", "wall_s_to_target",
            "best_test_acc", "stopped", "peak_memory_mib", "error", "skipped")  # fmt: skip
    return json.dumps({k: result[k] for k in keys if k in result}, default=str)


def add_gpu_parser(sub) -> None:
    g = sub.add_parser("gpu", help="engine vs plain loop, time to accuracy, img/s, memory")
    g.add_argument("--device", default="cuda")
    g.add_argument("--data-dir", help="folder with the Fashion-MNIST files")
    g.add_argument("--dataset", default="fashion-mnist")
    g.add_argument("--budget-s", type=float, default=240.0, help="hard wall-clock limit")
    g.add_argument("--reserve-s", type=float, default=10.0, help="kept for the last writes")
    g.add_argument("--min-s", type=float, default=5.0, help="no measurement starts with less")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--only", help="comma-separated measurements (default: all, in order)")
    g.add_argument("--plain-steps", type=int, default=400)
    g.add_argument("--lenet-target", type=float, default=0.91)
    g.add_argument("--resnet-target", type=float, default=0.94)
    g.add_argument("--out", default="results/gpu")
    g.add_argument("--quiet", action="store_true", help="no per-epoch lines from fit")


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
    add_gpu_parser(sub)
    args = p.parse_args()
    if args.what == "gpu":
        print(f"wrote {gpu_bench(args)}")
        return
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
