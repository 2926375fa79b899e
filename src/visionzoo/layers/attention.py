"""Multi-head self-attention (Vaswani et al. 2017, arXiv:1706.03762) over a token sequence."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """softmax(Q K^T / sqrt(d)) V with `num_heads` heads; one fused qkv projection.

    The forward always runs the fused `scaled_dot_product_attention` kernel; `capture_attention`
    recomputes the map when someone wants to see it.
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

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, N, _ = x.shape
        # (B, N, 3D) -> (3, B, heads, N, head_dim)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return q, k, v

    def attention_map(self, x: Tensor) -> Tensor:
        """softmax(Q K^T / sqrt(d)) for the tokens `x`: (B, N, D) -> (B, heads, N, N)."""
        q, k, _ = self._qkv(x)
        return ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        q, k, v = self._qkv(x)
        drop = self.attn_dropout if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        x = x.transpose(1, 2).reshape(B, N, D)  # (B, heads, N, head_dim) -> (B, N, D)
        return self.proj_drop(self.proj(x))


@contextlib.contextmanager
def capture_attention(
    model: nn.Module, layers: Iterable[str] | None = None
) -> Iterator[dict[str, Tensor]]:
    """Record the attention maps of `model`'s `Attention` layers (all, or the named `layers`)
    in the forwards run inside the block: `{name: (B, heads, N, N)}`, detached, the latest
    forward's.

    A forward hook recomputes the map from the layer's input, so the forward itself keeps
    the fused kernel and a model outside the block pays nothing.
    """
    found = {name: m for name, m in model.named_modules() if isinstance(m, Attention)}
    names = list(found) if layers is None else list(layers)
    unknown = [name for name in names if name not in found]
    if unknown:
        raise ValueError(f"not Attention layers of {type(model).__name__}: {unknown}")
    maps: dict[str, Tensor] = {}

    def hook(name: str) -> Any:
        def store(module: Attention, args: tuple[Tensor, ...], out: Tensor) -> None:
            with torch.no_grad():
                maps[name] = module.attention_map(args[0])

        return store

    handles = [found[name].register_forward_hook(hook(name)) for name in names]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()
