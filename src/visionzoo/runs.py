"""Run directories: what a training run leaves behind, and how it is read back.

    RUN_DIR/
      model.safetensors   the weights (the EMA weights when the run kept an average)
      config.json         model name and kwargs, class names, preprocessing, the full
                          recipe, seed, versions, git commit, final metrics, status
      metrics.jsonl       one JSON object per epoch
      checkpoint.pt       training state for --resume (tensors and numbers only; loaded
                          with weights_only=True)

Everything is written atomically (temporary file, fsync, rename). Nothing here unpickles a
file a user handed us: weights are safetensors, the rest JSON.

A run folder is written by one process at a time (`RunWriter`): a lock file beside it,
`.NAME.lock`, holds the writer's PID and host. A new run, or one that replaces another
(`--overwrite`), is built in a sibling staging folder `.NAME.staging-PID` and swapped in
once its first checkpoint is complete, so the old run stays whole until then. A full disk
is one line naming the device, and leaves the last good state in place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from visionzoo.errors import UserError
from visionzoo.utils import atomic_write_bytes, atomic_write_json, atomic_write_text

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


def save_weights(path: Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """The model's state dict as safetensors, atomically (shared tensors are copied)."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    data = save(state, metadata=metadata)
    atomic_write_bytes(path, data)


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG).is_file() or (path / WEIGHTS).is_file()


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
    from visionzoo.models.migrate import migrate_state_dict

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
        state = migrate_state_dict(model, load_file(file))
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
    config.setdefault("model_kwargs", dict(getattr(model, "model_kwargs", {})))
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


# ---------------------------------------------------------------------------------------
# Writing a run folder: one writer, a staging folder, a full disk as one line

RUN_FILES = (CONFIG, WEIGHTS, METRICS, CHECKPOINT)


class RunWriter:
    """The one process writing the run folder `out`, for as long as the `with` block lasts.

    `path` is where files go now: the staging folder until `commit()` swaps it in (a new or
    overwritten run), or `out` itself (a resumed run, whose files are each replaced
    atomically). Leaving the block uncommitted removes the staging folder, so the old run,
    if any, is as it was. `enabled=False` (other ranks under torchrun) does nothing.
    """

    def __init__(
        self,
        out: Path,
        overwrite: bool = False,
        resume: bool = False,
        enabled: bool = True,
        note: Callable[[str], None] | None = None,
    ):
        self.out, self.resume, self.enabled = out, resume, enabled
        self.note = note or (lambda msg: print(f"visionzoo: note: {msg}", file=sys.stderr))
        self.started = resume or not enabled  # is `path` the run folder itself?
        self.checkpointed = False  # has this session saved a checkpoint?
        self.existed = resume or _holds_run(out)
        if enabled and not resume:
            _check_target(out, overwrite)
        self.lock = RunLock(_sibling(out, "lock"), out)
        self.staging = _sibling(out, f"staging-{os.getpid()}")
        self.path = out if self.started else self.staging

    def __enter__(self) -> RunWriter:
        if not self.enabled:
            return self
        with self.saving():
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.lock.acquire(self.note)
        try:
            self._recover()
            if not self.started:
                with self.saving():
                    self.staging.mkdir()
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        if not self.started:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.lock.release()

    def checkpoint(self, save: Callable[[Path], None], config: dict[str, Any]) -> None:
        """`save(folder)` a checkpoint; the first one also writes `config` and commits."""
        if not self.enabled:
            return
        with self.saving():
            save(self.path)
            if not self.checkpointed:
                atomic_write_json(self.path / CONFIG, config)
                self.commit()
                self.checkpointed = True

    def commit(self) -> None:
        """Make `path` the run: swap the staging folder in (the old run goes) once."""
        if self.started:
            return
        aside = _sibling(self.out, f"old-{os.getpid()}")
        if self.out.exists():
            os.rename(self.out, aside)
        os.rename(self.staging, self.out)
        self.started, self.path = True, self.out
        shutil.rmtree(aside, ignore_errors=True)

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """A full disk (or quota) while writing becomes one line saying what survived."""
        try:
            yield
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            message = f"no space left on {device_of(self.out)}: {self.survivor()}"
            if self.checkpointed:
                message += f"; free some space and resume with `{self.resume_command}`"
            self.record_stop("interrupted", message)
            raise UserError(message) from None

    @property
    def resume_command(self) -> str:
        return f"visionzoo train --resume {self.out}"

    def survivor(self) -> str:
        """What a user finds in `out` if the run stops now."""
        if self.checkpointed:
            return f"the run in {self.out} keeps its last checkpoint"
        if self.existed:
            return f"the run in {self.out} is unchanged"
        return f"nothing was written to {self.out}"

    def interrupted(self) -> str:
        """Record a Ctrl-C in the run's config; returns the line to show."""
        if self.checkpointed or self.resume:
            message = f"interrupted: resume with `{self.resume_command}`"
        else:
            message = f"interrupted before the first checkpoint: {self.survivor()}"
        self.record_stop("interrupted", message)
        return message

    def record_stop(self, status: str, hint: str) -> None:
        """Say in config.json why training stopped, if this session wrote the run (best effort:
        on a full disk the config stays as the last checkpoint left it)."""
        if not (self.enabled and self.checkpointed):
            return
        try:
            config = read_config(self.path)
            atomic_write_json(self.path / CONFIG, {**config, "status": status, "hint": hint})
        except (OSError, UserError):
            pass

    def _recover(self) -> None:
        """Tidy what a killed writer left: its staging folder, or a run moved aside mid-swap."""
        for leftover in self.out.parent.glob(f".{self.out.name}.staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for aside in self.out.parent.glob(f".{self.out.name}.old-*"):
            if self.out.exists():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.rename(aside, self.out)
                self.existed = True
                self.note(f"restored the run in {self.out} that an interrupted swap had moved")


def _sibling(out: Path, suffix: str) -> Path:
    return out.parent / f".{out.name}.{suffix}"


def _holds_run(out: Path) -> bool:
    return out.is_dir() and any((out / name).exists() for name in RUN_FILES)


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuse a target that is not a folder, holds a run (without --overwrite), or other files."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if _holds_run(out):
        if not overwrite:
            raise UserError(
                f"{out} already holds a run; pass --overwrite to replace it, "
                "or choose another --out"
            )
    elif out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} holds other files, not a run: choose a new or empty folder")


