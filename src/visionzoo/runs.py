"""Run directories: what a training run leaves behind, and how it is read back.

    RUN_DIR/
      model.safetensors   the weights (the EMA weights when the run kept an average)
      config.json         model name and kwargs, class names, preprocessing, the full
                          recipe, seed, versions, git commit, final metrics, status
      metrics.jsonl       one JSON object per epoch
      checkpoint.pt       training state for --resume (tensors and numbers only; loaded
                          with weights_only=True)

Everything is written atomically (temporary file, then rename). Nothing here unpickles a
file a user handed us: weights are safetensors, the rest JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionzoo.errors import UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    model: nn.Module
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return list(self.config.get("class_names", []))

    @property
    def name(self) -> str:
        return self.path.name


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_weights(path: Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """The model's state dict as safetensors, atomically (shared tensors are copied)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=_jsonable) + "\n")
        f.flush()
        os.fsync(f.fileno())


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG).is_file() or (path / WEIGHTS).is_file()


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to write over an existing run unless asked to."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and is_run_dir(out) and not overwrite:
        raise UserError(
            f"{out} already holds a run; pass --overwrite to replace it, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in (METRICS, CHECKPOINT):
            (out / name).unlink(missing_ok=True)


def read_config(path: Path) -> dict[str, Any]:
    file = path / CONFIG
    if not path.is_dir():
        raise UserError(f"{path} is not a run folder")
    if not file.is_file():
        raise UserError(f"{path} holds no {CONFIG}: not a visionzoo run")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{file} is not valid JSON ({err})") from None
    if not isinstance(config, dict) or "model" not in config:
        raise UserError(f"{file} does not name a model")
    return config


def read_metrics(path: Path) -> list[dict[str, Any]]:
    file = path / METRICS
    if not file.is_file():
        return []
    out = []
    for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interrupted write
        if isinstance(record, dict):
            out.append(record)
    return out


def build_model_from_config(config: dict[str, Any]) -> nn.Module:
    from visionzoo.registry import create_model

    kwargs = dict(config.get("model_kwargs", {}))
    return create_model(config["model"], **kwargs)


def load_run(path: str | Path, weights: str = WEIGHTS) -> Run:
    """Rebuild a run's model from its config and load its weights (safetensors only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from visionzoo.convert import WeightMismatchError, check_state_dict

    path = Path(path)
    config = read_config(path)
    file = path / weights
    if not file.is_file():
        raise UserError(f"{path} holds no {weights}: the run has no saved weights (yet)")
    try:
        model = build_model_from_config(config)
    except (TypeError, ValueError, KeyError) as err:
        raise UserError(f"{path / CONFIG}: cannot build {config['model']!r}: {err}") from None
    try:
        state = load_file(file)
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{file} is not a readable safetensors file ({err})") from None
    try:
        check_state_dict(model, state, what=str(file))
    except WeightMismatchError as err:
        raise UserError(f"weights do not match the run's config: {err}") from None
    model.load_state_dict(state)
    model.eval()
    return Run(path=path, config=config, model=model, metrics=read_metrics(path))


def save_run(
    out_dir: str | Path,
    model: nn.Module,
    config: dict[str, Any],
    metrics: Iterable[dict[str, Any]] = (),
) -> Path:
    """Write a complete run folder (weights, config, metrics): used by the engine and tests."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config.setdefault("model", getattr(model, "model_name", None))
    config.setdefault("model_kwargs", getattr(model, "model_kwargs", {}))
    save_weights(out / WEIGHTS, model)
    atomic_write_json(out / CONFIG, config)
    metrics = list(metrics)
    if metrics:
        atomic_write_text(out / METRICS, "".join(json.dumps(m) + "\n" for m in metrics))
    return out


def find_runs(root: str | Path, max_depth: int = 3) -> list[Path]:
    """Run folders under `root` (those with config.json and model.safetensors), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        if CONFIG in filenames and WEIGHTS in filenames:
            found.append(Path(dirpath))
        if depth >= max_depth:
            dirnames.clear()
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return sorted(found, key=lambda p: (p / CONFIG).stat().st_mtime, reverse=True)
