"""Real data: LeNet-5 on the full Fashion-MNIST (60,000 / 10,000) for one epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionzoo.engine.config import TrainConfig
from visionzoo.engine.fit import fit
from visionzoo.engine.recipes import RECIPES

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.slow
@pytest.mark.skipif(
    not FASHION.is_file(), reason="apt-get install dataset-fashion-mnist (make test does)"
)
def test_lenet5_one_epoch_on_fashion_mnist(tmp_path):
    recipe = {k: v for k, v in RECIPES["demo"].items()}
    cfg = TrainConfig(
        model="lenet5", dataset="fashion-mnist", **{**recipe, "epochs": 1, "device": "cpu"}
    )
    metrics = fit(cfg, tmp_path / "run", quiet=True)
    assert metrics["test_acc"] >= 0.85, metrics
