"""The diagram as SVG: boxes, data edges, skip edges in their own lanes, and stage frames."""

from __future__ import annotations

import html

from visionzoo.explorer.diagram.labels import Node
from visionzoo.explorer.diagram.layout import BOX_H, ROW_H, box_width, layout

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
    "scale": "#dcfce7",
    "merge": "#fbcfe8",
    "aux": "#fee2e2",
}
LEGEND = [
    ("conv", "convolution"),
    ("pwconv", "1×1 conv"),
    ("dwconv", "depthwise conv"),
    ("linear", "linear"),
    ("attention", "attention"),
    ("tokens", "tokens / embeddings"),
    ("block", "block (detail below)"),
    ("merge", "patch merging"),
    ("aux", "training-only head"),
    ("add", "add (shortcut)"),
    ("concat", "concatenation"),
]


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def render_svg(nodes: list[Node], title: str = "", groups: dict[str, str] | None = None) -> str:
    """Draw the nodes top to bottom; edges that skip rows go round the side, in colour.

    `groups` ({node.group: caption}) draws a captioned frame round each group's boxes:
    Xception's entry, middle and exit flows, ResNet's layer1..layer4.
    """
    if not nodes:
        return ""
    pos = layout(nodes)
    widths = {n.id: box_width(n) for n in nodes}
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
    frames, frame_min = _frames(nodes, pos, widths, groups or {}, lane_min)
    boxes = [_box(n, pos[n.id], widths[n.id]) for n in nodes]
    pad = 12
    x0, x1 = min(lane_min, frame_min) - pad, lane_max + pad
    height = max(y for _, y in pos.values()) + BOX_H + 2 * pad
    y0 = -BOX_H / 2 - pad
    width = x1 - x0
    style = (
        "<style>.e{fill:none;stroke:#6b7280;stroke-width:1.3;marker-end:url(#arr)}"
        ".skip{stroke:#ea580c;stroke-width:1.6}.trunk{marker-end:none}"
        ".l{font:12px ui-monospace,monospace;fill:#111}"
        ".s{font:10px ui-monospace,monospace;fill:#4b5563}.io{fill:#fff}"
        ".f{fill:#f8fafc;stroke:#94a3b8;stroke-dasharray:4 3}"
        ".fl{font:600 12px system-ui,sans-serif;fill:#334155}</style>"
    )
    marker = (
        '<defs><marker id="arr" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#6b7280"/></marker></defs>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="arch" viewBox="{x0:.0f} {y0:.0f} '
        f'{width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" role="img" '
        f'aria-label="{_esc(title)}">{style}{marker}{"".join(frames)}{"".join(edges)}{"".join(boxes)}</svg>'
    )


def _frames(
    nodes: list[Node],
    pos: dict[int, tuple[float, float]],
    widths: dict[int, float],
    groups: dict[str, str],
    left: float,
) -> tuple[list[str], float]:
    """One dashed frame per group, its caption in a column left of every box and lane."""
    members: dict[str, list[Node]] = {}
    for n in nodes:
        if n.group in groups:
            members.setdefault(n.group, []).append(n)
    if not members:
        return [], left
    caption_w = max(len(c) for c in groups.values()) * 6.6 + 12
    x0 = left - 10 - caption_w
    x1 = max(pos[n.id][0] + widths[n.id] / 2 for n in nodes) + 10
    out = []
    for group, ns in members.items():
        top = min(pos[n.id][1] for n in ns) - BOX_H / 2 - 6
        bottom = max(pos[n.id][1] for n in ns) + BOX_H / 2 + 6
        out.append(
            f'<g class="frame" data-group="{_esc(group)}"><rect x="{x0:.1f}" y="{top:.1f}" '
            f'width="{x1 - x0:.1f}" height="{bottom - top:.1f}" rx="8" class="f"/>'
            f'<text x="{x0 + 8:.1f}" y="{top + 16:.1f}" class="fl">{_esc(groups[group])}</text></g>'
        )
    return out, x0


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


def _clip(s: str, n: int = 48) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
