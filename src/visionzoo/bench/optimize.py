"""The inference fast path: fold BatchNorm into convolutions, eval, inference mode, NHWC.

`optimize(model)` returns an `InferenceModel` whose forward runs under
`torch.inference_mode()` with channels-last inputs. A BatchNorm in eval mode is an affine map
per channel, so when it reads a convolution's output and nothing else does, it folds into
that convolution's weight and bias (`torch.nn.utils.fusion.fuse_conv_bn_eval`) and the
BatchNorm becomes an identity. Which convolution feeds which BatchNorm is read from one
traced forward pass (module hooks plus the autograd graph), so the rule covers
`ConvNormAct` sequences, `conv1`/`bn1` attributes and any other layout alike, and never
folds a pair whose convolution output is also used elsewhere. The folded model's logits are
checked against the original's before it is returned.

`dtype=torch.bfloat16` (or "bf16") is the reduced-precision fast path: the folded model is
cast to bfloat16, inputs are cast on the way in and logits back to the input's dtype on the
way out. On CPUs with AVX512-BF16/AMX, oneDNN runs its matrix multiplies and convolutions
several times faster than fp32 (measured in results/bench/perf_table.md), but the logits
are no longer equal to 1e-4: bfloat16 keeps 8 bits of mantissa, so the check is relative,
`atol` defaulting to 0.1 of the logits' scale (randomly initialised models measured
0.4-0.7% for ResNets, ViTs and Swin, 7% for the R50+ViT hybrid), and the measured
difference is kept as `logit_error` on the returned model. Like PyTorch's TF32 on GPUs it is opt-in.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["TOLERANCE", "InferenceModel", "find_conv_bn_pairs", "fold_batchnorm", "optimize"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# default logit tolerance of the check, relative to max(1, largest |logit|), per dtype
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-1, torch.float16: 1e-2}
_DTYPE_NAMES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        key = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype, dtype)
        if key not in _DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPE_NAMES)}")
        return _DTYPE_NAMES[key]
    if dtype not in TOLERANCE:
        raise ValueError(f"unsupported fast-path dtype {dtype}; use float32, bfloat16, float16")
    return dtype


class InferenceModel(nn.Module):
    """An optimized model: forward under inference_mode, inputs made channels-last.

    With a reduced `dtype`, floating inputs are cast to it and the output cast back to the
    input's dtype, so callers keep passing and receiving fp32 tensors."""

    def __init__(
        self,
        model: nn.Module,
        channels_last: bool = True,
        compiled: Any = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.dtype = dtype
        # torch.compile's wrapper of `model` (or None), kept out of the submodules so that
        # state_dict() has the model's keys once
        object.__setattr__(self, "_compiled", compiled)
        self.model_name = getattr(model, "model_name", None)

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
    names = {m: n for n, m in model.named_modules()}
    calls: dict[nn.Module, int] = {}
    produced: dict[int, nn.Module] = {}  # id(conv output tensor) -> conv
    conv_out_node: dict[nn.Module, Any] = {}
    candidates: list[tuple[nn.Module, nn.Module]] = []

    def on_conv(module: nn.Module, args: tuple, output: Any) -> None:
        calls[module] = calls.get(module, 0) + 1
        if isinstance(output, Tensor):
            produced[id(output)] = module
            conv_out_node[module] = output.grad_fn

    def on_norm(module: nn.Module, args: tuple) -> None:
        calls[module] = calls.get(module, 0) + 1
        if args and isinstance(args[0], Tensor) and id(args[0]) in produced:
            candidates.append((produced[id(args[0])], module))

    handles = []
    for m in model.modules():
        if isinstance(m, _CONVS):
            handles.append(m.register_forward_hook(on_conv))
        elif isinstance(m, _NORMS):
            handles.append(m.register_forward_pre_hook(on_norm))
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    consumers = _count_consumers(out)
    pairs = []
    for conv, norm in candidates:
        node = conv_out_node.get(conv)
        single_use = node is not None and consumers.get(node, 0) == 1
        if calls.get(conv) == 1 and calls.get(norm) == 1 and single_use:
            pairs.append((names[conv], names[norm]))
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
        _set_submodule(model, conv_name, fuse_conv_bn_eval(conv, norm))
        _set_submodule(model, norm_name, nn.Identity())
    return len(pairs)


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
    `TOLERANCE[dtype]` (1e-4 for float32).
    The original model is left untouched unless `inplace=True`.
    """
    dtype = _resolve_dtype(dtype)
    atol = TOLERANCE[dtype] if atol is None else atol
    model.eval()
    x = _example_input(model, image_size)
    with torch.no_grad():
        expected = model(x)
    fast = model if inplace else copy.deepcopy(model)
    folded = fold_batchnorm(fast, x)
    if dtype != torch.float32:
        fast = fast.to(dtype)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    probe = x.to(dtype)
    probe = probe.contiguous(memory_format=torch.channels_last) if channels_last else probe
    try:
        with torch.no_grad():
            got = fast(probe).float()
    except RuntimeError as err:  # e.g. an operator with no bfloat16 kernel on this device
        if dtype == torch.float32:
            raise
        raise RuntimeError(
            f"the fast path cannot run this model in {str(dtype).removeprefix('torch.')}: "
            f"{str(err).splitlines()[0]}; use dtype float32"
        ) from err
    diff, scale = float((got - expected).abs().max()), float(expected.abs().max())
    if not diff <= atol * max(1.0, scale):  # NaN fails too
        raise RuntimeError(
            f"optimized logits differ by {diff:.2e} in {str(dtype).removeprefix('torch.')} "
            f"(allowed {atol:g} x max(1, |logits|); folded {folded} BatchNorms)"
        )
    fast.folded_batchnorms = folded
    fast.logit_error, fast.logit_scale = diff, scale  # on the probe image
    # Freezing is inductor's inference mode (weights as constants); what it gains per model
    # and CPU is in results/bench/perf_table.md (fast+compile column).
    # dynamic=False: each new input shape compiles its own static graph once, instead of
    # torch.compile switching to one graph with a symbolic batch size at the second shape.
    compiled = torch.compile(fast, dynamic=False, options={"freezing": True}) if compile else None
    return InferenceModel(fast, channels_last=channels_last, compiled=compiled, dtype=dtype)
