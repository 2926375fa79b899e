"""The model contract, run over every registered variant (docs/contributing.md, "Models").

Each model is built in its small-input mode where it has one (a 32x32 grayscale input), else
at its smallest valid input. Reference parameter counts are checked at the default
configuration (ImageNet: 1000 classes, 3 channels) against the figure registered with the
variant, whose source ModelInfo names.
"""

from __future__ import annotations

import pytest
import torch

from visionzoo import create_model, get_model_info, list_models
from visionzoo.models.base import AuxOutputs, ImageClassifier, count_params, main_logits

ALL = list_models()
# Hundreds of millions of parameters: one forward/backward at batch 1 only.
HUGE = {"vit_h_14", "vit_l_16", "vit_l_32", "efficientnet_b7", "efficientnet_b6"}


def small_model(name: str, **kwargs):
    info = get_model_info(name)
    if info.small_input:
        kwargs.setdefault("small_input", True)
        size = 32
    else:
        size = info.min_image_size
    model = create_model(name, num_classes=7, in_channels=1, **kwargs)
    return model, size


@pytest.mark.parametrize("name", ALL)
def test_contract(name):
    torch.manual_seed(0)
    model, size = small_model(name)
    assert isinstance(model, ImageClassifier)
    assert model.in_channels == 1 and model.num_features > 0
    batch = 1 if name in HUGE else 2
    x = torch.randn(batch, 1, size, size)

    model.train()
    output = model(x)
    out = main_logits(output)
    assert out.shape == (batch, 7)
    assert torch.isfinite(out).all()
    loss = out.square().mean()
    for aux in output.aux_logits if isinstance(output, AuxOutputs) else ():
        loss = loss + aux.square().mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"

    model.eval()
    with torch.no_grad():
        full = model(x)
        split = model.forward_head(model.forward_features(x))
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(full, split)
    assert pre.shape == (batch, model.num_features)


@pytest.mark.parametrize("name", ALL)
def test_feature_maps(name):
    model, size = small_model(name)
    model.eval()
    with torch.no_grad():
        feats = create_model(
            name,
            num_classes=7,
            in_channels=1,
            features_only=True,
            **({"small_input": True} if get_model_info(name).small_input else {}),
        )
        maps = feats(torch.randn(1, 1, size, size))
    assert len(maps) == len(feats.feature_info) >= 1
    for fmap, level in zip(maps, feats.feature_info):
        assert fmap.dim() == 4 and fmap.shape[1] == level.channels, level


@pytest.mark.parametrize("name", ALL)
def test_reset_classifier(name):
    model, size = small_model(name)
    model.reset_classifier(3)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size)).shape == (1, 3)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size)).shape == (1, model.num_features)


@pytest.mark.parametrize("name", [n for n in ALL if get_model_info(n).reference_params])
def test_reference_param_count(name):
    info = get_model_info(name)
    with torch.device("meta"):  # counts without allocating hundreds of MB per model
        model = create_model(name)
    assert count_params(model) == info.reference_params, info.params_source


def test_input_too_small_names_minimum():
    model = create_model("lenet5")
    with pytest.raises(ValueError, match="at least 32x32"):
        model(torch.randn(1, 1, 28, 28))
