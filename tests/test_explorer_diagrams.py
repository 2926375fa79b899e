"""Each family's diagram holds the nodes that define its paper (drawn on the meta device)."""

from __future__ import annotations

import html
import re

import pytest
import torch

from visionzoo.explorer.diagram import draw_model, model_diagram
from visionzoo.registry import create_model, list_models


def _texts(svg: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


def _labels(d: dict) -> dict[str, list[str]]:
    """{"main": labels, block class: labels} of a diagram."""
    out = {"main": _texts(d["svg"])}
    for b in d["blocks"]:
        out.setdefault(b["name"], _texts(b["svg"]))
    return out


def _has(labels: list[str], *words: str) -> bool:
    return any(all(w in t for w in words) for t in labels)


@pytest.fixture(scope="module")
def drawn():
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in list_models():
            pytest.skip(f"{name} is not registered")
        if name not in cache:
            cache[name] = draw_model(name, "meta")
        return cache[name]

    return get


def test_swin_windows_shift_and_patch_merging(drawn):
    d = drawn("swin_t")
    L = _labels(d)
    assert d["defining"] == "SwinBlock" and d["blocks"][0]["name"] == "SwinBlock"
    assert _has(L["SwinBlock"], "SW-MSA 7×7 windows", "shift 3")  # the shifted block is drawn
    assert _has(L["SwinStage"], "PatchMerging", "2×2")
    assert _has(L["SwinStage"], "SwinBlock ×2", "W-MSA / SW-MSA alternating")
    assert [t for t in L["main"] if "SwinStage" in t][2].endswith("6× SwinBlock")
    assert _has(L["ShiftedWindowAttention"], "roll")  # the cyclic shift itself


def test_convnext_block_in_paper_order_and_stage_depths(drawn):
    d = drawn("convnext_tiny")
    L = _labels(d)
    stages = [t for t in L["main"] if "× ConvNeXtBlock" in t]
    depths = [re.search(r"(\d+)× ConvNeXtBlock", t).group(1) for t in stages]
    assert depths == ["3", "3", "9", "3"]
    block = L["ConvNeXtBlock"]
    order = ["DW Conv 7×7", "LN", "expand ×4", "GELU", "Linear 384→96", "layer scale γ", "+"]
    assert all(_has(block, w) for w in order), block
    body = [t for t in block if not t.startswith("layer scale")]  # the parameter sits aside
    at = [next(i for i, t in enumerate(body) if w in t) for w in order if w != "layer scale γ"]
    assert at == sorted(at)


@pytest.mark.parametrize(
    "name,block", [("mobilenet_v2", "InvertedResidual"), ("efficientnet_b0", "MBConv")]
)
def test_mbconv_drawn_from_a_block_with_expansion_and_residual(drawn, name, block):
    L = _labels(drawn(name))
    inside = L[block]
    assert _has(inside, "Conv 1×1, 144")  # the expansion (24 -> 144 channels)
    assert _has(inside, "DW Conv 3×3, 144")
    assert "+" in inside  # the identity shortcut
    if block == "MBConv":
        assert "SqueezeExcite" in inside


def test_googlenet_named_inception_modules_and_aux_heads(drawn):
    L = _labels(drawn("googlenet"))
    names = [t for t in L["main"] if t.startswith("Inception ")]
    paper = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
    assert names == [f"Inception {n}" for n in paper]
    assert _has(L["main"], "aux1", "training only") and _has(L["main"], "aux2", "training only")
    assert "concat" in L["Inception"]


def test_googlenet_aux_heads_branch_off_4a_and_4d():
    if "googlenet" not in list_models():
        pytest.skip("googlenet is not registered")
    from visionzoo.explorer.diagram.extract import training_only

    with torch.device("meta"):
        model = create_model("googlenet").eval()
        taps = training_only(model, torch.randn(1, 3, 224, 224))
    assert [(a, src) for a, src, _ in taps] == [("aux1", "inception4a"), ("aux2", "inception4d")]
    assert not model.training


def test_densenet_blocks_and_transitions(drawn):
    L = _labels(drawn("densenet121"))
    blocks = [t for t in L["main"] if t.startswith("DenseBlock")]
    assert [re.search(r"(\d+)× DenseLayer", t).group(1) for t in blocks] == ["6", "12", "24", "16"]
    assert L["main"].count("Transition") == 3
    assert _has(L["Transition"], "Conv 1×1") and _has(L["Transition"], "AvgPool 2×2")
    assert "concat" in L["DenseLayer"]


def test_xception_flows(drawn):
    d = drawn("xception")
    frames = re.findall(r'class="fl">([^<]*)<', d["svg"])
    assert "entry flow · 3 blocks" in frames and "middle flow · 8 blocks" in frames
    assert any(f.startswith("exit flow") for f in frames)
    assert _has(_labels(d)["SeparableConv2d"], "DW Conv 3×3")


def test_nfnet_scaled_residual(drawn):
    L = _labels(drawn("nfnet_f0"))["NFBlock"]
    assert _has(L, "÷ β") and _has(L, "× α = 0.2") and _has(L, "skipinit_gain")
    assert "+" in L


def test_diagram_of_an_untraceable_block_still_queues_its_inner_blocks():
    """A detail of input -> one box -> output is not drawn, but what it holds is."""
    from torch import nn

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return x + self.b(self.a(x))

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, x):
            return self.inner(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = Wrapper()
            self.fc = nn.Linear(4, 2)

        def forward_features(self, x):
            return self.w(x)

        def forward_head(self, x):
            return self.fc(x.mean((2, 3)))

    d = model_diagram(Net(), torch.randn(1, 4, 8, 8))
    assert [b["name"] for b in d["blocks"]] == ["Inner"]
