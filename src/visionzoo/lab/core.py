"""The lab's machinery: claims, budgets, training arms through `fit`, and the records.

A claim is a function that receives a `Context` and returns a `ClaimResult` (see
`lab/verdict.py` for the rules and `lab/stats.py` for the intervals). Every arm is trained
by `visionzoo.engine.fit.fit` through its model-builder entry, with the same recipe as the
other arms of its claim and the same seeds, so arms pair by seed. `Context.train` keeps each
epoch's record, the arm's resolved config and its per-image correctness on the test set.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from visionzoo.errors import UserError
from visionzoo.lab.verdict import (  # noqa: F401
    INCONCLUSIVE,
    NOT,
    PARTLY,
    REPRODUCED,
    VERDICTS,
    ClaimResult,
)
from visionzoo.utils import atomic_write_text, cpu_model, git_state, gpu_model

BUDGETS = ("smoke", "quick", "full")
KEEP = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "time_s", "images_per_s")


@dataclass(frozen=True)
class Claim:
    name: str
    title: str  # one line
    paper: str  # authors, year, venue
    quote: str  # the paper's words (verbatim where the reference file has them)
    source: str  # where the quote and figures come from
    models: tuple[str, ...]  # registered models whose cards show this claim
    rule: str  # the verdict rule, in words (the code is in the claim's function)
    run: Callable[[Context], ClaimResult | dict[str, Any]] = field(repr=False, compare=False)


CLAIMS: dict[str, Claim] = {}
ORDER = ("lenet", "alexnet", "vgg", "googlenet", "degradation", "densenet", "separable",
         "efficientnet", "vit", "transfer")  # fmt: skip


def claim(name: str, **meta: Any) -> Callable[[Callable], Callable]:
    def decorator(fn: Callable[[Context], Any]) -> Callable:
        CLAIMS[name] = Claim(name=name, run=fn, **meta)
        return fn

    return decorator


def mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


# ---------------------------------------------------------------------------------------
# Records: the environment, the code state and the data files


def environment() -> dict[str, Any]:
    """Library versions, the code's commit (and whether the tree was dirty), CPU and GPU."""
    from visionzoo import __version__

    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for lib in ("numpy", "matplotlib", "safetensors"):
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            versions[lib] = None
    git = git_state()
    return {
        **versions,
        "visionzoo": __version__,
        "git_commit": git.commit,
        "git_dirty": git.dirty,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda": gpu_model(),
        "platform": platform.platform(),
        # Other work on the machine skews timings: the 1-minute load average.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def dataset_files(name: str, data_dir: str | None) -> dict[str, str]:
    """sha256 of each file a dataset is read from ({} for generated data)."""
    from visionzoo.data import get_spec
    from visionzoo.data.sources import find_file, search_dirs

    if ":" in name:  # a folder of images the claim wrote: its source dataset is recorded
        return {}
    spec = get_spec(name)
    dirs = search_dirs(spec, data_dir)
    paths: list[Path] = []
    if spec.format == "idx":
        names = [f.name for files in spec.files.values() for f in files]
        paths = [p for p in (find_file(n, dirs, spec) for n in names) if p is not None]
    elif spec.format == "cifar-bin":
        folder = next((d / "cifar-10-batches-bin" for d in dirs if d.joinpath(
            "cifar-10-batches-bin").is_dir()), None)  # fmt: skip
        paths = sorted(folder.glob("*.bin")) if folder else []
    return {str(p): sha256_of(p) for p in paths}


@functools.cache
def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# The context a claim runs in


MIN_SEEDS = 5  # at quick and full: fewer cannot give a useful t interval


@dataclass
class Context:
    budget: str = "quick"
    dataset: str = "fashion-mnist"
    seeds: int | None = None  # None: the claim's default for the budget
    data_dir: str | None = None
    quiet: bool = True
    console: Any = None
    work: Path | None = None  # run folders (a temporary folder by default)
    log: list[str] = field(default_factory=list)
    runs: int = 0
    seeds_used: list[int] = field(default_factory=list)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> resolved config
    datasets: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {file: sha256}

    def pick(self, smoke: Any, quick: Any, full: Any) -> Any:
        return {"smoke": smoke, "quick": quick, "full": full}[self.budget]

    def seed_list(self, smoke: int = 2, quick: int = MIN_SEEDS, full: int = MIN_SEEDS) -> list[int]:
        """The seeds every arm runs with (the same list for all arms: they pair by seed)."""
        n = self.seeds if self.seeds else self.pick(smoke, quick, full)
        if self.budget != "smoke":
            n = max(n, MIN_SEEDS)
        seeds = list(range(n))
        if len(seeds) > len(self.seeds_used):
            self.seeds_used = seeds
        return seeds

    def say(self, text: str) -> None:
        self.log.append(text)
        if self.console is not None and not self.quiet:
            self.console.print(text)

    def data_dir_for(self, dataset: str) -> str | None:
        """`--data-dir` for every dataset; without it the catalogue's lookup ($VISIONZOO_DATA,
        the cache folder, the system folders) finds the files."""
        return self.data_dir

    def test_size(self, dataset: str | None = None) -> int:
        return self._size(dataset, "test")

    def train_size(self, dataset: str | None = None) -> int:
        return self._size(dataset, "train")

    def _size(self, dataset: str | None, split: str) -> int:
        from visionzoo.data import load_dataset

        name = dataset or self.dataset
        return len(load_dataset(name, split, self.data_dir_for(name)).labels)

    def use_dataset(self, name: str) -> None:
        """Record the files of a dataset an arm or a measurement reads."""
        if name not in self.datasets:
            self.datasets[name] = dataset_files(name, self.data_dir_for(name))

    def train(self, arm: str, seed: int, **cfg: Any) -> dict[str, Any]:
        """Train one arm (a TrainConfig's fields) with one seed; returns final metrics, the
        per-epoch curve, the per-image test correctness and the wall time."""
        from visionzoo.engine.config import TrainConfig
        from visionzoo.engine.fit import fit
        from visionzoo.engine.train import TrainingDiverged
        from visionzoo.runs import read_metrics

        cfg.setdefault("dataset", self.dataset)
        cfg.setdefault("data_dir", self.data_dir_for(cfg["dataset"]))
        source = lab_source(cfg)
        assert self.work is not None
        out = self.work / f"{arm}-seed{seed}".replace("/", "_")
        tc = TrainConfig(seed=seed, **cfg)
        self.configs.setdefault(
            arm, {k: v for k, v in dataclasses.asdict(tc).items() if k != "seed"}
        )
        self.use_dataset(tc.dataset)
        self.runs += 1
        t0 = time.perf_counter()
        correct: list[bool] | None = None
        try:
            final = fit(
                tc, out, overwrite=True, quiet=self.quiet, console=self.console, model=source,
                with_correct=True,
            )  # fmt: skip
            correct = final.pop("test_correct")
        except TrainingDiverged as err:  # a result, not a crash: the arm failed to train
            from visionzoo.data import get_spec

            chance = 1 / get_spec(tc.dataset).num_classes
            final = {"test_acc": chance, "train_acc": chance, "diverged": str(err)}
            self.say(f"  {arm} seed {seed} diverged: scored at chance ({chance:.2f})")
        wall = time.perf_counter() - t0
        curve = (
            [{k: r[k] for k in KEEP if k in r} for r in read_metrics(out)] if out.is_dir() else []
        )
        self.say(
            f"  [{self.runs}] {arm} seed {seed}: test {pct(final['test_acc'])}, "
            f"train {pct(final['train_acc'] or 0)} ({wall:.0f} s)"
        )
        return {
            "seed": seed,
            "final": _plain(final),
            "curve": curve,
            "correct": correct,
            "run_dir": str(out),
            "wall_s": wall,
        }


def lab_source(cfg: dict[str, Any]) -> Callable | None:
    """The lab builder named by `cfg["model"]` (None: a registered model), and the image size
    it needs when the data is smaller (set in `cfg` unless given)."""
    from visionzoo.lab.nets import BUILDERS, MIN_SIZES

    source = {fn.__name__: fn for fn in BUILDERS}.get(cfg["model"])
    if source is not None and cfg["model"] in MIN_SIZES and not cfg.get("image_size"):
        from visionzoo.data import get_spec

        if get_spec(cfg["dataset"]).size < MIN_SIZES[cfg["model"]]:
            cfg["image_size"] = MIN_SIZES[cfg["model"]]
    return source


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, type(None)))}


