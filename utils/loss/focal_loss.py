"""Sigmoid focal loss (facts §4) for one-hot targets given as class indices.

Per logit x with target t in {0, 1}, p = sigmoid(x):
    loss = BCEWithLogits(x, t) * (alpha t + (1 - alpha)(1 - t)) * ((1 - p) t + p (1 - t)) ** gamma,
the same formula as ``torchvision.ops.sigmoid_focal_loss``. Written with f(x) = softplus(x) * sigmoid(x) ** gamma,
the t = 0 loss is (1 - alpha) f(x) and the t = 1 loss is alpha f(-x). A one-hot target over C classes is almost
all zeros, so instead of materialising a ``[B, A, C]`` target the sum is taken as

    (1 - alpha) * sum over kept anchors and all classes of f(x)
    + sum over positive anchors, at their own class, of alpha f(-x) - (1 - alpha) f(x),

which is exact and needs a fraction of the dense form's passes over the logits.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

BACKGROUND = -1


def _focal_term(logits: Tensor, gamma: float) -> Tensor:
    """``softplus(x) * sigmoid(x) ** gamma``: the focal loss of target 0, before the alpha weight."""
    probability = torch.sigmoid(logits)
    return F.softplus(logits) * (probability if gamma == 1.0 else probability.pow(gamma))


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
    # per-anchor class sums, then a masked sum over anchors: torch's pairwise sum keeps float32 exact to ~1e-7 over
    # the batch's millions of terms (a [N] @ [N, C] product accumulated row after row drifted by ~1e-4)
    kept_sum = torch.where(keep, _focal_term(logits, gamma).sum(dim=-1), 0.0).sum()
    is_positive = keep & (labels >= 0)
    own_logit = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [...]
    correction = alpha * _focal_term(-own_logit, gamma) - (1.0 - alpha) * _focal_term(own_logit, gamma)
    return (1.0 - alpha) * kept_sum + torch.where(is_positive, correction, 0.0).sum()
