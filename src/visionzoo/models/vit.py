"""Vision Transformer: An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale.

Alexey Dosovitskiy, Lucas Beyer, Alexander Kolesnikov, Dirk Weissenborn, Xiaohua Zhai, Thomas
Unterthiner, Mostafa Dehghani, Matthias Minderer, Georg Heigold, Sylvain Gelly, Jakob
Uszkoreit, Neil Houlsby. ICLR 2021. https://arxiv.org/abs/2010.11929

Key idea: drop convolutions: cut the image into 16x16 patches, project each linearly to a
token, prepend a learned class token, add learned 1D position embeddings and run a standard
pre-norm Transformer encoder; the class token's final state is classified. With enough data
(JFT-300M, ImageNet-21k) this beats CNNs at a fraction of the pre-training compute.

The variants are the paper's Table 1 rows: Base (768 wide, 12 layers, 12 heads), Large
(1024, 24, 16) and Huge (1280, 32, 16) with patches of 14, 16 or 32 pixels. `vit_tiny_patch16`
and `vit_small_patch16` are DeiT-Ti and DeiT-S (Touvron et al. 2021, "Training data-efficient
image transformers & distillation through attention", arXiv:2012.12877): the same network,
narrower (192 and 384 wide, 3 and 6 heads), trainable on ImageNet-1k alone.

NOTE: The model takes exactly `image_size` inputs: the position embeddings are a learned grid.
Build it with another `image_size` for another resolution; loading weights trained on another
grid (`load_state_dict`, or `resize_pos_embed` by hand) interpolates the patch position
embeddings bicubically in 2D, as the paper's section 3.2 does for fine-tuning at higher
resolution. The class token's embedding is kept as is.
NOTE: The paper's pre-training head is an MLP with one tanh hidden layer; fine-tuning and
torchvision use a single linear layer, as here.
NOTE: `small_input=True` (28x28/32x32 data) uses 4x4 patches and image_size 32 (an 8x8 grid;
build with image_size=28 for a 7x7 grid); the encoder is unchanged.
NOTE: Initialisation follows timm/DeiT (normal, std 0.02) rather than the paper's
JAX code (zero head, LeCun-normal patch projection); weights ported from torchvision or timm
replace it anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionzoo.convert import StateDict, register_converter, rename_keys
from visionzoo.layers.attention import Attention, capture_attention
from visionzoo.layers.drop_path import DropPath, drop_path_rates
from visionzoo.layers.mlp import Mlp
from visionzoo.layers.patch_embed import PatchEmbed
from visionzoo.models.base import FeatureInfo, ImageClassifier, InputContract
from visionzoo.registry import Family, register_model

FAMILY = Family(
    name="ViT",
    year=2020,
    paper="An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
    url="https://arxiv.org/abs/2010.11929",
    authors="Alexey Dosovitskiy, Lucas Beyer, Alexander Kolesnikov, Dirk Weissenborn, Xiaohua "
    "Zhai, Thomas Unterthiner, Mostafa Dehghani, Matthias Minderer, Georg Heigold, Sylvain "
    "Gelly, Jakob Uszkoreit, Neil Houlsby",
)

SMALL_PATCH = 4  # small-input mode: 4x4 patches, an 8x8 grid at 32x32
SMALL_IMAGE = 32


def resize_pos_embed(pos_embedding: Tensor, grid: tuple[int, int], num_prefix: int = 1) -> Tensor:
    """Interpolate (1, prefix + h*w, D) position embeddings to `grid` (bicubic, in 2D).

    The first `num_prefix` embeddings (the class token's) are kept; the old grid is square.
    """
    prefix, patches = pos_embedding[:, :num_prefix], pos_embedding[:, num_prefix:]
    old = int(math.isqrt(patches.shape[1]))
    if old * old != patches.shape[1]:
        raise ValueError(f"position embeddings of {patches.shape[1]} patches are not a square grid")
    if (old, old) == tuple(grid):
        return pos_embedding
    D = patches.shape[-1]
    patches = patches.reshape(1, old, old, D).permute(0, 3, 1, 2)  # (1, N, D) -> (1, D, h, w)
    patches = F.interpolate(patches.float(), size=grid, mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, -1, D)  # (1, D, h', w') -> (1, N', D)
    return torch.cat([prefix, patches.to(pos_embedding.dtype)], dim=1)


class EncoderBlock(nn.Module):
    """One pre-norm Transformer encoder layer (the paper's equations 2 and 3)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_prob: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, attn_dropout=attn_dropout, proj_dropout=dropout)
        self.drop_path1 = DropPath(drop_prob)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, mlp_dim, dropout=dropout)
        self.drop_path2 = DropPath(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))  # z' = MSA(LN(z)) + z
        return x + self.drop_path2(self.mlp(self.norm2(x)))  # z = MLP(LN(z')) + z'


