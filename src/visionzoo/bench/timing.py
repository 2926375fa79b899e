"""Latency, throughput and peak memory, for inference and one training step.

Every measurement warms up, synchronizes the device, repeats, and reports the median and
the 95th percentile. Implementations compared with each other (ours, the fast path,
torchvision, timm, onnxruntime) run in the same process and are timed alternately, one
call each per round, so that a busy machine slows them alike. Each result row carries the
environment it was measured in (`environment()`).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from visionzoo.bench.optimize import DTYPES, InferenceModel, optimize
from visionzoo.errors import UserError
from visionzoo.utils import cpu_flags, cpu_model, git_state, gpu_model

__all__ = [
    "BenchConfig",
    "DTYPES",
    "bench_model",
    "environment",
    "peak_memory",
    "time_alternating",
    "write_results",
]

CSV_FIELDS = [
    "model", "impl", "mode", "batch_size", "batch_size_requested", "image_size", "device",
    "dtype", "channels_last", "compiled", "repeats", "median_ms", "p95_ms", "min_ms",
    "throughput_img_s", "peak_mem_mb", "time_vs_ours", "logit_error", "logit_scale", "note",
]  # fmt: skip


@dataclass
class BenchConfig:
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16])
    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    optimize: bool = False  # also time the fast path (visionzoo.optimize)
    # the fast path's dtypes (default: `dtype`); another dtype is timed as
    # "visionzoo-fast-<dtype>" on the same fp32 inputs, e.g. bf16 beside fp32 eager models
    optimize_dtypes: list[str] = field(default_factory=list)
    compare: list[str] = field(default_factory=list)  # "torchvision", "timm", "onnxruntime"
    train: bool = False  # also time one training step
    repeats: int = 20
    warmup: int = 3
    image_size: int | None = None

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise UserError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if self.device not in ("cpu", "cuda"):
            raise UserError(f"unknown device {self.device!r}; use cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")
        for d in [self.dtype, *self.optimize_dtypes]:
            if d not in DTYPES:
                raise UserError(f"unknown dtype {d!r}; use one of {', '.join(DTYPES)}")
            if self.device == "cpu" and d == "fp16":
                raise UserError("fp16 needs --device cuda (CPU half-precision is bf16)")
        bad = [c for c in self.compare if c not in ("torchvision", "timm", "onnxruntime")]
        if bad:
            raise UserError(f"--compare {bad[0]!r}: use torchvision, timm or onnxruntime")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError("--batch-size: positive integers, e.g. 1,16")
        if self.repeats < 1:
            raise UserError("--repeats must be at least 1")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_alternating(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: str = "cpu"
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured round-robin (the order rotates)."""
    labels = list(fns)
    for _ in range(warmup):
        for label in labels:
            fns[label]()
    sync(device)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(repeats):
        order = labels[r % len(labels) :] + labels[: r % len(labels)]
        for label in order:
            sync(device)
            start = time.perf_counter()
            fns[label]()
            sync(device)
            times[label].append(time.perf_counter() - start)
    return times


def _rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def peak_memory(fn: Callable[[], Any], device: str) -> int | None:
    """Extra memory one call needs at its peak, in bytes.

    CUDA: `max_memory_allocated` above what was allocated before. CPU: growth of the peak
    resident set size (VmHWM, reset through /proc/self/clear_refs) over the current RSS.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS to the current RSS
        before = _rss_kib("VmRSS")
        fn()
        return max(0, _rss_kib("VmHWM") - before) * 1024
    except OSError:
        return None


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text


def _stats(times: list[float], batch: int) -> dict[str, float | None]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    median = statistics.median(ordered)
    return {
        "median_ms": round(median * 1e3, 4),
        "p95_ms": round(p95 * 1e3, 4),
        "min_ms": round(ordered[0] * 1e3, 4),
        "throughput_img_s": round(batch / median, 2) if median > 0 else None,
    }


def _logits(out: Any) -> Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out  # torchvision Inception/GoogLeNet


def _train_step(model: nn.Module, x: Tensor, cfg: BenchConfig) -> Callable[[], None]:
    """One SGD step on random labels (autocast for bf16/fp16, weights stay fp32)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    num_classes = None

    def step() -> None:
        nonlocal num_classes
        optimizer.zero_grad(set_to_none=True)
        ctx = (
            torch.autocast(cfg.device, dtype=DTYPES[cfg.dtype])
            if cfg.dtype != "fp32"
            else contextlib.nullcontext()
        )
        with ctx:
            logits = _logits(model(x))
            num_classes = num_classes or logits.shape[-1]
            target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            loss = nn.functional.cross_entropy(logits.float(), target)
        loss.backward()
        optimizer.step()

    return step


