"""bench: FLOP counting, profile_model, depth, the bench/info/export commands, the fast path."""

from __future__ import annotations

import copy
import csv
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionzoo import create_model, get_model_info
from visionzoo.bench import optimize as optimize_mod
from visionzoo.bench.export import export_model
from visionzoo.bench.optimize import (
    PackedConv2d,
    find_conv_bn_pairs,
    fold_batchnorm,
    optimize,
    packed_bf16_supported,
)
from visionzoo.bench.profile import count_flops, profile_model
from visionzoo.bench.reported import load_reported
from visionzoo.cli import main


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))


def test_conv_flops_match_the_formula():
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1, groups=1)
    x = torch.randn(1, 3, 16, 16)
    # output 8 x 8 x 8; each output: 3 * 3 * 3 multiply-adds; a multiply-add is 2 FLOPs
    assert count_flops(conv, x) == 2 * (8 * 8 * 8) * (3 * 3 * 3)
    grouped = nn.Conv2d(8, 8, kernel_size=3, padding=1, groups=8, bias=False)
    assert count_flops(grouped, torch.randn(2, 8, 5, 5)) == 2 * 2 * (8 * 5 * 5) * (3 * 3)


def test_linear_flops_match_the_formula():
    assert count_flops(nn.Linear(120, 84), torch.randn(3, 120)) == 2 * 3 * 120 * 84


def test_profile_lenet5_matches_the_reference():
    p = profile_model("lenet5")
    assert p["params"] == 61_706
    assert p["macs"] == 416_520  # reference/small_data_results.md: 416,520 MACs at 32x32
    assert p["flops"] == 2 * p["macs"]
    assert p["image_size"] == 32 and p["in_channels"] == 1
    assert p["weighted_layers"] == 5  # C1, C3, C5, F6, output
    assert p["depth"] == 7 and p["depth_longest_path"] == 5  # the paper counts S2 and S4
    for key in ("name", "family", "year", "activation_bytes", "stages"):
        assert key in p
    assert p["activation_bytes"] > 0
    assert sum(s["params"] for s in p["stages"]) == p["params"]
    assert sum(s["flops"] for s in p["stages"]) == p["flops"]
    assert [s["name"] for s in p["stages"]] == ["c1", "s2", "c3", "s4", "c5", "head"]
    assert p["stages"][0]["output_shape"] == [6, 28, 28]
    assert p["stages"][0]["flops"] == 2 * 6 * 28 * 28 * 25


def test_profile_is_cached_and_json_ready():
    a = profile_model("lenet5", in_channels=3)
    b = profile_model("lenet5", in_channels=3)
    assert a == b and a is not b
    assert a["in_channels"] == 3 and a["params"] == 61_706 + 2 * 6 * 25
    json.dumps(a)


# Depth as the paper counts it: the longest chain of weighted layers, input to logits.
DEPTHS = {
    "alexnet": 8,
    "vgg11": 11,
    "vgg16": 16,
    "vgg19_bn": 19,
    "googlenet": 22,
    "inception_v3": 42,  # the paper's count; the longest conv path is 48
    "resnet18": 18,
    "resnet34": 34,
    "resnet50": 50,
    "resnet101": 101,
    "plain34": 34,
    "resnet20": 20,
    "resnet56": 56,
    "plain20": 20,
    "densenet121": 121,
    "densenet_bc_100": 100,
    "mobilenet_v1": 28,
    "mobilenet_v2": 53,
    "convnext_tiny": 59,
    "lenet5_paper": 7,
    "highway_fc_10": 10,  # the paper counts hidden layers, not the softmax layer
    "highway_conv_w16": 10,  # 9 conv layers + softmax (Table 1)
    "xception": 36,  # the paper's count: a separable convolution is one layer
    "swin_t": 53,  # as torchvision's swin_t: patch embedding, 12 x 4 linear, 3 merges, head
}


# Over ~5 s each on two busy cores: the slow marker.
SLOW = {"densenet121", "inception_v3", "resnet101", "convnext_tiny", "resnet50", "vgg19_bn",
        "densenet_bc_100", "resnet56", "vgg11", "vgg16", "xception", "swin_t"}  # fmt: skip


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(DEPTHS)]
)
def test_depth_as_the_paper_counts(name):
    info = get_model_info(name)
    p = profile_model(name, image_size=max(info.min_image_size, 32))
    assert p["depth"] == DEPTHS[name]


@pytest.mark.slow
def test_transformer_reports_blocks():
    p = profile_model("vit_b_16")
    assert p["blocks"] == 12
    assert p["depth"] == 50  # patch embedding + 12 x (qkv, proj, fc1, fc2) + head
    assert abs(p["macs"] / 1e9 - 17.564) < 0.01  # torchvision's "GFLOPS" (= GMACs)


