"""Swin Transformer: Hierarchical Vision Transformer using Shifted Windows.

Ze Liu, Yutong Lin, Yue Cao, Han Hu, Yixuan Wei, Zheng Zhang, Stephen Lin, Baining Guo.
ICCV 2021. https://arxiv.org/abs/2103.14030

Key idea: self-attention inside non-overlapping local windows (7x7 tokens) costs linear, not
quadratic, time in the image area; shifting the window grid by half a window in every second
block links neighbouring windows. Patch merging halves the resolution and doubles the width
between stages, giving a CNN-like pyramid (strides 4, 8, 16, 32) for dense prediction.

Attention inside a window adds a learned relative position bias B (one value per head and
per relative offset, a (2M-1)^2 table for M x M windows). The shifted configuration is
computed as one cyclic shift of the map plus a mask that stops tokens from attending across
the seams of the shift, so the number of windows stays the same.

NOTE: Windows on maps that are not a multiple of the window size follow torchvision, whose
weights port here: the map is zero-padded at the bottom and right to a multiple of the window
(the padded tokens take part in attention like any other, masked only by the shift mask),
and the shift is dropped along a side the padded map fits in one window. At 224 px every map
(56, 28, 14, 7) is a multiple of 7 and nothing is padded; at 64 px the maps are 16, 8, 4 and
2 tokens, padded to 21, 14, 7 and 7, and the last two stages use a single unshifted window.
The authors' code instead shrinks the window to the map when the map is smaller than the
window; that differs numerically and applies only at small sizes.
NOTE: Patch merging zero-pads odd maps by one row/column (torchvision); the paper assumes even.
NOTE: `small_input=True` (28x28/32x32 data) uses 2x2 patches and 4x4 windows: maps of 16, 8,
4, 2 tokens at 32 px (strides 2 to 16); the relative position tables shrink to 7x7 entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter
from visionzoo.layers.drop_path import DropPath, drop_path_rates
from visionzoo.layers.mlp import Mlp
from visionzoo.models.base import FeatureInfo, ImageClassifier
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="Swin",
    year=2021,
    paper="Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
    url="https://arxiv.org/abs/2103.14030",
    authors="Ze Liu, Yutong Lin, Yue Cao, Han Hu, Yixuan Wei, Zheng Zhang, Stephen Lin, "
    "Baining Guo",
)


def window_partition(x: Tensor, ws: int) -> Tensor:
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)  # (B, H, W, C) -> (B, h, ws, w, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)  # -> (B * h * w, ws*ws, C)


def window_reverse(x: Tensor, ws: int, H: int, W: int) -> Tensor:
    C = x.shape[-1]
    x = x.view(-1, H // ws, W // ws, ws, ws, C)  # (B * h * w, ws*ws, C) -> (B, h, w, ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)  # -> (B, H, W, C)


def relative_position_index(ws: int) -> Tensor:
    """For each pair of tokens in a ws x ws window, the row of its offset in the bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    coords = coords.flatten(1)  # (2, ws, ws) -> (2, ws*ws)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # (N, N, 2) >= 0
    return (rel[..., 0] * (2 * ws - 1) + rel[..., 1]).flatten()  # (N * N,)


def shift_mask(H: int, W: int, ws: int, shift: tuple[int, int], device: torch.device) -> Tensor:
    """-100 where two tokens of a shifted window came from different regions, else 0."""
    region = torch.zeros(H, W, device=device)
    count = 0
    for hs in (slice(0, -ws), slice(-ws, -shift[0]), slice(-shift[0], None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift[1]), slice(-shift[1], None)):
            region[hs, wsl] = count
            count += 1
    region = window_partition(region[None, :, :, None], ws).squeeze(-1)  # (nW, ws*ws)
    diff = region[:, None, :] - region[:, :, None]  # (nW, N, N)
    return diff.ne(0).float() * -100.0


def window_shift(Hp: int, Wp: int, ws: int, shift_size: int) -> tuple[int, int]:
    """The shift per side: none along a side that the padded map fits in one window."""
    return (shift_size if Hp > ws else 0, shift_size if Wp > ws else 0)


