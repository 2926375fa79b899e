"""CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped Windows.

Xiaoyi Dong, Jianmin Bao, Dongdong Chen, Weiming Zhang, Nenghai Yu, Lu Yuan, Dong Chen,
Baining Guo. CVPR 2022. https://arxiv.org/abs/2107.00652

Key idea: cross-shaped window self-attention. Half of the heads attend within horizontal
stripes of width sw, the other half within vertical stripes, in parallel, so one block sees
a whole cross through each token; sw grows with depth (1, 2, 7, 7 at 224 px). Locally-enhanced
positional encoding (LePE) adds a depthwise 3x3 convolution of V to the attention output.

The network is a four-stage pyramid like Swin's: a 7x7 stride-4 convolutional stem, then
CSWin blocks with a 3x3 stride-2 convolution between stages (strides 4, 8, 16, 32). The last
stage's 7x7 map is a single stripe, so its blocks use plain global attention with all heads.

NOTE: No torchvision or timm model exists, so no weights port here and no logit comparison;
the parameter counts (CSWin-T 22,320,552, -S 34,643,304, -B 77,382,184) are those of the
authors' released code (microsoft/CSWin-Transformer models/cswin.py), computed by instantiating
it. The README rounds them to 23M, 35M and 78M.
NOTE: The authors' code is fixed to one input size (224 or 384 px, square). Here any size of
at least 32 px works: a stripe width larger than the map is clamped to the map (the stripe
becomes the whole map), and a map that is not a multiple of the stripe width is zero-padded
to one, the padded keys being masked out of the softmax (the zero padding equals the LePE
convolution's own padding, so LePE is unchanged). At 224 px nothing is clamped or padded.
NOTE: `small_input=True` (28x28/32x32 data) replaces the 7x7 stride-4 stem by a 3x3 stride-2
convolution: maps of 16, 8, 4, 2 tokens at 32 px (strides 2 to 16).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.layers.drop_path import DropPath, drop_path_rates
from visionzoo.layers.mlp import Mlp
from visionzoo.models.base import FeatureInfo, ImageClassifier
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="CSWin",
    year=2021,
    paper="CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped Windows",
    url="https://arxiv.org/abs/2107.00652",
    authors="Xiaoyi Dong, Jianmin Bao, Dongdong Chen, Weiming Zhang, Nenghai Yu, Lu Yuan, "
    "Dong Chen, Baining Guo",
)


def to_windows(x: Tensor, hs: int, ws: int) -> Tensor:
    B, H, W, C = x.shape
    x = x.view(B, H // hs, hs, W // ws, ws, C)  # (B, H, W, C) -> (B, h, hs, w, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, hs * ws, C)  # -> (B * h * w, hs*ws, C)


def from_windows(x: Tensor, hs: int, ws: int, H: int, W: int) -> Tensor:
    C = x.shape[-1]
    x = x.view(-1, H // hs, W // ws, hs, ws, C)  # (B * h * w, hs*ws, C) -> (B, h, w, hs, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)  # -> (B, H, W, C)


class LePE(nn.Module):
    """Locally-enhanced positional encoding: a depthwise 3x3 convolution of V in each window."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, v: Tensor, hs: int, ws: int) -> Tensor:
        Bw, N, C = v.shape
        v = v.transpose(1, 2).reshape(Bw, C, hs, ws)  # (B', N, C) -> (B', C, hs, ws)
        return self.conv(v).flatten(2).transpose(1, 2)  # -> (B', N, C)


def stripe_shape(H: int, W: int, split_size: int, axis: int | None) -> tuple[int, int]:
    """(height, width) of one stripe: full height x sw (axis 0), sw x full width (1), or all."""
    if axis is None:
        return H, W
    if axis == 0:
        return H, min(split_size, W)
    return min(split_size, H), W


