"""Quality matrices and the selection steps the assigners share.

Every matrix is ``[B, G, A]`` (images, padded object slots, anchors), float32, with values in [0, 1];
rows of padded slots are all zero. Functions whose name ends in ``_`` modify the matrix they are given
(the assigners pass matrices they have just made) and return it.
"""
import torch
from torch import Tensor

from utils.box import pairwise_box_iou

from .assignment import IGNORE, NEGATIVE, POSITIVE, Assignment


def anchor_iou(gt_boxes: Tensor, anchors_xyxy: Tensor) -> Tensor:
    """IoU of each object with each anchor: ``[B, G, 4]`` x ``[A, 4]`` (both xyxy) -> ``[B, G, A]``."""
    return pairwise_box_iou(gt_boxes, anchors_xyxy)


def predicted_iou(gt_boxes: Tensor, pred_boxes: Tensor) -> Tensor:
    """IoU of each object with each decoded prediction: ``[B, G, 4]`` x ``[B, A, 4]`` (xyxy) -> ``[B, G, A]``.

    A prediction with a NaN corner (offsets that are all infinite, e.g. an fp16 head output that overflowed, decode
    to ``inf - inf``) meets no object: it is replaced by the zero box, IoU 0. A NaN IoU would outrank every anchor in
    the top-k and block each object's forcing.
    """
    meets_nothing = pred_boxes.isnan().any(dim=-1, keepdim=True)  # [B, A, 1]
    return pairwise_box_iou(gt_boxes, pred_boxes.masked_fill(meets_nothing, 0.0))


def own_class_probability(conf: Tensor, gt_labels: Tensor) -> Tensor:
    """Predicted probability of each object's own class at each anchor.

    Args:
        conf: ``[B, A, C]`` logits.
        gt_labels: ``[B, G]`` int64 class 0..C-1.

    Returns:
        ``[B, G, A]`` ``sigmoid(conf[b, a, gt_labels[b, g]])``.
    """
    index = gt_labels.unsqueeze(2).expand(-1, -1, conf.shape[1])  # [B, G, A]
    return conf.transpose(1, 2).gather(1, index).sigmoid_()


def amplified_iou(anchor_iou_matrix: Tensor, class_probability: Tensor, sigma: float) -> Tensor:
    """Classify to localize: ``Q = IoU_anchor ** ((sigma - p) / sigma)``.

    With sigma = 2 the exponent lies in (0.5, 1], so at a fixed anchor IoU a higher probability p of the
    object's class gives a higher quality (up to sqrt(IoU) at p = 1). Zero IoU stays zero for sigma > 1 (at
    sigma = 1 and p = 1 the exponent is 0, and 0 ** 0 = 1).
    """
    return anchor_iou_matrix.pow(torch.rsub(class_probability, 1.0, alpha=1.0 / sigma))


def force_best_anchor_(quality: Tensor) -> Tensor:
    """At least one anchor per object: set each row's maximum entry (first on ties) to 1.0.

    Rows that are all zero (padded slots, degenerate boxes, or no prediction overlapping the object) are
    left alone; the authors' code would force anchor 0 there (facts §4, §11.3).
    """
    best_value, best_anchor = quality.max(dim=2, keepdim=True)  # [B, G, 1]
    return quality.scatter_(2, best_anchor, torch.where(best_value > 0, 1.0, best_value))


def keep_column_max(quality: Tensor) -> Tensor:
    """Each anchor keeps only its best object: zero every entry below its column maximum (ties all stay)."""
    column_max = quality.amax(dim=1, keepdim=True)  # [B, 1, A]
    return torch.where(quality < column_max, 0.0, quality)


def count_at_least(quality: Tensor, threshold: float) -> Tensor:
    """Per object, the number of anchors with quality >= threshold: ``[B, G, A]`` -> ``[B, G]`` int32."""
    return (quality >= threshold).sum(dim=2, dtype=torch.int32)


def largest_quota(num_ignored_or_positive: Tensor, num_anchors: int) -> int:
    """The largest per-object quota, capped at the anchor count: how many ranks :func:`select_top_ranked` reads.

    A host sync on CUDA (``topk`` needs a Python int); the Mutual-Guidance assigner makes it once per chunk and
    shares it between its two selections.
    """
    return int(num_ignored_or_positive.max().clamp(max=num_anchors))


def select_top_ranked(
    quality: Tensor, num_positive: Tensor, num_ignored_or_positive: Tensor, max_rank: int | None = None
) -> Assignment:
    """Turn per-object quotas into a per-anchor assignment by rank in each object's row.

    In row ``(b, g)`` the anchors ranked ``< num_positive`` are positive for object g and those ranked in
    ``[num_positive, num_ignored_or_positive)`` are ignored, counting only entries > 0 (so a quota larger
    than the row's non-zero entries is capped there: the zero-IoU top-k fix). An anchor selected by
    several objects takes the strongest mark (positive over ignored), then the first object.

    Args:
        quality: ``[B, G, A]`` float, after forcing and column suppression.
        num_positive: ``[B, G]`` integer positive quota per object.
        num_ignored_or_positive: ``[B, G]`` integer quota of positive plus ignored anchors (>= num_positive).
        max_rank: ranks to read, at least the largest quota (None: :func:`largest_quota`, a host sync on CUDA).

    Returns:
        :class:`Assignment` ``[B, A]``.
    """
    num_images, num_objects, num_anchors = quality.shape
    k = largest_quota(num_ignored_or_positive, num_anchors) if max_rank is None else min(max_rank, num_anchors)
    top_value, top_anchor = quality.topk(k, dim=2)  # [B, G, k], sorted descending
    rank = torch.arange(k, device=quality.device)
    selected = top_value > 0
    is_positive = selected & (rank < num_positive.unsqueeze(2))
    is_ignored = selected & ~is_positive & (rank < num_ignored_or_positive.unsqueeze(2))
    # mark 2 = positive, 1 = ignored, 0 = not selected; key orders by mark, then by lower object index
    mark = is_positive.long() * 2 + is_ignored.long()
    object_index = torch.arange(num_objects, device=quality.device).view(1, -1, 1)
    key = mark * (num_objects + 1) + (num_objects - object_index)
    best_key = torch.zeros(num_images, num_anchors, dtype=torch.long, device=quality.device)
    best_key.scatter_reduce_(1, top_anchor.reshape(num_images, -1), key.reshape(num_images, -1), reduce="amax")
    best_mark = best_key // (num_objects + 1)
    gt_index = torch.where(best_mark > 0, num_objects - best_key % (num_objects + 1), 0)
    state = torch.full_like(best_mark, NEGATIVE, dtype=torch.int8)
    state.masked_fill_(best_mark == 2, POSITIVE).masked_fill_(best_mark == 1, IGNORE)
    return Assignment(gt_index, state)