# The two helpers below branch on the map's size. torch.fx records each as one call (like
# torchvision's shifted_window_attention), so symbolic_trace sees no Python branch on a shape.
@torch.fx.wrap
def roll_map(x: Tensor, ws: int, shift_size: int, sign: int) -> Tensor:
    """Cyclically shift a padded (B, Hp, Wp, C) map by sign * shift (-1: up-left, +1: back)."""
    shift = window_shift(x.shape[1], x.shape[2], ws, shift_size)
    if not any(shift):
        return x
    return torch.roll(x, shifts=(sign * shift[0], sign * shift[1]), dims=(1, 2))


@torch.fx.wrap
def add_shift_mask(attn: Tensor, Hp: int, Wp: int, ws: int, shift_size: int) -> Tensor:
    """Add the shifted-window mask to (B*nW, heads, N, N) attention logits."""
    shift = window_shift(Hp, Wp, ws, shift_size)
    if not any(shift):
        return attn
    mask = shift_mask(Hp, Wp, ws, shift, attn.device).to(attn.dtype)  # (nW, N, N)
    Bw, heads, N, _ = attn.shape
    attn = attn.view(-1, mask.shape[0], heads, N, N) + mask[None, :, None]
    return attn.view(Bw, heads, N, N)


class ShiftedWindowAttention(nn.Module):
    """(S)W-MSA: multi-head attention within M x M windows, plus relative position bias."""

    relative_position_index: Tensor  # (N*N,) buffer

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int) -> None:
        super().__init__()
        self.num_heads, self.window_size, self.shift_size = num_heads, window_size, shift_size
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        index = relative_position_index(window_size)
        self.register_buffer("relative_position_index", index, persistent=False)

    def position_bias(self) -> Tensor:
        N = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index]  # (N*N, heads)
        return bias.view(N, N, -1).permute(2, 0, 1)  # -> (heads, N, N)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        ws = self.window_size
        x = F.pad(x, (0, 0, 0, (ws - W % ws) % ws, 0, (ws - H % ws) % ws))  # to multiples of ws
        Hp, Wp = x.shape[1], x.shape[2]
        if self.shift_size:
            x = roll_map(x, ws, self.shift_size, -1)
        windows = window_partition(x, ws)  # (B*nW, N, C)
        Bw, N, _ = windows.shape
        # (B*nW, N, 3C) -> (3, B*nW, heads, N, head_dim)
        qkv = self.qkv(windows).reshape(Bw, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1) + self.position_bias()
        if self.shift_size:
            attn = add_shift_mask(attn, Hp, Wp, ws, self.shift_size)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(Bw, N, C)  # heads -> (Bw, N, C)
        x = window_reverse(self.proj(x), ws, Hp, Wp)  # (B*nW, N, C) -> (B, Hp, Wp, C)
        if self.shift_size:
            x = roll_map(x, ws, self.shift_size, 1)
        return x[:, :H, :W].contiguous()  # drop the padding


class SwinBlock(nn.Module):
    """x = x + (S)W-MSA(LN(x)); x = x + MLP(LN(x)), on a (B, H, W, C) map."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, drop_prob=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftedWindowAttention(dim, num_heads, window_size, shift_size)
        self.drop_path1 = DropPath(drop_prob)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.drop_path2 = DropPath(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Concatenate each 2x2 group of tokens (4C), LayerNorm, project to 2C: half the resolution."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1], x.shape[2]
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))  # odd sides: one zero row/column
        # (B, H, W, C) -> (B, H/2, W/2, 4C), in the order (0,0), (1,0), (0,1), (1,1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Patch merging (stages 2-4), then blocks alternating regular and shifted windows."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, rates, merge: bool):
        super().__init__()
        self.downsample = PatchMerging(dim // 2) if merge else nn.Identity()
        self.blocks = nn.Sequential(
            *(
                SwinBlock(dim, num_heads, window_size, (i % 2) * (window_size // 2), rates[i])
                for i in range(depth)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


@dataclass(frozen=True)
class SwinConfig:
    """One row of the paper's section 3.3 (Swin-T/S/B)."""

    embed_dim: int  # C, the first stage's width
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]


