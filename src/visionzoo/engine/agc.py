"""Adaptive gradient clipping (Brock, De, Smith, Simonyan 2021, arXiv:2102.06171).

Clip each unit's gradient relative to the size of its weights rather than to a fixed global
threshold: for the gradient G_i and weights W_i of output unit i (a row of a linear layer's
weight, one output channel of a convolution),

    if ||G_i|| / max(||W_i||, eps) > lambda:   G_i <- lambda * max(||W_i||, eps) / ||G_i|| * G_i

so that one step cannot change a unit's weights by more than the fraction lambda of their
norm. eps = 1e-3 keeps zero-initialised weights (skipinit gains, biases) from being frozen.
The paper uses lambda = 0.01 at batch size 4096 (smaller lambda for larger batches) and
never clips the final linear classifier: `agc_parameters(model)` leaves it out.

Units: a tensor with two or more dimensions has one unit per index of its first (output)
dimension, the norm taken over all other dimensions; scalars and vectors (biases) count as a
single unit, as in DeepMind's `unitwise_norm`. (DeepMind's code stores per-channel gains as
vectors, so it clips them as one unit; NFNet keeps them as (C, 1, 1, 1) tensors here and in
timm, which makes them per-channel units.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import torch
from torch import Tensor, nn


def unitwise_norm(x: Tensor, norm_type: float = 2.0) -> Tensor:
    """Norm per output unit, shaped to broadcast against `x` (one norm for 0-D/1-D tensors)."""
    if x.dim() <= 1:
        return torch.linalg.vector_norm(x, norm_type)
    return torch.linalg.vector_norm(x, norm_type, dim=tuple(range(1, x.dim())), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad_(
    parameters: Tensor | Iterable[Tensor],
    clip_factor: float = 0.01,
    eps: float = 1e-3,
    norm_type: float = 2.0,
) -> None:
    """Clip gradients in place, unit-wise, to at most `clip_factor * max(||W_i||, eps)`.

    Units below the threshold keep their gradient bit for bit; parameters without a gradient
    are skipped. Call it after `backward()` (and after unscaling, with a GradScaler).
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    for p in parameters:
        if p.grad is None:
            continue
        max_norm = unitwise_norm(p.detach(), norm_type).clamp(min=eps) * clip_factor
        grad_norm = unitwise_norm(p.grad, norm_type)
        # min(1, max_norm / ||G||): exactly 1 below the threshold, so those units are unchanged
        scale = (max_norm / grad_norm.clamp(min=1e-6)).clamp(max=1.0)
        p.grad.mul_(scale.to(p.grad.dtype))


def agc_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters AGC should clip: all but the final classifier's, as the paper.

    The classifier is `model.get_classifier()` (every visionzoo model has one); for other
    modules it is the last `nn.Linear`.
    """
    if hasattr(model, "get_classifier"):
        head: nn.Module | None = cast(Any, model).get_classifier()
    else:
        head = next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)
    excluded = {id(p) for p in head.parameters()} if head is not None else set()
    return [p for p in model.parameters() if p.requires_grad and id(p) not in excluded]
