"""ResNet (ImageNet and CIFAR), DenseNet and Highway Networks: counts, ports, twins, modes."""

from __future__ import annotations

import pytest
import torch
import torchvision

from visionzoo import create_model, get_model_info
from visionzoo.convert import WeightMismatchError, port_weights, verify_port
from visionzoo.models.base import InputTooSmallError, count_params
from visionzoo.models.highway import HighwayLayer, highway_fc
from visionzoo.models.resnet import Bottleneck, ZeroPadShortcut
from visionzoo.models.resnet_cifar import resnet_cifar

TORCHVISION = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
}
SLOW_PORTS = {"resnet101", "resnet152", "densenet161", "densenet201"}  # 3-6 s each on 1 core

# Computed exact counts and the figures the papers print (rounded).
CIFAR = {  # name: (exact, paper figure in millions, decimals the paper prints)
    "resnet20": (269_722, 0.27, 2),
    "resnet32": (464_154, 0.46, 2),
    "resnet44": (658_586, 0.66, 2),
    "resnet56": (853_018, 0.85, 2),
    "resnet110": (1_727_962, 1.7, 1),
    "densenet_bc_100": (769_162, 0.8, 1),
    "densenet_40": (1_019_722, 1.0, 1),
}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_param_count_equals_torchvision(name):
    with torch.device("meta"):
        ours = count_params(create_model(name))
        theirs = count_params(torchvision.models.get_model(name, weights=None))
    assert ours == theirs == TORCHVISION[name] == get_model_info(name).reference_params


@pytest.mark.parametrize("name", list(CIFAR))
def test_cifar_param_counts_exact_and_paper(name):
    exact, paper, decimals = CIFAR[name]
    count = count_params(create_model(name))
    assert count == exact == get_model_info(name).reference_params
    assert round(count / 1e6, decimals) == paper


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_PORTS else n for n in TORCHVISION],
)
def test_torchvision_port_logits_match(name):
    assert verify_port(name, "torchvision", image_size=64) <= 1e-4


