"""What each box says: a module, a function or a learned tensor turned into a kind and a label.

Kinds pick the colour (`svg.COLOURS`); labels name the layer the way the papers do:
"DW Conv 7×7, 96", "SW-MSA 7×7 windows, shift 3, 3 heads", "Linear 96→384 (expand ×4)".
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn


@dataclass
class Node:
    """One box of the diagram."""

    id: int
    kind: str  # input, output, conv, dwconv, linear, attention, pool, norm, act, block, add, ...
    label: str
    shape: str = ""
    title: str = ""  # tooltip: qualified module name and class
    inputs: list[int] = field(default_factory=list)
    module_name: str = ""
    module_class: str = ""
    count: int = 1  # > 1 for a run of identical blocks folded into one box
    members: list[str] = field(default_factory=list)  # the modules a folded box stands for
    group: str = ""  # the top-level container it sits in ("entry", "layer3"): drawn as a frame


def pair(v: Any) -> str:
    v = v if isinstance(v, tuple) else (v, v)
    return "×".join(str(i) for i in v)


def is_decoration(m: nn.Module) -> bool:
    """Shape-preserving modules that are folded into the box before them."""
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    if isinstance(m, norms + (nn.Dropout, nn.Dropout2d, nn.Identity)):
        return True
    cls = type(m)
    if cls.__module__ == "torch.nn.modules.activation":
        return True
    name = cls.__name__
    return not any(True for _ in m.children()) and (
        name.endswith(("Tanh", "ReLU", "GELU", "SiLU", "Swish", "Sigmoid", "Norm", "Norm2d"))
        or name in ("DropPath", "StochasticDepth", "LayerScale")
    )


def short_module(m: nn.Module) -> str:
    """A decoration's name inside a folded label: BN, ReLU, LN, Dropout."""
    abbrev = {"BatchNorm2d": "BN", "BatchNorm1d": "BN", "LayerNorm": "LN", "GroupNorm": "GN"}
    abbrev.update({"LocalResponseNorm": "LRN", "Identity": "", "Dropout": "Dropout"})
    abbrev.update({"DropPath": "", "StochasticDepth": ""})  # identities at inference
    name = type(m).__name__
    if name == "LayerNorm2d":
        return "LN"
    return abbrev.get(name, name)


def _conv_label(m: nn.Conv2d) -> tuple[str, str]:
    k, out, g = pair(m.kernel_size), m.out_channels, m.groups
    stride = f" /{m.stride[0]}" if m.stride[0] > 1 else ""
    if g > 1 and g == m.in_channels:
        return "dwconv", f"DW Conv {k}, {out}{stride}"
    if g > 1:
        return "conv", f"GConv {k}, {out}, g={g}{stride}"
    kind = "pwconv" if m.kernel_size == (1, 1) else "conv"
    return kind, f"Conv {k}, {out}{stride}"


def _linear_label(m: nn.Linear, name: str) -> str:
    i, o = m.in_features, m.out_features
    if name.rsplit(".", 1)[-1] == "qkv":
        return f"Linear {i}→{o} (q, k, v)"
    if o > i and o % i == 0:  # an MLP's first layer: the inverted bottleneck's expansion
        return f"Linear {i}→{o} (expand ×{o // i})"
    return f"Linear {i}→{o}"


def _attention_label(m: nn.Module, name: str) -> str:
    heads = getattr(m, "num_heads", None)
    heads_text = f", {heads} heads" if heads else ""
    ws = getattr(m, "window_size", None)
    if ws is not None:  # Swin: attention inside M x M windows, every other block shifted
        shift = getattr(m, "shift_size", 0)
        if shift:
            return f"SW-MSA {pair(ws)} windows, shift {shift}{heads_text}"
        return f"W-MSA {pair(ws)} windows{heads_text}"
    return f"{name}" + (f" ({heads} heads)" if heads else "")


