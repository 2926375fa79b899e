"""Architecture diagrams drawn from the model itself, as SVG.

The model's `forward_features` and `forward_head` are traced with torch.fx, treating every
module that is not a container (Sequential, ModuleList, ModuleDict) as one box, and the
shapes are propagated with a real example input. So the diagram shows what the code does:
`x + shortcut` becomes a "+" node fed by a skip edge (ResNet), `torch.cat` a "concat" node
with many inputs (DenseNet, Inception's parallel branches), a convolution with
`groups == in_channels` a "DW Conv" box (MobileNet, Xception), and a ViT's patch embedding,
class token and position embedding appear as their own nodes on the token sequence.

To stay legible, norms, activations and dropout are folded into the box before them, runs of
identical blocks collapse into one box ("Bottleneck x6"), and each distinct composite block
gets its own detail diagram. Code that fx cannot trace falls back to the order in which
forward hooks see the modules run.
"""

from __future__ import annotations

import contextlib
import html
import io
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
MAX_DETAILS = 8  # detail diagrams per model
MAX_NODES = 160  # larger graphs are drawn as a module chain instead


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


# --- labels ---------------------------------------------------------------------------------


def _pair(v: Any) -> str:
    v = v if isinstance(v, tuple) else (v, v)
    return "×".join(str(i) for i in v)


def _is_decoration(m: nn.Module) -> bool:
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


def _short_module(m: nn.Module) -> str:
    """A decoration's name inside a folded label: BN, ReLU, LN, Dropout."""
    abbrev = {"BatchNorm2d": "BN", "BatchNorm1d": "BN", "LayerNorm": "LN", "GroupNorm": "GN"}
    abbrev.update({"LocalResponseNorm": "LRN", "Identity": "", "Dropout": "Dropout"})
    name = type(m).__name__
    if name == "LayerNorm2d":
        return "LN"
    return abbrev.get(name, name)


def module_kind_label(m: nn.Module) -> tuple[str, str]:
    """(kind, label) of a module drawn as one box."""
    if isinstance(m, nn.Conv2d):
        k, out, g = _pair(m.kernel_size), m.out_channels, m.groups
        stride = f" /{m.stride[0]}" if m.stride[0] > 1 else ""
        if g > 1 and g == m.in_channels:
            return "dwconv", f"DW Conv {k}, {out}{stride}"
        if g > 1:
            return "conv", f"GConv {k}, {out}, g={g}{stride}"
        kind = "pwconv" if m.kernel_size == (1, 1) else "conv"
        return kind, f"Conv {k}, {out}{stride}"
    if isinstance(m, nn.Linear):
        return "linear", f"Linear {m.in_features}→{m.out_features}"
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "Max" if isinstance(m, nn.MaxPool2d) else "Avg"
        s = m.stride if isinstance(m.stride, int) else m.stride[0]
        return "pool", f"{kind}Pool {_pair(m.kernel_size)} /{s}"
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return "pool", f"Adaptive{'Avg' if 'Avg' in type(m).__name__ else 'Max'}Pool"
    if isinstance(m, nn.Flatten):
        return "op", "Flatten"
    name = type(m).__name__
    if hasattr(m, "patch_size"):
        p = m.patch_size
        dim = getattr(getattr(m, "proj", None), "out_channels", "")
        return "tokens", f"{name} {_pair(p)} patches → {dim}-d tokens"
    if "Attention" in name or hasattr(m, "num_heads"):
        heads = getattr(m, "num_heads", None)
        return "attention", f"{name}" + (f" ({heads} heads)" if heads else "")
    if _is_decoration(m):
        return "norm", _short_module(m) or name
    if any(True for _ in m.children()):
        return "block", name
    return "layer", name


_FUNCTION_LABELS: dict[Any, tuple[str, str]] = {
    operator.add: ("add", "+"),
    operator.iadd: ("add", "+"),
    torch.add: ("add", "+"),
    operator.mul: ("mul", "×"),
    operator.imul: ("mul", "×"),
    torch.mul: ("mul", "×"),
    torch.cat: ("concat", "concat"),
    torch.concat: ("concat", "concat"),
    torch.stack: ("concat", "stack"),
    torch.flatten: ("op", "flatten"),
    operator.getitem: ("op", "select"),
    operator.matmul: ("op", "matmul"),
}
_METHOD_LABELS = {"add": ("add", "+"), "add_": ("add", "+"), "mul": ("mul", "×")}


