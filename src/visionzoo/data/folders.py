"""Photo folders at scale: decode once at training size into a uint8 memory-mapped cache.

A folder holds one sub-folder per class (or `train/` and `test/`/`val/`, each so). Every
file is decoded through `visionzoo.data.decode` at the training side, so a 4000x3000 photo
costs 3x64x64 bytes at `--image-size 64`. The decoded pixels go into one (N, C, S, S) uint8
file under the cache folder (`$VISIONZOO_CACHE`, else `~/.cache/visionzoo/folders`), named
by a hash of the folder's listing (paths, sizes, modification times) and the decode rule;
a second run maps that file and starts at once, and any change to the folder gives a new
key. Files that cannot be decoded are skipped with one warning that counts and names them;
`strict` makes the first of them fatal.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from visionzoo.data.decode import (
    IMAGE_SUFFIXES,
    DecodeRule,
    ImageDecodeError,
    check_fit,
    decode,
    header_info,
    parse_background,
)
from visionzoo.data.idx import DatasetError
from visionzoo.data.sources import default_cache
from visionzoo.utils import atomic_write_text

CACHE_VERSION = 1  # bump when decode.py changes the pixels it produces
AUTO_MAX_SIDE = 224  # without --image-size: the most common shorter side, at most this
PARALLEL_FROM = 64  # folders at least this big are decoded by a pool of processes


@dataclass(frozen=True)
class FolderOptions:
    image_size: int | None = None  # stored side; None: most common shorter side (<= 224)
    channels: int | None = None  # None: 1 when every image is grayscale, else 3
    fit: str = "crop"  # "crop" or "letterbox" (see visionzoo.data.decode)
    background: tuple[int, int, int] = (0, 0, 0)  # behind transparency and letterbox bars
    strict: bool = False  # an undecodable file is fatal instead of skipped
    cache_dir: str | None = None  # None: $VISIONZOO_CACHE, else ~/.cache/visionzoo/folders
    workers: int | None = None  # decoding processes (None: one per core, at most 8)

    @classmethod
    def from_config(cls, cfg) -> FolderOptions:
        """The options a TrainConfig asks for (fields it lacks keep their defaults)."""
        return cls(
            image_size=getattr(cfg, "image_size", None),
            fit=check_fit(getattr(cfg, "image_fit", "crop")),
            background=parse_background(getattr(cfg, "background", None)),
            strict=bool(getattr(cfg, "strict", False)),
        )

    @classmethod
    def from_preprocess(cls, pre) -> FolderOptions:
        """The options that reproduce a run's training images (for eval on its folder)."""
        return cls(
            image_size=pre.data_size, channels=pre.in_channels, fit=pre.fit,
            background=tuple(pre.background),
        )  # fmt: skip


