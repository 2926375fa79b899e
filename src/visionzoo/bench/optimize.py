"""The inference fast path: fold BatchNorm, pre-pack and fuse for oneDNN, inference mode, NHWC.

`optimize(model)` returns an `InferenceModel` whose forward runs under
`torch.inference_mode()` with channels-last inputs. Three rewrites, each exact up to float
rounding, and the rewritten model's logits are checked against the original's (1e-4):

1. BatchNorm folding. A BatchNorm in eval mode is an affine map per channel, so when it
   reads a convolution's output and nothing else does, it folds into that convolution's
   weight and bias (`torch.nn.utils.fusion.fuse_conv_bn_eval`) and becomes an identity.
2. Packed convolutions (`PackedConv2d`). `nn.Conv2d` hands oneDNN a plain weight that it
   reorders into its blocked layout on every call; the fast path keeps the reordered weight
   (one per input shape) and calls oneDNN's fused convolution, which also applies the
   ReLU/ReLU6/SiLU/Hardswish/Hardsigmoid module that alone reads the convolution's output
   (a post-op, while the output is still in cache). At batch 1 this is most of the gain:
   ResNet-50 1.14x -> 1.44x torchvision's eager speed on 2 Xeon cores.
3. `Mlp` blocks (ViT, ConvNeXt, Swin, CSWin): fc1 and its exact GELU as one oneDNN call
   (`LinearGELU`).

Which module feeds which is read from one traced forward pass (module hooks plus the
autograd graph), so the rules cover `ConvNormAct` sequences, `conv1`/`bn1` attributes and
any other layout alike, and never fuse a pair whose first output is also used elsewhere.
`compile=True` skips 2 and 3: inductor's freezing packs and fuses on its own.

`dtype=torch.bfloat16` (or "bf16") is the reduced-precision fast path: the rewritten model
is cast to bfloat16, inputs are cast on the way in and logits back to the input's dtype on
the way out. On CPUs with AVX512-BF16/AMX, oneDNN runs matrix multiplies and convolutions
several times faster than in fp32 (results/bench/perf_table.md), but the logits are no
longer equal to 1e-4: bfloat16 keeps 8 bits of mantissa, so the check is relative, `atol`
defaulting to 0.1 of the logits' scale (randomly initialised models measured 0.4-0.7% for
ResNets, ViTs and Swin, 7% for the R50+ViT hybrid), and the measured difference is kept as
`logit_error`. On trained nets it changed 22 and 32 of 10,000 Fashion-MNIST test answers
(ResNet-20, ViT-Ti; results/bench/fastpath_accuracy.md). Like TF32 on GPUs it is opt-in.

What bfloat16 can use depends on the CPU, so it is probed, not assumed: oneDNN's packed
bf16 kernels need AVX512-BW/VL/DQ or AVX-NE-CONVERT (`packed_bf16_supported`, one tiny
packed convolution, cached). Without them (an AVX2-only CPU) the model is still cast to
bfloat16 and runs on plain modules, unpacked; a model that cannot run in bfloat16 at all
falls back to the float32 fast path with a one-line warning. `InferenceModel.dtype` says
which dtype it runs in. On CUDA the oneDNN rewrites are skipped (BatchNorm folding and the
cast remain).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from visionzoo.layers.mlp import Mlp

__all__ = [
    "TOLERANCE",
    "InferenceModel",
    "LinearGELU",
    "PackedConv2d",
    "find_conv_bn_pairs",
    "fold_batchnorm",
    "optimize",
]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# activation modules oneDNN applies as a convolution post-op: (attr name, its scalars)
_POST_OPS: dict[type, tuple[str, list[float]]] = {
    nn.ReLU: ("relu", []),
    nn.ReLU6: ("hardtanh", [0.0, 6.0]),
    nn.SiLU: ("swish", []),
    nn.Hardswish: ("hardswish", []),
    nn.Hardsigmoid: ("hardsigmoid", []),
}


# default logit tolerance of the check, relative to max(1, largest |logit|), per dtype
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-1, torch.float16: 1e-2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        key = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype, dtype)
        if key not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        return DTYPES[key]
    if dtype not in TOLERANCE:
        raise ValueError(f"unsupported fast-path dtype {dtype}; use float32, bfloat16, float16")
    return dtype


@dataclass(frozen=True)
class Rewrite:
    """What `optimize` changed in the model, and how far its logits moved on the probe image."""

    folded_batchnorms: int = 0
    fused_linear_gelus: int = 0
    packed_convolutions: int = 0
    fused_activations: int = 0  # activations fused into packed convolutions
    logit_error: float = 0.0  # max |fast - eager| logit
    logit_scale: float = 0.0  # max |eager| logit, to read logit_error against


class InferenceModel(nn.Module):
    """An optimized model: forward under inference_mode, inputs made channels-last.

    With a reduced `dtype`, floating inputs are cast to it and the output cast back to the
    input's dtype, so callers keep passing and receiving fp32 tensors. `rewrite` says what
    the optimization changed."""

    _compiled: Any  # torch.compile's wrapper, set around nn.Module's submodule registry

    def __init__(
        self,
        model: nn.Module,
        channels_last: bool = True,
        compiled: Any = None,
        dtype: torch.dtype = torch.float32,
        rewrite: Rewrite | None = None,
    ):
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.dtype = dtype
        self.rewrite = rewrite or Rewrite()
        # torch.compile's wrapper of `model` (or None), kept out of the submodules so that
        # state_dict() has the model's keys once
        object.__setattr__(self, "_compiled", compiled)
        self.model_name: str | None = getattr(model, "model_name", None)

    def forward(self, x: Tensor) -> Tensor:
        in_dtype = x.dtype
        with torch.inference_mode():
            if x.is_floating_point() and in_dtype != self.dtype:
                x = x.to(self.dtype)
            out = self._forward(x)
            return out.to(in_dtype) if out.is_floating_point() and out.dtype != in_dtype else out

    def _forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._compiled is not None:
            try:
                return self._compiled(x)
            except Exception as err:  # inductor needs a C++ compiler; fall back to eager
                warnings.warn(
                    f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                    "running the fast path eagerly",
                    stacklevel=3,
                )
                object.__setattr__(self, "_compiled", None)
        return self.model(x)


def _example_input(model: nn.Module, image_size: int | None = None) -> Tensor:
    size = image_size or getattr(model, "image_size", None) or 224
    size = max(size, getattr(model, "min_image_size", 1))
    return torch.randn(1, getattr(model, "in_channels", 3), size, size)


def find_conv_bn_pairs(model: nn.Module, x: Tensor) -> list[tuple[str, str]]:
    """(conv name, batchnorm name) pairs where the BatchNorm reads only that conv's output."""
    return _find_pairs(model, x, _CONVS, _NORMS)


