"""Regenerate the shipped model profiles: src/visionzoo/explorer/profiles.json.

The explorer's charts and cards read every registered model's parameters, FLOPs, MACs,
depth, activation memory and stage table from this file instead of running 84 models in
the server (one EfficientNet-B7 profile alone takes ~4 GB). Each model is profiled by
`visionzoo.bench.profile.profile_model` in a fresh child process, so memory is returned
after each one; the file is rewritten after every model, so an interrupted run resumes.

    OMP_NUM_THREADS=1 python scripts/make_profiles.py [--models resnet50 ...] [--force]

`tests/test_explorer_profiles.py` checks the file against the registry (same model set,
parameter counts equal to a meta-device count): rerun this script when a model changes.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from typing import Any

import torch

from visionzoo.explorer.profiles import PROFILE_KEYS, PROFILES_PATH, dump_profiles, load_profiles
from visionzoo.registry import create_model, list_models
from visionzoo.utils import atomic_write_text


def _profile_one(name: str) -> dict[str, Any]:
    from visionzoo.bench.profile import profile_model

    torch.set_num_threads(1)
    full = profile_model(name, use_cache=False)
    return {k: full[k] for k in PROFILE_KEYS if k in full}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="only these (default: every registered one)")
    parser.add_argument("--force", action="store_true", help="reprofile models already in the file")
    parser.add_argument(
        "--stale", action="store_true", help="also reprofile models whose parameter count changed"
    )
    args = parser.parse_args(argv)

    registered = list_models()
    try:
        profiles = dict(load_profiles()["models"])
    except (OSError, ValueError, KeyError):
        profiles = {}
    profiles = {k: v for k, v in profiles.items() if k in registered}  # drop removed models
    stale = set(stale_models(profiles)) if args.stale else set()
    todo = [m for m in (args.models or registered) if args.force or m not in profiles or m in stale]
    ctx = mp.get_context("spawn")
    for i, name in enumerate(todo, 1):
        t0 = time.perf_counter()
        try:
            with ctx.Pool(1, maxtasksperchild=1) as pool:  # a fresh process: memory goes back
                profiles[name] = pool.apply(_profile_one, (name,))
        except Exception as err:  # noqa: BLE001 - say which model failed, go on with the rest
            profiles.pop(name, None)
            print(f"[{i}/{len(todo)}] {name}: FAILED {type(err).__name__}: {err}", flush=True)
            continue
        print(f"[{i}/{len(todo)}] {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        _write(profiles)
    _write(profiles)
    missing = sorted(set(registered) - set(profiles))
    if missing:
        print(f"not profiled: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


def meta_params(name: str) -> int:
    """The parameter count of `name` built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = create_model(name)
    return sum(p.numel() for p in model.parameters())


def stale_models(profiles: dict[str, dict[str, Any]]) -> list[str]:
    """Models whose shipped parameter count no longer matches the code."""
    return [k for k, v in profiles.items() if v.get("params") != meta_params(k)]


def _write(profiles: dict[str, dict[str, Any]]) -> None:
    atomic_write_text(PROFILES_PATH, dump_profiles(profiles, torch.__version__.split("+")[0]))


if __name__ == "__main__":
    raise SystemExit(main())
