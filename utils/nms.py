"""Greedy per-class NMS of a whole batch at once, exact, with no Python loop over images or classes.

``torchvision.ops.batched_nms`` keeps one NMS problem per group by offsetting boxes, and above 5,000 boxes on CUDA
(1,000 on CPU) it loops over the groups in Python instead, with a host sync per group. A batch of 64 images with
1,000 candidates each over 20 classes is 1,280 groups, which is where batched inference spends its time.

Here each image's candidates (at most ``K``, sorted by descending score) are compared pairwise in one
``[B, K, K]`` matrix: ``S[b, i, j]`` says that candidate i, if kept, suppresses candidate j (same class, scores
ranked i < j, IoU > threshold). Greedy NMS keeps j exactly when no kept i < j has ``S[b, i, j]``. That rule is
applied to all candidates at once, starting from "all kept", until the kept set stops changing (Cluster-NMS,
Zheng et al., 2021). The result is the greedy one: after step t the first t candidates of every image are settled
(candidate j depends only on candidates before it), and greedy is the only set the rule leaves unchanged. Real
detections settle in a handful of steps; a step is one pass over ``S``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from utils.box import pairwise_box_iou

STEPS_PER_CHECK = 4  # fixed-point steps between two convergence checks (each check is a host sync on CUDA)


def suppression_matrix(boxes: Tensor, labels: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """``S[b, i, j]``: candidate i, if kept, suppresses candidate j.

    Args:
        boxes: ``[B, K, 4]`` x1y1x2y2 (any scale), each image's candidates by descending score.
        labels: ``[B, K]`` class of each candidate; NMS runs within (image, class) groups.
        valid: ``[B, K]`` bool, False for padding (never suppresses).
        iou_threshold: a kept box suppresses a lower-ranked box of its class whose IoU with it is above this.

    Returns:
        ``[B, K, K]`` bool: same class, i ranked before j, IoU above the threshold, i valid.
    """
    num_candidates = boxes.shape[1]
    ranked_before = torch.ones(num_candidates, num_candidates, dtype=torch.bool, device=boxes.device).triu_(1)
    suppresses = pairwise_box_iou(boxes, boxes) > iou_threshold  # [B, K, K]; NaN (0/0) compares False
    suppresses &= ranked_before
    suppresses &= labels.unsqueeze(2) == labels.unsqueeze(1)
    suppresses &= valid.unsqueeze(2)
    return suppresses


def nms_steps(keep: Tensor, suppresses: Tensor, valid: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """``steps`` fixed-point steps from ``keep``, with no host sync (so they can be captured in a CUDA graph).

    Args:
        keep: ``[B, K]`` bool, the current kept set (``valid`` to start).
        suppresses: ``[B, K, K]`` from :func:`suppression_matrix`; valid: ``[B, K]`` bool.
        steps: how many steps to take (>= 1).

    Returns:
        ``(keep [B, K] bool, settled [B] bool)``: ``settled[b]`` is True when the last step left image b unchanged,
        i.e. its kept set is greedy NMS's, exactly.
    """
    if steps < 1:
        raise ValueError(f"nms_steps: steps={steps} must be >= 1")
    for _ in range(steps):
        previous = keep
        keep = valid & ~(previous.unsqueeze(2) & suppresses).any(dim=1)
    return keep, (keep == previous).all(dim=1)


def settle_nms(suppresses: Tensor, valid: Tensor) -> Tensor:
    """Fixed-point steps from ``valid`` until no image changes: greedy NMS's kept set ``[B, K]``.

    Checks convergence every ``STEPS_PER_CHECK`` steps (a host sync on CUDA); settled after at most K + 1 steps.
    """
    keep = valid
    for _ in range(0, suppresses.shape[1] + 1, STEPS_PER_CHECK):
        keep, settled = nms_steps(keep, suppresses, valid, STEPS_PER_CHECK)
        if bool(settled.all()):
            break
    return keep


def dense_batched_nms(boxes: Tensor, labels: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Which candidates greedy per-class NMS keeps, for every image of the batch.

    Args:
        boxes: ``[B, K, 4]`` x1y1x2y2 (any scale), each image's candidates by descending score.
        labels: ``[B, K]`` class of each candidate; NMS runs within (image, class) groups.
        valid: ``[B, K]`` bool, False for padding (never kept, never suppresses).
        iou_threshold: a kept box suppresses a lower-ranked box of its class whose IoU with it is above this.

    Returns:
        ``[B, K]`` bool, True for the kept candidates.
    """
    return settle_nms(suppression_matrix(boxes, labels, valid, iou_threshold), valid)
