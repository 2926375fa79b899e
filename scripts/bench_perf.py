"""The performance table: ours vs torchvision, the fast path, onnxruntime, on CPU.

For each model and batch size, four implementations are timed alternately in one process
(`visionzoo.bench.timing`): our eager model, torchvision's with the same weights ported
into ours, our fast path (`visionzoo.optimize`: BatchNorm folded, channels-last,
inference mode) and onnxruntime running our ONNX export. Goals: ours / torchvision speed
>= 0.95; fast path / torchvision eager >= 1.3. Beside them, the roofline: each model's
FLOPs at the best sgemm rate measured in the same process, the floor no fp32
implementation doing the same arithmetic can go below. Writes
results/bench/perf_table.{csv,json,md} with the environment.

    OMP_NUM_THREADS=2 python scripts/bench_perf.py [--models ...] [--batch-sizes 1,16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from visionzoo.bench.profile import profile_model
from visionzoo.bench.timing import BenchConfig, bench_model, environment, write_results

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["resnet50", "mobilenet_v3_large", "efficientnet_b0", "vit_b_16", "convnext_tiny"]


def sgemm_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The best fp32 matrix-multiply rate this process reaches (GFLOP/s, n x n x n)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _row(rows: list[dict], model: str, batch: int, impl: str) -> dict | None:
    for r in rows:
        if (r["model"], r["batch_size"], r["impl"], r["mode"]) == (model, batch, impl, "inference"):
            return r
    return None


def _median(rows: list[dict], model: str, batch: int, impl: str) -> float | None:
    r = _row(rows, model, batch, impl)
    return r["median_ms"] if r else None


def table_rows(
    rows: list[dict], peak: float | None = None, gflops: dict | None = None
) -> list[dict]:
    """One row per (model, batch): the four medians and the ratios against torchvision.

    With the sgemm `peak` (GFLOP/s) and each model's `gflops` per image, also the floor: the
    time the model's FLOPs would take at that peak, and the most any fp32 implementation
    could gain over torchvision's eager time (tv time / floor)."""
    out = []
    for model, batch in dict.fromkeys((r["model"], r["batch_size"]) for r in rows):
        ours = _median(rows, model, batch, "visionzoo")
        tv = _median(rows, model, batch, "torchvision")
        fast = _median(rows, model, batch, "visionzoo-fast")
        compiled = _median(rows, model, batch, "visionzoo-fast-compiled")
        ort = _median(rows, model, batch, "onnxruntime")
        bf16 = _row(rows, model, batch, "visionzoo-fast-bf16")

        def speed(t: float | None, tv: float | None = tv) -> float | None:  # tv time / this
            return round(tv / t, 3) if tv and t else None

        out.append(
            {
                "model": model,
                "batch_size": batch,
                "ours_ms": ours,
                "torchvision_ms": tv,
                "fast_ms": fast,
                "onnxruntime_ms": ort,
                "fast_compiled_ms": compiled,
                "fast_compiled_vs_tv": speed(compiled),
                "ours_vs_tv": speed(ours),
                "fast_vs_tv": speed(fast),
                "onnxruntime_vs_tv": speed(ort),
            }
        )
        if bf16:  # the bfloat16 fast path on the same fp32 inputs, and its logit error
            out[-1].update(
                fast_bf16_ms=bf16["median_ms"],
                fast_bf16_vs_tv=speed(bf16["median_ms"]),
                # relative to the largest logit; None where the random-init logits are ~0
                # (torchvision's ViT head starts at zero), which makes it meaningless
                bf16_rel_error=bf16["logit_error"] / bf16["logit_scale"]
                if bf16["logit_scale"] > 1e-3
                else None,
            )
        if peak and gflops and model in gflops:
            floor_ms = gflops[model] * batch / peak * 1e3
            out[-1].update(
                gflops_per_image=round(gflops[model], 3),
                floor_ms=round(floor_ms, 1),
                tv_gflops_s=round(gflops[model] * batch / tv * 1e3, 1) if tv else None,
                attainable_vs_tv=speed(floor_ms),
            )
    return out


def _fmt(v: float | None, goal: float | None = None) -> str:
    if v is None:
        return "-"
    if goal is None:
        return f"{v:.1f}"
    return f"{v:.2f}" + (" ✓" if v >= goal else " ✗")


