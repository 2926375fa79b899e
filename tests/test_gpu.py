"""CUDA: mixed-precision training, deterministic resume, bench, the fast path, and the metric
all-reduce under NCCL. Every test here is marked `gpu` and skipped without a CUDA device;
`scripts/gpu_check.sh` runs them on a GPU machine."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from visionzoo.cli import main
from visionzoo.engine.config import TrainConfig
from visionzoo.engine.fit import fit

pytestmark = pytest.mark.gpu

CUDA = dict(model="lenet5", dataset="synthetic", batch_size=64, lr=0.05, device="cuda")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_one_epoch_in_mixed_precision(tmp_path, precision):
    metrics = fit(TrainConfig(**CUDA, epochs=1, precision=precision), tmp_path / "run", quiet=True)
    assert metrics["test_acc"] > 0.3  # chance is 0.1
    assert metrics["train_loss"] == metrics["train_loss"]  # finite, not NaN
    state = torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)
    # fp16 trains through a gradient scaler, and its state is part of the checkpoint
    assert (state["scaler"] is not None) == (precision == "fp16")
    assert state["rng_cuda"], "the CUDA generator state is checkpointed"


def test_deterministic_resume_after_kill_is_bit_exact_on_cuda(tmp_path):
    from test_engine import check_resume_after_kill

    check_resume_after_kill(tmp_path, "cuda", "--deterministic")


def test_bench_on_cuda_against_torchvision(tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", "resnet18", "--device", "cuda", "--compare", "torchvision",
            "--batch-size", "1,8", "--repeats", "3", "--warmup", "1"]  # fmt: skip
    code = main([*argv, "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader(open(next(out.glob("*.csv")))))
    assert {r["impl"] for r in rows} == {"visionzoo", "torchvision"}
    assert all(r["device"].startswith("cuda") and float(r["median_ms"]) > 0 for r in rows)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@torch.no_grad()
def test_optimize_on_cuda(dtype, monkeypatch):
    from visionzoo import create_model
    from visionzoo.bench.optimize import optimize

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10).cuda().eval()
    fast = optimize(model, image_size=64, dtype=dtype)
    assert fast.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    assert fast.rewrite.folded_batchnorms > 0 and fast.rewrite.packed_convolutions == 0
    # TF32 (cuDNN's default for float32 convolutions, and what an earlier `fit` in this process
    # may have left on for matrix products) rounds to 10 bits: compare without it
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    x = torch.randn(4, 3, 64, 64, device="cuda")
    y, ref = fast(x), model(x)
    assert y.device.type == "cuda" and y.dtype is torch.float32
    tol = 1e-4 if dtype == "fp32" else 0.1
    assert (y - ref).abs().max() <= tol * max(1.0, float(ref.abs().max()))


def test_metric_all_reduce_runs_on_device_tensors_under_nccl(tmp_path, monkeypatch):
    """NCCL reduces CUDA tensors only: a one-rank NCCL group, with the engine told there are
    two ranks so that it reduces, fails on any CPU tensor (the epoch's sums were CPU)."""
    import torch.distributed as td

    from visionzoo.engine import distributed as dist

    if not td.is_nccl_available():
        pytest.skip("this torch has no NCCL")
    store = td.FileStore(str(tmp_path / "store"), 1)
    td.init_process_group("nccl", store=store, rank=0, world_size=1)
    seen: list[torch.device] = []
    real = td.all_reduce

    def all_reduce(t, *args, **kwargs):
        seen.append(t.device)
        return real(t, *args, **kwargs)

    monkeypatch.setattr(td, "all_reduce", all_reduce)
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    monkeypatch.setattr(dist, "wrap", lambda model, device: model)
    monkeypatch.setattr(dist, "teardown", lambda: None)
    try:
        metrics = fit(TrainConfig(**CUDA, epochs=1), tmp_path / "run", quiet=True)
    finally:
        td.destroy_process_group()
    assert seen and all(d.type == "cuda" for d in seen), seen
    assert metrics["test_acc"] > 0.3
    record = json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[0])
    assert 0 < record["train_acc"] <= 1