def find_conv_act_pairs(model: nn.Module, x: Tensor) -> list[tuple[str, str]]:
    """(conv name, activation name) pairs where the activation reads only that conv's output
    (after BatchNorm folding the Identity left between them passes the same tensor on)."""
    return _find_pairs(model, x, (nn.Conv2d,), tuple(_POST_OPS))


def _find_pairs(
    model: nn.Module, x: Tensor, first: tuple[type, ...], second: tuple[type, ...]
) -> list[tuple[str, str]]:
    """(a, b) module pairs, called once each, where b's input is a's output and only b reads it.

    Read from one traced forward pass: module hooks record which tensor each `first` module
    produced and which each `second` module received; the autograd graph counts how many
    operations consume each output."""
    names = {m: n for n, m in model.named_modules()}
    calls: dict[nn.Module, int] = {}
    # id(output tensor) -> (module that made it, the tensor, its version): holding the tensor
    # keeps its id from being reused once the model frees it, and the version counter tells
    # an untouched output from one changed in place (a residual `out += shortcut`)
    produced: dict[int, tuple[nn.Module, Tensor, int]] = {}
    out_node: dict[nn.Module, Any] = {}
    candidates: list[tuple[nn.Module, nn.Module]] = []

    def on_first(module: nn.Module, args: tuple, output: Any) -> None:
        calls[module] = calls.get(module, 0) + 1
        if isinstance(output, Tensor):
            produced[id(output)] = (module, output, output._version)
            out_node[module] = output.grad_fn

    def on_second(module: nn.Module, args: tuple) -> None:
        calls[module] = calls.get(module, 0) + 1
        if args and isinstance(args[0], Tensor) and id(args[0]) in produced:
            maker, tensor, version = produced[id(args[0])]
            if tensor is args[0] and tensor._version == version:
                candidates.append((maker, module))

    handles = []
    for m in model.modules():
        if isinstance(m, first):
            handles.append(m.register_forward_hook(on_first))
        elif isinstance(m, second):
            handles.append(m.register_forward_pre_hook(on_second))
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    consumers = _count_consumers(out)
    pairs = []
    for a, b in candidates:
        node = out_node.get(a)
        single_use = node is not None and consumers.get(node, 0) == 1
        if calls.get(a) == 1 and calls.get(b) == 1 and single_use:
            pairs.append((names[a], names[b]))
    return pairs


