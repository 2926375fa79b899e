"""Stochastic depth (Huang et al. 2016, arXiv:1603.09382): drop a residual branch per sample."""

from __future__ import annotations

from torch import Tensor, nn


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep if keep > 0.0 else x * mask  # keep = 0: every branch dropped


class DropPath(nn.Module):
    """Zero the whole branch for a random fraction `drop_prob` of the samples, rescale the rest."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def drop_path_rates(drop_path_rate: float, depth: int) -> list[float]:
    """The linear decay rule: 0 for the first block up to `drop_path_rate` for the last."""
    # Plain Python, not torch.linspace: builders also run on the meta device (param counts).
    if depth <= 1:
        return [0.0] * depth
    return [drop_path_rate * i / (depth - 1) for i in range(depth)]
