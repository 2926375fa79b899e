"""Where dataset files are found, and how they are downloaded for users who are online.

Lookup order: `--data-dir`, `$VISIONZOO_DATA`, `~/.cache/visionzoo`, then system folders
(Debian's `dataset-fashion-mnist` puts the official files in /usr/share/datasets). Each
folder is searched as `<dir>/<dataset>/` and `<dir>/` itself. Downloads go to the first
writable folder, are checked against the published MD5 and renamed into place only then.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from visionzoo.data.catalogue import DatasetSpec, RemoteFile
from visionzoo.data.idx import DatasetError
from visionzoo.utils import atomic_write_bytes


def search_dirs(spec: DatasetSpec, data_dir: str | Path | None = None) -> list[Path]:
    roots: list[Path] = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("VISIONZOO_DATA"):
        roots.append(Path(os.environ["VISIONZOO_DATA"]).expanduser())
    roots.append(default_cache())
    dirs = [d for r in roots for d in (r / spec.name, r)]
    dirs += [Path(d) for d in spec.system_dirs]
    return list(dict.fromkeys(dirs))


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "visionzoo"


def find_file(name: str, dirs: Iterable[Path], spec: DatasetSpec | None = None) -> Path | None:
    """The first existing copy of `name` (also accepted without its .gz suffix). With `spec`,
    a folder holding another catalogued dataset's published file under one of `spec`'s file
    names (MNIST and Fashion-MNIST share every name) is passed over, so one dataset's files
    never stand in for the other's, nor mix with them."""
    candidates = [name, name.removesuffix(".gz")] if name.endswith(".gz") else [name]
    for d in dirs:
        for c in candidates:
            if (d / c).is_file() and not (spec and foreign_file(d, spec)):
                return d / c
    return None


def foreign_file(folder: Path, spec: DatasetSpec) -> Path | None:
    """A file in `folder` named as one of `spec`'s that is another dataset's published file."""
    names = {f.name for files in spec.files.values() for f in files}
    paths = [folder / c for n in names for c in (n, n.removesuffix(".gz"))]
    return next((p for p in paths if p.is_file() and other_dataset(p, spec)), None)


def other_dataset(path: Path, spec: DatasetSpec) -> str | None:
    """The name of another catalogued dataset whose published file `path` is."""
    from visionzoo.data.catalogue import CATALOGUE

    stem = path.name.removesuffix(".gz")
    return next(
        (
            other.name
            for other in CATALOGUE.values()
            if other.name != spec.name
            for files in other.files.values()
            for f in files
            if f.name.removesuffix(".gz") == stem and is_official(path, f)
        ),
        None,
    )


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def is_official(path: Path, remote: RemoteFile) -> bool:
    """True when the file is the published one, compressed or not (repackaged copies too)."""
    stat = path.stat()
    raw, payload = _digests(path, stat.st_size, stat.st_mtime_ns)
    return raw == remote.md5 or (remote.payload_md5 is not None and payload == remote.payload_md5)


@functools.lru_cache(maxsize=64)
def _digests(path: Path, size: int, mtime_ns: int) -> tuple[str, str | None]:
    """MD5 of the file and of its content (decompressed when gzip), cached per file version."""
    raw = path.read_bytes()
    try:
        payload = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError):
        return md5_of(raw), None
    return md5_of(raw), md5_of(payload)


def download(spec: DatasetSpec, dest: Path, files: Iterable[RemoteFile]) -> list[Path]:
    """Fetch files from the spec's mirrors into `dest`, checking each MD5 before keeping it."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for remote in files:
        target = dest / remote.name
        if target.is_file() and is_official(target, remote):
            out.append(target)
            continue
        errors = []
        for mirror in spec.mirrors:
            url = mirror + remote.name
            try:
                data = fetch(url)
            except OSError as err:
                errors.append(f"{url}: {err}")
                continue
            if md5_of(data) != remote.md5:
                errors.append(f"{url}: MD5 {md5_of(data)} != published {remote.md5}")
                continue
            atomic_write_bytes(target, data)
            out.append(target)
            break
        else:
            raise DatasetError(f"could not download {remote.name}: " + "; ".join(errors))
    return out


def fetch(url: str, timeout: float = 60.0) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "visionzoo"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s)/file
        return response.read()


def how_to_get(spec: DatasetSpec, dirs: list[Path]) -> str:
    where = ", ".join(str(d) for d in dirs[:3])
    hint = f"looked in {where} and {len(dirs) - 3} more" if len(dirs) > 3 else f"looked in {where}"
    if spec.name == "fashion-mnist":
        how = (
            "on Debian: apt-get install dataset-fashion-mnist; "
            "or: visionzoo data fashion-mnist --download"
        )
    else:
        how = f"visionzoo data {spec.name} --download (needs the network), or --data-dir DIR"
    wrong = next((p for p in (foreign_file(d, spec) for d in dirs) if p), None)
    if wrong is not None:
        hint += f"; {wrong} is {other_dataset(wrong, spec)}'s file of that name, not {spec.name}'s"
    return f"{spec.name} files not found ({hint}); {how}"
