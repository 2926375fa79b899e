"""Explicit outputs and the fixes of issue 20: auxiliary logits as a returned record, the
attention-capture helper, per-block layer decay, the drop-path guard, strict block arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visionzoo import create_model
from visionzoo.convert import get_converter
from visionzoo.engine.optim import stage_scales
from visionzoo.engine.train import compute_loss
from visionzoo.layers.attention import capture_attention
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


@pytest.mark.parametrize(
    "name, timm_name",
    [("vit_tiny_patch16", "deit_tiny_patch16_224"), ("convnext_tiny", "convnext_tiny")],
)
def test_layer_decay_matches_timm_group_matcher(name, timm_name):
    """Each parameter's lr scale equals timm's `param_groups_layer_decay` for the same
    parameter: the timm scales are written into a state dict, ported to our names, compared."""
    timm = pytest.importorskip("timm")
    from timm.optim import param_groups_layer_decay

    decay = 0.75
    reference = timm.create_model(timm_name, pretrained=False, num_classes=5)
    groups = param_groups_layer_decay(reference, layer_decay=decay)
    timm_scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    tagged = {n: torch.full_like(p, timm_scale[id(p)]) for n, p in reference.named_parameters()}
    expected = get_converter(name, "timm")(tagged)
    model = create_model(name, num_classes=5)
    scales = stage_scales(model, decay)
    assert len(set(scales.values())) == len(set(timm_scale.values())) > 10  # per block
    for param_name, _ in model.named_parameters():
        ref = expected[param_name].unique()
        assert ref.numel() == 1, param_name
        assert scales[param_name] == pytest.approx(ref.item()), param_name
    blocks = [scales[f"blocks.{i}.attn.qkv.weight"] for i in range(12)] if "vit" in name else []
    assert blocks == sorted(blocks) and len(set(blocks)) == len(blocks)


def test_captured_attention_is_the_softmax_of_scaled_query_key_products():
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16", num_classes=5, small_input=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        with capture_attention(model, ["blocks.0.attn", "blocks.11.attn"]) as maps:
            model(x)
        tokens = model.embed(x)  # the input of block 0's attention is norm1 of the embedding
        block = model.blocks[0]
        qkv = block.attn.qkv(block.norm1(tokens)).reshape(2, 65, 3, 3, 64).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        manual = (q @ k.transpose(-2, -1) / 64**0.5).softmax(-1)
    assert set(maps) == {"blocks.0.attn", "blocks.11.attn"}
    assert maps["blocks.0.attn"].shape == (2, 3, 65, 65)  # (B, heads, 1 + N, 1 + N)
    torch.testing.assert_close(maps["blocks.0.attn"], manual)
    for attn in maps.values():
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 65))
    assert not any(m._forward_hooks for m in model.modules())
    torch.testing.assert_close(model(x), before)
    with pytest.raises(ValueError, match="not Attention layers"):
        with capture_attention(model, ["blocks.0.mlp"]):
            pass
