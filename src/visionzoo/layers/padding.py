"""TensorFlow "SAME" padding, written so that torch.fx can trace it."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pad_same(x: Tensor, kernel_size: int, stride: int, value: float = 0.0) -> Tensor:
    """Pad a (B, C, H, W) map so a convolution gives ceil(H / stride), the odd pixel at the end.

    The total padding per side is max((ceil(n / s) - 1) s + k - n, 0) = max(k - s + (-n mod s), 0).
    It is computed with integer operators only (no `math.ceil`, no comparison), so a traced
    graph keeps it as arithmetic on the input's size instead of freezing one size's padding.
    """
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = kernel_size - stride + (-size) % stride
        total = (total + abs(total)) // 2  # max(total, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)