@dataclass(frozen=True)
class ViTConfig:
    """One row of the paper's Table 1 (DeiT's Table 1 for Ti and S)."""

    embed_dim: int  # hidden size D
    depth: int  # encoder layers
    mlp_dim: int  # MLP hidden size, 4 D
    num_heads: int


CONFIGS = {
    "tiny": ViTConfig(192, 12, 768, 3),
    "small": ViTConfig(384, 12, 1536, 6),
    "base": ViTConfig(768, 12, 3072, 12),
    "large": ViTConfig(1024, 24, 4096, 16),
    "huge": ViTConfig(1280, 32, 5120, 16),
}


class VisionTransformer(ImageClassifier):
    """patch embedding -> [class token; tokens] + positions -> encoder -> LN -> head(token 0).

    `patch_embed` may be replaced (the hybrid's CNN); it must map (B, C, H, W) to (B, N, D)
    tokens on a `image_size // patch_size` square grid.
    """

    def __init__(
        self,
        config: ViTConfig,
        patch_size: int = 16,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        small_input: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        patch_embed: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if small_input:  # 4x4 patches, or a stride-4 CNN stem in the hybrid
            patch_size = SMALL_PATCH
            image_size = SMALL_IMAGE if image_size == 224 else image_size  # 224: the default
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch {patch_size}")
        D = config.embed_dim
        self.in_channels, self.image_size, self.small_input = in_channels, image_size, small_input
        self.supports_small_input, self.min_image_size = True, image_size
        self.patch_size, self.grid = patch_size, image_size // patch_size
        self.num_features = self.embed_dim = D
        self.patch_embed = patch_embed or PatchEmbed(patch_size, in_channels, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embedding = nn.Parameter(torch.zeros(1, 1 + self.grid**2, D))
        self.pos_drop = nn.Dropout(dropout)
        rates = drop_path_rates(drop_path_rate, config.depth)
        self.blocks = nn.Sequential(
            *(
                EncoderBlock(D, config.num_heads, config.mlp_dim, dropout, attn_dropout, rate)
                for rate in rates
            )
        )
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.num_classes = num_classes
        self.classifier = nn.Linear(D, num_classes) if num_classes > 0 else nn.Identity()
        # Four evenly spaced blocks, as dense-prediction heads (DPT, ViTDet) tap them.
        self.feature_blocks = [config.depth * (i + 1) // 4 - 1 for i in range(4)]
        self.feature_info = [FeatureInfo(f"blocks.{i}", D, patch_size) for i in self.feature_blocks]
        self.register_load_state_dict_pre_hook(self._resize_loaded_pos_embed)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # timm/DeiT's trunc_normal_(std=0.02) cuts at +-2 absolute, i.e. 100 standard deviations:
        # a plain normal draws the same distribution, at less cost.
        nn.init.normal_(self.pos_embedding, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def _resize_loaded_pos_embed(self, module, state_dict, prefix, *args) -> None:
        """Interpolate position embeddings saved for another grid (fine-tuning resolution)."""
        key = prefix + "pos_embedding"
        if key in state_dict and state_dict[key].shape != self.pos_embedding.shape:
            state_dict[key] = resize_pos_embed(state_dict[key], (self.grid, self.grid))

    def input_contract(self) -> InputContract:
        why = (
            f"position embeddings for a {self.grid}x{self.grid} grid; loaded ones are interpolated"
        )
        return super().input_contract()._replace(fixed_size=self.image_size, fixed_why=why)

    def embed(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)  # (B, C, H, W) -> (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)  # (B, N, D) -> (B, 1 + N, D)
        return self.pos_drop(x + self.pos_embedding)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.norm(self.blocks(self.embed(x)))  # (B, 1 + N, D)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x[:, 0]  # the class token: (B, 1 + N, D) -> (B, D)
        return x if pre_logits else self.classifier(x)

    def forward_intermediates(self, x: Tensor, indices: list[int] | None = None) -> list[Tensor]:
        """Token maps of blocks `indices` (default: those of `feature_info`), (B, D, h, w)."""
        indices = self.feature_blocks if indices is None else indices
        x, out = self.embed(x), []
        for i, block in enumerate(self.blocks[: max(indices) + 1]):
            x = block(x)
            if i in indices:  # (B, 1 + N, D) -> (B, N, D) -> (B, D, h, w)
                out.append(x[:, 1:].transpose(1, 2).unflatten(2, (self.grid, self.grid)))
        return out

    @torch.no_grad()
    def cls_attention(self, x: Tensor) -> Tensor:
        """The last block's attention from the class token to every patch: (B, heads, h, w)."""
        last = f"blocks.{len(self.blocks) - 1}.attn"
        with capture_attention(self, [last]) as maps:
            self.forward_features(x)
        weights = maps[last]  # (B, heads, 1 + N, 1 + N)
        B, heads, N1, _ = weights.shape
        side = int(math.isqrt(N1 - 1))
        return weights[:, :, 0, 1:].reshape(
            B, heads, side, side
        )  # (B, heads, N) -> (B, heads, h, w)


def _vit(size: str, patch_size: int, **kwargs) -> VisionTransformer:
    return VisionTransformer(CONFIGS[size], patch_size, **kwargs)


_TV = "torchvision 0.29.1 (torchvision_weights.csv)"
_SMALL = "4x4 patches and image_size 32 (8x8 grid; image_size=28 gives 7x7); encoder unchanged"
_VIT = dict(min_image_size=224, small_input=_SMALL)


@register_model(FAMILY, params=86_567_656, params_source=_TV, torchvision="vit_b_16", **_VIT)
def vit_b_16(**kwargs) -> VisionTransformer:
    return _vit("base", 16, **kwargs)


@register_model(FAMILY, params=88_224_232, params_source=_TV, torchvision="vit_b_32", **_VIT)
def vit_b_32(**kwargs) -> VisionTransformer:
    return _vit("base", 32, **kwargs)


@register_model(FAMILY, params=304_326_632, params_source=_TV, torchvision="vit_l_16", **_VIT)
def vit_l_16(**kwargs) -> VisionTransformer:
    return _vit("large", 16, **kwargs)


@register_model(FAMILY, params=306_535_400, params_source=_TV, torchvision="vit_l_32", **_VIT)
def vit_l_32(**kwargs) -> VisionTransformer:
    return _vit("large", 32, **kwargs)


@register_model(FAMILY, params=632_045_800, params_source=_TV, torchvision="vit_h_14", **_VIT)
def vit_h_14(**kwargs) -> VisionTransformer:
    return _vit("huge", 14, **kwargs)


@register_model(FAMILY, params=5_717_416, params_source="timm 1.0.31 deit_tiny_patch16_224",
                timm="deit_tiny_patch16_224", **_VIT)  # fmt: skip
def vit_tiny_patch16(**kwargs) -> VisionTransformer:
    """DeiT-Ti: D = 192, 12 layers, 3 heads."""
    return _vit("tiny", 16, **kwargs)


@register_model(FAMILY, params=22_050_664, params_source="timm 1.0.31 deit_small_patch16_224",
                timm="deit_small_patch16_224", **_VIT)  # fmt: skip
def vit_small_patch16(**kwargs) -> VisionTransformer:
    """DeiT-S: D = 384, 12 layers, 6 heads."""
    return _vit("small", 16, **kwargs)


@register_converter("torchvision", "vit_[blh]_*")
def _from_torchvision(state_dict: StateDict) -> StateDict:
    return rename_keys(
        state_dict,
        [
            (r"^conv_proj\.", "patch_embed.proj."),
            (r"^class_token$", "cls_token"),
            (r"^encoder\.pos_embedding$", "pos_embedding"),
            (r"^encoder\.layers\.encoder_layer_(\d+)\.", r"blocks.\1."),
            (r"\.ln_1\.", ".norm1."),
            (r"\.ln_2\.", ".norm2."),
            (r"\.self_attention\.in_proj_", ".attn.qkv."),
            (r"\.self_attention\.out_proj\.", ".attn.proj."),
            (r"\.mlp\.0\.", ".mlp.fc1."),
            (r"\.mlp\.3\.", ".mlp.fc2."),
            (r"^encoder\.ln\.", "norm."),
            (r"^heads\.head\.", "classifier."),
        ],
    )


@register_converter("timm", "vit_tiny_*", "vit_small_*")
def _from_timm(state_dict: StateDict) -> StateDict:
    return rename_keys(state_dict, [(r"^pos_embed$", "pos_embedding"), (r"^head\.", "classifier.")])
