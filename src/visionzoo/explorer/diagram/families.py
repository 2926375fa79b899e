"""What makes a family's diagram teach its paper: stage frames with captions, repeat counts,
alternating blocks, and which block defines the family.

Everything here reads the model's own structure, so a new family gets the same treatment:
a stage that holds N copies of a block says "3× ConvNeXtBlock", a run of Swin blocks says
that regular and shifted windows alternate, Xception's `entry`/`middle`/`exit` containers
become captioned frames ("middle flow · 8 blocks").
"""

from __future__ import annotations

from torch import nn

from visionzoo.explorer.diagram.extract import is_container
from visionzoo.explorer.diagram.labels import Node

# Captions for containers that a paper names (Xception's three flows).
CAPTIONS = {"entry": "entry flow", "middle": "middle flow", "exit": "exit flow"}


def _composite(m: nn.Module) -> bool:
    return not is_container(m) and any(True for _ in m.children())


def repeated_block(m: nn.Module) -> tuple[int, str] | None:
    """(N, class) when `m` holds a container of N >= 2 blocks of one class (a stage)."""
    for child in m.children():
        if not is_container(child):
            continue
        kinds = [type(c).__name__ for c in child.children() if _composite(c)]
        if len(kinds) >= 2 and len(set(kinds)) == 1:
            return len(kinds), kinds[0]
    return None


def variant(m: nn.Module) -> str:
    """What tells apart blocks of one class: Swin's regular (W-MSA) and shifted (SW-MSA)."""
    for s in m.modules():
        if hasattr(s, "window_size") and hasattr(s, "shift_size"):
            return "SW-MSA" if s.shift_size else "W-MSA"
    return ""


def _module(owner: nn.Module, name: str) -> nn.Module | None:
    try:
        return owner.get_submodule(name) if name else None
    except AttributeError:
        return None


def annotate(owner: nn.Module, nodes: list[Node]) -> None:
    """Repeat counts on stage boxes, alternation on folded runs, the group of each box."""
    for n in nodes:
        if n.kind != "block":
            continue
        if n.count > 1:
            kinds = [variant(m) for m in (_module(owner, q) for q in n.members) if m is not None]
            if len(set(kinds)) > 1:
                n.label = f"{n.label}, {' / '.join(dict.fromkeys(kinds))} alternating"
            continue
        m = _module(owner, n.module_name)
        found = repeated_block(m) if m is not None else None
        if found:
            n.label = f"{n.label} · {found[0]}× {found[1]}"
    for n in nodes:
        top = n.module_name.split(".", 1)[0] if "." in n.module_name else ""
        child = _module(owner, top)
        if child is not None and is_container(child):
            n.group = top


def captions(nodes: list[Node]) -> dict[str, str]:
    """{group: caption} for frames worth drawing: two or more groups of two or more boxes
    (or one box that folds several blocks: Xception's middle flow)."""
    sizes: dict[str, list[Node]] = {}
    for n in nodes:
        if n.group:
            sizes.setdefault(n.group, []).append(n)
    big = {g: ns for g, ns in sizes.items() if len(ns) >= 2 or sum(n.count for n in ns) >= 2}
    if len(big) < 2:
        return {}
    out = {}
    for g, ns in big.items():
        blocks = sum(n.count for n in ns if n.kind == "block")
        caption = CAPTIONS.get(g, g)
        out[g] = f"{caption} · {blocks} blocks" if blocks >= 2 else caption
    return out


def defining_block(model: nn.Module, nodes: list[Node]) -> str | None:
    """The class of block that defines the family: the most repeated block of the top-level
    diagram, and inside a stage, the block it repeats (SwinStage -> SwinBlock)."""
    totals: dict[str, int] = {}
    for n in nodes:
        if n.kind == "block" and n.module_class:
            totals[n.module_class] = totals.get(n.module_class, 0) + n.count
    if not totals:
        return None
    best = max(totals, key=lambda c: totals[c])
    for m in model.modules():
        if type(m).__name__ == best:
            found = repeated_block(m)
            return found[1] if found else best
    return best