def _count_consumers(out: Any) -> dict[Any, int]:
    """How many autograd nodes take each node's output as an input."""
    roots = [out] if isinstance(out, Tensor) else [t for t in out if isinstance(t, Tensor)]
    counts: dict[Any, int] = {}
    seen, stack = set(), [t.grad_fn for t in roots if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for nx, _ in node.next_functions:
            if nx is not None:
                counts[nx] = counts.get(nx, 0) + 1
                stack.append(nx)
    return counts


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)  # works for Sequential children too ("0", "1", ...)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, x: Tensor | None = None) -> int:
    """Fold every eval-mode BatchNorm that directly follows a convolution; returns how many."""
    model.eval()
    x = _example_input(model) if x is None else x
    pairs = find_conv_bn_pairs(model, x)
    for conv_name, norm_name in pairs:
        conv, norm = model.get_submodule(conv_name), model.get_submodule(norm_name)
        fused = fuse_conv_bn_eval(cast(nn.Conv2d, conv), cast(nn.BatchNorm2d, norm))
        _set_submodule(model, conv_name, fused)
        _set_submodule(model, norm_name, nn.Identity())
    return len(pairs)


def _has_mkldnn_conv() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_reorder_convolution_weight"
    )


class PackedConv2d(nn.Module):
    """A 2D convolution whose weight is kept pre-packed in oneDNN's blocked layout, with the
    activation that follows it applied as a oneDNN post-op.

    `nn.Conv2d` on CPU hands oneDNN a plain weight, which it reorders into its blocked layout
    on every call; at batch 1 that reorder is a large part of the time. Here the packed weight
    is made on the first CPU call with each input shape (oneDNN picks the layout per shape)
    and reused, and the activation runs on the output while it is in cache. The dense
    `weight` stays the parameter (state_dict, deepcopy and CUDA use it); a later change to it
    is seen, since the pack is keyed on its version. Inference only."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None = None):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride: list[int] = list(conv.stride)
        self.padding: list[int] = list(cast(tuple[int, ...], conv.padding))
        self.dilation: list[int] = list(conv.dilation)
        self.groups = conv.groups
        # the oneDNN post-op, and the module itself for the unfused path (CUDA, fp16)
        post = [v for t, v in _POST_OPS.items() if isinstance(act, t)]
        self.attr, self.scalars = (post[0][0], list(post[0][1])) if post else ("none", [])
        self.act = act if act is not None else nn.Identity()
        self._packed: tuple[Any, dict[torch.Size, Tensor]] | None = None

    def __getstate__(self) -> dict[str, Any]:  # the opaque packed tensor cannot be copied
        return {**self.__dict__, "_packed": None}

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
            y = F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return self.act(y)
        # oneDNN picks the blocked layout for the problem's shape: one pack per input shape
        key = (w.dtype, w.data_ptr(), w._version)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, {})
        packs = self._packed[1]
        if x.shape not in packs:
            if len(packs) >= 8:  # many shapes (e.g. every image size): keep the newest
                packs.pop(next(iter(packs)))
            packs[x.shape] = torch.ops.mkldnn._reorder_convolution_weight(
                w.detach(), self.padding, self.stride, self.dilation, self.groups, list(x.shape)
            )
        return torch.ops.mkldnn._convolution_pointwise(
            x,
            packs[x.shape],
            self.bias,
            self.padding,
            self.stride,
            self.dilation,
            self.groups,
            self.attr,
            self.scalars,
            "",
        )


def _packable(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


@torch.no_grad()
def pack_convolutions(model: nn.Module, x: Tensor) -> tuple[int, int]:
    """Replace every plain Conv2d by a `PackedConv2d`, fusing the activation module that alone
    reads its output; returns (convolutions packed, activations fused)."""
    if not _has_mkldnn_conv():
        return 0, 0
    pairs = dict(find_conv_act_pairs(model, x))
    packed = fused = 0
    for name, conv in list(model.named_modules()):
        if not _packable(conv):
            continue
        act_name = pairs.get(name)  # find_conv_act_pairs only pairs _POST_OPS modules
        act = model.get_submodule(act_name) if act_name else None
        _set_submodule(model, name, PackedConv2d(conv, act))
        packed += 1
        if act_name:
            _set_submodule(model, act_name, nn.Identity())
            fused += 1
    return packed, fused


@functools.cache
def packed_bf16_supported() -> bool:
    """Whether oneDNN runs packed bfloat16 kernels on this CPU: one tiny packed convolution
    with a post-op and one fused linear, tried once per process."""
    if not (_has_mkldnn_conv() and _has_linear_gelu()):
        return False
    try:
        with torch.no_grad():
            conv = PackedConv2d(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()).to(torch.bfloat16)
            conv(torch.randn(1, 8, 4, 4, dtype=torch.bfloat16))
            LinearGELU(nn.Linear(8, 8).to(torch.bfloat16))(torch.randn(2, 8).to(torch.bfloat16))
    except Exception:  # noqa: BLE001 - "bf16 path needs the cpu support avx_ne_convert or ..."
        return False
    return True


def _has_linear_gelu() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class LinearGELU(nn.Module):
    """An MLP's first linear layer and its exact GELU as one oneDNN call (a GELU post-op).

    On CPU in float32 or bfloat16 the activation is applied while the matrix product's
    output is still in cache, instead of a second pass over a 4x-wide tensor; elsewhere
    (CUDA, other dtypes) it runs `gelu(linear(x))`. Inference only: no autograd formula."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "gelu", [], "none")
        return F.gelu(F.linear(x, self.weight, self.bias))


