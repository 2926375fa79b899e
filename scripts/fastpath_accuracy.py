"""Does the fast path keep a trained model's answers? fp32 and bf16 on a real test set.

For each run folder (a model trained by `visionzoo train`), the whole test split of its
dataset is classified three ways: the eager fp32 model, `visionzoo.optimize(model)` (fp32,
BatchNorm folded) and `visionzoo.optimize(model, dtype=torch.bfloat16)`. Reported per way:
test accuracy, how many images get a different top-1 class than eager fp32, the largest
logit difference, and the wall time of the pass. Writes
results/bench/fastpath_accuracy.{json,md} with the environment.

    python scripts/fastpath_accuracy.py RUN_DIR [RUN_DIR ...] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from visionzoo.bench.optimize import optimize
from visionzoo.bench.timing import environment
from visionzoo.data.datasets import load_dataset
from visionzoo.data.loader import DeviceLoader, Preprocess
from visionzoo.runs import load_run

ROOT = Path(__file__).resolve().parents[1]


@torch.inference_mode()
def classify(model, loader: DeviceLoader) -> tuple[torch.Tensor, float]:
    """Logits (fp32) of every image, in order, and the seconds the pass took."""
    out, start = [], time.perf_counter()
    for x, _ in loader:
        out.append(model(x).float())
    return torch.cat(out), time.perf_counter() - start


def check_run(path: Path, batch: int) -> dict:
    run = load_run(path)
    pre = Preprocess.from_dict(run.config["preprocess"])
    test = load_dataset(run.config["dataset"], "test")
    loader = DeviceLoader(test, batch, pre)
    ways = {
        "eager fp32": run.model,
        "fast fp32": optimize(run.model, image_size=pre.image_size),
        "fast bf16": optimize(run.model, image_size=pre.image_size, dtype=torch.bfloat16),
    }
    with torch.inference_mode():  # warm-up
        run.model(next(iter(loader))[0])
    ref, rows = None, []
    for way, model in ways.items():
        logits, seconds = classify(model, loader)
        ref = logits if ref is None else ref
        pred = logits.argmax(1)
        rows.append(
            {
                "way": way,
                "accuracy": round(float((pred == test.labels).float().mean()), 5),
                "top1_changed": int((pred != ref.argmax(1)).sum()),
                "max_logit_diff": float((logits - ref).abs().max()),
                "logit_scale": float(ref.abs().max()),
                "seconds": round(seconds, 2),
            }
        )
    best = max(run.metrics, key=lambda m: m.get("epoch", 0)) if run.metrics else {}
    return {
        "run": str(path),
        "model": run.config["model"],
        "dataset": run.config["dataset"],
        "test_images": len(test),
        "batch_size": batch,
        "trained_test_acc": best.get("test_acc"),
        "ways": rows,
    }


def write_markdown(results: list[dict], env: dict, path: Path, cmd: str) -> None:
    lines = [
        "# Fast path on trained models: fp32 and bf16 against eager fp32",
        "",
        f"Command: `{cmd}`",
        "",
        f"Environment: {env['cpu']} ({env['cpu_count']} cores; bf16 instructions: "
        f"{', '.join(env.get('cpu_bf16_flags') or ['none'])}), torch {env['torch']} with "
        f"{env['torch_threads']} threads, commit {str(env['git_commit'])[:10]}, "
        f"{env['timestamp_utc']}.",
        "",
        "| model | dataset | images | way | test accuracy | top-1 changed vs eager fp32 "
        "| largest logit diff | largest logit | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for w in r["ways"]:
            lines.append(
                f"| {r['model']} | {r['dataset']} | {r['test_images']:,} | {w['way']} | "
                f"{w['accuracy']:.2%} | {w['top1_changed']} | {w['max_logit_diff']:.2e} | "
                f"{w['logit_scale']:.1f} | {w['seconds']:.1f} |"
            )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "results/bench")
    parser.add_argument("--stem", default="fastpath_accuracy")
    args = parser.parse_args()
    results = [check_run(p, args.batch_size) for p in args.runs]
    env = environment()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(
        json.dumps({"environment": env, "results": results}, indent=2) + "\n"
    )
    cmd = "python scripts/fastpath_accuracy.py " + " ".join(sys.argv[1:])
    md = args.out / f"{args.stem}.md"
    write_markdown(results, env, md, cmd)
    print(md.read_text())


if __name__ == "__main__":
    main()