@pytest.mark.slow
def test_resnet50_macs_equal_torchvision_published_figure():
    assert round(profile_model("resnet50")["macs"] / 1e9, 3) == 4.089


def test_bench_lenet5_writes_csv_and_json(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "lenet5", "--batch-size", "1,2", "--repeats", "3", "--warmup", "1",
                 "--train", "--optimize", "--out", str(out)])  # fmt: skip
    assert code == 0
    (csv_path,) = out.glob("*.csv")
    (json_path,) = out.glob("*.json")
    rows = list(csv.DictReader(open(csv_path)))
    assert {(r["impl"], r["mode"], r["batch_size"]) for r in rows} == {
        (impl, mode, b)
        for b in ("1", "2")
        for impl, mode in (("visionzoo", "inference"), ("visionzoo-fast", "inference"),
                           ("visionzoo", "train"))
    }  # fmt: skip
    for r in rows:
        assert float(r["median_ms"]) > 0 and float(r["p95_ms"]) >= float(r["median_ms"])
        assert float(r["throughput_img_s"]) > 0
    data = json.loads(json_path.read_text())
    env = data["environment"]
    for key in ("cpu", "torch_threads", "torch", "dtype", "layout", "git_commit"):
        assert key in env
    assert len(data["results"]) == len(rows)
    assert "wrote" in capsys.readouterr().out


