"""What the explorer shows, assembled from the registry, the results folder and the runs.

Everything here returns plain JSON-able dicts. Sources:
- the registry (`ModelInfo`): family, year, paper, key idea, NOTE deviations, source module;
- `visionzoo.bench.profile.profile_model`: parameters, FLOPs, depth and the stage table
  (computed on demand and cached: it runs the model once);
- `visionzoo.bench.reported.load_reported`: ImageNet accuracy as the papers report it;
- `results/bench/*.json`: latency measured here; `results/lab/*.json`: the history claims;
- the runs folder: `config.json` and `metrics.jsonl` read as JSON, weights through
  `visionzoo.runs.load_run` (safetensors). Runs are addressed by ids from this listing only,
  never by a path that the browser sends.

Packages that are not written yet (bench, runs) degrade to "not available" messages.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from visionzoo.registry import ModelInfo, UnknownModelError, get_model_info, list_models

MAX_JSON_BYTES = 5_000_000  # results and run files larger than this are skipped
MAX_RUNS = 500
LOADED_RUNS = 4  # trained models kept in memory


class NotAvailable(Exception):
    """A part of visionzoo that this feature needs is missing (not installed or not written)."""


class Failed(Exception):
    """Computing something for a model failed (a bug, or a model that cannot run here)."""


class BadRun(Exception):
    """A run folder whose weights or config cannot be used (answered with 422)."""


class NotFound(KeyError):
    """An unknown model or run id."""

    def __str__(self) -> str:
        return str(self.args[0])


def _optional(module: str, attr: str) -> Any:
    """`module.attr`, or NotAvailable when that package is not there (yet)."""
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise NotAvailable(f"{module}.{attr} is not available: {err}") from None


def _read_json(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{path.name} is larger than {MAX_JSON_BYTES} bytes")
    return json.loads(path.read_text(encoding="utf-8"))


def _finite(v: Any) -> Any:
    """JSON has no NaN or infinity: replace them by None, recursively."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def info_dict(info: ModelInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "family": info.family,
        "year": info.year,
        "paper": info.paper,
        "paper_url": info.paper_url,
        "authors": info.authors,
        "key_idea": info.key_idea,
        "notes": list(info.notes),
        "docstring": info.docstring,
        "module": info.module,
        "reference_params": info.reference_params,
        "params_source": info.params_source,
        "image_size": info.image_size,
        "in_channels": info.in_channels,
        "num_classes": info.num_classes,
        "min_image_size": info.min_image_size,
        "small_input": info.small_input,
        "torchvision_name": info.torchvision_name,
        "timm_name": info.timm_name,
    }


# --- results/bench and results/lab ----------------------------------------------------------

_LATENCY_KEYS = ("latency_ms", "median_ms", "latency_median_ms", "ms", "latency")


def _latency_of(record: dict[str, Any]) -> float | None:
    for key in _LATENCY_KEYS:
        v = record.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, dict):
            for sub in ("median_ms", "median", "ms"):
                if isinstance(v.get(sub), (int, float)):
                    return float(v[sub])
    return None


def _records(obj: Any) -> list[dict[str, Any]]:
    """Every dict inside `obj` that names a model."""
    found: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        if isinstance(obj.get("model") or obj.get("name"), str):
            found.append(obj)
        for v in obj.values():
            if isinstance(v, (dict, list)):
                found += _records(v)
    elif isinstance(obj, list):
        for v in obj:
            found += _records(v)
    return found


def _device_label(rec: dict[str, Any], env: dict[str, Any]) -> str:
    device = str(rec.get("device") or "")
    if device.startswith("cuda") and env.get("cuda_device"):
        device = f"{device} ({env['cuda_device']})"
    elif device in ("cpu", "") and env.get("cpu"):
        device = f"cpu ({env['cpu']})"
    return f"{device}, {rec['dtype']}" if rec.get("dtype") else device