# The stripe layout and its padding depend on the map's size: torch.fx records this function as
# one call (as torchvision does for Swin's window attention), so tracing sees no shape branch.
@torch.fx.wrap
def stripe_attention(
    q: Tensor, k: Tensor, v: Tensor, lepe: nn.Module, num_heads: int, split_size: int, axis
) -> Tensor:
    """Attention of (B, H, W, C) queries within stripes, plus LePE(V); `axis` as LePEAttention."""
    B, H, W, C = q.shape
    head_dim = C // num_heads
    hs, ws = stripe_shape(H, W, split_size, axis)
    pad_h, pad_w = (hs - H % hs) % hs, (ws - W % ws) % ws
    if pad_h or pad_w:  # zero-pad the map to whole stripes; padded keys are masked below
        q, k, v = (F.pad(t, (0, 0, 0, pad_w, 0, pad_h)) for t in (q, k, v))
    Hp, Wp = H + pad_h, W + pad_w
    v = to_windows(v, hs, ws)  # (B, Hp, Wp, C) -> (B', N, C)
    pos = lepe(v, hs, ws)  # LePE(V)

    def heads(t: Tensor) -> Tensor:  # (B', N, C) -> (B', heads, N, head_dim)
        return t.reshape(t.shape[0], t.shape[1], num_heads, head_dim).transpose(1, 2)

    q, k = to_windows(q, hs, ws), to_windows(k, hs, ws)
    attn = (heads(q) * head_dim**-0.5) @ heads(k).transpose(-2, -1)  # (B', h, N, N)
    if pad_h or pad_w:
        real = to_windows(F.pad(q.new_ones(1, H, W, 1), (0, 0, 0, pad_w, 0, pad_h)), hs, ws)
        keep = real[:, :, 0].bool()  # (nW, N): True for real tokens
        attn = attn.view(B, -1, num_heads, *attn.shape[-2:])
        attn = attn.masked_fill(~keep[None, :, None, None, :], float("-inf"))
        attn = attn.flatten(0, 1)
    x = attn.softmax(dim=-1) @ heads(v)  # (B', heads, N, head_dim)
    x = x.transpose(1, 2).reshape(v.shape) + pos  # (B', heads, N, d) -> (B', N, C)
    return from_windows(x, hs, ws, Hp, Wp)[:, :H, :W]  # -> (B, H, W, C), padding dropped


