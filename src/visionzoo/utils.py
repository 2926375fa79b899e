"""The helpers every part of the package shares: crash-safe writes, the git state, the machine.

Key idea: a file is written whole or not at all (temporary file beside it, fsync, rename), and
every result records where it was made (commit, dirty tree, CPU, GPU) the same way. Each has
one home here; runs, checkpoints, datasets, benchmarks and the lab all call it.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

__all__ = [
    "GitState",
    "append_jsonl",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "cpu_flags",
    "cpu_model",
    "git_state",
    "gpu_model",
    "jsonable",
]


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(f)` into a temporary file beside `path`, fsync, then rename over `path`.

    A full disk surfaces as OSError(ENOSPC) even when the writer hides it (torch.save turns
    a failed write into "enforce fail at inline_container.cc ... unexpected pos").
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            sink = _Sink(f)
            try:
                write(sink)  # type: ignore[arg-type]  # a binary file, as torch.save wants
            except Exception:
                if sink.error is not None:
                    raise sink.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Sink(io.RawIOBase):
    """A binary file that remembers the OSError its last write raised."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=jsonable) + "\n")


def jsonable(obj: Any) -> Any:
    """`json.dumps(default=...)`: paths, torch devices and dtypes as text, tuples as lists."""
    if isinstance(obj, Path) or type(obj).__module__ == "torch":
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One line at the end of `path`; a failed write (a full disk) leaves no partial line."""
    line = (json.dumps(record, default=jsonable) + "\n").encode("utf-8")
    with open(path, "ab") as f:
        size = f.tell()
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        except OSError:
            f.truncate(size)
            raise


class GitState(NamedTuple):
    """The checkout a result came from (None where git or the repository is missing)."""

    commit: str | None
    dirty: bool | None  # tracked files changed since `commit`


def git_state(cwd: Path | None = None) -> GitState:
    """HEAD and whether tracked files differ from it, for the repository holding `cwd`
    (default: this package's folder)."""
    folder = cwd or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=10, cwd=folder
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD") or None
    if commit is None:
        return GitState(None, None)
    status = git("status", "--porcelain", "--untracked-files=no")
    return GitState(commit, bool(status) if status is not None else None)


def _cpuinfo(key: str) -> str | None:
    """The first `key` line of /proc/cpuinfo (Linux), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's name ("AMD EPYC 9654 96-Core Processor"), else what platform knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags (/proc/cpuinfo; empty elsewhere)."""
    return set((_cpuinfo("flags") or "").split())


def gpu_model() -> str | None:
    """The first CUDA device's name, or None without one."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