def test_bench_compare_ports_the_same_weights(tmp_path):
    code = main(["bench", "resnet18", "--image-size", "32", "--batch-size", "1",
                 "--repeats", "2", "--warmup", "1", "--compare", "torchvision",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(open(next(tmp_path.glob("*.csv")))))
    assert [r["impl"] for r in rows] == ["visionzoo", "torchvision"]


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "no_such_model"],
        ["bench", "lenet*", "--dtype", "fp8"],
        ["bench", "lenet5", "--dtype", "fp16"],  # half precision on CPU
        ["bench", "lenet5", "--batch-size", "one"],
        ["bench", "zzz*"],
        ["info", "no_such_model"],
        ["info", "lenet5", "--small-input"],
        ["info", "lenet5", "--image-size", "8"],
        ["export", "lenet5", "--format", "tflite"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("visionzoo: error:") and "\n" not in err


def test_info_prints_the_card(capsys):
    assert main(["info", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "61,706" in out and "416.520 KMACs" in out and "Key idea" in out
    assert main(["info", "lenet5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["macs"] == 416_520 and data["reported"]["params"] == 61_706


def _export_ok(model, fmt, x, tmp_path, exporter="torchscript"):
    suffix = ".onnx" if fmt == "onnx" else ".pt2"
    result = export_model(model, fmt, x, tmp_path / f"m{suffix}", exporter=exporter)
    assert result.error == "", result.error
    assert result.ok and result.max_abs_diff <= 1e-4
    return result


def test_onnx_round_trip_lenet5(tmp_path):
    torch.manual_seed(0)
    _export_ok(create_model("lenet5").eval(), "onnx", torch.randn(2, 1, 32, 32), tmp_path)


def test_torch_export_round_trip_lenet5(tmp_path):
    torch.manual_seed(0)
    _export_ok(create_model("lenet5").eval(), "torch-export", torch.randn(2, 1, 32, 32), tmp_path)


@pytest.mark.parametrize(
    "name",
    ["resnet18", "mobilenet_v2"]
    + [pytest.param(n, marks=pytest.mark.slow) for n in ("convnext_tiny", "densenet121")],
)
def test_onnx_round_trip_families(name, tmp_path):
    info = get_model_info(name)
    kwargs = {"small_input": True} if info.small_input else {}
    size = 32 if info.small_input else info.min_image_size
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, image_size=size, **kwargs).eval()
    _export_ok(model, "onnx", torch.randn(2, 3, size, size), tmp_path)


@pytest.mark.slow
def test_export_cli_dynamo_onnx(tmp_path, capsys):
    out = tmp_path / "lenet5.onnx"
    assert main(["export", "lenet5", "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and "max |logit diff|" in capsys.readouterr().out


class _ConvBnNet(nn.Module):
    """Three conv->bn patterns: a Sequential, named attributes, and a shared output."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.seq(x)
        x = torch.relu(self.bn1(self.conv1(x)))
        y = self.conv2(x)
        x = self.bn2(y) + y  # conv2's output is also used raw: must not be folded
        return self.fc(x.mean((2, 3)))


def _randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


@torch.no_grad()
def test_fast_path_folds_batchnorm_and_keeps_logits():
    torch.manual_seed(0)
    model = _ConvBnNet().eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 16, 16)
    pairs = find_conv_bn_pairs(model, x)
    assert sorted(pairs) == [("conv1", "bn1"), ("seq.0", "seq.1")]
    fast = optimize(model, image_size=16)
    assert fast.rewrite.folded_batchnorms == 2
    assert isinstance(fast.model.bn1, nn.Identity) and isinstance(model.bn1, nn.BatchNorm2d)
    torch.testing.assert_close(fast(x), model(x), atol=1e-4, rtol=0)


@torch.no_grad()
def test_fast_path_on_a_registered_resnet():
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 32, 32)
    fast = optimize(model, image_size=32)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())
    assert (fast(x) - model(x)).abs().max() <= 1e-4


@pytest.mark.skipif(not shutil.which("c++"), reason="inductor on CPU needs a C++ compiler")
def test_compiled_fast_path_keeps_logits():
    """torch.compile with inductor freezing (needs a C++ compiler, as inductor on CPU does)."""
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    _randomize_bn(model)
    fast = optimize(model, image_size=32, compile=True)
    assert fast._compiled is not None
    for batch in (2, 3):  # a second shape compiles its own static graph
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            assert (fast(x) - model(x)).abs().max() <= 1e-4
    assert fast._compiled is not None  # compiled, not fallen back to eager
    # every model shares ImageClassifier.forward: room for many models x shapes per process
    assert torch._dynamo.config.recompile_limit >= 64


def test_fast_path_falls_back_to_eager_when_compile_fails():
    model = _ConvBnNet().eval()
    fast = optimize(model, image_size=16)

    def broken(x):
        raise RuntimeError("no C++ compiler")

    object.__setattr__(fast, "_compiled", broken)
    x = torch.randn(1, 3, 16, 16)
    with pytest.warns(UserWarning, match="torch.compile failed.*no C.. compiler"):
        y = fast(x)
    assert fast._compiled is None
    with torch.no_grad():
        assert (y - model(x)).abs().max() <= 1e-4


def test_fast_path_packs_convolutions_and_fuses_their_activations():
    from visionzoo.bench.optimize import PackedConv2d, _has_mkldnn_conv, find_conv_act_pairs

    torch.manual_seed(0)
    model = create_model("resnet50").eval()
    _randomize_bn(model)
    x = torch.randn(1, 3, 224, 224)
    folded = copy.deepcopy(model)
    fold_batchnorm(folded, x)  # BatchNorm sits between convolution and ReLU until folded
    pairs = find_conv_act_pairs(folded, x)
    # each ReLU fused is its own ConvNormAct's: the stem's and the first two of 16 bottlenecks
    # (the third's ReLU reads residual + shortcut). A freed conv output's id, reused by a later
    # tensor, once paired stages.0.0.conv3.conv with stages.0.1.act.
    assert len(pairs) == 33
    assert all(c.rpartition(".")[0] == a.rpartition(".")[0] for c, a in pairs)
    fast = optimize(model)
    if _has_mkldnn_conv():
        assert fast.rewrite.packed_convolutions == 53 and fast.rewrite.fused_activations == 33
        assert sum(isinstance(m, PackedConv2d) for m in fast.model.modules()) == 53
    for batch in (1, 3):  # the pack made for batch 1 serves other shapes
        xb = torch.randn(batch, 3, 224, 224)
        with torch.no_grad():
            ref = model(xb)
            assert (fast(xb) - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))
    copy.deepcopy(fast)  # the opaque packed weights are left out of copies


@pytest.mark.parametrize(
    "name, post_ops",
    [("mobilenet_v2", {nn.ReLU6}), ("mobilenet_v3_small", {nn.ReLU, nn.Hardswish}),
     ("efficientnet_b0", {nn.SiLU})],
)  # fmt: skip
@torch.no_grad()
def test_fused_activation_post_ops_keep_logits(name, post_ops):
    from visionzoo.bench.optimize import PackedConv2d

    torch.manual_seed(0)
    model = create_model(name, image_size=96).eval()
    _randomize_bn(model)
    for m in model.modules():  # logits well away from zero, so the check means something
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.1)
    fast = optimize(model, image_size=96)
    fused = {type(m.act) for m in fast.model.modules() if isinstance(m, PackedConv2d)}
    assert post_ops <= fused
    x = torch.randn(2, 3, 96, 96)
    ref = model(x)
    assert float(ref.abs().max()) > 0.1
    assert (fast(x) - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))


class _InPlaceResidual(nn.Module):
    """conv -> ReLU, and conv -> (+= input, in place) -> ReLU: only the first pair fuses."""

    def __init__(self):
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
        self.conv2, self.act2 = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
        self.in_channels = 4  # what optimize's probe image uses

    def forward(self, x):
        y = self.conv2(self.act1(self.conv1(x)))
        y += x  # the ReLU below reads conv2's output object, changed after conv2 made it
        return self.act2(y).mean((2, 3))


@torch.no_grad()
def test_activation_fusion_skips_outputs_changed_in_place():
    from visionzoo.bench.optimize import find_conv_act_pairs

    torch.manual_seed(0)
    model = _InPlaceResidual().eval()
    x = torch.randn(2, 4, 8, 8)
    assert find_conv_act_pairs(model, x) == [("conv1", "act1")]
    fast = optimize(model, image_size=8)  # would differ by far more than 1e-4 if fused
    assert (fast(x) - model(x)).abs().max() <= 1e-5


@torch.no_grad()
def test_fast_path_fuses_mlp_linear_and_gelu():
    from visionzoo.bench.optimize import LinearGELU, _has_linear_gelu

    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16", small_input=True, num_classes=10).eval()
    fast = optimize(model)
    expected = 12 if _has_linear_gelu() else 0  # one per encoder block's MLP
    assert fast.rewrite.fused_linear_gelus == expected
    assert sum(isinstance(m, LinearGELU) for m in fast.model.modules()) == expected
    assert not any(isinstance(m, LinearGELU) for m in model.modules())  # original untouched
    x = torch.randn(3, 3, 32, 32)
    assert (fast(x) - model(x)).abs().max() <= 1e-4
    layer = LinearGELU(nn.Linear(8, 32))  # the fused call equals the two ops
    h = torch.randn(2, 5, 8)
    torch.testing.assert_close(layer(h), F.gelu(F.linear(h, layer.weight, layer.bias)))


# Both kinds of CPU: "packed" runs where this CPU has oneDNN's bf16 kernels (AVX-512 or
# AVX-NE-CONVERT), "plain" mocks the probe to stand for an AVX2-only CPU.
BF16_KINDS = [
    pytest.param(
        "packed",
        marks=pytest.mark.skipif(
            not packed_bf16_supported(), reason="this CPU has no packed bf16 kernels"
        ),
    ),
    "plain",
]


@pytest.fixture
def bf16_kind(request, monkeypatch):
    if request.param == "plain":
        monkeypatch.setattr(optimize_mod, "packed_bf16_supported", lambda: False)
    return request.param


def test_the_bf16_probe_answers_and_is_cached():
    assert isinstance(packed_bf16_supported(), bool)
    assert packed_bf16_supported.cache_info().currsize == 1


@pytest.mark.parametrize("bf16_kind", BF16_KINDS, indirect=True)
@torch.no_grad()
def test_bf16_fast_path_casts_in_and_out_and_stays_close(bf16_kind):
    torch.manual_seed(0)
    model = _ConvBnNet().eval()
    _randomize_bn(model)
    fast = optimize(model, image_size=16, dtype="bf16")
    assert fast.dtype is torch.bfloat16
    assert all(p.dtype is torch.bfloat16 for p in fast.model.parameters())
    assert fast.rewrite.folded_batchnorms == 2
    packed = [m for m in fast.model.modules() if isinstance(m, PackedConv2d)]
    # packed oneDNN convolutions only where the CPU has the kernels; plain Conv2d elsewhere
    assert (len(packed) == 3) == (bf16_kind == "packed")
    assert fast.rewrite.packed_convolutions == len(packed)
    assert all(p.dtype is torch.float32 for p in model.parameters())  # original untouched
    x = torch.randn(4, 3, 16, 16)
    y, ref = fast(x), model(x)
    assert y.dtype is torch.float32  # fp32 in, fp32 out
    err = float((y - ref).abs().max())
    assert 0 < err <= 0.1 * max(1.0, float(ref.abs().max()))  # rounded, but close
    assert fast.rewrite.logit_error > 0 and fast.rewrite.logit_scale > 0
    assert fast(x.to(torch.bfloat16)).dtype is torch.bfloat16  # bf16 in, bf16 out


@pytest.mark.parametrize("bf16_kind", BF16_KINDS, indirect=True)
@torch.no_grad()
def test_bf16_fast_path_keeps_transformer_mlps_plain_without_the_kernels(bf16_kind):
    from visionzoo.bench.optimize import LinearGELU

    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16", image_size=32, num_classes=10).eval()
    fast = optimize(model, image_size=32, dtype="bf16")
    fused = [m for m in fast.model.modules() if isinstance(m, LinearGELU)]
    assert (len(fused) == 12) == (bf16_kind == "packed"), len(fused)
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    assert (fast(x) - ref).abs().max() <= 0.1 * max(1.0, float(ref.abs().max()))


class _NoBf16(nn.Module):  # stands for a model using an operator with no bf16 kernel
    def forward(self, x):
        if x.dtype is torch.bfloat16:
            raise RuntimeError("\"cdist\" not implemented for 'BFloat16'\nmore")
        return x.mean((2, 3))


def test_fast_path_dtype_errors_are_clear():
    model = _ConvBnNet().eval()
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        optimize(model, image_size=16, dtype="int8")
    with pytest.raises(RuntimeError, match="logits differ by .* in bfloat16"):
        optimize(model, image_size=16, dtype="bf16", atol=1e-7)


@pytest.mark.parametrize("inplace", [False, True])
def test_a_model_with_no_bf16_kernel_gets_the_fp32_fast_path_and_a_note(inplace):
    model = nn.Sequential(_ConvBnNet(), nn.Unflatten(1, (-1, 1, 1)), _NoBf16()).eval()
    _randomize_bn(model)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    with pytest.warns(UserWarning, match=r"cannot run .* in bfloat16 .*cdist.*float32 fast path"):
        fast = optimize(model, image_size=16, dtype="bf16", inplace=inplace)
    assert fast.dtype is torch.float32
    assert all(p.dtype is torch.float32 for p in fast.model.parameters())
    assert all(p.dtype is torch.float32 for p in model.parameters())  # the cast was undone
    assert (fast(x) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("bf16_kind", BF16_KINDS, indirect=True)
@torch.no_grad()
def test_bf16_fast_path_runs_shifted_windows(bf16_kind):
    """Swin's shift mask is built in the activations' dtype (it was fp32, failing in bf16)."""
    torch.manual_seed(0)
    model = create_model("swin_t", image_size=64).eval()
    fast = optimize(model, image_size=64, dtype="bf16")
    assert fast.dtype is torch.bfloat16
    x = torch.randn(1, 3, 64, 64)
    assert (fast(x) - model(x)).abs().max() <= 0.1 * max(1.0, float(model(x).abs().max()))


@pytest.mark.parametrize("bf16_kind", BF16_KINDS, indirect=True)
def test_bench_times_a_bf16_fast_path_beside_fp32(tmp_path, bf16_kind):
    out = tmp_path / "bench"
    code = main(["bench", "lenet5", "--batch-size", "2", "--repeats", "2", "--warmup", "1",
                 "--optimize-dtype", "fp32,bf16", "--out", str(out)])  # fmt: skip
    assert code == 0
    rows = {r["impl"]: r for r in csv.DictReader(open(next(out.glob("*.csv"))))}
    assert set(rows) == {"visionzoo", "visionzoo-fast", "visionzoo-fast-bf16"}
    assert rows["visionzoo"]["dtype"] == rows["visionzoo-fast"]["dtype"] == "fp32"
    assert rows["visionzoo-fast-bf16"]["dtype"] == "bf16"
    assert float(rows["visionzoo-fast"]["logit_error"]) <= 1e-4
    assert float(rows["visionzoo-fast-bf16"]["logit_error"]) > 0
    assert rows["visionzoo"]["logit_error"] == ""


def test_reported_figures():
    rep = load_reported()
    assert rep["lenet5"]["params"] == 61_706 and rep["lenet5"]["macs"] == 416_520
    assert rep["resnet50"]["top1"] == 76.13 and rep["resnet50"]["gmacs"] == 4.089
    assert "GMACs" in rep["resnet50"]["gmacs_source"]
    for name, row in rep.items():
        assert row["year"] and row["paper"], name
        if row["top1"] is not None:
            assert row["dataset"] and row["metrics_source"], name


def test_export_a_run_directory(tmp_path, capsys):
    from visionzoo import runs

    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=3)
    config = {"preprocess": {"image_size": 32, "in_channels": 1}, "class_names": ["a", "b", "c"]}
    run = runs.save_run(tmp_path / "run", model, config)
    out = tmp_path / "run.onnx"
    code = main(["export", str(run), "--format", "onnx", "--exporter", "torchscript",
                 "--out", str(out)])  # fmt: skip
    assert code == 0 and out.is_file()
    assert "lenet5: onnx" in capsys.readouterr().out


def test_export_a_missing_run_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty")]) == 2
    assert "\n" not in capsys.readouterr().err.strip()
