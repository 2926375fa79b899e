"""Blocks used by two or more families, one concept per file."""

from visionzoo.layers.attention import Attention
from visionzoo.layers.conv_norm_act import ConvNormAct
from visionzoo.layers.drop_path import DropPath, drop_path, drop_path_rates
from visionzoo.layers.helpers import conv_out_size, make_divisible, round_repeats
from visionzoo.layers.mlp import Mlp
from visionzoo.layers.norm import LayerNorm2d
from visionzoo.layers.padding import pad_same
from visionzoo.layers.patch_embed import PatchEmbed
from visionzoo.layers.squeeze_excite import SqueezeExcite

__all__ = [
    "Attention",
    "ConvNormAct",
    "DropPath",
    "LayerNorm2d",
    "Mlp",
    "PatchEmbed",
    "SqueezeExcite",
    "conv_out_size",
    "drop_path",
    "drop_path_rates",
    "make_divisible",
    "pad_same",
    "round_repeats",
]
