"""The whole model: the top-level graph (features, head, training-only heads), then one
detail diagram per kind of block, the family's defining block first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn

from visionzoo.explorer.diagram.extract import (
    block_instances,
    capture_inputs,
    hook_chain,
    is_container,
    trace_graph,
    training_only,
)
from visionzoo.explorer.diagram.families import annotate, captions, defining_block
from visionzoo.explorer.diagram.labels import Node
from visionzoo.explorer.diagram.simplify import collapse_repeats, fold_decorations
from visionzoo.explorer.diagram.svg import COLOURS, LEGEND, render_svg
from visionzoo.models.base import ImageClassifier

MAX_DETAILS = 8  # detail diagrams per model
MAX_NODES = 160  # larger graphs are drawn as a module chain instead
_DETAILED = ("block", "attention", "tokens", "merge")


def _graph(
    owner: nn.Module, fn: Callable[..., Any], args: tuple[Any, ...], inline: bool = False
) -> tuple[list[Node], bool]:
    """Trace, or fall back to the hook chain; then fold and collapse. (nodes, traced)."""
    modules = dict(owner.named_modules())
    try:
        nodes, traced = trace_graph(owner, fn, args, inline), True
    except Exception:  # noqa: BLE001 - fx cannot trace data-dependent Python; use hooks
        nodes, traced = hook_chain(owner, fn, args), False
    nodes = collapse_repeats(fold_decorations(nodes, modules))
    if len(nodes) > MAX_NODES and traced:
        nodes = collapse_repeats(fold_decorations(hook_chain(owner, fn, args), modules))
        traced = False
    annotate(owner, nodes)
    return nodes, traced


def _add_training_heads(model: nn.Module, x: Tensor, nodes: list[Node]) -> None:
    """Boxes for heads that run in training only (GoogLeNet's auxiliary classifiers)."""
    try:
        taps = training_only(model, x)
    except Exception:  # noqa: BLE001 - a model that cannot run in training mode here
        return
    for name, src, shape in taps:
        at = next((n for n in nodes if n.module_name == src or src in n.members), None)
        if at is None:
            continue
        cls = type(model.get_submodule(name)).__name__
        node = Node(max(n.id for n in nodes) + 1, "aux", f"{cls} {name} (training only)", shape)
        node.title, node.inputs = f"{name}: {cls}, runs in training mode only", [at.id]
        node.module_name, node.module_class = name, cls
        nodes.insert(len(nodes) - 1, node)


def _details(model: nn.Module, x: Tensor, queue: list[str]) -> list[dict[str, Any]]:
    composite = {
        type(m).__name__
        for m in model.modules()
        if m is not model and not is_container(m) and any(True for _ in m.children())
    }
    instances = block_instances(model, sorted(composite))
    inputs = capture_inputs(model, x, set(instances.values()))  # one pass for every block
    blocks: list[dict[str, Any]] = []
    done: set[str] = set()
    while queue and len(blocks) < MAX_DETAILS:
        classes = [c for c in dict.fromkeys(queue) if c not in done]
        queue = []
        for cls in classes:
            done.add(cls)
            name = instances.get(cls)
            if name is None or name not in inputs or len(blocks) >= MAX_DETAILS:
                continue
            block = model.get_submodule(name)
            try:
                with torch.no_grad():
                    sub, sub_traced = _graph(block, block.forward, inputs[name], inline=True)
            except Exception:  # noqa: BLE001 - a block we cannot replay gets no detail diagram
                continue
            queue += [n.module_class for n in sub if n.kind in _DETAILED]  # before any skip
            if len(sub) <= 3:  # input -> one box -> output says nothing new
                continue
            svg = render_svg(sub, f"{cls} ({name})", captions(sub))
            blocks.append({"name": cls, "instance": name, "svg": svg, "traced": sub_traced})
    return blocks


def model_diagram(model: ImageClassifier, x: Tensor) -> dict[str, Any]:
    """{"svg", "traced", "legend", "defining", "blocks": [{"name", "instance", "svg",
    "traced", "defining"}]}.

    `model` follows the visionzoo contract (forward_features / forward_head); `x` is an
    example input batch of one image. `defining` names the block class that defines the
    family (its detail comes first in `blocks`).
    """
    model = model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
    nodes, traced = _graph(model, model.forward_features, (x,))
    head, head_traced = _graph(model, model.forward_head, (feats,))
    nodes = _join(nodes, head)
    _add_training_heads(model, x, nodes)
    blocks = _details(model, x, [n.module_class for n in nodes if n.kind in _DETAILED])
    defining = defining_block(model, nodes)
    for b in blocks:
        b["defining"] = b["name"] == defining
    blocks.sort(key=lambda b: not b["defining"])
    return {
        "svg": render_svg(nodes, type(model).__name__, captions(nodes)),
        "traced": traced and head_traced,
        "legend": [{"kind": k, "label": v, "colour": COLOURS[k]} for k, v in LEGEND],
        "defining": defining,
        "blocks": blocks,
    }


def draw_model(name: str, device: str = "meta") -> dict[str, Any]:
    """The diagram of registered model `name` at its default input size, built on `device`
    (on "meta" nothing is computed or allocated: shapes are all a diagram needs)."""
    from visionzoo.registry import create_model, get_model_info

    info = get_model_info(name)
    size = info.image_size
    with torch.no_grad(), torch.device(device):
        model = create_model(name).eval()
        x = torch.randn(1, info.in_channels, size, size)
        drawn = model_diagram(cast(ImageClassifier, model), x)
    return {**drawn, "image_size": size, "device": device}


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
