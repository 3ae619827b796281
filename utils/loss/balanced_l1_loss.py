"""Balanced L1 loss (Libra R-CNN; facts §4), element-wise on encoded box offsets.

With d = |pred - target| and b = exp(gamma / alpha) - 1:
    d <  beta:  (alpha / b) (b d + 1) ln(b d / beta + 1) - alpha d
    d >= beta:  gamma d + gamma / b - alpha beta
The paper's values are alpha 0.5, gamma 1.5 and beta 0.11 (the authors' class default beta is 1.0).
"""
import math

import torch
from torch import Tensor


def balanced_l1_loss(
    pred: Tensor, target: Tensor, alpha: float = 0.5, gamma: float = 1.5, beta: float = 0.11
) -> Tensor:
    """Element-wise balanced L1 loss of ``pred`` and ``target`` (same shape) -> same shape, not reduced."""
    if beta <= 0:
        raise ValueError(f"balanced_l1_loss: beta={beta} must be > 0.")
    diff = (pred - target).abs()
    b = math.exp(gamma / alpha) - 1.0
    # the small-d branch sees d clamped to beta: where the linear branch is taken it is dropped anyway, and at
    # d >~ 2e36 it would overflow to inf, whose zeroed gradient is 0 * inf = NaN (behind a finite loss)
    small = diff.clamp(max=beta)
    inner = (alpha / b) * (b * small + 1.0) * torch.log1p(b * small / beta) - alpha * small
    outer = gamma * diff + (gamma / b - alpha * beta)
    return torch.where(diff < beta, inner, outer)
