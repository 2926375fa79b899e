"""Xception, MobileNet v1/v2/v3 and EfficientNet B0-B7: counts, ports, scaling rules, small inputs.

Ports are checked twice: `convert.verify_port` (the project's contract) and a stricter
check that first randomizes the reference's weights and BatchNorm statistics. The stricter
one matters here: with the references' own initialisation (He fan-out on depthwise
convolutions) these nets output logits of about 1e-9, so a 1e-4 bound alone would pass
almost any port.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from timm.models.efficientnet import _gen_mobilenet_v1
from torch import nn

from visionzoo import create_model, get_model_info, list_models
from visionzoo.convert import WeightMismatchError, port_weights, verify_port
from visionzoo.models.base import InputTooSmallError, count_params
from visionzoo.models.efficientnet import (
    TABLE_1_B0,
    VARIANTS,
    compound_scaling,
    scale_rows,
)
from visionzoo.models.mobilenet_v1 import MobileNetV1

EFFICIENTNETS = [f"efficientnet_b{i}" for i in range(8)]
HUGE = {"efficientnet_b6", "efficientnet_b7"}  # one batch-1 port each
MOBILENET_V1_ALPHAS = {
    "mobilenet_v1": 1.0,
    "mobilenet_v1_075": 0.75,
    "mobilenet_v1_050": 0.5,
    "mobilenet_v1_025": 0.25,
}
TORCHVISION = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", *EFFICIENTNETS]
TIMM = ["xception", *MOBILENET_V1_ALPHAS]
FAMILIES = {  # one variant per family module
    "xception": 16,  # total stride in small-input mode
    "mobilenet_v1": 8,
    "mobilenet_v2": 8,
    "mobilenet_v3_large": 8,
    "mobilenet_v3_small": 8,
    "efficientnet_b0": 8,
}


def reference(name: str) -> tuple[nn.Module, str]:
    """The torchvision or timm model with the same architecture, and its source."""
    if name in MOBILENET_V1_ALPHAS:  # timm registers only 1.0; build the others like it
        return _gen_mobilenet_v1("mobilenetv1_100", MOBILENET_V1_ALPHAS[name]), "timm"
    info = get_model_info(name)
    if info.torchvision_name:
        return torchvision.models.get_model(info.torchvision_name, weights=None), "torchvision"
    return timm.create_model(info.timm_name, pretrained=False), "timm"


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> None:
    """Fan-in-scaled weights and random BN statistics: logits of order 1."""
    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, scale: float, shift: float = 0.0, uniform: bool = False) -> None:
        r = torch.rand(t.shape, generator=g) if uniform else torch.randn(t.shape, generator=g)
        t.copy_(r * scale + shift)

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            rand(m.weight, m.weight[0].numel() ** -0.5)
            if m.bias is not None:
                rand(m.bias, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            rand(m.weight, 1.0, 0.5, uniform=True)
            rand(m.bias, 0.1)
            rand(m.running_mean, 0.1)
            rand(m.running_var, 1.0, 0.5, uniform=True)


def test_registered_names():
    assert set(list_models("efficientnet_b*")) == set(EFFICIENTNETS)
    assert set(list_models("mobilenet_v1*")) == set(MOBILENET_V1_ALPHAS)
    assert {"xception", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"} <= set(
        list_models()
    )


@pytest.mark.parametrize("name", TIMM + TORCHVISION)
def test_param_count_equals_reference(name):
    with torch.device("meta"):
        ref, source = reference(name)
        ours = create_model(name)
    info = get_model_info(name)
    assert source in info.params_source
    assert count_params(ours) == count_params(ref) == info.reference_params, info.params_source


@pytest.mark.parametrize("name", TIMM + TORCHVISION)
@torch.no_grad()
def test_port_gives_equal_logits(name):
    torch.manual_seed(0)
    ref, source = reference(name)
    ref.eval()
    randomize(ref)
    ours = create_model(name)
    port_weights(ours, ref.state_dict(), source)
    ours.eval()
    batch = 1 if name in HUGE else 2
    x = torch.randn(batch, 3, 64, 64)
    expected = ref(x)
    assert expected.abs().max() > 0.1  # the comparison is not between near-zero logits
    assert (ours(x) - expected).abs().max() <= 1e-4
    if name not in HUGE and (
        get_model_info(name).torchvision_name or get_model_info(name).timm_name
    ):
        assert verify_port(name, source, image_size=64) <= 1e-4  # the registered reference


def test_foreign_state_dict_is_refused():
    with torch.device("meta"):
        b1 = create_model("efficientnet_b1")
        b0_state = torchvision.models.efficientnet_b0(weights=None).state_dict()
    with pytest.raises(WeightMismatchError, match="does not fit efficientnet_b1"):
        port_weights(b1, b0_state, "torchvision")


def test_mobilenet_v1_width_multiplier_scales_params_by_alpha_squared():
    def counts(alpha: float) -> tuple[int, int]:
        with torch.device("meta"):
            model = MobileNetV1(width_multiplier=alpha, num_classes=0)
        pointwise = sum(
            m.weight.numel()
            for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
        )
        return count_params(model), pointwise

    full, full_pw = counts(1.0)
    for alpha in (0.75, 0.5, 0.25):
        total, pw = counts(alpha)
        assert pw == alpha**2 * full_pw  # 1x1 convs: c_in * c_out, both scaled by alpha
        # depthwise convs and BN scale linearly, so the body is a little above alpha^2
        assert alpha**2 <= total / full < 1.1 * alpha**2
    assert create_model("mobilenet_v1", resolution_multiplier=160 / 224).image_size == 160


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_compound_scaling_reproduces_torchvision_stages(variant):
    scaling = VARIANTS[variant]
    with torch.device("meta"):
        tv = torchvision.models.get_model(f"efficientnet_{variant}", weights=None)
        ours = create_model(f"efficientnet_{variant}")
    rows = scale_rows(TABLE_1_B0, scaling.width, scaling.depth)
    tv_stages = list(tv.features)[1:-1]
    assert [r.repeats for r in rows] == [len(stage) for stage in tv_stages]
    assert [r.out_channels for r in rows] == [stage[-1].out_channels for stage in tv_stages]
    assert ours.feature_info[0].channels == tv.features[0].out_channels  # stem
    assert ours.num_features == tv.classifier[1].in_features  # 1x1 head
    assert ours.image_size == scaling.resolution
    assert ours.dropout.p == tv.classifier[0].p
    # stochastic depth: block i of N drops with probability 0.2 i / N, as torchvision's
    ours_p = [getattr(b.drop_path, "drop_prob", 0.0) for stage in ours.stages for b in stage]
    tv_p = [b.stochastic_depth.p for stage in tv_stages for b in stage]
    assert ours_p == pytest.approx(tv_p)


def test_compound_scaling_rule():
    b2 = compound_scaling(1.0)  # phi = 1: B2's published multipliers are this, rounded
    assert (round(b2.width, 2), round(b2.depth, 2)) == (VARIANTS["b2"].width, VARIANTS["b2"].depth)
    assert abs(b2.resolution - VARIANTS["b2"].resolution) <= 2
    assert compound_scaling(0.0) == VARIANTS["b0"]


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("size", [28, 32])
@torch.no_grad()
def test_small_input_mode(name, size):
    model = create_model(name, num_classes=10, in_channels=1, small_input=True).eval()
    x = torch.randn(2, 1, size, size)
    assert model(x).shape == (2, 10)
    maps = model.forward_intermediates(x)
    for fmap, level in zip(maps, model.feature_info):
        assert fmap.shape[-1] == -(-size // level.stride), level  # ceil(size / stride)
    assert model.feature_info[-1].stride == FAMILIES[name]


@pytest.mark.parametrize("name", list(FAMILIES))
@torch.no_grad()
def test_default_mode_min_image_size(name):
    info = get_model_info(name)
    model = create_model(name, num_classes=10).eval()
    assert info.min_image_size == model.min_image_size == model.feature_info[-1].stride == 32
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(InputTooSmallError, match="small_input=True"):
        model(torch.randn(1, 3, 28, 28))


@pytest.mark.parametrize("name", list(FAMILIES))
@torch.no_grad()
def test_feature_strides_default_mode(name):
    model = create_model(name, num_classes=10).eval()
    size = 96 if name == "xception" else 64  # Xception's unpadded stem loses 5 pixels
    maps = model.forward_intermediates(torch.randn(1, 3, size, size))
    assert len(maps) == len(model.feature_info)
    for fmap, level in zip(maps, model.feature_info):
        if name == "xception":  # 96 -> 47 -> 45 -> 23 -> 12 -> 6 -> 3 px
            assert fmap.shape[-1] == {2: 45, 4: 23, 8: 12, 16: 6, 32: 3}[level.stride]
        else:
            assert fmap.shape[-1] == size // level.stride, level
