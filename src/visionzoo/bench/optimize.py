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
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["InferenceModel", "find_conv_bn_pairs", "fold_batchnorm", "optimize"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class InferenceModel(nn.Module):
    """An optimized model: forward under inference_mode, inputs made channels-last."""

    def __init__(self, model: nn.Module, channels_last: bool = True, compiled: Any = None):
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        # torch.compile's wrapper of `model` (or None), kept out of the submodules so that
        # state_dict() has the model's keys once
        object.__setattr__(self, "_compiled", compiled)
        self.model_name = getattr(model, "model_name", None)

    def forward(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            if self._compiled is not None:
                try:
                    return self._compiled(x)
                except Exception as err:  # inductor needs a C++ compiler; fall back to eager
                    warnings.warn(
                        f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                        "running the fast path eagerly",
                        stacklevel=2,
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
    atol: float = 1e-4,
) -> InferenceModel:
    """The inference fast path for `model`; logits are checked to match within `atol`.

    Folds BatchNorm into the preceding convolution, puts the model in eval mode and,
    with `channels_last`, in NHWC memory format; `compile=True` adds `torch.compile` with
    inductor's freezing (weights become constants: folded, and pre-packed for oneDNN/MKL),
    so the compiled model does not see later changes to the weights.
    The original model is left untouched unless `inplace=True`.
    """
    model.eval()
    x = _example_input(model, image_size)
    with torch.no_grad():
        expected = model(x)
    fast = model if inplace else copy.deepcopy(model)
    folded = fold_batchnorm(fast, x)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    with torch.no_grad():
        got = fast(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    diff = float((got - expected).abs().max())
    if diff > atol * max(1.0, float(expected.abs().max())):
        raise RuntimeError(f"optimized logits differ by {diff:.2e} (folded {folded} BatchNorms)")
    fast.folded_batchnorms = folded
    # Freezing is inductor's inference mode (weights as constants); what it gains per model
    # and CPU is in results/bench/perf_table.md (fast+compile column).
    # dynamic=False: each new input shape compiles its own static graph once, instead of
    # torch.compile switching to one graph with a symbolic batch size at the second shape.
    compiled = torch.compile(fast, dynamic=False, options={"freezing": True}) if compile else None
    return InferenceModel(fast, channels_last=channels_last, compiled=compiled)
