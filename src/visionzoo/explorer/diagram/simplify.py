"""Fewer, more telling boxes: norms and activations fold into the layer before them, and a
run of identical blocks becomes one "Bottleneck ×6" box.
"""

from __future__ import annotations

from torch import nn

from visionzoo.explorer.diagram.labels import Node, is_decoration, short_module


def consumers(nodes: list[Node]) -> dict[int, list[int]]:
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


_NO_FOLD = ("input", "param", "add", "mul", "concat", "op", "scale")


def fold_decorations(nodes: list[Node], modules: dict[str, nn.Module]) -> list[Node]:
    """Fold norm/activation/dropout boxes into the single box that feeds them."""
    changed = True
    while changed:
        changed = False
        users = consumers(nodes)
        by_id = {n.id: n for n in nodes}
        for n in nodes:
            m = modules.get(n.module_name) if n.module_name else None
            if m is None or not is_decoration(m) or len(n.inputs) != 1:
                continue
            prev = by_id[n.inputs[0]]
            idle = isinstance(m, nn.Identity) or getattr(m, "p", getattr(m, "drop_prob", 1)) == 0
            if idle:  # an identity, or dropout with p = 0: it does nothing at all
                nodes = _remove(nodes, n.id, prev.id)
                changed = True
                break
            if prev.kind in _NO_FOLD or len(users[prev.id]) != 1:
                continue
            extra = short_module(m)
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
    users = consumers(nodes)
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
            and len(users[prev.id]) == 1
            and n.module_name.rsplit(".", 1)[-1].isdigit()  # Inception 4b, 4c, 4d stay named
        ):
            first = prev.title.split(":")[0] if prev.count == 1 else prev.module_name.split("–")[0]
            prev.members = prev.members or [prev.module_name]
            prev.members.append(n.module_name)
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
