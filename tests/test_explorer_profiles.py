"""The shipped profiles (src/visionzoo/explorer/profiles.json) match the registry, and the
explorer serves them without profiling anything in its own process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visionzoo.explorer import profiles as shipped
from visionzoo.explorer.data import Explorer, Failed
from visionzoo.explorer.worker import Worker, WorkerFailed, profile_job
from visionzoo.registry import create_model, list_models

AUX_HEADS = {"googlenet", "inception_v3"}  # parameters in heads that run in training only
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models() -> dict:
    return shipped.load_profiles()["models"]


def test_every_registered_model_is_shipped(models):
    assert sorted(models) == sorted(list_models()), "rerun scripts/make_profiles.py"


def test_parameter_counts_match_a_meta_device_count(models):
    stale = []
    for name, profile in models.items():
        with torch.device("meta"):
            model = create_model(name)
        if profile["params"] != sum(p.numel() for p in model.parameters()):
            stale.append(name)
    assert not stale, f"rerun scripts/make_profiles.py --stale ({', '.join(stale)})"


def test_figures_are_consistent(models):
    for name, p in models.items():
        assert p["name"] == name
        assert p["macs"] == p["flops"] // 2 and p["flops"] > 0
        assert p["depth"] > 0 and p["weighted_layers"] >= p["depth_longest_path"]
        assert p["activation_bytes"] > 0
        stages = p["stages"]  # stem + stages + head add up to the totals
        ran = sum(s["params"] for s in stages)  # GoogLeNet's aux heads do not run in eval
        assert ran == p["params"] or (ran < p["params"] and name in AUX_HEADS), name
        assert sum(s["flops"] for s in stages) == p["flops"], name


def test_the_file_is_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    line = next(x for x in text.splitlines() if x.startswith("visionzoo = ["))
    assert '"explorer/*.json"' in line  # [tool.setuptools.package-data]
    assert shipped.PROFILES_PATH.parent == ROOT / "src" / "visionzoo" / "explorer"


def test_explorer_serves_shipped_profiles_without_running_a_model(monkeypatch, tmp_path):
    ex = Explorer(tmp_path, tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("a shipped profile must not be computed")

    monkeypatch.setattr(ex._worker, "run", refuse)
    monkeypatch.setattr("visionzoo.bench.profile.profile_model", refuse)
    p = ex.profile("efficientnet_b7")
    assert p["source"] == "shipped" and p["params"] > 60_000_000 and p["paper"]
    rows = {r["name"]: r for r in ex.overview()["models"]}
    assert all(r["profile"]["flops"] > 0 for r in rows.values())  # every chart metric at once
    assert ex.card("resnet50")["profile"]["depth"] == 50


def test_a_profile_the_file_lacks_runs_in_the_worker(monkeypatch, tmp_path):
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("visionzoo.explorer.data.shipped_profile", lambda name: None)
    ex = Explorer(tmp_path, tmp_path)
    p = ex.profile("lenet5")
    assert p["params"] == 61_706 and "source" not in p


def test_the_worker_has_a_memory_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WorkerFailed):
        Worker(limit=600 * 2**20).run(profile_job, "vgg16")  # about 0.5 GB of weights alone


def test_a_failed_worker_job_is_a_clean_error(monkeypatch, tmp_path):
    monkeypatch.setattr("visionzoo.explorer.data.shipped_profile", lambda name: None)
    ex = Explorer(tmp_path, tmp_path)

    def fail(*args, **kwargs):
        raise WorkerFailed("needs more than the worker's 0.5 GiB of memory")

    monkeypatch.setattr(ex._worker, "run", fail)
    with pytest.raises(Failed, match="memory"):
        ex.profile("lenet5")