def _function_kind_label(node: fx.Node) -> tuple[str, str]:
    if node.op == "call_method":
        return _METHOD_LABELS.get(str(node.target), ("op", str(node.target)))
    if node.target in _FUNCTION_LABELS:
        return _FUNCTION_LABELS[node.target]
    name = getattr(node.target, "__name__", str(node.target))
    return "op", name


def format_shape(shape: Any) -> str:
    """(1, 64, 56, 56) -> "64×56×56": the batch dimension is left out."""
    if isinstance(shape, (torch.Size, tuple, list)) and shape and isinstance(shape[0], int):
        dims = list(shape)[1:] if len(shape) > 1 else list(shape)
        return "×".join(str(d) for d in dims)
    return ""


# --- graph extraction -----------------------------------------------------------------------


class _Tracer(fx.Tracer):
    """Every non-container module is a leaf: one box per block, not per tensor op."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return not isinstance(m, CONTAINERS)


class _Call(nn.Module):
    """Wrap one method of a model (forward_features, forward_head) as a traceable module."""

    def __init__(self, fn: Callable[..., Any], owner: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        for name, child in owner.named_children():
            self.add_module(name, child)
        for name, p in owner.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in owner.named_buffers(recurse=False):
            self.register_buffer(name, b)

    def forward(self, x: Any) -> Any:
        return self.fn(x)


class _Call2(_Call):
    def forward(self, x: Any, y: Any) -> Any:  # type: ignore[override]
        return self.fn(x, y)


class _Call3(_Call):
    def forward(self, x: Any, y: Any, z: Any) -> Any:  # type: ignore[override]
        return self.fn(x, y, z)


def _meta_shape(node: fx.Node) -> str | None:
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata):
        return format_shape(meta.shape)
    if isinstance(meta, (tuple, list)) and meta and isinstance(meta[0], TensorMetadata):
        return " | ".join(format_shape(m.shape) for m in meta[:4])
    return None


def trace_graph(owner: nn.Module, fn: Callable[..., Any], args: tuple[Any, ...]) -> list[Node]:
    """fx-trace `fn` (a bound method of `owner`, or `owner.forward`) into diagram nodes."""
    root = {1: _Call, 2: _Call2, 3: _Call3}[len(args)](fn, owner)
    graph = _Tracer().trace(root)
    gm = fx.GraphModule(root, graph)
    with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints what it re-raises
        ShapeProp(gm).propagate(*args)
    modules = dict(owner.named_modules())
    nodes: list[Node] = []
    ids: dict[fx.Node, list[int]] = {}  # fx node -> the diagram nodes that stand for it
    for n in graph.nodes:
        shape = _meta_shape(n)
        tensor_inputs = [i for a in n.all_input_nodes for i in ids.get(a, [])]
        if n.op == "output":
            nodes.append(
                Node(len(nodes), "output", "output", "", "", list(dict.fromkeys(tensor_inputs)))
            )
            continue
        if shape is None:  # sizes and other non-tensor values: no data edge, no box
            ids[n] = []
            continue
        if n.op == "placeholder":
            kind, label, title, mname, mcls = "input", "input", n.name, "", ""
        elif n.op == "get_attr":
            kind, label, mname = "param", f"{n.target} (learned)", str(n.target)
            title, mcls = f"parameter {n.target}", "Parameter"
        elif n.op == "call_module":
            m = modules[str(n.target)]
            kind, label = module_kind_label(m)
            mname, mcls = str(n.target), type(m).__name__
            n_params = sum(p.numel() for p in m.parameters())
            title = f"{n.target}: {mcls}, {n_params:,} parameters"
        else:
            kind, label = _function_kind_label(n)
            title, mname, mcls = f"{n.op} {getattr(n.target, '__name__', n.target)}", "", ""
        node = Node(len(nodes), kind, label, shape, title, list(dict.fromkeys(tensor_inputs)))
        node.module_name, node.module_class = mname, mcls
        nodes.append(node)
        ids[n] = [node.id]
    return nodes


def hook_chain(owner: nn.Module, fn: Callable[..., Any], args: tuple[Any, ...]) -> list[Node]:
    """The modules in the order forward hooks see them run: a chain, for untraceable code."""
    leaves: list[tuple[str, nn.Module]] = []

    def collect(prefix: str, m: nn.Module) -> None:
        for name, child in m.named_children():
            q = f"{prefix}{name}"
            if isinstance(child, CONTAINERS):
                collect(q + ".", child)
            else:
                leaves.append((q, child))

    collect("", owner)
    calls: list[tuple[str, nn.Module, str]] = []
    handles = [
        m.register_forward_hook(
            lambda mod, inp, out, q=q: calls.append((q, mod, format_shape(_first_shape(out))))
        )
        for q, m in leaves
    ]
    try:
        with torch.no_grad():
            fn(*args)
    finally:
        for h in handles:
            h.remove()
    nodes = [Node(0, "input", "input", format_shape(_first_shape(args[0])))]
    for q, m, shape in calls:
        kind, label = module_kind_label(m)
        n_params = sum(p.numel() for p in m.parameters())
        node = Node(
            len(nodes), kind, label, shape, f"{q}: {type(m).__name__}, {n_params:,} parameters"
        )
        node.inputs, node.module_name, node.module_class = [len(nodes) - 1], q, type(m).__name__
        nodes.append(node)
    nodes.append(Node(len(nodes), "output", "output", "", "", [len(nodes) - 1]))
    return nodes


def _first_shape(out: Any) -> Any:
    if isinstance(out, Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)) and out:
        return _first_shape(out[0])
    return ()


# --- simplification -------------------------------------------------------------------------


def _consumers(nodes: list[Node]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {n.id: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            out[i].append(n.id)
    return out


def _remove(nodes: list[Node], gone: int, into: int) -> list[Node]:
    """Drop node `gone`, re-pointing its consumers at `into`."""
    kept = [n for n in nodes if n.id != gone]
    for n in kept:
        n.inputs = list(dict.fromkeys(into if i == gone else i for i in n.inputs))
    return kept


_NO_FOLD = ("input", "param", "add", "mul", "concat")


def fold_decorations(nodes: list[Node], modules: dict[str, nn.Module]) -> list[Node]:
    """Fold norm/activation/dropout boxes into the single box that feeds them."""
    changed = True
    while changed:
        changed = False
        consumers = _consumers(nodes)
        by_id = {n.id: n for n in nodes}
        for n in nodes:
            m = modules.get(n.module_name) if n.module_name else None
            if m is None or not _is_decoration(m) or len(n.inputs) != 1:
                continue
            prev = by_id[n.inputs[0]]
            idle = isinstance(m, nn.Identity) or getattr(m, "p", getattr(m, "drop_prob", 1)) == 0
            if idle:  # an identity, or dropout with p = 0: it does nothing at all
                nodes = _remove(nodes, n.id, prev.id)
                changed = True
                break
            if prev.kind in _NO_FOLD or len(consumers[prev.id]) != 1:
                continue
            extra = _short_module(m)
            if extra:
                prev.label = f"{prev.label} · {extra}"
            prev.shape = n.shape or prev.shape
            prev.title = f"{prev.title}\n{n.title}"
            nodes = _remove(nodes, n.id, prev.id)
            changed = True
            break
    return nodes


def _signature(n: Node) -> tuple[str, str]:
    parent = n.module_name.rsplit(".", 1)[0] if "." in n.module_name else ""
    return (n.module_class, parent)


def collapse_repeats(nodes: list[Node]) -> list[Node]:
    """Fold a chain of blocks of the same class under the same parent into one "×N" box."""
    consumers = _consumers(nodes)
    by_id = {n.id: n for n in nodes}
    out: list[Node] = []
    for n in nodes:
        prev = by_id.get(n.inputs[0]) if len(n.inputs) == 1 else None
        if (
            prev is not None
            and out
            and out[-1] is prev
            and n.module_class
            and n.kind in ("block", "attention")
            and _signature(n) == _signature(prev)
            and n.shape == prev.shape  # a stage that changes the shape keeps its own box
            and len(consumers[prev.id]) == 1
        ):
            first = prev.title.split(":")[0] if prev.count == 1 else prev.module_name.split("–")[0]
            prev.count += 1
            prev.module_name = f"{first}–{n.module_name.rsplit('.', 1)[-1]}"
            prev.label = f"{n.module_class} ×{prev.count}"
            prev.title = f"{prev.module_name}: {prev.count} × {n.module_class}"
            prev.shape = n.shape
            for c in nodes:
                c.inputs = [prev.id if i == n.id else i for i in c.inputs]
            continue
        out.append(n)
    return out


# --- layout and SVG -------------------------------------------------------------------------

COLOURS = {
    "input": "#374151",
    "output": "#374151",
    "conv": "#dbeafe",
    "pwconv": "#e0e7ff",
    "dwconv": "#ccfbf1",
    "linear": "#ede9fe",
    "attention": "#ffedd5",
    "tokens": "#fce7f3",
    "param": "#fce7f3",
    "pool": "#f3f4f6",
    "norm": "#f3f4f6",
    "block": "#fef9c3",
    "layer": "#f3f4f6",
    "add": "#bbf7d0",
    "mul": "#bbf7d0",
    "concat": "#fde68a",
    "op": "#f9fafb",
}
LEGEND = [
    ("conv", "convolution"),
    ("pwconv", "1×1 conv"),
    ("dwconv", "depthwise conv"),
    ("linear", "linear"),
    ("attention", "attention"),
    ("tokens", "tokens / embeddings"),
    ("block", "block (detail below)"),
    ("add", "add (shortcut)"),
    ("concat", "concatenation"),
]
ROW_H, BOX_H, CHAR_W, GAP_X = 64, 38, 7.0, 18


def _width(n: Node) -> float:
    if n.kind in ("add", "mul"):
        return 34.0
    text = max(len(n.label), len(n.shape))
    return min(max(text * CHAR_W + 20, 60), 300)


def layout(nodes: list[Node]) -> dict[int, tuple[float, float]]:
    """Layers by longest path from the inputs; barycentre order inside each layer."""
    layer: dict[int, int] = {}
    for n in nodes:
        layer[n.id] = max((layer[i] + 1 for i in n.inputs if i in layer), default=0)
    consumers = _consumers(nodes)
    for n in nodes:  # learned embeddings sit just above the op that uses them
        if n.kind == "param" and consumers[n.id]:
            layer[n.id] = max(0, min(layer[c] for c in consumers[n.id]) - 1)
    rows: dict[int, list[Node]] = {}
    for n in nodes:
        rows.setdefault(layer[n.id], []).append(n)
    pos: dict[int, tuple[float, float]] = {}
    for r in sorted(rows):
        row = rows[r]

        def bary(n: Node) -> float:
            xs = [pos[i][0] for i in n.inputs if i in pos]
            return sum(xs) / len(xs) if xs else 0.0

        row.sort(key=bary)
        total = sum(_width(n) for n in row) + GAP_X * (len(row) - 1)
        x = -total / 2
        for n in row:
            w = _width(n)
            pos[n.id] = (x + w / 2, r * ROW_H)
            x += w + GAP_X
    return pos


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def render_svg(nodes: list[Node], title: str = "") -> str:
    """Draw the nodes top to bottom; edges that skip rows go round the side, in colour."""
    if not nodes:
        return ""
    pos = layout(nodes)
    widths = {n.id: _width(n) for n in nodes}
    by_row: dict[float, list[int]] = {}
    for nid, (_, y) in pos.items():
        by_row.setdefault(y, []).append(nid)
    edges: list[str] = []
    xs_min = min(pos[i][0] - widths[i] / 2 for i in pos)
    xs_max = max(pos[i][0] + widths[i] / 2 for i in pos)
    skips: dict[int, list[int]] = {}  # source -> targets more than one row below it
    for n in nodes:
        x2, y2 = pos[n.id]
        for i in n.inputs:
            x1, y1 = pos[i]
            if y2 - y1 > ROW_H + 1:
                skips.setdefault(i, []).append(n.id)
                continue
            y1b, y2t = y1 + BOX_H / 2, y2 - BOX_H / 2
            mid = (y1b + y2t) / 2
            edges.append(
                f'<path d="M{x1:.1f},{y1b:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} '
                f'{x2:.1f},{y2t:.1f}" class="e"/>'
            )
    # Skip edges: one lane per source, outside every box on the rows it passes, with a
    # branch into each target (a DenseNet block becomes a ladder, not a fan of curves).
    gap = 14 if len(skips) <= 8 else max(5, 112 / len(skips))
    lanes = {"left": 0, "right": 0}
    lane_min, lane_max = xs_min, xs_max
    for src, targets in skips.items():
        x1, y1 = pos[src]
        last = max(pos[t][1] for t in targets)
        between = [j for y, ids in by_row.items() if y1 < y < last for j in ids]
        lo = min(pos[j][0] - widths[j] / 2 for j in between)
        hi = max(pos[j][0] + widths[j] / 2 for j in between)
        side = "left" if x1 <= (lo + hi) / 2 else "right"
        lanes[side] += 1
        lx = lo - gap * lanes[side] if side == "left" else hi + gap * lanes[side]
        lane_min, lane_max = min(lane_min, lx), max(lane_max, lx)
        y1b = y1 + BOX_H / 2
        end = last - BOX_H / 2 - 30
        trunk = (
            f"M{x1:.1f},{y1b:.1f} C{x1:.1f},{y1b + 20:.1f} {lx:.1f},{y1b:.1f} "
            f"{lx:.1f},{y1b + 30:.1f} L{lx:.1f},{end:.1f}"
        )
        edges.append(f'<path d="{trunk}" class="e skip trunk"/>')
        for t in targets:
            x2, y2 = pos[t]
            y2t = y2 - BOX_H / 2
            edges.append(
                f'<path d="M{lx:.1f},{y2t - 30:.1f} C{lx:.1f},{y2t:.1f} {x2:.1f},{y2t - 20:.1f} '
                f'{x2:.1f},{y2t:.1f}" class="e skip"/>'
            )
    boxes = [_box(n, pos[n.id], widths[n.id]) for n in nodes]
    pad = 12
    x0, x1 = lane_min - pad, lane_max + pad
    height = max(y for _, y in pos.values()) + BOX_H + 2 * pad
    y0 = -BOX_H / 2 - pad
    width = x1 - x0
    style = (
        "<style>.e{fill:none;stroke:#6b7280;stroke-width:1.3;marker-end:url(#arr)}"
        ".skip{stroke:#ea580c;stroke-width:1.6}.trunk{marker-end:none}"
        ".l{font:12px ui-monospace,monospace;fill:#111}"
        ".s{font:10px ui-monospace,monospace;fill:#4b5563}.io{fill:#fff}</style>"
    )
    marker = (
        '<defs><marker id="arr" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#6b7280"/></marker></defs>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="arch" viewBox="{x0:.0f} {y0:.0f} '
        f'{width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" role="img" '
        f'aria-label="{_esc(title)}">{style}{marker}{"".join(edges)}{"".join(boxes)}</svg>'
    )


def _box(n: Node, xy: tuple[float, float], w: float) -> str:
    x, y = xy
    fill = COLOURS.get(n.kind, "#f9fafb")
    tip = f"<title>{_esc(n.title or n.label)}</title>"
    data = f' data-class="{_esc(n.module_class)}"' if n.kind == "block" else ""
    if n.kind in ("add", "mul"):
        return (
            f'<g class="n {n.kind}"{data}>{tip}<circle cx="{x:.1f}" cy="{y:.1f}" r="14" '
            f'fill="{fill}" stroke="#15803d"/><text x="{x:.1f}" y="{y + 5:.1f}" '
            f'text-anchor="middle" class="l" style="font-size:16px">{_esc(n.label)}</text>'
            f'<text x="{x + 18:.1f}" y="{y + 4:.1f}" class="s">{_esc(n.shape)}</text></g>'
        )
    text_cls = "l io" if n.kind in ("input", "output") else "l"
    stroke = "#111" if n.count > 1 else "#9ca3af"
    shape = (
        f'<text x="{x:.1f}" y="{y + 13:.1f}" text-anchor="middle" class="s'
        f'{" io" if n.kind in ("input", "output") else ""}">{_esc(n.shape)}</text>'
        if n.shape
        else ""
    )
    ty = y - 1 if n.shape else y + 4
    return (
        f'<g class="n {n.kind}"{data}>{tip}<rect x="{x - w / 2:.1f}" y="{y - BOX_H / 2:.1f}" '
        f'width="{w:.1f}" height="{BOX_H}" rx="6" fill="{fill}" stroke="{stroke}"/>'
        f'<text x="{x:.1f}" y="{ty:.1f}" text-anchor="middle" class="{text_cls}">'
        f"{_esc(_clip(n.label))}</text>{shape}</g>"
    )


def _clip(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


# --- the whole model ------------------------------------------------------------------------


def _graph(
    owner: nn.Module, fn: Callable[..., Any], args: tuple[Any, ...]
) -> tuple[list[Node], bool]:
    """Trace, or fall back to the hook chain; then fold and collapse. (nodes, traced)."""
    modules = dict(owner.named_modules())
    try:
        nodes, traced = trace_graph(owner, fn, args), True
    except Exception:  # noqa: BLE001 - fx cannot trace data-dependent Python; use hooks
        nodes, traced = hook_chain(owner, fn, args), False
    nodes = collapse_repeats(fold_decorations(nodes, modules))
    if len(nodes) > MAX_NODES and traced:
        nodes = collapse_repeats(fold_decorations(hook_chain(owner, fn, args), modules))
        traced = False
    return nodes, traced


def _capture_inputs(model: nn.Module, x: Tensor, wanted: set[str]) -> dict[str, tuple]:
    """The positional arguments of the first call of each module in `wanted`."""
    seen: dict[str, tuple] = {}
    handles = []
    for name, m in model.named_modules():
        if name in wanted:

            def pre(mod: nn.Module, args: tuple, name: str = name) -> None:
                seen.setdefault(name, _snapshot(args))

            handles.append(m.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            model.forward_head(model.forward_features(x))
    finally:
        for h in handles:
            h.remove()
    return seen


def _snapshot(value: Any) -> Any:
    """A copy of a call's arguments: lists may grow after the call (DenseNet's features)."""
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(v) for v in value)
    return value


def _block_instances(model: nn.Module, classes: list[str]) -> dict[str, str]:
    """For each block class, the instance to draw: the one with the most kinds of
    submodule (a ResNet block with its projection shortcut), then the smallest (a DenseNet
    block of 6 layers rather than 24)."""
    best: dict[str, tuple[tuple[int, int], str]] = {}
    for name, m in model.named_modules():
        cls = type(m).__name__
        if cls in classes:
            subs = list(m.modules())
            key = (len({type(s) for s in subs}), -len(subs))
            if cls not in best or key > best[cls][0]:
                best[cls] = (key, name)
    return {cls: name for cls, (_, name) in best.items()}


def model_diagram(model: nn.Module, x: Tensor) -> dict[str, Any]:
    """{"svg", "traced", "legend", "blocks": [{"name", "instance", "svg", "traced"}]}.

    `model` follows the visionzoo contract (forward_features / forward_head); `x` is an
    example input batch of one image.
    """
    model = model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
    nodes, traced = _graph(model, model.forward_features, (x,))
    head, head_traced = _graph(model, model.forward_head, (feats,))
    nodes = _join(nodes, head)
    blocks: list[dict[str, Any]] = []
    queue = [n.module_class for n in nodes if n.kind in ("block", "attention", "tokens")]
    done: set[str] = set()
    composite = {
        type(m).__name__
        for m in model.modules()
        if m is not model and not isinstance(m, CONTAINERS) and any(True for _ in m.children())
    }
    instances = _block_instances(model, sorted(composite))
    inputs = _capture_inputs(model, x, set(instances.values()))  # one pass for every block
    while queue and len(blocks) < MAX_DETAILS:
        classes = [c for c in dict.fromkeys(queue) if c not in done]
        queue = []
        for cls in classes:
            done.add(cls)
            name = instances.get(cls)
            if name is None or name not in inputs or len(blocks) >= MAX_DETAILS:
                continue
            block = model.get_submodule(name)
            if not any(True for _ in block.children()):
                continue
            args = inputs[name]
            try:
                with torch.no_grad():
                    sub, sub_traced = _graph(block, block.forward, args)
            except Exception:  # noqa: BLE001 - a block we cannot replay gets no detail diagram
                continue
            if len(sub) <= 3:  # input -> one box -> output says nothing new
                continue
            title = f"{cls} ({name})"
            blocks.append({"name": cls, "instance": name, "svg": render_svg(sub, title)})
            blocks[-1]["traced"] = sub_traced
            queue += [n.module_class for n in sub if n.kind in ("block", "attention", "tokens")]
    return {
        "svg": render_svg(nodes, type(model).__name__),
        "traced": traced and head_traced,
        "legend": [{"kind": k, "label": v, "colour": COLOURS[k]} for k, v in LEGEND],
        "blocks": blocks,
    }


def _join(features: list[Node], head: list[Node]) -> list[Node]:
    """Append the head's graph after the features' graph: its input is their output."""
    out = features[-1]
    feat_out = out.inputs[0] if out.inputs else features[-2].id
    body = features[:-1]
    offset = max(n.id for n in body) + 1
    mapping = {n.id: (feat_out if n.kind == "input" else n.id + offset) for n in head}
    for n in head:
        if n.kind == "input":
            continue
        n.id = mapping[n.id]
        n.inputs = [mapping[i] for i in n.inputs]
        body.append(n)
    return body