def test_port_is_not_trivial_and_paper_stride_differs():
    # A one-block-per-stage Bottleneck ResNet keeps this fast; the keys are resnet50's.
    from torchvision.models.resnet import Bottleneck as TVBottleneck
    from torchvision.models.resnet import ResNet as TVResNet

    from visionzoo.convert import get_converter
    from visionzoo.models.resnet import ResNet

    torch.manual_seed(0)
    reference = TVResNet(TVBottleneck, [1, 1, 1, 1], num_classes=10).eval()
    weights = get_converter("resnet50", "torchvision")(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    ours = ResNet(Bottleneck, (1, 1, 1, 1), num_classes=10).eval()
    paper = ResNet(Bottleneck, (1, 1, 1, 1), num_classes=10, stride_in_1x1=True).eval()
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max() > 1e-3  # random weights differ before porting
        ours.load_state_dict(weights)
        assert (ours(x) - reference(x)).abs().max() <= 1e-4
        # The paper's Bottleneck (stride on the first 1x1) takes the same weights but
        # computes something else.
        paper.load_state_dict(weights)
        assert (paper(x) - reference(x)).abs().max() > 1e-3


def test_bottleneck_stride_position():
    v15, paper = Bottleneck(64, 64, 2), Bottleneck(64, 64, 2, stride_in_1x1=True)
    assert v15.conv1.conv.stride == (1, 1) and v15.conv2.conv.stride == (2, 2)
    assert paper.conv1.conv.stride == (2, 2) and paper.conv2.conv.stride == (1, 1)
    x = torch.randn(1, 64, 8, 8)
    assert v15(x).shape == paper(x).shape == (1, 256, 4, 4)


def test_other_variant_state_dict_is_refused():
    model = create_model("resnet34")
    with pytest.raises(WeightMismatchError, match="does not fit resnet34"):
        port_weights(model, torchvision.models.resnet18(weights=None).state_dict(), "torchvision")


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_plain_twins_have_the_residual_params(depth):
    assert count_params(create_model(f"plain{depth}")) == count_params(
        create_model(f"resnet{depth}")
    )


def test_imagenet_plain_twins():
    with torch.device("meta"):
        plain18, res18 = create_model("plain18"), create_model("resnet18")
        option_a = create_model("resnet18", shortcut="A")
    # Option A adds no parameters; option B adds the three projection shortcuts.
    assert count_params(plain18) == count_params(option_a) == 11_515_688
    projections = sum(
        p.numel() for n, p in res18.named_parameters() if ".shortcut." in n
    )  # 64->128, 128->256, 256->512 1x1 convs and their BNs
    assert count_params(res18) - count_params(plain18) == projections == 173_824
    assert not any(".shortcut" in n for n, _ in plain18.named_parameters())


def test_option_a_shortcut_is_zero_padded_identity():
    x = torch.randn(2, 16, 8, 8)
    y = ZeroPadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert (y[:, 16:] == 0).all()


def test_cifar_depth_must_be_6n_plus_2():
    assert count_params(resnet_cifar(depth=8, shortcut=None)) > 0
    with pytest.raises(ValueError, match="6n\\+2"):
        resnet_cifar(depth=21)


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
@pytest.mark.parametrize("size", [28, 32])
def test_small_input_mode(name, size):
    model = create_model(name, num_classes=10, in_channels=1, small_input=True).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 10)
        maps = model.forward_intermediates(torch.randn(1, 1, size, size))
    assert [m.shape[1] for m in maps] == [lvl.channels for lvl in model.feature_info]
    if size == 32:
        assert [m.shape[-1] for m in maps] == [32 // lvl.stride for lvl in model.feature_info]
    assert model.feature_info[-1].stride == 8 and model.min_image_size == 8


def test_imagenet_stride_and_minimum_size():
    model = create_model("resnet18", num_classes=10).eval()
    maps = model.forward_intermediates(torch.randn(1, 3, 64, 64))
    assert [m.shape[-1] for m in maps] == [64 // lvl.stride for lvl in model.feature_info]
    assert [lvl.channels for lvl in model.feature_info] == [m.shape[1] for m in maps]
    with pytest.raises(InputTooSmallError, match="at least 32x32.*small_input=True"):
        model(torch.randn(1, 3, 28, 28))
    with pytest.raises(InputTooSmallError, match="at least 32x32"):
        create_model("densenet121")(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("name", ["resnet20", "densenet_bc_100"])
def test_cifar_nets_take_28_and_32(name):
    model = create_model(name, in_channels=1).eval()
    with torch.no_grad():
        for size in (28, 32):
            assert model(torch.randn(1, 1, size, size)).shape == (1, 10)
    with pytest.raises(InputTooSmallError, match="at least 8x8"):
        model(torch.randn(1, 1, 4, 4))


def test_highway_gate_bias_negative_at_init():
    for name in ("highway_fc_10", "highway_conv_w16"):
        model = create_model(name)
        gates = [m for m in model.modules() if isinstance(m, HighwayLayer)]
        assert len(gates) == (9 if "fc" in name else 8)
        for layer in gates:
            assert (layer.gate.bias == -2.0).all()
    with pytest.raises(ValueError, match="negative"):
        highway_fc(gate_bias=1.0)


def test_highway_starts_close_to_carry():
    # sigmoid(-2) = 0.12: with zero gate weights each layer passes 88 % of its input on.
    model = highway_fc(depth=3, width=50, gate_bias=-2.0)
    layer = model.layers[0]
    with torch.no_grad():
        layer.gate.weight.zero_()
        x = torch.randn(4, 50)
        t = torch.sigmoid(torch.tensor(-2.0))
        expected = layer.act(layer.transform(x)) * t + x * (1 - t)
        torch.testing.assert_close(layer(x), expected)


def test_highway_paper_figures():
    # Fig. 1: ~5,000 parameters per layer; 50 highway units vs 71 plain units.
    hw, plain = create_model("highway_fc_50"), create_model("plain_fc_50")
    assert count_params(hw.layers[0]) == 5_100 and count_params(plain.layers[0]) == 5_112
    assert len(hw.layers) == len(plain.layers) == 49
    # Table 1: 39K and 151K parameters for widths 16 and 32.
    assert round(count_params(create_model("highway_conv_w16")) / 1e3) == 39
    assert round(count_params(create_model("highway_conv_w32")) / 1e3) == 151
    # The plain conv twins are the same layers without gates.
    assert not any(isinstance(m, HighwayLayer) for m in create_model("plain_conv_w16").modules())


def test_highway_fixed_input_size():
    model = create_model("highway_conv_w16").eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 1, 28, 28))
        assert feats.shape == (2, 16, 3, 3)
        fc = create_model("highway_fc_10")
        assert fc.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 50, 1, 1)
    with pytest.raises(ValueError, match="image_size=32"):
        model(torch.randn(1, 1, 32, 32))
    wide = create_model("highway_conv_w16", image_size=32, in_channels=3)
    assert wide(torch.randn(1, 3, 32, 32)).shape == (1, 10)
