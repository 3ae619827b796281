"""Sigmoid focal loss (facts §4) for one-hot targets given as class indices.

Per logit x with target t in {0, 1}, p = sigmoid(x):
    loss = BCEWithLogits(x, t) * (alpha t + (1 - alpha)(1 - t)) * ((1 - p) t + p (1 - t)) ** gamma,
the same formula as ``torchvision.ops.sigmoid_focal_loss``. Written with f(x) = softplus(x) * sigmoid(x) ** gamma,
the t = 0 loss is (1 - alpha) f(x) and the t = 1 loss is alpha f(-x). A one-hot target over C classes is almost
all zeros, so instead of materialising a ``[B, A, C]`` float target the sum is taken as

    (1 - alpha) * sum over kept anchors and their classes of target 0 of f(x)
    + alpha * sum over positive anchors, at their own class, of f(-x).

Infinite logits (an fp16 head that overflowed): the terms left out (ignored anchors, the own class of positives in
the first sum, non-positives in the second) are evaluated as f(-inf) = 0 exactly, never at the logit itself, and
``torch.where`` passes their logits no gradient: they add 0 to the loss and exactly 0 to the gradient. Computing
them and zeroing them afterwards gave NaN gradients (0 * inf) behind a finite loss. A kept term whose limit is
finite (-inf with target 0, +inf with target 1) is 0, with gradient 0, for gamma < 1 too: there the derivative of
p ** gamma at p = 0 is infinite, and :func:`_focal_term` passes no gradient through a p that underflowed (a finite
logit below about -88 in float32 as well); one whose limit is infinite (+inf with target 0, -inf with target 1)
makes the loss +inf, which the training loop's NaN/inf guard stops on (:class:`utils.engine.NonFiniteLossError`).
"""
import torch
import torch.nn.functional as F
from torch import Tensor

BACKGROUND = -1


def _focal_term(logits: Tensor, gamma: float) -> Tensor:
    """``softplus(x) * sigmoid(x) ** gamma``: the focal loss of target 0, before the alpha weight."""
    probability = torch.sigmoid(logits)
    if gamma == 1.0:
        return F.softplus(logits) * probability
    if not 0.0 < gamma < 1.0:
        return F.softplus(logits) * probability.pow(gamma)
    # 0 < gamma < 1: the derivative gamma * p ** (gamma - 1) is infinite at p = 0 (a logit below about -88 in float32,
    # or -inf) and overflows for a denormal p; times sigmoid'(x) = 0 it made NaN gradients. Below the smallest normal
    # number the value is p ** gamma as elsewhere but passes no gradient: the term's exact derivative there, about
    # exp((1 + gamma) x), is below that number too (0 exactly at -inf); above it p ** (gamma - 1) stays finite.
    underflowed = probability < torch.finfo(probability.dtype).tiny
    powered = torch.where(underflowed, probability.detach().pow(gamma),
                          torch.where(underflowed, 1.0, probability).pow(gamma))
    return F.softplus(logits) * powered


def sigmoid_focal_loss(
    logits: Tensor, labels: Tensor, keep: Tensor, alpha: float = 0.25, gamma: float = 1.0
) -> Tensor:
    """Summed sigmoid focal loss with one-hot targets.

    Args:
        logits: ``[..., C]`` class logits (no background column).
        labels: ``[...]`` int64 target class 0..C-1, or ``BACKGROUND`` (-1) for an all-zero target.
        keep: ``[...]`` bool, False for anchors left out of the loss (ignored anchors).
        alpha: weight of the positive targets (0.25).
        gamma: focusing exponent (the paper uses 1.0).

    Returns:
        0-d tensor, the loss summed over kept anchors and all classes (not normalised).
    """
    is_positive = keep & (labels >= 0)
    classes = torch.arange(logits.shape[-1], device=logits.device)
    target_zero = keep.unsqueeze(-1) & (classes != labels.unsqueeze(-1))  # [..., C]; BACKGROUND matches no class
    # the stand-in of every term left out is f(-inf) = 0, and the where gives its logit gradient 0 (module docstring)
    negative_terms = _focal_term(torch.where(target_zero, logits, -torch.inf), gamma)
    own_logit = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [...]
    positive_terms = _focal_term(-torch.where(is_positive, own_logit, torch.inf), gamma)
    # per-anchor class sums, then a sum over anchors: torch's pairwise sum keeps float32 exact to ~1e-7 over the
    # batch's millions of terms (a [N] @ [N, C] product accumulated row after row drifted by ~1e-4)
    return (1.0 - alpha) * negative_terms.sum(dim=-1).sum() + alpha * positive_terms.sum()