def fuse_linear_gelu(model: nn.Module) -> int:
    """Fuse fc1 and GELU of every `Mlp` (ViT, ConvNeXt, Swin, CSWin); returns how many."""
    if not _has_linear_gelu():
        return 0
    mlps = [
        m
        for m in model.modules()
        if isinstance(m, Mlp)
        and isinstance(m.fc1, nn.Linear)
        and isinstance(m.act, nn.GELU)
        and m.act.approximate == "none"
    ]
    for m in mlps:
        m.register_module("fc1", LinearGELU(m.fc1))
        m.register_module("act", nn.Identity())
    return len(mlps)


def optimize(
    model: nn.Module,
    channels_last: bool = True,
    compile: bool = False,
    inplace: bool = False,
    image_size: int | None = None,
    atol: float | None = None,
    dtype: torch.dtype | str = torch.float32,
) -> InferenceModel:
    """The inference fast path for `model`; logits are checked to match within `atol`.

    Folds BatchNorm into the preceding convolution, puts the model in eval mode and,
    with `channels_last`, in NHWC memory format; `compile=True` adds `torch.compile` with
    inductor's freezing (weights become constants: folded, and pre-packed for oneDNN/MKL),
    so the compiled model does not see later changes to the weights.
    `dtype` bfloat16/float16 casts the folded model (see the module docstring); `atol`, the
    largest logit difference allowed relative to max(1, largest |logit|), defaults to
    `TOLERANCE[dtype]` (1e-4 for float32). A model with no kernel for `dtype` on this
    device gets the float32 fast path and a warning; `.dtype` of the result says which.
    The original model is left untouched unless `inplace=True`.
    """
    dtype = _resolve_dtype(dtype)
    model.eval()
    x = _example_input(model, image_size).to(_device_of(model))
    with torch.no_grad(), _full_fp32(x.device):
        expected = model(x)
    try:
        target = model if inplace else copy.deepcopy(model)
        fast, rewrite = _rewrite(
            target, x, expected, dtype, atol, channels_last, compile, undo_cast=inplace
        )
    except _NoKernel as err:
        warnings.warn(
            f"the fast path cannot run {getattr(model, 'model_name', None) or 'this model'} in "
            f"{_name(dtype)} on this device ({err}); using the float32 fast path",
            stacklevel=2,
        )
        return optimize(model, channels_last, compile, inplace, image_size, dtype=torch.float32)
    compiled = None
    if compile:
        # Every model's forward is the same code object (ImageClassifier.forward), so dynamo
        # counts each model and input shape compiled in this process as a recompile of it;
        # at the default limit (8) the ninth silently runs eagerly. Allow one per shape for
        # many models. dynamic=False: each new input shape compiles its own static graph
        # once; freezing is inductor's inference mode (weights as constants).
        dynamo_config = torch._dynamo.config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
        compiled = torch.compile(fast, dynamic=False, options={"freezing": True})
    return InferenceModel(
        fast, channels_last=channels_last, compiled=compiled, dtype=dtype, rewrite=rewrite
    )


