"""Architecture diagrams drawn from the model itself, as SVG.

The model's `forward_features` and `forward_head` are traced with torch.fx (`extract`),
treating every module that is not a container as one box, and the shapes are propagated
with an example input. So the diagram shows what the code does: `x + shortcut` becomes a
"+" node fed by a skip edge (ResNet), `torch.cat` a "concat" node with many inputs
(DenseNet, Inception), a convolution with `groups == in_channels` a "DW Conv" box
(MobileNet, Xception), Swin's attention "SW-MSA 7×7 windows, shift 3" (`labels`).

To stay legible, norms, activations and dropout fold into the box before them and runs of
identical blocks collapse into one box ("Bottleneck ×6") (`simplify`); stages say what
they repeat and Xception's flows are framed (`families`); `layout` and `svg` draw it.
Each distinct composite block gets its own detail diagram, the family's defining block
first (`model`).
"""

from visionzoo.explorer.diagram.labels import Node, format_shape, module_kind_label
from visionzoo.explorer.diagram.model import draw_model, model_diagram
from visionzoo.explorer.diagram.svg import render_svg

__all__ = ["Node", "draw_model", "format_shape", "model_diagram", "module_kind_label", "render_svg"]
