"""Backbones for torchvision's detection code: OrderedDict outputs with `out_channels`."""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FeaturePyramidNetwork

import visionzoo
from visionzoo.backbone import Backbone, FPNBackbone
from visionzoo.errors import UserError


@torch.no_grad()
def random_bn_statistics(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_faster_rcnn_on_our_resnet50_gives_torchvision_boxes(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    random_bn_statistics(reference)
    torch.save(reference.state_dict(), tmp_path / "resnet50.pth")
    layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    tv_backbone = BackboneWithFPN(reference, layers, [256, 512, 1024, 2048], 256)

    ours = visionzoo.backbone(
        "resnet50", out_indices=(1, 2, 3, 4), weights=str(tmp_path / "resnet50.pth"),
        fpn_channels=256,
    )  # fmt: skip
    ours.fpn.load_state_dict(tv_backbone.fpn.state_dict())
    assert isinstance(ours, FPNBackbone) and ours.out_channels == 256

    kwargs = dict(num_classes=3, min_size=96, max_size=96, box_score_thresh=0.0)
    tv_det = FasterRCNN(tv_backbone, **kwargs).eval()
    our_det = FasterRCNN(ours, **kwargs).eval()
    our_det.rpn.load_state_dict(tv_det.rpn.state_dict())
    our_det.roi_heads.load_state_dict(tv_det.roi_heads.state_dict())

    images = [torch.rand(3, 96, 96), torch.rand(3, 80, 96)]
    with torch.no_grad():
        expected, got = tv_det(images), our_det(images)
    assert sum(len(e["boxes"]) for e in expected) > 10, "no detections: the check would be empty"
    for e, g in zip(expected, got):
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(g["scores"], e["scores"], rtol=0, atol=1e-5)
        assert torch.equal(g["labels"], e["labels"])


@pytest.mark.parametrize(
    "name,kwargs,channels,strides",
    [
        ("resnet18", {}, [64, 128, 256, 512], [4, 8, 16, 32]),
        ("convnext_tiny", {}, [96, 192, 384, 768], [4, 8, 16, 32]),
        ("swin_t", {}, [96, 192, 384, 768], [4, 8, 16, 32]),
        ("mobilenet_v3_small", {}, [24, 48, 96], [8, 16, 32]),
        ("vit_tiny_patch16", {"small_input": True}, [192] * 4, [4] * 4),
    ],
)
def test_backbone_maps_feed_torchvision_fpn(name, kwargs, channels, strides):
    levels = len(visionzoo.create_model(name, **kwargs).feature_info)
    out_indices = tuple(range(levels - len(channels), levels))
    body = visionzoo.backbone(name, out_indices=out_indices, **kwargs)
    assert isinstance(body, Backbone) and body.out_channels == channels
    assert [f.stride for f in body.feature_info] == strides
    size = 32 if kwargs else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        maps = body.eval()(x)
        assert list(maps) == [str(i) for i in range(len(channels))]
        for (key, m), c, s in zip(maps.items(), channels, strides):
            assert m.shape == (2, c, -(-size // s), -(-size // s)), key
        pyramid = FeaturePyramidNetwork(body.out_channels, 32)(maps)
        assert all(p.shape[1] == 32 for p in pyramid.values())
        traced = torch.fx.symbolic_trace(body)  # a traced backbone gives the same maps
        for a, b in zip(traced(x).values(), maps.values()):
            assert torch.equal(a, b)


def test_single_level_backbone_is_a_faster_rcnn_backbone():
    body = visionzoo.backbone("resnet18", out_indices=(-1,))
    assert body.out_channels == 512
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    anchors = AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),))
    det = FasterRCNN(body, num_classes=2, min_size=64, max_size=64, rpn_anchor_generator=anchors,
                     box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2)).eval()  # fmt: skip
    with torch.no_grad():
        out = det([torch.rand(3, 64, 64)])
    assert set(out[0]) == {"boxes", "labels", "scores"}


def test_bad_out_indices_are_one_line():
    with pytest.raises(UserError, match="resnet18 has feature levels 0..4; out_indices has 7"):
        visionzoo.backbone("resnet18", out_indices=(1, 7))


def test_fpn_backbone_drops_into_mask_rcnn_and_retinanet():
    """`out_channels` is all torchvision's detectors read: each runs on the FPN backbone."""
    from torchvision.models.detection import MaskRCNN, RetinaNet

    torch.manual_seed(0)
    fpn = visionzoo.backbone("resnet18", out_indices=(1, 2, 3, 4), fpn_channels=64)
    with torch.no_grad():
        maps = fpn.eval()(torch.rand(1, 3, 64, 64))
        assert list(maps) == ["0", "1", "2", "3", "pool"]
        for detector, keys in ((MaskRCNN, {"boxes", "labels", "scores", "masks"}),
                               (RetinaNet, {"boxes", "labels", "scores"})):  # fmt: skip
            det = detector(fpn, num_classes=3, min_size=64, max_size=64).eval()
            (out,) = det([torch.rand(3, 64, 64)])
            assert set(out) == keys, detector.__name__
