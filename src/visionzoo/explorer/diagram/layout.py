"""Where each box goes: rows by longest path from the input, barycentre order in a row."""

from __future__ import annotations

from visionzoo.explorer.diagram.labels import Node
from visionzoo.explorer.diagram.simplify import consumers as _consumers

ROW_H, BOX_H, CHAR_W, GAP_X = 64, 38, 7.0, 18


def box_width(n: Node) -> float:
    if n.kind in ("add", "mul"):
        return 34.0
    text = max(len(n.label), len(n.shape))
    return min(max(text * CHAR_W + 20, 60), 356)


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
        total = sum(box_width(n) for n in row) + GAP_X * (len(row) - 1)
        x = -total / 2
        for n in row:
            w = box_width(n)
            pos[n.id] = (x + w / 2, r * ROW_H)
            x += w + GAP_X
    return pos
