"""Reader for the IDX format of MNIST and Fashion-MNIST (LeCun's "THE MNIST DATABASE").

An IDX file is a 4-byte magic number (0, 0, type code, number of dimensions), one big-endian
uint32 per dimension, then the data. We accept gzip-compressed or raw files, check every
field, and refuse anything corrupt or truncated with a one-line DatasetError.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from visionzoo.errors import UserError

_UBYTE = 0x08


class DatasetError(UserError):
    """Dataset files missing, corrupt or inconsistent."""


def read_idx(path: str | Path, expected_dims: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes into an array of its declared shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"{path}: corrupt or truncated gzip file ({err})") from None
    return parse_idx(raw, path, expected_dims)


def parse_idx(raw: bytes, path: str | Path = "<bytes>", expected_dims: int | None = None):
    if len(raw) < 4:
        raise DatasetError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _UBYTE or ndim == 0:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    if expected_dims is not None and ndim != expected_dims:
        raise DatasetError(f"{path}: expected {expected_dims} dimensions, the header says {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != size:
        state = "truncated" if len(raw) - header < size else "has trailing bytes"
        raise DatasetError(
            f"{path}: {state}: the header declares {size:,} values, the file holds "
            f"{len(raw) - header:,}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write uint8 data as IDX (gzip when the name ends in .gz): for tests and subsets."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = struct.pack(">HBB", 0, _UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
