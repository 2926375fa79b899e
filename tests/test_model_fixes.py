"""Explicit outputs and the fixes of issue 20: auxiliary logits as a returned record, the
attention-capture helper, per-block layer decay, the drop-path guard, strict block arguments."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visionzoo import create_model
from visionzoo.engine.train import compute_loss
from visionzoo.models.base import AUX_WEIGHT, AuxOutputs


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
