"""Photo folders at scale (issue 15): images/s, peak memory and the cached second start.

The script makes its own folder of large synthetic photos (JPEG, default 4000x3000: smooth
colour fields plus sensor-like noise, about a phone photo's bytes per pixel; a few distinct
bases copied under many names), then times, each in a fresh child process:

  ours_cold     load_dataset("imagefolder:DIR") train + test with an empty cache: JPEG draft
                decoding at the training side, a process pool, the uint8 memory-mapped cache
  ours_warm     the same call again: the cache file is mapped (the second run's start)
  ours_workers  --loader workers: visionzoo's FolderLoader (same decode path), N workers
  torchvision   the conventional pipeline: ImageFolder + Resize/CenterCrop/ToTensor/Normalize
                + DataLoader with N workers (each photo decoded at full size)
  train         optional: `fit` for --train-epochs on the cached folder (the memory goal)
  baseline      the fixed overhead: a child that only imports torch and visionzoo

Memory is the peak over the child's whole process tree (pool and DataLoader workers too),
sampled every 20 ms from /proc: RSS summed, and PSS (shared pages divided among sharers, the
honest total), beside the main process's ru_maxrss. Each timing runs --repeats times; the
JSON in results/data/ holds every repeat, the median, the spread and the environment.

    python scripts/bench_data.py                       # 96 photos: a few minutes on 2 cores
    python scripts/bench_data.py --photos 10000 --tv-limit 300 --train-epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

OUT = Path("results/data")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def make_folder(root: Path, n: int, size: tuple[int, int], classes: int = 4, bases: int = 12):
    """n JPEG photos of `size` under root/c0..c{classes-1}; reused when already complete."""
    marker = root / ".complete.json"
    spec = {"n": n, "size": list(size), "classes": classes, "bases": bases}
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return
    from PIL import Image

    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    base_files = []
    for b in range(bases):
        small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        x = np.asarray(small.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
        x = x + rng.integers(-6, 7, x.shape, dtype=np.int16)  # sensor-like noise
        path = root / ".bases" / f"{b}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(path, quality=90)
        base_files.append(path)
    for i in range(n):
        folder = root / f"c{i % classes}"
        folder.mkdir(exist_ok=True)
        shutil.copyfile(base_files[i % bases], folder / f"{i:05d}.jpg")
    shutil.rmtree(root / ".bases")  # torchvision's ImageFolder would take it for a class
    marker.write_text(json.dumps(spec))


def child(mode: str, args) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    import visionzoo.data  # noqa: F401 - imports are the process's start, not the loader's

    torch.set_num_threads(args.threads)
    root = Path(args.folder)
    start = time.perf_counter()
    if mode == "baseline":  # the fixed overhead: Python, torch and visionzoo imported
        n = 0
    elif mode in ("ours_cold", "ours_warm"):
        from visionzoo.data import load_dataset
        from visionzoo.data.folders import FolderOptions

        opts = FolderOptions(image_size=args.image_size, workers=args.workers)
        train = load_dataset(f"imagefolder:{root}", "train", folder=opts)
        test = load_dataset(f"imagefolder:{root}", "test", folder=opts)
        n = len(train) + len(test)
    elif mode == "ours_workers":
        from visionzoo.data.folder_loader import FolderLoader
        from visionzoo.data.loader import Preprocess

        pre = Preprocess(3, args.image_size, (0.5,) * 3, (0.25,) * 3, data_size=args.image_size)
        loader = FolderLoader(root, pre, 64, train=False, num_workers=args.workers)
        idx = _subset(len(loader.dataset), args.tv_limit)
        loader.dataset.files = [loader.dataset.files[i] for i in idx]
        loader.dataset.labels = [loader.dataset.labels[i] for i in idx]
        n = sum(len(y) for _, y in loader.epoch(0))
    elif mode == "torchvision":
        from torch.utils.data import DataLoader, Subset
        from torchvision import datasets, transforms

        tf = transforms.Compose([
            transforms.Resize(args.image_size), transforms.CenterCrop(args.image_size),
            transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.25,) * 3),
        ])  # fmt: skip
        ds = datasets.ImageFolder(str(root), transform=tf)
        ds = Subset(ds, _subset(len(ds), args.tv_limit))
        loader = DataLoader(ds, batch_size=64, num_workers=args.workers)
        n = sum(len(y) for _, y in loader)
    elif mode == "train":
        from visionzoo.engine.config import TrainConfig
        from visionzoo.engine.fit import fit

        cfg = TrainConfig(
            model=args.model, dataset=f"imagefolder:{root}", image_size=args.image_size,
            epochs=args.train_epochs, batch_size=args.train_batch_size, device="cpu",
            threads=args.threads, train_subset=args.train_subset,
            eval_batch_size=256, tensorboard=False,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as out:
            metrics = fit(cfg, Path(out) / "run", quiet=True)
        n = metrics.get("train_size") or 0
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - start
    import resource

    return {
        "mode": mode,
        "images": n,
        "seconds": seconds,
        "main_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "largest_child_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def _subset(n: int, limit: int | None) -> list[int]:
    """`limit` indices spread evenly over all classes (ImageFolder orders by class)."""
    if not limit or limit >= n:
        return list(range(n))
    return np.linspace(0, n - 1, limit).round().astype(int).tolist()


def measure(mode: str, args, env: dict[str, str]) -> dict:
    """Run `mode` in a child process, sampling its process tree's memory meanwhile."""
    cmd = [sys.executable, __file__, "--child", mode, *sys.argv[1:]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    peak = {"rss": 0, "pss": 0}
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            rss, pss = _tree_memory(proc.pid)
            peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{mode} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["images_per_s"] = result["images"] / max(result["seconds"], 1e-9)
    result["peak_tree_rss_mb"] = peak["rss"] / 1024
    result["peak_tree_pss_mb"] = peak["pss"] / 1024
    return result


def _tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB summed over pid and its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    rss = pss = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()
        except OSError:  # no smaps_rollup (e.g. gVisor): RSS from statm, counted as PSS too
            try:
                pages = int(Path(f"/proc/{p}/statm").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
            rss, pss = rss + pages * PAGE_KB, pss + pages * PAGE_KB
            continue
        for line in rollup:
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


def summarise(runs: list[dict]) -> dict:
    keys = ("seconds", "images_per_s", "peak_tree_pss_mb", "peak_tree_rss_mb", "main_maxrss_mb")
    out = {"images": runs[0]["images"], "repeats": len(runs)}
    for k in keys:
        values = [r[k] for r in runs]
        out[k] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=96)
    p.add_argument("--photo-size", default="4000x3000", help="WIDTHxHEIGHT of each photo")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--folder", help="where to make the photos (default: a temporary folder)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="decode processes / DataLoader workers")
    p.add_argument("--threads", type=int, default=2, help="torch threads in each child")
    p.add_argument("--tv-limit", type=int, help="time the streaming loaders on this many photos")
    p.add_argument("--train-epochs", type=int, default=0, help="also train (the memory goal)")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--train-batch-size", type=int, default=128)
    p.add_argument("--train-subset", type=int, help="train on this many (after loading all)")
    p.add_argument("--modes", default="ours_cold,ours_warm,ours_workers,torchvision",
                   help="which loader timings to run, comma-separated")  # fmt: skip
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return

    keep = args.folder is not None
    folder = Path(args.folder or tempfile.mkdtemp(prefix="vz-photos-"))
    args.folder = str(folder)
    size = tuple(int(v) for v in args.photo_size.lower().split("x"))
    t0 = time.perf_counter()
    make_folder(folder, args.photos, size)
    print(f"{args.photos} photos of {size[0]}x{size[1]} in {folder} "
          f"({time.perf_counter() - t0:.0f} s to make)", flush=True)  # fmt: skip
    if "--folder" not in sys.argv:
        sys.argv += ["--folder", str(folder)]
    cache = Path(tempfile.mkdtemp(prefix="vz-cache-"))
    env = {**os.environ, "VISIONZOO_CACHE": str(cache), "OMP_NUM_THREADS": str(args.threads)}
    results: dict[str, list[dict]] = {}
    try:
        results["baseline"] = [measure("baseline", args, env)]
        print(f"baseline (imports only): peak PSS "
              f"{results['baseline'][0]['peak_tree_pss_mb']:.0f} MB", flush=True)  # fmt: skip
        for r in range(args.repeats):
            shutil.rmtree(cache, ignore_errors=True)
            for mode in args.modes.split(","):
                results.setdefault(mode, []).append(res := measure(mode, args, env))
                print(f"[{r + 1}/{args.repeats}] {mode:13s} {res['images']:6d} images "
                      f"{res['seconds']:7.2f} s {res['images_per_s']:8.1f} img/s "
                      f"peak PSS {res['peak_tree_pss_mb']:6.0f} MB "
                      f"(RSS {res['peak_tree_rss_mb']:.0f})", flush=True)  # fmt: skip
        if args.train_epochs:
            try:
                res = measure("train", args, env)
            except SystemExit as err:  # keep the loader figures when training fails
                print(err, flush=True)
                return write(results, args, size)
            results["train"] = [res]
            print(f"train {args.model} {args.train_epochs} epoch(s): {res['seconds']:.1f} s, "
                  f"peak PSS {res['peak_tree_pss_mb']:.0f} MB", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    write(results, args, size)


def write(results: dict[str, list[dict]], args, size) -> None:
    from visionzoo.bench.timing import environment

    summary = {mode: summarise(runs) for mode, runs in results.items()}
    cold, tv = summary.get("ours_cold"), summary.get("torchvision")
    speedup = cold["images_per_s"]["median"] / tv["images_per_s"]["median"] if cold and tv else None
    warm = summary["ours_warm"]["seconds"]["median"] if "ours_warm" in summary else None
    report = {
        "what": "photo folder loading: visionzoo (draft decode + uint8 mmap cache) vs "
        "torchvision ImageFolder + DataLoader",
        "command": " ".join(["python", "scripts/bench_data.py", *sys.argv[1:]]),
        "photos": args.photos,
        "photo_size": list(size),
        "image_size": args.image_size,
        "workers": args.workers,
        "train": {
            "model": args.model,
            "epochs": args.train_epochs,
            "batch_size": args.train_batch_size,
            "subset": args.train_subset,
        },
        "speedup_cold_vs_torchvision": speedup,
        "second_run_start_s": warm,
        "summary": summary,
        "runs": results,
        "environment": environment(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = out / f"bench_data-{args.photos}x{size[0]}x{size[1]}-{stamp}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"speed-up (cold, ours vs torchvision): {speedup}; second-run start {warm} s; "
          f"wrote {path}")  # fmt: skip


if __name__ == "__main__":
    main()