def load_bench(results: Path | None) -> dict[str, dict[str, Any]]:
    """{model: {"latency_ms", "device", "batch_size", "file", "all"}} from results/bench/*.json.

    Only visionzoo's own inference timings count (not the torchvision/ONNX comparisons,
    not training steps). The chart compares like with like: it uses the batch-1 figures of
    the device that measured the most models; `all` keeps every batch-1 figure for the card.
    """
    folder = results / "bench" if results else None
    if folder is None or not folder.is_dir():
        return {}
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = _read_json(path)
        except (OSError, ValueError):
            continue
        env = data.get("environment", {}) if isinstance(data, dict) else {}
        env = env if isinstance(env, dict) else {}
        for rec in _records(data):
            name, ms = rec.get("model") or rec.get("name"), _latency_of(rec)
            if not isinstance(name, str) or ms is None:
                continue
            if rec.get("impl", "visionzoo") != "visionzoo" or rec.get("mode") == "train":
                continue
            if rec.get("batch_size", rec.get("batch", 1)) not in (1, None):
                continue
            entry = {"model": name, "latency_ms": ms, "device": _device_label(rec, env)}
            entry.update(batch_size=1, file=path.name, image_size=rec.get("image_size"))
            for key in ("flops", "macs", "params", "depth", "throughput_img_s", "p95_ms"):
                if isinstance(rec.get(key), (int, float)):
                    entry[key] = rec[key]
            rows.append(entry)
    if not rows:
        return {}
    counts: dict[str, set[str]] = {}
    for r in rows:
        counts.setdefault(r["device"], set()).add(r["model"])
    main = max(counts, key=lambda d: len(counts[d]))
    out: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["latency_ms"]):
        name = r.pop("model")
        slot = out.setdefault(name, {"all": []})
        slot["all"].append(dict(r))
        if r["device"] == main and "latency_ms" not in slot:
            slot.update(r)
    return {k: v for k, v in out.items() if "latency_ms" in v}


def load_lab(results: Path | None) -> list[dict[str, Any]]:
    """The history lab's claims (results/lab/*.json, as `visionzoo lab run` writes them).

    [{"id", "title", "verdict", "models", "summary", "rule", "quote", "budget", "dataset",
    "has_plot"}]; `id` is the file's stem, and the only way the page refers to a claim.
    """
    folder = results / "lab" if results else None
    if folder is None or not folder.is_dir():
        return []
    claims = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = _read_json(path)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            continue
        verdict = data.get("verdict")
        text = {k: str(data.get(k) or "") for k in ("summary", "rule", "quote", "budget")}
        claims.append(
            _finite(
                {
                    "id": path.stem,
                    "title": str(data.get("title") or data.get("claim") or path.stem),
                    "verdict": verdict if isinstance(verdict, (str, dict)) else str(verdict),
                    "models": [str(m) for m in data["models"]],
                    **text,
                    "dataset": str(data.get("dataset") or ""),
                    "has_plot": (folder / f"{path.stem}.png").is_file(),
                }
            )
        )
    return claims


def lab_plot(results: Path | None, claim_id: str) -> Path:
    """The PNG of a claim listed by `load_lab` (looked up by id, never by a path)."""
    for claim in load_lab(results):
        if claim["id"] == claim_id and claim["has_plot"]:
            assert results is not None
            return results / "lab" / f"{claim['id']}.png"
    raise NotFound(f"no plot for claim {claim_id!r}")


def load_reported_safe() -> tuple[dict[str, dict[str, Any]], str]:
    """(reported ImageNet numbers, "" or why they are missing)."""
    try:
        return dict(_optional("visionzoo.bench.reported", "load_reported")()), ""
    except NotAvailable as err:
        return {}, str(err)
    except Exception as err:  # noqa: BLE001 - a broken data file must not take the page down
        return {}, f"reported numbers could not be read: {type(err).__name__}: {err}"


# --- runs -----------------------------------------------------------------------------------