@contextlib.contextmanager
def _full_fp32(device: torch.device) -> Iterator[None]:
    """CUDA convolutions and matrix products in full float32 (no TF32) while the check runs:
    it compares the rewrite with the original, not two roundings of TF32's 10-bit mantissa
    (measured 8.6e-4 on ResNet-18 with TF32, against the 1e-4 the check allows)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class _NoKernel(Exception):
    """The rewritten model has no kernel for the requested dtype on this device."""


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _rewrite(
    fast: nn.Module,
    x: Tensor,
    expected: Tensor,
    dtype: torch.dtype,
    atol: float | None,
    channels_last: bool,
    compile: bool,
    undo_cast: bool = False,
) -> tuple[nn.Module, Rewrite]:
    """Fold, fuse, cast and pack `fast` in place, then check its logits against `expected`.
    With `undo_cast`, a model that cannot run in `dtype` is given back its float32 weights."""
    atol = TOLERANCE[dtype] if atol is None else atol
    folded = fold_batchnorm(fast, x)
    # oneDNN's packed and fused kernels: CPU only, in bf16 only where the CPU has them;
    # inductor's freezing makes its own (compile=True)
    onednn = (
        x.device.type == "cpu"
        and not compile
        and (dtype != torch.bfloat16 or packed_bf16_supported())
    )
    fused = fuse_linear_gelu(fast) if onednn else 0
    backup = None
    if dtype != torch.float32:
        if undo_cast:
            backup = {k: v.detach().clone() for k, v in fast.state_dict().items()}
        fast = fast.to(dtype)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    probe = x.to(dtype)
    probe = probe.contiguous(memory_format=torch.channels_last) if channels_last else probe
    try:
        packed, fused_acts = pack_convolutions(fast, probe) if onednn else (0, 0)
        with torch.no_grad(), _full_fp32(x.device):
            got = fast(probe).float()
    except RuntimeError as err:  # e.g. an operator with no bfloat16 kernel on this device
        if dtype == torch.float32:
            raise
        if backup is not None:
            fast.float().load_state_dict(backup)
        raise _NoKernel(str(err).strip().splitlines()[0][:200]) from err
    diff, scale = float((got - expected).abs().max()), float(expected.abs().max())
    if not diff <= atol * max(1.0, scale):  # NaN fails too
        raise RuntimeError(
            f"optimized logits differ by {diff:.2e} in {_name(dtype)} "
            f"(allowed {atol:g} x max(1, |logits|); folded {folded} BatchNorms)"
        )
    return fast, Rewrite(folded, fused, packed, fused_acts, logit_error=diff, logit_scale=scale)
