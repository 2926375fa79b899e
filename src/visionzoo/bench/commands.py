"""`visionzoo info`, `visionzoo bench` and `visionzoo export`: thin wrappers over the library."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from visionzoo.errors import UserError

DEFAULT_OUT = "results/bench"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="a model's card: paper, parameters, FLOPs, depth")
    p.add_argument("model", help="a registered model name (see `visionzoo list`)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--image-size", type=int, default=None, help="input side (default: model's)")
    p.add_argument("--small-input", action="store_true", help="the 28x28/32x32 variant")
    p.add_argument("--in-channels", type=int, default=None, help="input channels (default 3)")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("bench", help="latency, throughput and memory of models")
    p.add_argument("patterns", nargs="+", metavar="PATTERN", help="model names or wildcards")
    p.add_argument("--batch-size", default="1,16", help="comma-separated (default 1,16)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16 (CUDA)")
    p.add_argument("--channels-last", action="store_true", help="NHWC weights and inputs")
    p.add_argument("--compile", action="store_true", help="torch.compile every model timed")
    p.add_argument("--optimize", action="store_true", help="also time visionzoo.optimize")
    p.add_argument(
        "--optimize-dtype",
        default="",
        help="fast path dtypes with --optimize, e.g. fp32,bf16 (default: --dtype); "
        "another dtype is timed on the same inputs as visionzoo-fast-<dtype>",
    )
    p.add_argument("--compare", default="", help="torchvision,timm,onnxruntime")
    p.add_argument("--train", action="store_true", help="also time one training step")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    p.add_argument("--image-size", type=int, default=None, help="input side (default: model's)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.set_defaults(func=cmd_bench)

    p = subparsers.add_parser("export", help="export to ONNX or torch.export and check it")
    p.add_argument("target", metavar="MODEL_OR_RUN", help="a model name or a run directory")
    p.add_argument("--format", default="onnx", help="onnx or torch-export")
    p.add_argument("--out", default=None, help="output file (default: ./<name>.onnx|.pt2)")
    p.add_argument("--image-size", type=int, default=None, help="input side (default: model's)")
    p.add_argument("--exporter", default="auto", help="ONNX: auto, dynamo or torchscript")
    p.set_defaults(func=cmd_export)


# ---- info -------------------------------------------------------------------------------


def _model_kwargs(name: str, small_input: bool, in_channels: int | None) -> dict[str, Any]:
    from visionzoo.registry import get_model_info

    info = get_model_info(name)
    kwargs: dict[str, Any] = {}
    if small_input:
        if not info.small_input:
            raise UserError(f"{name} has no small-input mode")
        kwargs["small_input"] = True
    if in_channels is not None:
        if in_channels < 1:
            raise UserError("--in-channels must be at least 1")
        kwargs["in_channels"] = in_channels
    return kwargs


def info_data(name: str, image_size: int | None, **kwargs: Any) -> dict[str, Any]:
    """The registry card, profile_model's figures over it, and the published ones (`reported`)."""
    from visionzoo.bench.profile import profile_model
    from visionzoo.bench.reported import load_reported
    from visionzoo.registry import get_model_info

    info = get_model_info(name)
    if (
        image_size is not None
        and image_size < info.min_image_size
        and not kwargs.get("small_input")
    ):
        raise UserError(f"{name} needs --image-size of at least {info.min_image_size}")
    try:
        data = {**info.as_dict(), **profile_model(name, image_size, **kwargs)}
    except ValueError as err:  # e.g. an input smaller than the network can take
        raise UserError(str(err).splitlines()[0]) from None
    data["reported"] = load_reported().get(name)
    data["default_config"] = not kwargs and data["image_size"] == info.image_size
    return data


