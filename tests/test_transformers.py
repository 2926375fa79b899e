"""ViT / DeiT, Swin and CSWin: parameter counts, weight ports, position-embedding
interpolation, small-input mode and attention maps."""

from __future__ import annotations

import math

import pytest
import torch

from visionzoo import create_model
from visionzoo.convert import WeightMismatchError, build_reference, port_weights, verify_port
from visionzoo.models.base import count_params
from visionzoo.models.vit import resize_pos_embed

TV = "torchvision 0.29.1 (reference/torchvision_weights.csv)"
COUNTS = {
    "vit_b_16": (86_567_656, TV),
    "vit_b_32": (88_224_232, TV),
    "vit_l_16": (304_326_632, TV),
    "vit_l_32": (306_535_400, TV),
    "vit_h_14": (632_045_800, TV),
    "vit_tiny_patch16": (5_717_416, "timm 1.0.31 deit_tiny_patch16_224"),
    "vit_small_patch16": (22_050_664, "timm 1.0.31 deit_small_patch16_224"),
    # timm's default has no head (97,890,112); this is timm's count with num_classes=1000.
    "vit_b_r50_s16": (98_659_112, "timm 1.0.31 vit_base_r50_s16_224(num_classes=1000)"),
    "swin_t": (28_288_354, TV),
    "swin_s": (49_606_258, TV),
    "swin_b": (87_768_224, TV),
    # No torchvision/timm model: counted by instantiating the authors' models/cswin.py
    # (microsoft/CSWin-Transformer), reference/models.csv.
    "cswin_t": (22_320_552, "authors' code"),
    "cswin_s": (34_643_304, "authors' code"),
    "cswin_b": (77_382_184, "authors' code"),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_param_count(name):
    expected, source = COUNTS[name]
    with torch.device("meta"):
        model = create_model(name)
    assert count_params(model) == expected, source


def port_diff(name, source, size, batch=2, model_kwargs=None, reference_kwargs=None):
    """Like convert.verify_port, but every reference weight is perturbed first: torchvision's
    ViT starts with a zero head (zero logits on both sides would prove nothing) and unit
    LayerNorms."""
    torch.manual_seed(0)
    reference = build_reference(name, source, **(reference_kwargs or {}))
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = create_model(name, **(model_kwargs or {}))
    port_weights(ours, reference.state_dict(), source)
    x = torch.randn(batch, 3, size, size)
    ours.eval()
    reference.eval()
    with torch.no_grad():
        a, b = ours(x), reference(x)
    assert b.abs().max() > 0.1  # the comparison is not between two near-zero outputs
    return float((a - b).abs().max())


# torchvision's ViT takes exactly its image_size; 32 px gives a 2x2 grid of 16 px patches.
VIT_TV = {"vit_b_16": 32}
VIT_TV_SLOW = {"vit_b_32": 32, "vit_l_16": 32, "vit_l_32": 32, "vit_h_14": 28}


@pytest.mark.parametrize("name", sorted(VIT_TV))
def test_vit_torchvision_port(name):
    size = VIT_TV[name]
    kw = dict(model_kwargs={"image_size": size}, reference_kwargs={"image_size": size})
    assert port_diff(name, "torchvision", size, **kw) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VIT_TV_SLOW))
def test_vit_large_torchvision_port(name):
    size = VIT_TV_SLOW[name]
    kw = dict(model_kwargs={"image_size": size}, reference_kwargs={"image_size": size})
    assert port_diff(name, "torchvision", size, batch=1, **kw) <= 1e-4


@pytest.mark.parametrize(
    "name", ["vit_tiny_patch16", pytest.param("vit_small_patch16", marks=pytest.mark.slow)]
)
def test_deit_timm_port(name):
    kw = dict(model_kwargs={"image_size": 64}, reference_kwargs={"img_size": 64})
    assert port_diff(name, "timm", 64, **kw) <= 1e-4


@pytest.mark.slow
def test_hybrid_timm_port():
    # 80 px: a 5x5 grid; odd intermediate sides exercise the SAME padding of stride-2 layers.
    kw = dict(
        model_kwargs={"image_size": 80}, reference_kwargs={"img_size": 80, "num_classes": 1000}
    )
    assert port_diff("vit_b_r50_s16", "timm", 80, batch=1, **kw) <= 1e-4


def test_verify_port_api():
    kw = dict(model_kwargs={"image_size": 32}, reference_kwargs={"img_size": 32})
    assert verify_port("vit_tiny_patch16", "timm", image_size=32, **kw) <= 1e-4