def _prepare(model: nn.Module, cfg: BenchConfig, train: bool) -> nn.Module:
    model = model.to(cfg.device)
    if not train and cfg.dtype != "fp32":
        model = model.to(DTYPES[cfg.dtype])
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        return cast(nn.Module, torch.compile(model))
    return model


def _input(batch: int, channels: int, size: int, cfg: BenchConfig, train: bool) -> Tensor:
    dtype = DTYPES[cfg.dtype] if not train else torch.float32
    x = torch.randn(batch, channels, size, size, device=cfg.device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def build_impls(name: str, cfg: BenchConfig, size: int) -> tuple[dict[str, nn.Module], list[str]]:
    """Ours, plus each requested reference with the same weights ported into ours."""
    from visionzoo.convert import WeightMismatchError, build_reference, port_weights
    from visionzoo.registry import create_model

    torch.manual_seed(0)
    ours = create_model(name, image_size=size).eval()
    impls: dict[str, nn.Module] = {"visionzoo": ours}
    notes = []
    for source in cfg.compare:
        if source == "onnxruntime":
            continue
        try:
            ref = build_reference(name, source).eval()
            port_weights(ours, ref.state_dict(), source)
            impls[source] = ref
        except (WeightMismatchError, ImportError, RuntimeError, TypeError, ValueError) as err:
            notes.append(f"{name}: no {source} comparison ({str(err).splitlines()[0][:120]})")
    return impls, notes


def _onnx_runner(model: nn.Module, size: int, channels: int) -> Callable[[Tensor], Callable]:
    """Export `model` once (dynamic batch); returns a factory of runners for an input."""
    from visionzoo.bench.export import onnx_session, to_onnx

    path = to_onnx(model, torch.randn(2, channels, size, size))
    session = onnx_session(path)
    name = session.get_inputs()[0].name

    def runner(x: Tensor) -> Callable[[], Any]:
        feed = {name: x.float().contiguous().cpu().numpy()}
        return lambda: session.run(None, feed)

    return runner


def fast_label(cfg: BenchConfig, dtype: str) -> str:
    return "visionzoo-fast" if dtype == cfg.dtype else f"visionzoo-fast-{dtype}"


def _fast_paths(
    name: str, model: nn.Module, cfg: BenchConfig, size: int, notes: list[str]
) -> dict[str, InferenceModel]:
    """The fast path of `model` in each requested dtype, keyed by its row label; a dtype the
    model cannot run in (or whose logits miss the check) becomes a note."""
    out: dict[str, InferenceModel] = {}
    for dtype in dict.fromkeys(cfg.optimize_dtypes or [cfg.dtype]):
        try:
            with warnings.catch_warnings():  # a float32 fallback becomes the note below
                warnings.simplefilter("ignore", UserWarning)
                fast = optimize(
                    model, channels_last=True, compile=cfg.compile, image_size=size, dtype=dtype
                )
        except RuntimeError as err:
            notes.append(f"{name}: no {dtype} fast path ({str(err).splitlines()[0][:150]})")
            continue
        got = next(k for k, v in DTYPES.items() if v == fast.dtype)
        if got != dtype:  # optimize fell back to float32: no kernels for `dtype` here
            notes.append(f"{name}: no {dtype} fast path on this device (it fell back to {got})")
            continue
        out[fast_label(cfg, dtype)] = fast.to(cfg.device)
    return out


def bench_model(
    name: str, cfg: BenchConfig, advance: Callable[[str], None] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Time `name` (and its comparisons) at each batch size; returns (rows, notes)."""
    from visionzoo.registry import get_model_info

    info = get_model_info(name)
    size = cfg.image_size or info.image_size
    impls, notes = build_impls(name, cfg, size)
    channels = info.in_channels
    # Everything derived from the fp32 eager model is built before it is converted.
    fast = _fast_paths(name, impls["visionzoo"], cfg, size, notes) if cfg.optimize else {}
    onnx = None
    if "onnxruntime" in cfg.compare:
        if cfg.device != "cpu" or cfg.dtype != "fp32":
            notes.append(f"{name}: onnxruntime is timed on CPU in fp32 only")
        else:
            try:
                onnx = _onnx_runner(impls["visionzoo"], size, channels)
            except Exception as err:  # noqa: BLE001 - an export failure is a note, not a crash
                notes.append(f"{name}: no onnxruntime timing ({str(err).splitlines()[0][:150]})")
    trainable = {k: copy.deepcopy(m) for k, m in impls.items()} if cfg.train else {}
    infer = {k: _prepare(m, cfg, train=False) for k, m in impls.items()}
    rows: list[dict[str, Any]] = []
    for batch in cfg.batch_sizes:
        for mode in ("inference", "train") if cfg.train else ("inference",):
            if mode == "train":
                fns = {k: _train_fn(m, cfg, batch, channels, size) for k, m in trainable.items()}
            else:
                fns = {k: _infer_fn(m) for k, m in infer.items()}
                for label, model in fast.items():
                    fns[label] = _infer_fn(model)
                if onnx is not None:
                    fns["onnxruntime"] = onnx
            rows += _bench_backoff(name, fns, cfg, size, channels, batch, mode, notes)
            if advance:
                advance(f"{name} b{batch} {mode}")
    for row in rows:  # how far each fast path's logits are from the eager model's
        if row["impl"] in fast:
            rewrite = fast[row["impl"]].rewrite
            row["logit_error"], row["logit_scale"] = rewrite.logit_error, rewrite.logit_scale
    return rows, notes


Runner = Callable[[Tensor], Callable[[], Any]]  # input -> a call to time


def _infer_fn(model: nn.Module) -> Runner:
    def runner(x: Tensor) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return model(x)

        return run

    return runner


def _train_fn(model: nn.Module, cfg: BenchConfig, batch: int, channels: int, size: int) -> Runner:
    model = _prepare(model, cfg, train=True)
    return lambda x: _train_step(model, x, cfg)


def _bench_backoff(name, fns, cfg, size, channels, batch, mode, notes) -> list[dict[str, Any]]:
    requested = batch
    while True:
        try:
            rows = _bench_once(name, fns, cfg, size, channels, batch, mode)
            for row in rows:
                row["batch_size_requested"] = requested
            return rows
        except (RuntimeError, MemoryError) as err:
            if not _is_oom(err) or batch == 1:
                raise
            if cfg.device == "cuda":
                torch.cuda.empty_cache()
            notes.append(f"{name}: batch {batch} ran out of memory; trying {batch // 2}")
            batch //= 2


def _bench_once(name, runners, cfg, size, channels, batch, mode) -> list[dict[str, Any]]:
    x = _input(batch, channels, size, cfg, train=mode == "train")
    fns = {label: runner(x) for label, runner in runners.items()}
    dtypes = {fast_label(cfg, d): d for d in cfg.optimize_dtypes} | {"onnxruntime": "fp32"}
    memory = {label: peak_memory(fn, cfg.device) for label, fn in fns.items()}
    times = time_alternating(fns, cfg.repeats, cfg.warmup, cfg.device)
    ours = statistics.median(times["visionzoo"])
    rows = []
    for label, ts in times.items():
        mem = memory[label]
        rows.append(
            {
                "model": name,
                "impl": label,
                "mode": mode,
                "batch_size": batch,
                "image_size": size,
                "device": "cpu" if label == "onnxruntime" else cfg.device,
                "dtype": dtypes.get(label, cfg.dtype),
                "channels_last": cfg.channels_last or label.startswith("visionzoo-fast"),
                "compiled": cfg.compile and label != "onnxruntime",
                "repeats": cfg.repeats,
                **_stats(ts, batch),
                "peak_mem_mb": round(mem / 2**20, 2) if mem is not None else None,
                "time_vs_ours": round(statistics.median(ts) / ours, 3),  # > 1: slower than ours
                "note": "",
            }
        )
    return rows


def cpu_bf16_flags() -> list[str]:
    """The CPU's bfloat16 instruction sets (/proc/cpuinfo): what a bf16 timing depends on."""
    have = cpu_flags()
    return [w for w in ("avx512_bf16", "amx_bf16", "amx_tile", "avx_ne_convert") if w in have]


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def environment(cfg: BenchConfig | None = None) -> dict[str, Any]:
    """Where a figure was measured: hardware, threads, versions, settings, commit, load."""
    git = git_state()
    env: dict[str, Any] = {
        "timestamp_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16_flags": cpu_bf16_flags(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "onnxruntime": _version("onnxruntime"),
        "git_commit": git.commit,
        "git_dirty": git.dirty,
        "cuda_device": gpu_model(),
    }
    if cfg is not None:
        env["config"] = asdict(cfg)
        env["dtype"] = cfg.dtype
        env["layout"] = "channels_last" if cfg.channels_last else "contiguous (NCHW)"
    return env


def write_results(
    rows: list[dict[str, Any]], env: dict[str, Any], out_dir: str | Path, stem: str | None = None
) -> tuple[Path, Path]:
    """Write `<stem>.csv` (one row per measurement) and `<stem>.json` (rows + environment)."""
    import csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    csv_path, json_path = out / f"{stem}.csv", out / f"{stem}.json"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps({"environment": env, "results": rows}, indent=2) + "\n")
    return csv_path, json_path
