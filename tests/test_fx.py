"""torch.fx: every registered model traces, and torchvision's create_feature_extractor takes it.

Each model is built in its small-input mode where it has one (32x32 inputs), else at its
smallest valid input, as in test_models.py. The traced graph must give the eager logits
exactly, in eval mode and (same seed, so dropout draws the same masks) in training mode;
the feature extractor's maps must equal the eager outputs of the same modules.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torchvision.models.feature_extraction import create_feature_extractor

from visionzoo import create_model, get_model_info, list_models
from visionzoo.models.base import InputTooSmallError, main_logits

# create_feature_extractor warns that train- and eval-mode graphs differ (dropout nodes).
pytestmark = pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained:UserWarning")
ALL = list_models()
# Over 40M parameters: deeper or wider siblings of a variant traced by default (their code is
# the same; building and tracing them takes most of this file's time), run with `-m slow`.
# The families' only or smallest large variants stay in the default run.
KEEP = {"vit_b_16", "vit_b_r50_s16", "nfnet_f0", "vgg11", "alexnet", "alexnet_2012"}
GIANT = {
    n for n in ALL
    if (get_model_info(n).reference_params or 0) > 40_000_000 and n not in KEEP
}  # fmt: skip


def small_model(name: str, **kwargs):
    info = get_model_info(name)
    if info.small_input:
        kwargs.setdefault("small_input", True)
        size = 32
    else:
        size = info.min_image_size
    return create_model(name, num_classes=5, **kwargs), size


def eager_features(model, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of the named modules during one eager forward, taken by forward hooks."""
    out, handles = {}, []
    for name in names:
        module = model.get_submodule(name)
        handles.append(module.register_forward_hook(lambda m, i, o, n=name: out.__setitem__(n, o)))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    assert set(out) == set(names), f"modules never called: {set(names) - set(out)}"
    return out


@pytest.mark.parametrize("name", [n if n not in GIANT else pytest.param(n, marks=pytest.mark.slow)
                                  for n in ALL])  # fmt: skip
def test_trace_and_feature_extractor(name):
    torch.manual_seed(0)
    model, size = small_model(name)
    x = torch.randn(2, model.in_channels, size, size)
    taps = [f.name for f in model.feature_info]
    extractor = create_feature_extractor(model, return_nodes=taps)  # traces both modes
    with torch.no_grad():
        for mode in ("eval", "train"):
            model.train(mode == "train")
            extractor.train(mode == "train")
            traced = torch.fx.symbolic_trace(model)
            torch.manual_seed(1)
            eager = model(x)
            torch.manual_seed(1)
            out = traced(x)
            assert type(out) is type(eager), f"{mode}: traced output is a {type(out).__name__}"
            assert torch.equal(main_logits(out), main_logits(eager)), f"{mode}: logits differ"

            torch.manual_seed(1)
            maps = extractor(x)
            torch.manual_seed(1)
            expected = eager_features(model, taps, x)
            assert list(maps) == taps
            for tap in taps:
                assert torch.equal(maps[tap], expected[tap]), f"{mode}: {tap} differs"


def test_traced_graph_follows_the_input_size():
    """Padding that depends on the size (Swin's windows, NFNet's SAME) stays arithmetic on the
    traced input's size: a graph traced once runs other sizes like the eager model."""
    torch.manual_seed(0)
    for name, sizes in (("swin_t", (32, 40, 50)), ("nfnet_f0", (32, 35, 41))):
        model = create_model(name, num_classes=5, small_input=name == "swin_t").eval()
        traced = torch.fx.symbolic_trace(model)
        for size in sizes:
            x = torch.randn(1, 3, size, size)
            with torch.no_grad():
                assert torch.equal(traced(x), model(x)), f"{name} at {size}px"


def test_inception_aux_pool_traces_in_training_mode():
    """The auxiliary classifier pools 17x17 maps 5x5/3 and smaller ones adaptively: both
    branches run inside the traced graph (the map is 17x17 at 299 px, 3x3 at 75 px)."""
    torch.manual_seed(0)
    model = create_model("inception_v3", num_classes=5).train()
    traced = torch.fx.symbolic_trace(model)
    for size in (75, 299):
        x = torch.randn(2, 3, size, size)  # training-mode BatchNorm needs two values
        with torch.no_grad():
            torch.manual_seed(2)
            eager = model(x)
            torch.manual_seed(2)
            out = traced(x)
            assert torch.equal(out.logits, eager.logits)
            assert torch.equal(out.aux_logits[0], eager.aux_logits[0])


def test_traced_model_keeps_the_input_errors():
    """The input check is one recorded call: a traced model refuses what the eager one does."""
    model = create_model("resnet18", num_classes=5)
    traced = torch.fx.symbolic_trace(model)
    with pytest.raises(InputTooSmallError, match="at least 32x32"):
        traced(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="3 input channels, got 1"):
        traced(torch.randn(1, 1, 64, 64))
    vit = torch.fx.symbolic_trace(create_model("vit_tiny_patch16", small_input=True))
    with pytest.raises(ValueError, match="built for 32x32 inputs .*image_size=40"):
        vit(torch.randn(1, 3, 40, 40))