def write_markdown(table: list[dict], env: dict, notes: list[str], path: Path, cmd: str) -> None:
    compiled = any(r.get("fast_compiled_ms") for r in table)
    bf16 = any(r.get("fast_bf16_ms") for r in table)
    roof = any(r.get("floor_ms") for r in table)
    lines = [
        "# CPU performance: visionzoo vs torchvision, fast path, onnxruntime",
        "",
        f"Command: `{cmd}`",
        "",
        f"Environment: {env['cpu']} ({env['cpu_count']} cores, shared; bf16 instructions: "
        f"{', '.join(env.get('cpu_bf16_flags') or ['none'])}), torch "
        f"{env['torch']} with {env['torch_threads']} threads, torchvision {env['torchvision']},"
        f" onnxruntime {env['onnxruntime']}, fp32, commit {str(env['git_commit'])[:10]},"
        f" {env['timestamp_utc']}; load average before the run {env['load_average']}.",
        "",
        "Median latency in ms over the repeats (alternating calls, same weights, same "
        "process). `x tv` = torchvision eager time / this time: ours eager goal >= 0.95, "
        "fast path goal >= 1.3. Fast path = `visionzoo.optimize` (BatchNorm folded into "
        "convolutions, channels-last, inference mode).",
        "",
        "| model | batch | torchvision | ours | ours x tv | fast path | fast x tv "
        "| onnxruntime | ort x tv |"
        + (" fast+compile | x tv |" if compiled else "")
        + (" fast bf16 | x tv | bf16 error |" if bf16 else "")
        + (" tv GFLOP/s | floor | at most x tv |" if roof else ""),
        "|---|---|---|---|---|---|---|---|---|"
        + ("---|---|" if compiled else "")
        + ("---|---|---|" if bf16 else "")
        + ("---|---|---|" if roof else ""),
    ]
    for r in table:
        line = (
            f"| {r['model']} | {r['batch_size']} | {_fmt(r['torchvision_ms'])} | "
            f"{_fmt(r['ours_ms'])} | {_fmt(r['ours_vs_tv'], 0.95)} | {_fmt(r['fast_ms'])} | "
            f"{_fmt(r['fast_vs_tv'], 1.3)} | {_fmt(r['onnxruntime_ms'])} | "
            f"{_fmt(r['onnxruntime_vs_tv'], 0)} |"
        )
        if compiled:
            line += f" {_fmt(r['fast_compiled_ms'])} | {_fmt(r['fast_compiled_vs_tv'], 1.3)} |"
        if bf16:
            err = r.get("bf16_rel_error")
            line += f" {_fmt(r.get('fast_bf16_ms'))} | {_fmt(r.get('fast_bf16_vs_tv'), 1.3)} | " + (
                f"{err * 100:.2g}% |" if err is not None else "logits ~0 |"
            )
        if roof:
            line += (
                f" {_fmt(r.get('tv_gflops_s'))} | {_fmt(r.get('floor_ms'))} | "
                f"{_fmt(r.get('attainable_vs_tv'), 1.3)} |"
            )
        lines.append(line)
    if compiled:
        notes = notes + [
            "fast+compile (`visionzoo.optimize(model, compile=True)`, inductor) is timed in a "
            "second pass, after compilation; its ratio compares with torchvision's time from "
            "the first pass."
        ]
    if bf16:
        notes = notes + [
            "fast bf16 = `visionzoo.optimize(model, dtype=torch.bfloat16)`: the same fast "
            "path cast to bfloat16, fed the same fp32 images (the cast is timed); bf16 error = "
            "its largest logit difference from the fp32 model on one random image, relative "
            "to the largest |logit| (random-init logits are ~0 for some models: then it says "
            "nothing; results/bench/fastpath_accuracy.md has trained models). Not bound by "
            "the 1e-4 equality of the fp32 path."
        ]
    if roof:
        notes = notes + [
            f"floor = the model's FLOPs (FlopCounterMode, one image x batch) at the best fp32 "
            f"sgemm rate this process reached ({env['sgemm_peak_gflops']:.0f} GFLOP/s, "
            "2048^3 torch.mm, same threads); `at most x tv` = torchvision's time / floor, the "
            "ceiling for any fp32 implementation that does the same arithmetic (a ✗ there "
            "means the 1.3x goal is out of reach without changing the numerics)."
        ]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "results/bench"))
    parser.add_argument("--stem", default="perf_table")
    parser.add_argument(
        "--with-compile", action="store_true", help="also time the fast path under torch.compile"
    )
    parser.add_argument(
        "--with-bf16", action="store_true", help="also time the fast path in bfloat16"
    )
    args = parser.parse_args()
    cfg = BenchConfig(
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
        optimize=True,
        optimize_dtypes=["fp32", "bf16"] if args.with_bf16 else [],
        compare=["torchvision", "onnxruntime"],
        repeats=args.repeats,
        warmup=args.warmup,
    )
    compiled_cfg = BenchConfig(
        batch_sizes=cfg.batch_sizes,
        optimize=True,
        compile=True,
        repeats=args.repeats,
        warmup=args.warmup,
    )
    env = environment(cfg)
    env["sgemm_peak_gflops"] = round(sgemm_peak_gflops(), 1)
    # FLOPs of one image at the default input, as `visionzoo info` counts them (cached)
    gflops = {name: profile_model(name)["flops"] / 1e9 for name in args.models.split(",")}
    rows, notes = [], []
    for name in args.models.split(","):
        start = time.perf_counter()
        r, n = bench_model(name, cfg)
        rows += r
        notes += n
        if args.with_compile:
            r, n = bench_model(name, compiled_cfg)
            for row in r:  # keep the compiled fast path, timed against our eager model
                row["impl"] += "-compiled"
            rows += [row for row in r if row["impl"] == "visionzoo-fast-compiled"]
            notes += n
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    env["load_average_after"] = [round(v, 2) for v in __import__("os").getloadavg()]
    table = table_rows(rows, env["sgemm_peak_gflops"], gflops)
    csv_path, json_path = write_results(rows, {**env, "table": table}, args.out, args.stem)
    cmd = "OMP_NUM_THREADS={} python scripts/bench_perf.py {}".format(
        torch.get_num_threads(), " ".join(sys.argv[1:])
    ).strip()
    md = Path(args.out) / f"{args.stem}.md"
    write_markdown(table, env, notes, md, cmd)
    print(md.read_text())
    print(f"wrote {csv_path}, {json_path}, {md}")


if __name__ == "__main__":
    main()
