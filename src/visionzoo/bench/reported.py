"""Published figures for each variant: ImageNet (or small-data) accuracy, parameters, GMACs.

`reported.csv` holds one row per visionzoo variant, transcribed from the project's
reference tables (`reference/models.csv`, `reference/small_data_results.md`), each figure
with its source. `gmacs` is in multiply-accumulates: torchvision labels the same numbers
"GFLOPS", but they count one fused multiply-add as one operation (FLOPs = 2 x MACs).
`top1`/`top5` are accuracies in percent on `dataset` (ImageNet-1k val unless it says
otherwise). The explorer shows these labelled "reported".
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["load_reported"]

_INT = ("year", "params")
_FLOAT = ("gmacs", "top1", "top5")


def _parse(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
    for key in _INT:
        out[key] = int(row[key]) if row[key] else None
    for key in _FLOAT:
        out[key] = float(row[key]) if row[key] else None
    out["macs"] = round(out["gmacs"] * 1e9) if out["gmacs"] is not None else None
    return out


@lru_cache(maxsize=1)
def _load() -> dict[str, dict[str, Any]]:
    text = resources.files("visionzoo.bench").joinpath("reported.csv").read_text("utf-8")
    return {row["name"]: _parse(row) for row in csv.DictReader(io.StringIO(text))}


def load_reported() -> dict[str, dict[str, Any]]:
    """{variant name: {top1, top5, dataset, params, gmacs, macs, year, paper, *_source, ...}}."""
    return {name: dict(row) for name, row in _load().items()}