def _slug(rel: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", rel).strip("-") or "run"


def _scan_runs(root: Path) -> list[Path]:
    try:
        find_runs = _optional("visionzoo.runs", "find_runs")
        return [Path(p) for p in find_runs(root)][:MAX_RUNS]
    except NotAvailable:
        paths = sorted(p.parent for p in root.rglob("config.json"))
        return [p for p in paths if (p / "model.safetensors").is_file()][:MAX_RUNS]


def _recipe_name(recipe: Any) -> str | None:
    """A run's recipe in one line: its name, or the optimizer, epochs and lr of a full one."""
    if recipe is None or isinstance(recipe, str):
        return recipe
    if isinstance(recipe, dict):
        if isinstance(recipe.get("name"), str):
            return recipe["name"]
        keys = ("optimizer", "epochs", "lr", "batch_size")
        return ", ".join(f"{k} {recipe[k]}" for k in keys if k in recipe) or "custom"
    return str(recipe)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    file = path / "metrics.jsonl"
    if not file.is_file() or file.stat().st_size > MAX_JSON_BYTES:
        return []
    rows = []
    for line in file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(_finite(row))
    return rows


class Explorer:
    """The explorer's data, with caches; safe to share between request threads."""

    def __init__(self, runs_root: Path | str | None = None, results_root: Path | str | None = None):
        self.runs_root = Path(runs_root).resolve() if runs_root else None
        self.results_root = Path(results_root).resolve() if results_root else None
        self._lock = threading.Lock()  # one model runs at a time (CPU)
        self._index_lock = threading.Lock()  # the runs index; never held while a model runs
        self._profiles: dict[str, dict[str, Any]] = {}
        self._diagrams: dict[str, dict[str, Any]] = {}
        self._runs: dict[str, dict[str, Any]] | None = None
        self._loaded: OrderedDict[str, Any] = OrderedDict()

    # models ---------------------------------------------------------------------------------

    def info(self, name: str) -> ModelInfo:
        try:
            return get_model_info(name)
        except UnknownModelError as err:
            raise NotFound(str(err)) from None

    def overview(self) -> dict[str, Any]:
        """One row per model in year order, and what the page can plot."""
        reported, reported_missing = load_reported_safe()
        bench = load_bench(self.results_root)
        runs = self.runs(refresh=True)
        lab = load_lab(self.results_root)
        rows = []
        for name in list_models():
            info = get_model_info(name)
            row: dict[str, Any] = {
                "name": name,
                "family": info.family,
                "year": info.year,
                "paper": info.paper,
                "reference_params": info.reference_params,
                "image_size": info.image_size,
            }
            rep = reported.get(name)
            if rep:
                keep = ("top1", "top5", "dataset", "params", "gmacs", "metrics_source", "source")
                row["reported"] = _finite({k: rep.get(k) for k in keep if k in rep})
            if name in bench:
                row["bench"] = bench[name]
            mine = [r for r in runs if r["model"] == name and r.get("test_acc") is not None]
            if mine:
                best = max(mine, key=lambda r: r["test_acc"])
                row["run_acc"] = {k: best.get(k) for k in ("test_acc", "dataset", "id")}
            if name in self._profiles:
                row["profile"] = _summary(self._profiles[name])
            row["claims"] = [c["id"] for c in lab if name in c["models"]]
            rows.append(row)
        rows.sort(key=lambda r: (r["year"], r["family"], r["name"]))
        return {
            "models": rows,
            "families": sorted({r["family"] for r in rows}),
            "reported_missing": reported_missing,
            "lab": lab,
        }

    def card(self, name: str) -> dict[str, Any]:
        """The model card without the slow parts (profile, diagram, source have endpoints)."""
        info = self.info(name)
        reported, _ = load_reported_safe()
        bench = load_bench(self.results_root)
        card = info_dict(info)
        card["reported"] = _finite(dict(reported[name])) if name in reported else None
        card["bench"] = bench.get(name)
        card["runs"] = [r for r in self.runs() if r["model"] == name]
        card["claims"] = [c for c in load_lab(self.results_root) if name in c["models"]]
        if name in self._profiles:
            card["profile"] = self._profiles[name]
        return card

    def profile(self, name: str) -> dict[str, Any]:
        self.info(name)
        if name not in self._profiles:
            profile_model = _optional("visionzoo.bench.profile", "profile_model")
            try:
                with self._lock:  # not under no_grad: depth is read from the autograd graph
                    result = profile_model(name)
            except Exception as err:  # noqa: BLE001 - reported to the page, not raised
                raise Failed(f"profiling {name} failed: {type(err).__name__}: {err}") from None
            self._profiles[name] = _finite(dict(result))
        return self._profiles[name]

    def diagram(self, name: str) -> dict[str, Any]:
        info = self.info(name)
        if name not in self._diagrams:
            from visionzoo.explorer.diagram import model_diagram
            from visionzoo.registry import create_model

            size = info.image_size
            err: Exception | None = None
            # Shapes are all a diagram needs: on the meta device nothing is computed or
            # allocated (VGG-19 in 0.3 s instead of three real forward passes); code that
            # the meta device cannot run is drawn from a real CPU pass instead.
            for device in ("meta", "cpu"):
                try:
                    with self._lock, torch.no_grad(), torch.device(device):
                        model = create_model(name).eval()
                        x = torch.randn(1, info.in_channels, size, size)
                        drawn = model_diagram(model, x)
                    self._diagrams[name] = {**drawn, "image_size": size, "device": device}
                    break
                except Exception as e:  # noqa: BLE001 - reported to the page, not raised
                    err = e
            else:
                assert err is not None
                raise Failed(f"drawing {name} failed: {type(err).__name__}: {err}")
        return self._diagrams[name]

    def source(self, name: str) -> dict[str, Any]:
        """The family's source file, found through the registry's module name."""
        info = self.info(name)
        module = importlib.import_module(info.module)
        text = inspect.getsource(module)
        return {"name": name, "module": info.module, "lines": text.count("\n"), "source": text}

    # runs -----------------------------------------------------------------------------------

    def _index(self) -> dict[str, dict[str, Any]]:
        if self._runs is None:
            self.refresh_runs()
        assert self._runs is not None
        return self._runs

    def refresh_runs(self) -> None:
        index: dict[str, dict[str, Any]] = {}
        root = self.runs_root
        if root is not None and root.is_dir():
            for path in _scan_runs(root):
                try:
                    summary = self._summarise_run(root, path)
                except Exception:  # noqa: BLE001 - a folder we cannot read is not a run to list
                    continue
                base = summary["id"]
                n = 2
                while summary["id"] in index:
                    summary["id"] = f"{base}-{n}"
                    n += 1
                index[summary["id"]] = summary
        with self._index_lock:
            old = self._runs or {}
            for run_id in list(self._loaded):  # keep a loaded run only if its id still means it
                if (
                    run_id not in index
                    or old.get(run_id, {}).get("_path") != index[run_id]["_path"]
                ):
                    del self._loaded[run_id]
            self._runs = index

    def _summarise_run(self, root: Path, path: Path) -> dict[str, Any]:
        path = path.resolve()
        rel = path.relative_to(root).as_posix() if path != root else path.name
        config = _read_json(path / "config.json")
        if not isinstance(config, dict) or not isinstance(config.get("model"), str):
            raise ValueError("config.json names no model")
        metrics = _read_metrics(path)
        final = config.get("final_metrics") or {}
        test_acc = final.get("test_acc") if isinstance(final, dict) else None
        if test_acc is None and metrics:
            test_acc = metrics[-1].get("test_acc")
        if not isinstance(test_acc, (int, float)) or isinstance(test_acc, bool):
            test_acc = None
        pre = config.get("preprocess") if isinstance(config.get("preprocess"), dict) else {}
        return {
            "id": _slug(rel),
            "name": rel,
            "model": config["model"],
            "dataset": config.get("dataset"),
            "recipe": _recipe_name(config.get("recipe")),
            "status": config.get("status"),
            "epochs": len(metrics),
            "test_acc": test_acc,
            "class_names": list(config.get("class_names") or []),
            "image_size": pre.get("image_size"),
            "in_channels": pre.get("in_channels"),
            "_path": str(path),
        }

    def runs(self, refresh: bool = False) -> list[dict[str, Any]]:
        if refresh:
            self.refresh_runs()
        return [_public(r) for r in self._index().values()]

    def run(self, run_id: str) -> dict[str, Any]:
        summary = self._run_summary(run_id)
        path = Path(summary["_path"])
        config = _finite(_read_json(path / "config.json"))
        return {**_public(summary), "config": config, "metrics": _read_metrics(path)}

    def _run_summary(self, run_id: str) -> dict[str, Any]:
        index = self._index()
        if run_id not in index:
            raise NotFound(f"unknown run {run_id!r}; see /api/runs for the ids")
        return index[run_id]

    def load(self, run_id: str) -> Any:
        """The trained run (weights via safetensors), kept in a small cache."""
        summary = self._run_summary(run_id)
        with self._index_lock:
            if run_id in self._loaded:
                self._loaded.move_to_end(run_id)
                return self._loaded[run_id]
        load_run = _optional("visionzoo.runs", "load_run")
        try:
            run = load_run(Path(summary["_path"]))
        except Exception as err:  # noqa: BLE001 - a broken run folder, said in one line
            raise BadRun(f"run {run_id!r} cannot be loaded: {err}") from None
        with self._index_lock:
            self._loaded[run_id] = run
            while len(self._loaded) > LOADED_RUNS:
                self._loaded.popitem(last=False)
        return run

    def analyse(self, run_id: str, image: Any) -> dict[str, Any]:
        """Predictions, feature maps and Grad-CAM/attention of one uint8 (C, H, W) image."""
        from visionzoo.explorer.insight import analyse

        run = self.load(run_id)
        with self._lock:
            return analyse(run, image)


def _public(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def _summary(profile: dict[str, Any]) -> dict[str, Any]:
    keys = ("params", "flops", "macs", "depth", "weighted_layers", "activation_bytes", "image_size")
    return {k: profile.get(k) for k in keys}
