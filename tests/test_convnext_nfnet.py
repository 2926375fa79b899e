"""ConvNeXt and NFNet-F0: parameter counts, weight ports, signal propagation, and AGC."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionzoo import create_model, get_model_info
from visionzoo.convert import (
    WeightMismatchError,
    build_reference,
    max_logit_diff,
    port_weights,
    verify_port,
)
from visionzoo.engine.agc import adaptive_clip_grad_, agc_parameters, unitwise_norm
from visionzoo.models.base import InputTooSmallError, count_params
from visionzoo.models.nfnet import GELU_GAMMA, VPGELU, NFBlock, ScaledStdConv2d, pad_same

# (reference count, where it comes from)
PARAMS = {
    "convnext_tiny": (28_589_128, "torchvision 0.29.1 ConvNeXt_Tiny_Weights.IMAGENET1K_V1"),
    "convnext_small": (50_223_688, "torchvision 0.29.1 ConvNeXt_Small_Weights.IMAGENET1K_V1"),
    "convnext_base": (88_591_464, "torchvision 0.29.1 ConvNeXt_Base_Weights.IMAGENET1K_V1"),
    "convnext_large": (197_767_336, "torchvision 0.29.1 ConvNeXt_Large_Weights.IMAGENET1K_V1"),
    "nfnet_f0": (71_489_284, "timm 1.0.31 dm_nfnet_f0, counted (timm results CSV: 71.49M)"),
}
PORTS = [(name, "torchvision") for name in PARAMS if name.startswith("convnext")]
PORTS += [("convnext_tiny", "timm"), ("nfnet_f0", "timm")]


@pytest.mark.parametrize("name", PARAMS)
def test_param_count(name):
    expected, source = PARAMS[name]
    with torch.device("meta"):
        model = create_model(name)
    assert count_params(model) == expected, source
    assert get_model_info(name).reference_params == expected


@torch.no_grad()
def _randomize(model: nn.Module) -> nn.Module:
    """Fill every parameter at random, gains and layer scales included.

    At their own init the layer scales (1e-6) and skipinit gains (0) silence every residual
    branch, so a port that scrambled the blocks would still give equal logits.
    """
    for name, p in model.named_parameters():
        if p.dim() >= 2 and "gain" not in name:
            p.normal_(0.0, p[0].numel() ** -0.5)
        elif name.endswith("bias"):
            p.normal_(0.0, 0.1)
        else:  # norm weights, per-channel gains, layer scales, skipinit gains
            p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name,source", PORTS)
def test_port_gives_equal_logits(name, source):
    torch.manual_seed(0)
    with torch.device("meta"):  # no init pass: every weight is filled or ported below
        reference = build_reference(name, source)
        ours = create_model(name)
    reference = _randomize(reference.to_empty(device="cpu"))
    port_weights(ours.to_empty(device="cpu"), reference.state_dict(), source)
    batch = 1 if name == "convnext_large" else 2
    # NFNet at an odd size: its SAME padding and ceil-mode pooling must agree with timm's.
    size = 45 if name == "nfnet_f0" else 64
    x = torch.randn(batch, 3, size, size)
    assert max_logit_diff(ours, reference, x) <= 1e-4


@pytest.mark.parametrize("name,source", [("convnext_tiny", "torchvision"), ("nfnet_f0", "timm")])
def test_verify_port(name, source):
    assert verify_port(name, source, image_size=64, batch_size=1) <= 1e-4


def test_other_variant_is_refused():
    with torch.device("meta"):
        small = build_reference("convnext_small", "torchvision")
        tiny = create_model("convnext_tiny")
    with pytest.raises(WeightMismatchError, match="does not fit convnext_tiny"):
        port_weights(tiny, small.state_dict(), "torchvision")


# Side of the last stage's map in small-input mode: ConvNeXt's 2x2/2 convs floor (28 -> 14,
# 7, 3, 1), NFNet's SAME padding and ceil-mode pooling round up (28 -> 28, 14, 7, 4, 2).
LAST_MAP = {"convnext_tiny": {28: 1, 32: 2}, "nfnet_f0": {28: 2, 32: 2}}


@pytest.mark.parametrize("name", LAST_MAP)
def test_small_input_mode(name):
    small = create_model(name, num_classes=10, small_input=True)
    assert [f.stride for f in small.feature_info] == [2, 4, 8, 16]
    small.eval()
    with torch.no_grad():
        for size, side in LAST_MAP[name].items():
            maps = small.forward_intermediates(torch.randn(1, 3, size, size))
            assert [m.shape[1] for m in maps] == [f.channels for f in small.feature_info]
            assert maps[-1].shape[-2:] == (side, side)
        assert small(torch.randn(1, 3, 28, 28)).shape == (1, 10)
    default = create_model(name, num_classes=10)
    assert [f.stride for f in default.feature_info] == [4, 8, 16, 32]
    with pytest.raises(InputTooSmallError, match="small_input=True"):
        default(torch.randn(1, 3, 28, 28))


def test_convnext_block_starts_near_identity():
    """Layer scale 1e-6: at init each block adds almost nothing to its input."""
    from visionzoo.models.convnext import ConvNeXtBlock

    block = ConvNeXtBlock(32).eval()
    x = torch.randn(2, 32, 8, 8)
    assert (block(x) - x).abs().max() < 1e-4


# --- NFNet signal propagation -------------------------------------------------------------


def test_weight_standardization_rows():
    torch.manual_seed(0)
    conv = ScaledStdConv2d(16, 8, 3)
    with torch.no_grad():
        conv.weight.mul_(3.0).add_(0.7)  # off-centre, large: standardization must undo both
        conv.gain.uniform_(0.5, 2.0)
    w = conv.standardized_weight().flatten(1)  # (out, fan_in)
    fan_in = w.shape[1]
    torch.testing.assert_close(w.mean(1), torch.zeros(8), atol=1e-6, rtol=0)
    std = w.std(1, correction=0) * math.sqrt(fan_in)
    torch.testing.assert_close(std, conv.gain.flatten(), rtol=1e-4, atol=0)


def test_standardized_conv_preserves_unit_variance():
    torch.manual_seed(0)
    conv = ScaledStdConv2d(256, 256, 1)
    y = conv(torch.randn(8, 256, 8, 8))
    assert abs(y.var().item() - 1.0) < 0.05


def test_vpgelu_gamma_is_variance_preserving():
    z = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(GELU_GAMMA * F.gelu(z).std().item() - 1.0) < 5e-3
    torch.testing.assert_close(VPGELU()(z.float()[:10]), F.gelu(z.float()[:10]) * GELU_GAMMA)


def test_nfnet_betas_follow_expected_variance():
    """beta_i = sqrt(Var(h_i)); Var grows by alpha^2 per block, reset at each transition."""
    with torch.device("meta"):
        model = create_model("nfnet_f0")
    betas = [b.beta**2 for b in model.modules() if isinstance(b, NFBlock)]
    expected = [1.0, 1.04, 1.04, 1.08, 1.04, 1.08, 1.12, 1.16, 1.20, 1.24, 1.04, 1.08]
    assert betas == pytest.approx(expected)
    rates = [b.drop_path.drop_prob for b in model.modules() if isinstance(b, NFBlock)]
    assert rates == pytest.approx([0.25 * i / 12 for i in range(12)])


def test_nfnet_blocks_start_as_identity():
    torch.manual_seed(0)
    block = NFBlock(64, 64, stride=1, beta=1.0, group_width=16).eval()
    x = torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(block(x), x)  # skipinit gain 0: the branch is silent


def test_pad_same_is_tensorflow_style():
    x = torch.ones(1, 1, 8, 7)
    y = pad_same(x, 3, 2)  # H 8 -> total pad 1 (bottom only); W 7 -> total pad 2 (1 + 1)
    assert y.shape[-2:] == (9, 9)
    assert y[0, 0, -1].abs().sum() == 0 and y[0, 0, 0, 1:-1].abs().min() == 1


# --- Adaptive gradient clipping -----------------------------------------------------------


def test_agc_clips_unitwise_to_exactly_lambda_times_weight_norm():
    lam, eps = 0.01, 1e-3
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0], [0.0] * 3, [2.0] * 3]))
        layer.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))  # one unit, norm 1
    grads = torch.tensor(
        [
            [0.3, 0.4, 0.0],  # ||G|| 0.5 > 0.01 * 5: clipped to 0.05
            [0.003, 0.004, 0.0],  # ||G|| 0.005 < 0.01 * 1: untouched
            [1.0, 0.0, 0.0],  # zero weights: threshold 0.01 * eps
            [0.01, -0.01, 0.005],  # ||G|| 0.015 < 0.01 * sqrt(12): untouched
        ]
    )
    layer.weight.grad = grads.clone()
    layer.bias.grad = torch.tensor([0.0, 0.0, 3.0, 4.0])  # ||G|| 5 > 0.01: clipped to 0.01
    adaptive_clip_grad_(layer.parameters(), clip_factor=lam, eps=eps)

    g = layer.weight.grad
    w_norm = unitwise_norm(layer.weight).flatten().clamp(min=eps)
    for i in (0, 2):
        assert g[i].norm().item() == pytest.approx(lam * w_norm[i].item(), rel=1e-6)
        torch.testing.assert_close(g[i] / g[i].norm(), grads[i] / grads[i].norm())  # direction
    assert g[2].norm().item() == pytest.approx(lam * eps, rel=1e-6)
    assert torch.equal(g[1], grads[1]) and torch.equal(g[3], grads[3])  # bit for bit
    assert layer.bias.grad.norm().item() == pytest.approx(lam * 1.0, rel=1e-6)


def test_agc_units_of_a_conv_are_output_channels():
    conv = nn.Conv2d(2, 3, 3)
    conv.weight.grad = torch.randn_like(conv.weight) * 100  # every unit far above threshold
    adaptive_clip_grad_([conv.weight], clip_factor=0.1)
    got = conv.weight.grad.flatten(1).norm(dim=1)
    torch.testing.assert_close(got, 0.1 * conv.weight.detach().flatten(1).norm(dim=1))


def test_agc_parameters_leave_out_the_classifier():
    model = create_model("lenet5")
    params = agc_parameters(model)
    head = {id(p) for p in model.classifier.parameters()}
    assert head and not head & {id(p) for p in params}
    assert len(params) == len(list(model.parameters())) - len(head)
    plain = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))  # no get_classifier
    assert [id(p) for p in agc_parameters(plain)] == [id(p) for p in plain[0].parameters()]
