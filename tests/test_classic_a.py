"""AlexNet, VGG, GoogLeNet and Inception v3: counts, ports, auxiliary heads, small inputs."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision

from visionzoo import create_model, get_model_info, list_models
from visionzoo.convert import (
    WeightMismatchError,
    check_state_dict,
    get_converter,
    port_weights,
    verify_port,
)
from visionzoo.models.alexnet import LocalResponseNorm
from visionzoo.models.base import AuxOutputs, InputTooSmallError, count_params
from visionzoo.models.googlenet import INCEPTIONS

warnings.filterwarnings("ignore", message=".*weight initialization.*", category=FutureWarning)

VGG = list_models("vgg*")
# torchvision's GoogLeNet and Inception v3 re-normalize inputs by default; we do not.
TV_INCEPTION = dict(transform_input=False, init_weights=True)


def meta_count(build, **kwargs) -> int:
    with torch.device("meta"):
        return count_params(build(**kwargs))


# (our name, our kwargs, torchvision kwargs, expected count); the torchvision figures are
# its weights' num_params (aux heads excluded) or, with aux heads, counted from its model.
TORCHVISION_COUNTS = [
    ("alexnet", {}, {}, 61_100_840),
    *[(n, {}, {}, get_model_info(n).reference_params) for n in VGG],
    ("googlenet", {}, {"aux_logits": True}, 13_004_888),
    ("googlenet", {"aux_logits": False}, {"aux_logits": False}, 6_624_904),
    ("inception_v3", {}, {"aux_logits": True}, 27_161_264),
    ("inception_v3", {"aux_logits": False}, {"aux_logits": False}, 23_834_568),
]


@pytest.mark.parametrize("name, kwargs, tv_kwargs, expected", TORCHVISION_COUNTS)
def test_param_count_equals_torchvision(name, kwargs, tv_kwargs, expected):
    tv_name = get_model_info(name).torchvision_name
    tv_kwargs = {**tv_kwargs, **({"init_weights": True} if "aux_logits" in tv_kwargs else {})}
    reference = meta_count(torchvision.models.get_model, name=tv_name, weights=None, **tv_kwargs)
    assert reference == expected
    assert meta_count(create_model, name=name, **kwargs) == expected


def test_alexnet_2012_count_is_the_papers_60_million():
    # conv1..conv5 (conv2, conv4, conv5 see half their input: two towers) + fc6, fc7, fc8
    convs = [(3, 96, 11, 1), (96, 256, 5, 2), (256, 384, 3, 1), (384, 384, 3, 2), (384, 256, 3, 2)]
    conv = sum(cin // g * cout * k * k + cout for cin, cout, k, g in convs)
    fc = sum(i * o + o for i, o in ((256 * 6 * 6, 4096), (4096, 4096), (4096, 1000)))
    assert (conv, fc) == (2_334_080, 58_631_144)
    assert meta_count(create_model, name="alexnet_2012") == conv + fc == 60_965_224


def test_googlenet_paper_5x5_count():
    extra = sum(s.reduce5x5 * s.conv5x5 * (25 - 9) for s in INCEPTIONS)  # 5x5 instead of 3x3
    count = meta_count(create_model, name="googlenet", paper_5x5=True, aux_logits=False)
    assert count == 6_624_904 + extra == 7_005_832
    assert meta_count(create_model, name="googlenet", paper_5x5=True) == 13_385_816


# (name, smallest input torchvision accepts, our kwargs, torchvision kwargs). Each VGG port
# builds two 130M-parameter models: vgg11 and vgg11_bn cover both converter paths in the
# quick run, the deeper configurations run with the slow tests.
SLOW = [pytest.mark.slow]
PORTS = [
    ("alexnet", 63, {}, {}),
    *[pytest.param(n, 32, {}, {}, marks=[] if n.startswith("vgg11") else SLOW) for n in VGG],
    ("googlenet", 15, {}, TV_INCEPTION),
    ("googlenet", 15, {"aux_logits": False}, {**TV_INCEPTION, "aux_logits": False}),
    ("inception_v3", 75, {}, TV_INCEPTION),
    pytest.param(
        "inception_v3", 75, {"aux_logits": False}, {**TV_INCEPTION, "aux_logits": False}, marks=SLOW
    ),
]


@pytest.mark.parametrize("name, size, kwargs, tv_kwargs", PORTS)
def test_torchvision_port_logits_match(name, size, kwargs, tv_kwargs):
    diff = verify_port(name, "torchvision", image_size=size, model_kwargs=kwargs,
                       reference_kwargs=tv_kwargs)  # fmt: skip
    assert diff <= 1e-4


def test_googlenet_aux_logits_match_torchvision_in_training():
    torch.manual_seed(0)
    reference = torchvision.models.googlenet(weights=None, **TV_INCEPTION)
    ours = port_weights(create_model("googlenet"), reference.state_dict(), "torchvision")
    for model in (ours, reference):
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.eval()  # batch statistics on, dropout off: deterministic training pass
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = reference(x)
        out = ours(x)
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.aux_logits, (ref.aux_logits1, ref.aux_logits2))


@pytest.mark.slow
def test_inception_v3_aux_logits_match_torchvision_at_299():
    torch.manual_seed(0)
    reference = torchvision.models.inception_v3(weights=None, **TV_INCEPTION)
    ours = port_weights(create_model("inception_v3"), reference.state_dict(), "torchvision")
    for model in (ours, reference):
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.eval()
    x = torch.randn(2, 3, 299, 299)
    with torch.no_grad():
        ref = reference(x)
        out = ours(x)
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.aux_logits, (ref.aux_logits,))


@pytest.mark.parametrize("name, weights", [("googlenet", [0.3, 0.3]), ("inception_v3", [0.4])])
def test_aux_outputs_in_training_only(name, weights):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, small_input=True)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    out = model(x)
    assert isinstance(out, AuxOutputs) and out.logits.shape == (2, 5)
    assert [a.shape for a in out.aux_logits] == [(2, 5)] * len(weights)
    assert [out.aux_weight] * len(out.aux_logits) == weights
    model.eval()
    with torch.no_grad():
        assert isinstance(model(x), torch.Tensor)
    model = create_model(name, num_classes=5, small_input=True, aux_logits=False).train()
    assert isinstance(model(x), torch.Tensor)
    assert not any("aux" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize(
    "name", ["alexnet", "alexnet_2012", "vgg11_bn", "googlenet", "inception_v3"]
)
def test_small_input_mode(name):
    model = create_model(name, num_classes=10, in_channels=3, small_input=True).eval()
    assert model.small_input and get_model_info(name).small_input
    for size in (28, 32):
        with torch.no_grad():
            out = model(torch.randn(2, 3, size, size))
            maps = model.forward_intermediates(torch.randn(1, 3, size, size))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        for fmap, level in zip(maps, model.feature_info):
            assert fmap.shape[1] == level.channels
            assert 1 <= fmap.shape[-1] <= -(-size // level.stride)  # at most ceil(size / stride)


@pytest.mark.parametrize("name", ["alexnet", "alexnet_2012", "vgg11", "googlenet", "inception_v3"])
def test_too_small_input_names_minimum(name):
    info = get_model_info(name)
    with torch.device("meta"):
        model = create_model(name).eval()
        assert model.min_image_size == info.min_image_size
        model(torch.randn(1, 3, info.min_image_size, info.min_image_size))  # the minimum works
        with pytest.raises(
            InputTooSmallError, match=f"at least {info.min_image_size}x.*small_input"
        ):
            model(torch.randn(1, 3, info.min_image_size - 1, info.min_image_size - 1))


def test_alexnet_2012_maps_follow_figure_2():
    with torch.device("meta"):
        model = create_model("alexnet_2012")
        maps = model.forward_intermediates(torch.randn(1, 3, 227, 227))
        pooled = model.forward_features(torch.randn(1, 3, 227, 227))
    assert [tuple(m.shape[1:]) for m in maps] == [
        (96, 55, 55), (256, 27, 27), (384, 13, 13), (384, 13, 13), (256, 13, 13)
    ]  # fmt: skip
    assert tuple(pooled.shape[1:]) == (256, 6, 6)
    assert [model.get_submodule(f"conv{i}").conv.groups for i in range(1, 6)] == [1, 2, 1, 2, 2]


def test_local_response_norm_is_the_papers_formula():
    torch.manual_seed(0)
    a = torch.randn(2, 8, 3, 3)
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75
    sq = F.pad(a.square(), (0, 0, 0, 0, n // 2, n // 2))  # zero maps beyond the edges
    sums = torch.stack([sq[:, i : i + n].sum(1) for i in range(8)], 1)
    expected = a / (k + alpha * sums) ** beta
    torch.testing.assert_close(LocalResponseNorm(n, alpha, beta, k)(a), expected)
    # two towers: each normalizes over its own four maps only
    towers = LocalResponseNorm(n, alpha, beta, k, towers=2)
    b = a.clone()
    b[:, 4:] *= 100
    torch.testing.assert_close(towers(b)[:, :4], towers(a)[:, :4])


def test_mismatched_state_dict_is_refused():
    torch.manual_seed(0)
    with torch.device("meta"):
        small = create_model("alexnet_2012")
        tv_alexnet = torchvision.models.alexnet(weights=None).state_dict()
        vgg11 = create_model("vgg11")
        tv_vgg13 = torchvision.models.vgg13(weights=None).state_dict()
    converted = get_converter("alexnet", "torchvision")(tv_alexnet)
    with pytest.raises(WeightMismatchError, match=r"conv1\.conv\.weight: \(64, 3, 11, 11\)"):
        check_state_dict(small, converted)
    with pytest.raises(WeightMismatchError, match=r"4 unexpected: stages\.0\.1\.conv\.weight"):
        port_weights(vgg11, tv_vgg13, "torchvision")