class LePEAttention(nn.Module):
    """Self-attention within stripes: `axis` 0 vertical (full height x sw), 1 horizontal,
    None the whole map; plus LePE(V)."""

    def __init__(self, dim: int, num_heads: int, split_size: int, axis: int | None) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.split_size, self.axis = split_size, axis
        self.lepe = LePE(dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return stripe_attention(q, k, v, self.lepe, self.num_heads, self.split_size, self.axis)


class CSWinBlock(nn.Module):
    """x = x + proj(concat(vertical-, horizontal-stripe attention)(LN(x))); x = x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, split_size: int, last_stage: bool, drop_prob=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        if last_stage:  # one stripe covers the map: global attention with every head
            self.attns = nn.ModuleList([LePEAttention(dim, num_heads, split_size, None)])
        else:  # half the channels and heads per direction
            self.attns = nn.ModuleList(
                [LePEAttention(dim // 2, num_heads // 2, split_size, axis) for axis in (0, 1)]
            )
        width = dim // len(self.attns)
        self.slices = [slice(i * width, (i + 1) * width) for i in range(len(self.attns))]
        self.proj = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_prob)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)  # (B, H, W, 3C) -> 3 x (B, H, W, C)
        # Each direction takes its own slice of the channels (C/2 each, or all C in stage 4).
        parts = [attn(q[..., c], k[..., c], v[..., c]) for attn, c in zip(self.attns, self.slices)]
        out = torch.cat(parts, dim=-1)
        x = x + self.drop_path(self.proj(out))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MergeBlock(nn.Module):
    """Between stages: a 3x3 stride-2 convolution (half the resolution, twice the width), LN."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x.permute(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W) -> (B, 2C, H/2, W/2)
        return self.norm(x.permute(0, 2, 3, 1))  # -> (B, H/2, W/2, 2C)


class CSWinStage(nn.Module):
    """A merge block (stages 2-4), then the stage's CSWin blocks, on a (B, H, W, C) map."""

    def __init__(self, downsample: nn.Module | None, blocks: list[CSWinBlock]) -> None:
        super().__init__()
        self.downsample = downsample or nn.Identity()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


@dataclass(frozen=True)
class CSWinConfig:
    """One row of the paper's Table 1."""

    embed_dim: int  # C, the first stage's width
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    split_sizes: tuple[int, int, int, int] = (1, 2, 7, 7)  # stripe width sw per stage


CONFIGS = {
    "t": CSWinConfig(64, (1, 2, 21, 1), (2, 4, 8, 16)),
    "s": CSWinConfig(64, (2, 4, 32, 2), (2, 4, 8, 16)),
    "b": CSWinConfig(96, (2, 4, 32, 2), (4, 8, 16, 32)),
}


class CSWinTransformer(ImageClassifier):
    """convolutional stem -> 4 stages of CSWin blocks (merge blocks between) -> LN -> pool."""

    stage_layout = "NHWC"

    def __init__(
        self,
        config: CSWinConfig,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        small_input: bool = False,
        drop_path_rate: float = 0.2,
    ) -> None:
        super().__init__()
        C, stride = config.embed_dim, 2 if small_input else 4
        self.in_channels, self.image_size, self.small_input = in_channels, image_size, small_input
        self.supports_small_input, self.min_image_size = True, stride * 8
        self.stem = nn.Module()
        if small_input:
            self.stem.conv = nn.Conv2d(in_channels, C, 3, stride=2, padding=1)
        else:
            self.stem.conv = nn.Conv2d(in_channels, C, 7, stride=4, padding=2)
        self.stem.norm = nn.LayerNorm(C)
        total = sum(config.depths)
        rates = drop_path_rates(drop_path_rate, total)
        self.stages = nn.ModuleList()
        for i, depth in enumerate(config.depths):
            dim, start = C * 2**i, sum(config.depths[:i])
            blocks = [
                CSWinBlock(dim, config.num_heads[i], config.split_sizes[i], i == 3, rate)
                for rate in rates[start : start + depth]
            ]
            self.stages.append(CSWinStage(MergeBlock(dim // 2, dim) if i else None, blocks))
        self.num_features = C * 8
        self.norm = nn.LayerNorm(self.num_features)
        self.num_classes = num_classes
        self.classifier = (
            nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        )
        self.feature_info = [FeatureInfo(f"stages.{i}", C * 2**i, stride * 2**i) for i in range(4)]
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def embed(self, x: Tensor) -> Tensor:
        conv, norm = self.stem.children()
        return norm(conv(x).permute(0, 2, 3, 1))  # (B, C, H, W) -> (B, H/4, W/4, C)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean((2, 3))  # (B, C, H, W) -> (B, C)
        return x if pre_logits else self.classifier(x)


_SRC = "authors' code (microsoft/CSWin-Transformer models/cswin.py), instantiated"
_SMALL = "3x3 stride-2 stem instead of 7x7 stride 4 (maps 16, 8, 4, 2 at 32 px)"
_CSWIN = dict(params_source=_SRC, min_image_size=32, small_input=_SMALL)


@register_model(FAMILY, params=22_320_552, **_CSWIN)
def cswin_t(**kwargs) -> CSWinTransformer:
    return CSWinTransformer(CONFIGS["t"], **kwargs)


@register_model(FAMILY, params=34_643_304, **_CSWIN)
def cswin_s(**kwargs) -> CSWinTransformer:
    return CSWinTransformer(CONFIGS["s"], drop_path_rate=0.4, **kwargs)


@register_model(FAMILY, params=77_382_184, **_CSWIN)
def cswin_b(**kwargs) -> CSWinTransformer:
    return CSWinTransformer(CONFIGS["b"], drop_path_rate=0.5, **kwargs)