def _si(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= factor:
            return f"{n / factor:.3f} {prefix}{unit}"
    return f"{n:g} {unit}".strip()


def cmd_info(args: argparse.Namespace) -> int:
    kwargs = _model_kwargs(args.model, args.small_input, args.in_channels)
    data = info_data(args.model, args.image_size, **kwargs)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    _print_card(data)
    return 0


def _print_card(d: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{d['name']}[/bold]  {d['family']} ({d['year']})")
    console.print(f"{d['paper']}\n{d['authors']}\n{d['paper_url']}")
    if d["key_idea"]:
        console.print(f"\n[bold]Key idea:[/bold] {d['key_idea']}")
    for note in d["notes"]:
        console.print(f"[bold]NOTE:[/bold] {note}")
    rep = d.get("reported") or {}
    size = f"{d['in_channels']}x{d['image_size']}x{d['image_size']}"
    t = Table(title=f"measured here, one {size} image  |  reported", title_justify="left")
    for col in ("figure", "measured", "reported"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    sources: list[str] = []

    def cite(text: str) -> str:
        sources.append(text)
        return f" [{len(sources)}]"

    params = _fmt_int(rep.get("params"))
    t.add_row(
        "parameters",
        f"{d['params']:,}",
        params + (cite(_src(rep, "params")) if rep.get("params") else ""),
    )
    t.add_row("FLOPs (= 2 x MACs)", _si(d["flops"], "FLOPs"), "-")
    macs = "-"
    if rep.get("macs"):
        macs = _si(rep["macs"], "MACs") + cite(
            _src(rep, "gmacs") + ". torchvision's published 'GFLOPS' are GMACs."
        )
    t.add_row("MACs (multiply-adds)", _si(d["macs"], "MACs"), macs)
    reported_depth = (rep.get("depth") or "-").split(" (")[0]
    depth = str(d["depth"])
    if d["depth"] != d["depth_longest_path"]:
        depth += cite(
            f"depth: {d['depth_source']}; longest conv/linear path: {d['depth_longest_path']}"
        )
    t.add_row("depth (weighted layers on the main path)", depth, reported_depth)
    t.add_row("weighted layers in all (conv + linear)", str(d["weighted_layers"]), "-")
    if d.get("blocks"):
        t.add_row("transformer blocks", str(d["blocks"]), "-")
    t.add_row("activations saved for backward", _si(d["activation_bytes"], "B"), "-")
    if rep.get("top1") is not None:
        acc = f"{rep['top1']:.2f}" + (f" / {rep['top5']:.2f}" if rep.get("top5") else "")
        t.add_row(f"top-1 / top-5 % ({rep.get('dataset')})", "-", acc + cite(_src(rep, "metrics")))
    console.print(t)
    if rep and not d.get("default_config", True):
        console.print("[bold]reported figures are for the default configuration[/bold]")
    for i, text in enumerate(sources, 1):
        console.print(f"[dim][{i}] {text}[/dim]", highlight=False)
    s = Table(title="stages", title_justify="left")
    for col in ("stage", "output (C, H, W)", "params", "FLOPs", "% FLOPs"):
        s.add_column(col, justify="left" if col == "stage" else "right")
    for row in d["stages"]:
        shape = "x".join(str(v) for v in row["output_shape"] or []) or "-"
        share = 100 * row["flops"] / d["flops"] if d["flops"] else 0
        s.add_row(row["name"], shape, f"{row['params']:,}", _si(row["flops"]), f"{share:.1f}")
    console.print(s)
    console.print(f"[dim]{d['flops_note']}[/dim]")


def _fmt_int(v: int | None) -> str:
    return f"{v:,}" if v is not None else "-"


def _src(rep: dict[str, Any], key: str) -> str:
    return str(rep.get(f"{key}_source") or "")


# ---- bench ------------------------------------------------------------------------------


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--batch-size {text!r}: use comma-separated integers, e.g. 1,16") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--batch-size {text!r}: use positive integers, e.g. 1,16")
    return sizes


def expand_patterns(patterns: list[str]) -> list[str]:
    """Registered names for names and wildcards; an unknown plain name is an error."""
    from visionzoo.registry import get_model_info, list_models

    names: list[str] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            found = list_models(pattern)
            if not found:
                raise UserError(f"no model matches {pattern!r}; see `visionzoo list`")
        else:
            found = [get_model_info(pattern).name]  # raises with close matches
        names += [n for n in found if n not in names]
    return names


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from visionzoo.bench.timing import BenchConfig, bench_model, environment, write_results

    cfg = BenchConfig(
        batch_sizes=_batch_sizes(args.batch_size),
        device=args.device,
        dtype=args.dtype,
        channels_last=args.channels_last,
        compile=args.compile,
        optimize=args.optimize or bool(args.optimize_dtype),
        optimize_dtypes=[d.strip() for d in args.optimize_dtype.split(",") if d.strip()],
        compare=[c.strip() for c in args.compare.split(",") if c.strip()],
        train=args.train,
        repeats=args.repeats,
        warmup=max(0, args.warmup),
        image_size=args.image_size,
    )
    cfg.validate()
    names = expand_patterns(args.patterns)
    console = Console(stderr=True)
    rows, notes, failed = [], [], []
    steps = len(names) * len(cfg.batch_sizes) * (2 if cfg.train else 1)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("bench", total=steps)
        for name in names:
            progress.update(task, description=name)
            try:
                r, n = bench_model(name, cfg, advance=lambda _: progress.advance(task))
            except (RuntimeError, NotImplementedError, ValueError, TypeError) as err:
                failed.append(name)
                notes.append(f"{name}: failed ({type(err).__name__}: {_first_line(err)})")
                continue
            rows += r
            notes += n
    if not rows:
        raise UserError("; ".join(notes) or "nothing was measured")
    env = environment(cfg)
    csv_path, json_path = write_results(rows, env, args.out)
    _print_bench(rows)
    for note in notes:
        console.print(f"note: {note}", highlight=False)
    print(f"wrote {csv_path} and {json_path}")
    return 1 if failed else 0


def _first_line(err: BaseException) -> str:
    return next((line for line in str(err).splitlines() if line.strip()), "")[:200]


def _print_bench(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    t = Table(title="latency (ms), throughput (images/s), peak memory (MiB)")
    cols = ("model", "impl", "mode", "batch", "median", "p95", "img/s", "peak MiB", "time/ours")
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "impl", "mode") else "right")
    for r in rows:
        t.add_row(
            r["model"],
            r["impl"],
            r["mode"],
            str(r["batch_size"]),
            f"{r['median_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['throughput_img_s']:.1f}",
            "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.1f}",
            f"{r['time_vs_ours']:.2f}",
        )
    console.print(t)
    for r in rows:
        if r["impl"] == "visionzoo":
            continue
        ratio = r["time_vs_ours"]
        what = f"{r['model']} {r['mode']} batch {r['batch_size']}:"
        if r["impl"].startswith("visionzoo-fast"):
            label = "fast path" + (f" ({r['dtype']})" if r["impl"] != "visionzoo-fast" else "")
            console.print(f"{what} {label} is {1 / ratio:.2f}x the speed of our eager model")
        else:
            console.print(f"{what} ours is {ratio:.2f}x the speed of {r['impl']}")


# ---- export -----------------------------------------------------------------------------


def _load_target(target: str, image_size: int | None) -> tuple[Any, str, int, int]:
    """(model, name, image size, in_channels) for a registered name or a run directory."""
    import torch

    from visionzoo.registry import create_model, get_model_info

    if Path(target).is_dir():
        try:
            from visionzoo.runs import load_run
        except ImportError:
            raise UserError("run directories need visionzoo.runs, which is not installed") from None
        run = load_run(target)
        pre = run.config.get("preprocess", {})
        size = image_size or int(pre.get("image_size", 224))
        name = str(run.config.get("model", Path(target).name))
        return run.model.eval(), name, size, int(pre.get("in_channels", 3))
    info = get_model_info(target)
    size = image_size or info.image_size
    if size < info.min_image_size:
        raise UserError(f"{target} needs --image-size of at least {info.min_image_size}")
    torch.manual_seed(0)
    model = create_model(target, image_size=size).eval()
    return model, target, size, int(getattr(model, "in_channels", info.in_channels))


def cmd_export(args: argparse.Namespace) -> int:
    import sys

    import torch

    from visionzoo.bench.export import FORMATS, SUFFIX, export_model

    if args.format not in FORMATS:
        raise UserError(f"--format {args.format!r}: use one of {', '.join(FORMATS)}")
    if args.exporter not in ("auto", "dynamo", "torchscript"):
        raise UserError(f"--exporter {args.exporter!r}: use auto, dynamo or torchscript")
    model, name, size, channels = _load_target(args.target, args.image_size)
    out = Path(args.out) if args.out else Path(f"{name}{SUFFIX[args.format]}")
    x = torch.randn(2, channels, size, size)
    result = export_model(model, args.format, x, out, exporter=args.exporter)
    print(result.line(name), file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1