def model_cost(
    model: str, dataset: str, image_size: int | None = None, data_dir=None, **model_kwargs: Any
) -> dict[str, Any]:
    """Parameters and multiply-adds of one image, for the model as `fit` builds it (the bench
    module's FLOP counter, which also counts fused attention)."""
    from visionzoo.bench.profile import count_flops
    from visionzoo.data import get_spec
    from visionzoo.engine.config import TrainConfig
    from visionzoo.engine.train import build_model_for

    cfg: dict[str, Any] = dict(model=model, dataset=dataset, image_size=image_size)
    source = lab_source(cfg)
    tc = TrainConfig(**cfg, model_kwargs=model_kwargs, data_dir=data_dir)
    net, pre = build_model_for(tc, get_spec(dataset), source)
    net.eval()
    x = torch.zeros(1, pre.in_channels, pre.image_size, pre.image_size)
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "macs": count_flops(net, x) // 2,
        "input": [pre.in_channels, pre.image_size, pre.image_size],
    }


# ---------------------------------------------------------------------------------------
# Running a claim and writing its result


def result_path(out: Path, name: str, budget: str) -> Path:
    """`NAME-BUDGET.json`: one file per claim and budget, so both budgets can be shown."""
    return out / f"{name}-{budget}.json"


def run_claim(
    name: str,
    budget: str = "quick",
    dataset: str | None = None,
    seeds: int | None = None,
    data_dir: str | None = None,
    out: str | Path | None = None,
    quiet: bool = True,
    console: Any = None,
    keep_runs: bool = False,
    force: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Run one claim and write `out/NAME-BUDGET.json` and `.png`; returns the result.

    `out=None` is `results/lab`, except for the smoke budget, whose machinery-only verdicts
    go to a new temporary folder. Without `force`, a claim whose result for this budget
    exists is read back instead of run again (a long run resumes claim by claim).
    """
    if name not in CLAIMS:
        import difflib

        close = difflib.get_close_matches(name, CLAIMS, n=3)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise UserError(f"unknown claim {name!r}{hint} (see `visionzoo lab list`)")
    if budget not in BUDGETS:
        raise UserError(f"--budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    if seeds is not None and (seeds < 1 or (budget != "smoke" and seeds < MIN_SEEDS)):
        raise UserError(f"--seeds must be >= {MIN_SEEDS} at the {budget} budget, got {seeds}")
    if out is None:
        out = (
            tempfile.mkdtemp(prefix="visionzoo-lab-smoke-") if budget == "smoke" else "results/lab"
        )
    out = Path(out)
    path = result_path(out, name, budget)
    if path.is_file() and not force:
        result = json.loads(path.read_text())
        result["skipped"] = True
        return result
    out.mkdir(parents=True, exist_ok=True)
    c = CLAIMS[name]
    ctx = Context(
        budget=budget,
        dataset=dataset or "fashion-mnist",
        seeds=seeds,
        data_dir=data_dir,
        quiet=quiet,
        console=console,
    )
    ctx.say(f"lab {name} ({budget}): {c.title}")
    env = environment()  # at the start: the commit and settings the runs used
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"visionzoo-lab-{name}-") as tmp:
        ctx.work = out / "runs" / name if keep_runs else Path(tmp)
        returned = c.run(ctx)
    if isinstance(returned, ClaimResult):
        body, draw = returned.to_json(), returned.plot
    else:
        body, draw = dict(returned), returned.get("_plot")
        body.pop("_plot", None)
    result = {
        "claim": name,
        "title": c.title,
        "models": list(c.models),
        "verdict": body.pop("verdict"),
        "summary": body.pop("summary"),
        "paper": c.paper,
        "quote": c.quote,
        "source": c.source,
        "rule": c.rule,
        "budget": budget,
        "dataset": ctx.dataset,
        "command": command or shlex.join(sys.argv),
        "seeds": ctx.seeds_used,
        "arm_configs": ctx.configs,
        "datasets": ctx.datasets,
        **body,
        "log": ctx.log,
        "runs": ctx.runs,
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {**env, "load_average_1min_end": environment()["load_average_1min"]},
    }
    assert result["verdict"] in VERDICTS, result["verdict"]
    for runs in result.get("arms", {}).values():
        for run in runs:
            run.pop("correct", None)  # used for the test-set noise; too long to keep
            if not keep_runs:  # the temporary run folders are gone
                run.pop("run_dir", None)
    if draw is not None:
        png = path.with_suffix(".png")
        save_plot(draw, png, result)
        result["plot"] = png.name
    atomic_write_text(path, json.dumps(_finite(result), indent=1, default=str) + "\n")
    ctx.say(f"verdict: {result['verdict']}. {result['summary']}")
    result["path"] = str(path)
    return result


def _finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------
# Plots


def save_plot(draw: Callable, path: Path, result: dict[str, Any]) -> None:
    """Call `draw(fig)` on a fresh Agg figure, title it with the verdict, save it as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 4.2), dpi=100)
    draw(fig)
    fig.suptitle(
        f"{result['claim']}: {result['verdict']} ({result['budget']} budget, {result['dataset']})",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curves(ax, arms: dict[str, list[dict[str, Any]]], key: str, ylabel: str, error: bool = False):
    """Mean over seeds of one per-epoch metric, one line per arm (1 - acc when error), with
    its 95% interval over seeds as a band; epochs without the metric are left out."""
    from visionzoo.lab.stats import t975

    for arm, runs in arms.items():
        # the epochs every seed measured `key` at (--eval-every skips test figures)
        pts = [
            {p.get("epoch", i + 1): p[key] for i, p in enumerate(r["curve"]) if key in p}
            for r in runs
        ]
        xs = sorted(set.intersection(*(set(p) for p in pts))) if pts else []
        if not xs:
            continue
        cols = [[p[x] for p in pts] for x in xs]
        cols = [[1 - y for y in c] for c in cols] if error else cols
        ys = [mean(c) for c in cols]
        (line,) = ax.plot(xs, ys, marker="o", ms=3, label=arm)
        if len(runs) > 1:
            half = [t975(len(c) - 1) * statistics.stdev(c) / math.sqrt(len(c)) for c in cols]
            lo = [y - h for y, h in zip(ys, half)]
            hi = [y + h for y, h in zip(ys, half)]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def intervals(ax, subclaims: list[Any]) -> None:
    """Each sub-claim's effect with its 95% interval (the band) and its margin (dashed)."""
    for i, sub in enumerate(subclaims):
        k = 100 if sub.unit == "pp" else 1
        lo = k * sub.lo if math.isfinite(sub.lo) else k * sub.effect
        hi = k * sub.hi if math.isfinite(sub.hi) else k * sub.effect
        color = {"reproduced": "#2e7d32", "not reproduced": "#c62828"}.get(sub.verdict, "#757575")
        ax.barh(i, hi - lo, left=lo, height=0.4, color=color, alpha=0.35)
        ax.plot([k * sub.effect], [i], "o", color=color)
        edge = -sub.margin if sub.rule == "no_worse" else sub.margin
        ax.plot([k * edge] * 2, [i - 0.3, i + 0.3], "k--", lw=0.8)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(range(len(subclaims)), [("* " if s.primary else "") + s.name for s in subclaims])
    ax.tick_params(axis="y", labelsize=7)
    units = {"pp" if s.unit == "pp" else s.unit or "log ratio" for s in subclaims}
    ax.set_xlabel(f"effect ({', '.join(sorted(units))}; * primary), 95% interval, dashed: margin")
    ax.grid(axis="x", alpha=0.3)
