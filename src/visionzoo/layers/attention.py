"""Multi-head self-attention (Vaswani et al. 2017, arXiv:1706.03762) over a token sequence."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V with `num_heads` heads; one fused qkv projection.

    `attn_weights` holds the last attention map when `keep_attention` is set (the explorer
    draws it); the fast fused kernel is used otherwise.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_dropout = attn_dropout
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)
        self.keep_attention = False
        self.attn_weights: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        # (B, N, 3D) -> (3, B, heads, N, head_dim)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.keep_attention:
            attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            self.attn_weights = attn.detach()
            x = attn @ v
        else:
            drop = self.attn_dropout if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        x = x.transpose(1, 2).reshape(B, N, D)  # (B, heads, N, head_dim) -> (B, N, D)
        return self.proj_drop(self.proj(x))
