"""Small arithmetic helpers shared by several families."""

from __future__ import annotations

import math


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never more than 10% below `value`.

    The rule of the MobileNet reference code, reused by EfficientNet's width scaling.
    """
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def round_repeats(repeats: int, depth_multiplier: float) -> int:
    """EfficientNet's depth scaling: ceil(repeats * d)."""
    return int(math.ceil(repeats * depth_multiplier))


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1