CONFIGS = {
    "t": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "s": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "b": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32)),
}


class SwinTransformer(ImageClassifier):
    """patch partition + linear embedding -> 4 stages -> LN -> global average pool -> head."""

    stage_layout = "NHWC"

    def __init__(
        self,
        config: SwinConfig,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        small_input: bool = False,
        patch_size: int = 4,
        window_size: int = 7,
        drop_path_rate: float = 0.2,
    ) -> None:
        super().__init__()
        if small_input:
            patch_size, window_size = 2, 4
        C = config.embed_dim
        self.in_channels, self.image_size, self.small_input = in_channels, image_size, small_input
        self.supports_small_input, self.min_image_size = True, patch_size * 8
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_channels, C, patch_size, stride=patch_size)
        self.patch_embed.norm = nn.LayerNorm(C)
        total = sum(config.depths)
        rates = drop_path_rates(drop_path_rate, total)
        self.stages = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads)):
            start = sum(config.depths[:i])
            stage_rates = rates[start : start + depth]
            self.stages.append(SwinStage(C * 2**i, depth, heads, window_size, stage_rates, i > 0))
        self.num_features = C * 8
        self.norm = nn.LayerNorm(self.num_features)
        self.num_classes = num_classes
        self.classifier = (
            nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        )
        self.feature_info = [
            FeatureInfo(f"stages.{i}", C * 2**i, patch_size * 2**i) for i in range(4)
        ]
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        for name, p in self.named_parameters():
            if name.endswith("relative_position_bias_table"):
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def embed(self, x: Tensor) -> Tensor:
        proj, norm = self.patch_embed.children()
        return norm(proj(x).permute(0, 2, 3, 1))  # (B, C, H, W) -> (B, H/p, W/p, C)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean((2, 3))  # (B, C, H, W) -> (B, C)
        return x if pre_logits else self.classifier(x)


_TV = "torchvision 0.29.1 (torchvision_weights.csv)"
_SMALL = "2x2 patches and 4x4 windows (maps 16, 8, 4, 2 at 32 px); smaller position-bias tables"
_SWIN = dict(min_image_size=32, small_input=_SMALL)


@register_model(FAMILY, params=28_288_354, params_source=_TV, torchvision="swin_t", **_SWIN)
def swin_t(**kwargs) -> SwinTransformer:
    return SwinTransformer(CONFIGS["t"], **kwargs)


@register_model(FAMILY, params=49_606_258, params_source=_TV, torchvision="swin_s", **_SWIN)
def swin_s(**kwargs) -> SwinTransformer:
    return SwinTransformer(CONFIGS["s"], drop_path_rate=0.3, **kwargs)


@register_model(FAMILY, params=87_768_224, params_source=_TV, torchvision="swin_b", **_SWIN)
def swin_b(**kwargs) -> SwinTransformer:
    return SwinTransformer(CONFIGS["b"], drop_path_rate=0.5, **kwargs)


def _torchvision_key(key: str) -> str:
    """features.0 -> patch_embed; features.1/3/5/7 -> stage blocks; features.2/4/6 -> merging."""

    def feature(m: re.Match) -> str:
        n = int(m.group(1))
        if n == 0:
            return "patch_embed."
        return f"stages.{(n - 1) // 2}.blocks." if n % 2 else f"stages.{n // 2}.downsample."

    key = re.sub(r"^features\.(\d+)\.", feature, key)
    key = re.sub(r"^patch_embed\.0\.", "patch_embed.proj.", key)
    key = re.sub(r"^patch_embed\.2\.", "patch_embed.norm.", key)
    key = re.sub(r"\.mlp\.0\.", ".mlp.fc1.", key)
    key = re.sub(r"\.mlp\.3\.", ".mlp.fc2.", key)
    return re.sub(r"^head\.", "classifier.", key)


@register_converter("torchvision", "swin_*")
def _from_torchvision(state_dict: StateDict) -> StateDict:
    return {
        _torchvision_key(k): v
        for k, v in state_dict.items()
        if not k.endswith("relative_position_index")  # a constant, rebuilt here
    }