@dataclass
class FolderListing:
    root: Path
    classes: tuple[str, ...]
    files: list[str]  # paths under root; train files first when the folder is pre-split
    labels: list[int]
    n_train: int | None = None  # pre-split folders: the first n_train files are `train/`

    def key(self, rule_text: str) -> str:
        """A hash of every path, size and mtime, and of the decode rule."""
        h = hashlib.sha256(f"{CACHE_VERSION}|{rule_text}|{self.n_train}".encode())
        for f, label in zip(self.files, self.labels):
            st = os.stat(f)
            h.update(f"{self.relative(f)}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
        return h.hexdigest()[:24]

    def __post_init__(self) -> None:
        self._prefix = os.path.join(self.root, "")

    def relative(self, f: str) -> str:
        p = self._prefix
        return f[len(p) :] if f.startswith(p) else os.path.relpath(f, self.root)


@dataclass
class DecodedFolder:
    """The pixels of every readable file of a folder, and what was skipped."""

    images: np.ndarray  # (N, C, S, S) uint8, memory-mapped when cached
    labels: np.ndarray  # (N,) int64
    is_train: np.ndarray  # (N,) bool: from `train/` (pre-split folders only)
    classes: tuple[str, ...]
    rule: DecodeRule
    pre_split: bool
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    cache_file: Path | None = None


def list_folder(root: Path, split: bool = True) -> FolderListing:
    """Class folders of `root` (or of `root/train` with `root/test` or `root/val`, when
    `split`)."""
    if not root.is_dir():
        raise DatasetError(f"imagefolder: {root} is not a folder")
    test = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    pre_split = split and (root / "train").is_dir() and test is not None
    base = root / "train" if pre_split else root
    classes = tuple(
        sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    )
    if len(classes) < 2:
        raise DatasetError(
            f"imagefolder: {base} needs at least two class folders, found {len(classes)}"
        )
    files, labels = [], []
    for folder in [root / "train", test] if pre_split and test is not None else [root]:
        for label, c in enumerate(classes):
            found = _images_under(folder / c)
            files += found
            labels += [label] * len(found)
        if pre_split and folder == root / "train":
            n_train = len(files)
    if not files:
        raise DatasetError(
            f"imagefolder: no images under {root} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return FolderListing(root, classes, files, labels, n_train if pre_split else None)


def _images_under(folder: Path) -> list[str]:
    """Image files under `folder` (recursively, hidden names skipped), in a stable order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            os.path.join(dirpath, name) for name in filenames
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and not name.startswith(".")
        ]  # fmt: skip
    return sorted(found)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("VISIONZOO_CACHE"):
        return Path(os.environ["VISIONZOO_CACHE"]).expanduser()
    return default_cache() / "folders"


def decode_folder(root: str | Path, options: FolderOptions = FolderOptions()) -> DecodedFolder:
    """Every image of a class-folder tree at training size, from the cache when it is there."""
    root = Path(root).expanduser().resolve()
    listing = list_folder(root)
    rule_text = json.dumps(
        [options.image_size, options.channels, check_fit(options.fit), list(options.background)]
    )
    key = listing.key(rule_text)
    cache = cache_root(options.cache_dir)
    stem = f"{hashlib.sha256(str(root).encode()).hexdigest()[:12]}-{key}"
    decoded = _read_cache(cache, stem, listing)
    if decoded is None:
        decoded = _build(listing, options, cache, stem)
    if decoded.skipped and options.strict:
        raise _strict_error(decoded.skipped, root)
    return decoded


def _strict_error(skipped: list[tuple[str, str]], root: Path) -> DatasetError:
    path, reason = skipped[0]
    return DatasetError(
        f"{len(skipped)} unreadable image(s) under {root} (--strict): first {path}: {reason}"
    )


def warn_skipped(decoded: DecodedFolder, root: Path, shown: int = 5) -> None:
    if not decoded.skipped:
        return
    names = "; ".join(f"{p}: {r}" for p, r in decoded.skipped[:shown])
    more = f" and {len(decoded.skipped) - shown} more" if len(decoded.skipped) > shown else ""
    print(
        f"visionzoo: warning: skipped {len(decoded.skipped)} unreadable image(s) under {root}: "
        f"{names}{more} (--strict makes this an error)",
        file=sys.stderr,
    )


def _read_cache(cache: Path, stem: str, listing: FolderListing) -> DecodedFolder | None:
    meta_file, data_file = cache / f"{stem}.json", cache / f"{stem}.u8"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        shape = tuple(meta["shape"])
        if data_file.stat().st_size != int(np.prod(shape)):
            return None
        images = np.memmap(data_file, dtype=np.uint8, mode="c", shape=shape)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    rule = DecodeRule(meta["side"], meta["channels"], meta["fit"], tuple(meta["background"]))
    return DecodedFolder(
        images, np.asarray(meta["labels"], np.int64), np.asarray(meta["is_train"], bool),
        listing.classes, rule, listing.n_train is not None,
        [tuple(s) for s in meta["skipped"]], data_file,
    )  # fmt: skip


def _scan_headers(listing: FolderListing, options: FolderOptions):
    """Headers only: the readable files, the decode rule they call for, what was skipped."""
    skipped: list[tuple[str, str]] = []
    ok, sizes, grays = [], [], []
    for i, f in enumerate(listing.files):
        try:
            size, gray = header_info(f)
        except ImageDecodeError as err:
            skipped.append(_skip(listing, f, err))
            if options.strict:
                raise _strict_error(skipped, listing.root) from None
            continue
        ok.append(i)
        sizes.append(min(size))
        grays.append(gray)
    if not ok:
        raise DatasetError(
            f"imagefolder: none of the {len(listing.files)} files under {listing.root} "
            f"is a readable image (first: {skipped[0][0]}: {skipped[0][1]})"
        )
    side = options.image_size or min(AUTO_MAX_SIDE, Counter(sizes).most_common(1)[0][0])
    channels = options.channels or (1 if all(grays) else 3)
    rule = DecodeRule(side, channels, options.fit, parse_background(options.background))
    return ok, rule, skipped


def _build(listing: FolderListing, options: FolderOptions, cache: Path, stem: str):
    ok, rule, skipped = _scan_headers(listing, options)
    side, channels = rule.side, rule.channels
    # Decode at training size straight into the (N, C, S, S) file.
    shape = (len(ok), channels, side, side)
    tmp = _open_output(cache, stem, shape)
    out = (
        np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        if tmp is not None
        else np.zeros(shape, np.uint8)
    )
    failures = _decode_all([listing.files[i] for i in ok], rule, out, tmp, options.workers)
    good = np.ones(len(ok), bool)
    for j, err in sorted(failures, key=lambda f: f[0]):
        good[j] = False
        skipped.append(_skip(listing, listing.files[ok[j]], err))
    if skipped and options.strict:
        if tmp is not None:
            del out
            tmp.unlink(missing_ok=True)
        raise _strict_error(skipped, listing.root)
    labels = np.asarray([listing.labels[i] for i in ok], np.int64)[good]
    n_train = listing.n_train
    is_train = np.asarray([n_train is not None and i < n_train for i in ok], bool)[good]
    if not good.all():  # compact the rows of failed files away
        kept = np.flatnonzero(good)
        for dst, src in enumerate(kept):
            out[dst] = out[src]
        shape = (len(kept), *shape[1:])
    decoded = DecodedFolder(
        np.empty((0, *shape[1:]), np.uint8), labels, is_train, listing.classes, rule,
        n_train is not None, skipped,
    )  # fmt: skip
    if tmp is None:
        decoded.images = out[: shape[0]]
        return decoded
    cast(np.memmap, out).flush()
    del out  # unmapped before the file is cut to the rows kept
    return _commit_cache(decoded, listing.root, tmp, cache, stem, shape)


def _commit_cache(decoded: DecodedFolder, root: Path, tmp: Path, cache: Path, stem: str, shape):
    """Rename the filled temporary file into place, then its metadata; map it read-only."""
    os.truncate(tmp, int(np.prod(shape)))
    data_file = cache / f"{stem}.u8"
    os.replace(tmp, data_file)
    rule = decoded.rule
    meta = {
        "root": str(root), "shape": list(shape), "side": rule.side, "channels": rule.channels,
        "fit": rule.fit, "background": list(rule.background), "labels": decoded.labels.tolist(),
        "is_train": decoded.is_train.tolist(), "skipped": decoded.skipped,
    }  # fmt: skip
    _write_meta(cache / f"{stem}.json", meta)
    _prune(cache, stem)
    decoded.images = np.memmap(data_file, dtype=np.uint8, mode="c", shape=shape)
    decoded.cache_file = data_file
    return decoded


def _skip(listing: FolderListing, f: str, err: Exception) -> tuple[str, str]:
    reason = str(err).removeprefix(f"{f}: ")
    return listing.relative(f), reason


def _open_output(cache: Path, stem: str, shape) -> Path | None:
    """A temporary file of the cache's size to decode into (None: no cache, decode in RAM)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{stem}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.truncate(int(np.prod(shape)))
        return tmp
    except OSError as err:
        print(
            f"visionzoo: warning: cannot write the decoded-image cache in {cache} ({err}); "
            "decoding in memory (set VISIONZOO_CACHE to a writable folder)",
            file=sys.stderr,
        )
        return None


def _write_meta(path: Path, meta: dict) -> None:
    atomic_write_text(path, json.dumps(meta))


def _prune(cache: Path, stem: str, stale_s: float = 3600) -> None:
    """Remove this folder's older caches (same root hash, another content key), and the
    temporary files of builds that were killed more than `stale_s` ago."""
    prefix = stem.split("-")[0]
    for old in cache.glob(f"{prefix}-*"):
        if not old.name.startswith(stem):
            old.unlink(missing_ok=True)
    for tmp in cache.glob(f".{prefix}-*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > stale_s:
                tmp.unlink()
        except OSError:
            continue


def _decode_all(files: list[str], rule: DecodeRule, out, tmp, workers: int | None):
    """Decode files[i] into out[i]; returns [(i, error)] for the files that failed."""
    n_proc = workers if workers is not None else min(8, os.cpu_count() or 1)
    if n_proc <= 1 or len(files) < PARALLEL_FROM or tmp is None:
        return _decode_range(files, rule, out, 0)
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    chunk = max(16, -(-len(files) // (n_proc * 8)))
    jobs = [
        (files[s : s + chunk], rule, str(tmp), out.shape, s) for s in range(0, len(files), chunk)
    ]
    failures: list[tuple[int, Exception]] = []
    with ctx.Pool(n_proc) as pool:
        for part in pool.imap_unordered(_decode_job, jobs):
            failures += part
    return failures


def _decode_job(job) -> list[tuple[int, Exception]]:
    files, rule, tmp, shape, start = job
    out = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=tuple(shape))
    try:
        return _decode_range(files, rule, out, start)
    finally:
        out.flush()


def _decode_range(files: Iterable[str], rule: DecodeRule, out, start: int):
    failures = []
    for i, f in enumerate(files, start=start):
        try:
            out[i] = decode(f, rule).numpy()
        except ImageDecodeError as err:
            failures.append((i, err))
    return failures