def test_swin_t_torchvision_port():
    # 64 px: maps of 16, 8, 4, 2 tokens, padded to 21, 14, 7, 7 (see swin.py's NOTE).
    assert port_diff("swin_t", "torchvision", 64) <= 1e-4


@pytest.mark.slow
def test_swin_t_torchvision_port_odd_size():
    # 100 px: maps of 25, 13 (odd: merging pads it), 7, 4 tokens.
    assert port_diff("swin_t", "torchvision", 100, batch=1) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swin_s", "swin_b"])
def test_swin_torchvision_port(name):
    assert port_diff(name, "torchvision", 64, batch=1) <= 1e-4


def test_other_variant_refused():
    small = build_reference("vit_small_patch16", "timm").state_dict()
    tiny = create_model("vit_tiny_patch16")
    with pytest.raises(WeightMismatchError, match="shape"):
        port_weights(tiny, small, "timm")


def test_pos_embed_interpolation():
    torch.manual_seed(0)
    m224 = create_model("vit_tiny_patch16", num_classes=10).eval()
    m256 = create_model("vit_tiny_patch16", num_classes=10, image_size=256).eval()
    assert m256.pos_embedding.shape == (1, 1 + 16 * 16, 192)
    m256.load_state_dict(m224.state_dict())  # 14x14 -> 16x16 position embeddings, bicubic
    with torch.no_grad():
        assert torch.isfinite(m256(torch.randn(1, 3, 256, 256))).all()
    assert torch.equal(m256.pos_embedding[:, 0], m224.pos_embedding[:, 0])  # class token kept
    assert torch.equal(m256.blocks[3].mlp.fc1.weight, m224.blocks[3].mlp.fc1.weight)
    # At the original size the same loading path changes nothing: equal logits.
    again = create_model("vit_tiny_patch16", num_classes=10).eval()
    again.load_state_dict(m224.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(again(x), m224(x), rtol=0, atol=0)
    assert resize_pos_embed(m224.pos_embedding, (14, 14)) is m224.pos_embedding
    # A smooth embedding survives the round trip 14 -> 16 -> 14 closely (not exactly: the
    # bicubic kernel smooths it).
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 14), torch.linspace(0, 1, 14), indexing="ij")
    field = torch.stack([torch.sin(math.pi * (yy + k * xx / 2)) for k in range(8)], -1)
    pos = torch.cat([torch.zeros(1, 1, 8), field.reshape(1, 196, 8)], 1)
    back = resize_pos_embed(resize_pos_embed(pos, (16, 16)), (14, 14))
    error = (back - pos).abs()
    assert error.mean() < 0.02 and error.max() < 0.1


def test_vit_wrong_size_is_explained():
    model = create_model("vit_tiny_patch16", small_input=True)
    with pytest.raises(ValueError, match="image_size=64"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="at least 224x224"):
        create_model("vit_tiny_patch16")(torch.randn(1, 3, 32, 32))


SMALL = {"vit_tiny_patch16": 4, "vit_b_r50_s16": 4, "swin_t": 16, "cswin_t": 16}  # last stride


@pytest.mark.parametrize(
    "name",
    [
        "cswin_t",
        "swin_t",
        "vit_tiny_patch16",
        pytest.param("vit_b_r50_s16", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("size", [28, 32])
def test_small_input(name, size):
    kwargs = {"image_size": size} if name.startswith("vit") else {}
    model = create_model(name, num_classes=10, in_channels=1, small_input=True, **kwargs).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        last = model.forward_intermediates(x)[-1]
    assert last.shape[1] == model.feature_info[-1].channels
    assert last.shape[-1] == math.ceil(size / SMALL[name])


def test_vit_intermediates_are_token_maps():
    model = create_model("vit_tiny_patch16", small_input=True).eval()
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(2, 3, 32, 32))
    assert [m.shape for m in maps] == [(2, 192, 8, 8)] * 4
    assert [f.name for f in model.feature_info] == ["blocks.2", "blocks.5", "blocks.8", "blocks.11"]


def test_cls_attention_map():
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16", small_input=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        attn = model.cls_attention(x)  # (B, heads, h, w): class token -> every patch
        after = model(x)
    assert attn.shape == (2, 3, 8, 8)
    # The rest of the class token's attention goes to itself: the patch row sums to < 1.
    total = attn.sum((2, 3))
    assert ((total > 0) & (total < 1)).all()
    assert not model.blocks[-1].attn._forward_hooks  # the capture hook is gone
    torch.testing.assert_close(before, after)
