"""torchrun with 2 CPU processes (gloo) matches one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["train", "lenet5", "--dataset", "synthetic", "--epochs", "2", "--batch-size", "64",
        "--no-augment", "--threads", "1", "--device", "cpu", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "visionzoo", *ARGS, "--out", str(tmp_path / "one")],
                   check=True, env=env, timeout=300)  # fmt: skip
    subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "visionzoo", *ARGS,
                    "--out", str(tmp_path / "two")], check=True, env=env, timeout=300)  # fmt: skip
    one = [json.loads(x) for x in (tmp_path / "one/metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two/metrics.jsonl").read_text().splitlines()]
    config = json.loads((tmp_path / "two/config.json").read_text())
    assert config["world_size"] == 2
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert a["step"] == b["step"]  # the same number of optimizer steps
        # Same samples per step, gradients averaged across ranks: only summation order differs.
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-3
        assert abs(a["test_loss"] - b["test_loss"]) < 1e-3
        assert abs(a["test_acc"] - b["test_acc"]) <= 0.004  # at most 2 of 500 test images


def test_more_ranks_than_gpus_is_one_line(monkeypatch):
    import torch

    from visionzoo.engine import distributed as dist
    from visionzoo.errors import UserError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"local rank 1 .* 1 CUDA device: .*--nproc_per_node=1"):
        dist.setup(torch.device("cuda"))
