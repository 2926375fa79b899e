"""From a model to a list of boxes: torch.fx tracing, or forward hooks where fx cannot go.

`trace_graph` traces a method of a module with torch.fx, treating every module that is not
a plain container as one box, and propagates shapes with an example input (on the meta
device nothing is computed). Code that fx cannot trace falls back to `hook_chain`: the
modules in the order forward hooks see them run. The rest finds what to draw in detail:
one instance of each composite block, its input, and the modules that run only in training
(GoogLeNet's auxiliary classifiers).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from visionzoo.explorer.diagram.labels import (
    Node,
    format_shape,
    function_kind_label,
    instance_label,
    module_kind_label,
    param_label,
)

_PLAIN = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
INLINE = ("Mlp", "MLP", "FeedForward")  # drawn open inside a block: fc1 -> act -> fc2


def is_container(m: nn.Module) -> bool:
    """A module that only groups others: drawn as its contents, not as a box.

    Plain Sequential/ModuleList/ModuleDict are; so is a Sequential subclass that is one
    layer with its norm and activation (ConvNormAct). One that pools (DenseNet's
    `Transition`) is a block of the paper and gets its own box.
    """
    if type(m) in _PLAIN:
        return True
    if isinstance(m, nn.Sequential):
        children = list(m.children())
        leaves = all(not any(True for _ in c.children()) for c in children)
        return leaves and not any(isinstance(c, _POOLS) for c in children)
    return False


class _Tracer(fx.Tracer):
    """Every non-container module is a leaf (one box per block, not per tensor op), except
    an MLP inside a block that is drawn open (`inline`)."""

    def __init__(self, inline: bool = False) -> None:
        super().__init__()
        self.inline = inline

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self.inline and type(m).__name__.startswith(INLINE):
            return False
        return not is_container(m)


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


def _constant_names(owner: nn.Module) -> dict[float, str]:
    """The owner's own float attributes by value: NFNet's alpha and beta, for the labels."""
    greek = {"alpha": "α", "beta": "β", "gamma": "γ"}
    return {
        float(v): greek.get(k, k)
        for k, v in vars(owner).items()
        if isinstance(v, float) and not k.startswith("_")
    }


def trace_graph(
    owner: nn.Module, fn: Callable[..., Any], args: tuple[Any, ...], inline: bool = False
) -> list[Node]:
    """fx-trace `fn` (a bound method of `owner`, or `owner.forward`) into diagram nodes."""
    root = {1: _Call, 2: _Call2, 3: _Call3}[len(args)](fn, owner)
    graph = _Tracer(inline).trace(root)
    names = _constant_names(owner)
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
            kind, label, mname = "param", param_label(str(n.target)), str(n.target)
            title, mcls = f"parameter {n.target}", "Parameter"
        elif n.op == "call_module":
            m = modules[str(n.target)]
            kind, label = module_kind_label(m, str(n.target))
            mname, mcls = str(n.target), type(m).__name__
            if kind == "block":
                label = instance_label(label, mcls, mname)
            n_params = sum(p.numel() for p in m.parameters())
            title = f"{n.target}: {mcls}, {n_params:,} parameters"
        else:
            kind, label = function_kind_label(n, names)
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
            if is_container(child):
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
        kind, label = module_kind_label(m, q)
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


def capture_inputs(model: nn.Module, x: Tensor, wanted: set[str]) -> dict[str, tuple]:
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
            clf = cast(Any, model)  # the visionzoo contract
            clf.forward_head(clf.forward_features(x))
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


def _teaches(m: nn.Module) -> int:
    """How many of a paper's defining features an instance shows: a shifted window (Swin),
    an identity shortcut (MBConv), an expansion layer (MobileNetV2's first block has none)."""
    score = int(bool(getattr(m, "use_shortcut", False) or getattr(m, "use_res_connect", False)))
    score += int(not isinstance(getattr(m, "expand", None), (nn.Identity, type(None))))
    score += int(any(getattr(s, "shift_size", 0) for s in m.modules()))
    return score


def block_instances(model: nn.Module, classes: list[str]) -> dict[str, str]:
    """For each block class, the instance to draw: the one that shows the most of what
    defines the family (`_teaches`), then the one with the most kinds of submodule (a ResNet
    block with its projection shortcut), then the smallest (a DenseNet block of 6 layers
    rather than 24)."""
    best: dict[str, tuple[tuple[int, int, int], str]] = {}
    for name, m in model.named_modules():
        cls = type(m).__name__
        if cls in classes:
            subs = [s for s in m.modules() if not isinstance(s, nn.Identity)]
            key = (_teaches(m), len({type(s) for s in subs}), -len(subs))
            if cls not in best or key > best[cls][0]:
                best[cls] = (key, name)
    return {cls: name for cls, (_, name) in best.items()}


def training_only(model: nn.Module, x: Tensor) -> list[tuple[str, str, str]]:
    """Modules that run in training mode only, and where they branch off:
    [(module, the module whose output it reads, its output shape)].

    GoogLeNet's auxiliary classifiers, for one: in evaluation mode they do not run, so a
    trace of the inference graph cannot show them.
    """
    ran: dict[str, bool] = {}
    producers: dict[int, str] = {}
    taps: list[tuple[str, str, str]] = []
    named = [(n, m) for n, m in model.named_modules() if n and not is_container(m)]
    eval_seen: set[str] = set()

    def hook(name: str) -> Any:
        def fn(mod: nn.Module, args: tuple, out: Any) -> None:
            if not model.training:
                eval_seen.add(name)
                return
            ran[name] = True
            if isinstance(out, Tensor):
                producers[id(out)] = name  # the latest: ids of freed tensors are reused
            first = args[0] if args and isinstance(args[0], Tensor) else None
            if (
                first is not None
                and name not in eval_seen
                and not name.startswith(tuple(f"{t[0]}." for t in taps))
            ):
                src = producers.get(id(first))
                if src is not None:
                    taps.append((name, src, format_shape(_first_shape(out))))

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in named]
    try:
        with torch.no_grad():
            model.eval()
            model(x)
            model.train()
            model(x)
    finally:
        model.eval()
        for h in handles:
            h.remove()
    top = {n for n, _ in named if "." not in n}
    return [t for t in taps if t[0] in top]