def module_kind_label(m: nn.Module, name: str = "") -> tuple[str, str]:
    """(kind, label) of a module drawn as one box; `name` is its qualified name."""
    if isinstance(m, nn.Conv2d):
        return _conv_label(m)
    if isinstance(m, nn.Linear):
        return "linear", _linear_label(m, name)
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "Max" if isinstance(m, nn.MaxPool2d) else "Avg"
        s = m.stride if isinstance(m.stride, int) else m.stride[0]
        return "pool", f"{kind}Pool {pair(m.kernel_size)} /{s}"
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return "pool", f"Adaptive{'Avg' if 'Avg' in type(m).__name__ else 'Max'}Pool"
    if isinstance(m, nn.Flatten):
        return "op", "Flatten"
    name = type(m).__name__
    if hasattr(m, "patch_size"):
        p = m.patch_size
        dim = getattr(getattr(m, "proj", None), "out_channels", "")
        return "tokens", f"{name} {pair(p)} patches → {dim}-d tokens"
    reduction = getattr(m, "reduction", None)
    if "Merging" in name and isinstance(reduction, nn.Linear):
        out = reduction.out_features
        return "merge", f"{name}: 2×2 tokens → {out}-d, /2"
    if "Attention" in name or hasattr(m, "num_heads"):
        return "attention", _attention_label(m, name)
    if is_decoration(m):
        return "norm", short_module(m) or name
    if any(True for _ in m.children()):
        return "block", name
    return "layer", name


def instance_label(label: str, cls: str, qualified: str) -> str:
    """A named instance keeps its paper name: `inception3a` -> "Inception 3a"."""
    last = qualified.rsplit(".", 1)[-1]
    if last.lower().startswith(cls.lower()) and len(last) > len(cls):
        return f"{label} {last[len(cls) :]}"
    return label


FUNCTION_LABELS: dict[Any, tuple[str, str]] = {
    operator.add: ("add", "+"),
    operator.iadd: ("add", "+"),
    torch.add: ("add", "+"),
    operator.mul: ("mul", "×"),
    operator.imul: ("mul", "×"),
    torch.mul: ("mul", "×"),
    operator.truediv: ("mul", "÷"),
    torch.cat: ("concat", "concat"),
    torch.concat: ("concat", "concat"),
    torch.stack: ("concat", "stack"),
    torch.flatten: ("op", "flatten"),
    torch.roll: ("op", "roll (cyclic shift)"),
    operator.getitem: ("op", "select"),
    operator.matmul: ("op", "matmul"),
}
METHOD_LABELS = {"add": ("add", "+"), "add_": ("add", "+"), "mul": ("mul", "×")}


def _constant(node: fx.Node) -> float | None:
    """The one plain number among an arithmetic node's arguments (x * 0.2, x / beta)."""
    nums = [a for a in node.args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    return float(nums[0]) if len(nums) == 1 else None


def function_kind_label(node: fx.Node, names: dict[float, str] | None = None) -> tuple[str, str]:
    """(kind, label) of a function or method call; `names` names constants (0.2 -> "α")."""
    if node.op == "call_method":
        kind, label = METHOD_LABELS.get(str(node.target), ("op", str(node.target)))
    elif node.target in FUNCTION_LABELS:
        kind, label = FUNCTION_LABELS[node.target]
    else:
        kind, label = "op", getattr(node.target, "__name__", str(node.target))
    if kind == "mul":
        value = _constant(node)
        if value is not None:  # a scale, not a gate: NFNet's alpha and 1 / beta
            name = (names or {}).get(value)
            number = f"{value:.3g}"
            kind, label = "scale", f"{label} {name} = {number}" if name else f"{label} {number}"
    return kind, label


def param_label(target: str) -> str:
    last = target.rsplit(".", 1)[-1]
    if last in ("layer_scale", "gamma", "ls"):
        return "layer scale γ (learned)"
    return f"{target} (learned)"


def format_shape(shape: Any) -> str:
    """(1, 64, 56, 56) -> "64×56×56": the batch dimension is left out."""
    if isinstance(shape, (torch.Size, tuple, list)) and shape and isinstance(shape[0], int):
        dims = list(shape)[1:] if len(shape) > 1 else list(shape)
        return "×".join(str(d) for d in dims)
    return ""
