"""Explicit outputs and the fixes of issue 20: auxiliary logits as a returned record, the
attention-capture helper, per-block layer decay, the drop-path guard, strict block arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visionzoo import create_model
from visionzoo.engine.train import compute_loss
from visionzoo.layers.drop_path import drop_path
from visionzoo.models.base import AUX_WEIGHT, AuxOutputs
from visionzoo.models.resnet import BasicBlock, Bottleneck


def test_compute_loss_adds_the_weighted_auxiliary_losses():
    torch.manual_seed(0)
    logits, a1, a2 = torch.randn(3, 4, 5).unbind(0)
    y = torch.tensor([0, 1, 2, 3])
    expected = F.cross_entropy(logits, y) + 0.3 * (F.cross_entropy(a1, y) + F.cross_entropy(a2, y))
    assert AUX_WEIGHT == 0.3
    torch.testing.assert_close(compute_loss(AuxOutputs(logits, (a1, a2)), y, 0.0), expected)
    torch.testing.assert_close(compute_loss(logits, y, 0.0), F.cross_entropy(logits, y))


def test_googlenet_training_loss_reaches_the_auxiliary_classifiers():
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=5, small_input=True).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, AuxOutputs) and out.aux_weight == AUX_WEIGHT
    compute_loss(out, torch.tensor([1, 2]), 0.1).backward()
    for aux in (model.aux1, model.aux2):
        assert aux.fc2.weight.grad is not None and aux.fc2.weight.grad.abs().sum() > 0


def test_drop_path_of_one_drops_every_branch_without_nan():
    x = torch.randn(8, 3, 4, 4, requires_grad=True)
    y = drop_path(x, 1.0, True)
    assert torch.equal(y, torch.zeros_like(x))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.manual_seed(0)
    kept = drop_path(torch.ones(10_000, 1), 0.25, True)
    torch.testing.assert_close(kept.unique(), torch.tensor([0.0, 1 / 0.75]))  # 1 / keep


def test_unknown_block_arguments_raise():
    with pytest.raises(TypeError, match="stride_in_1x1"):
        BasicBlock(8, 8, 1, "B", stride_in_1x1=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="dilation"):
        Bottleneck(8, 8, 1, "B", dilation=2)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="stride_in_1x1 applies to Bottleneck"):
        create_model("resnet18", stride_in_1x1=True)
    paper = create_model("resnet50", stride_in_1x1=True)
    assert paper.stages[1][0].conv1.conv.stride == (2, 2)