def device_of(path: Path) -> str:
    """The file system holding `path`, as "DEVICE (MOUNT POINT)" where /proc/mounts says."""
    mount = path.resolve()
    while not mount.exists():
        mount = mount.parent
    while not os.path.ismount(mount):
        mount = mount.parent
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            source, point = line.split()[:2]
            if point == str(mount):
                return f"{source} ({mount})"
    except OSError:
        pass
    return str(mount)


class RunLock:
    """An exclusive lock on a run folder: a file holding the writer's PID and host.

    The file is flock()ed while held, so a lock whose writer died (kill -9, a crash) is free
    again at once: taking it over says whose it was. A lock held elsewhere refuses the
    second writer with one line naming the holder.
    """

    def __init__(self, path: Path, run: Path):
        self.path, self.run = path, run
        self.fd: int | None = None

    def acquire(self, note: Callable[[str], None]) -> None:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_lock(fd)
                os.close(fd)
                raise UserError(
                    f"{self.run} is being written by {_holder(holder)}: wait for it to finish, "
                    "or choose another --out"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the previous holder removed the file as we opened it: again
        self.fd = fd
        previous = _read_lock(fd)
        if previous.get("pid") is not None:
            note(f"took over the lock on {self.run} from {_holder(previous)}, no longer running")
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError:  # a full disk: the lock still holds, but leave no empty file behind
            self.release()
            raise

    def release(self) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)
        self.path.unlink(missing_ok=True)  # before closing: a waiter then sees a new file
        os.close(self.fd)
        self.fd = None


def _read_lock(fd: int) -> dict[str, Any]:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _holder(record: dict[str, Any]) -> str:
    if record.get("pid") is None:
        return "another process"
    host, since = record.get("host", "?"), record.get("since", "?")
    return f"process {record['pid']} on {host} (since {since})"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
