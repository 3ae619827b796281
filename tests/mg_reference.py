"""Plain, slow per-image / per-object references of the two assigners and of the criterion.

Written to be read next to facts §4, not to be fast: one image at a time, one object at a time,
``torchvision.ops`` for IoU and the dense focal loss, and the box coding written out again. The batched
code in ``utils/`` must agree with it (``tests/test_assigners.py``, ``tests/test_losses.py``); the
benchmark ``benchmarks/assignment_loss.py`` times it as the baseline. It includes the same three fixes as the
package: quotas are capped at a row's non-zero entries, all-zero rows are not forced, and a predicted box with an
infinite side and a zero one (an overflowing size offset) has IoU 0, where ``box_iou`` gives NaN (``inf * 0``).
"""
import math

import torch
from torch import Tensor
from torchvision.ops import box_iou, sigmoid_focal_loss

IGNORE, NEGATIVE, POSITIVE = -1, 0, 1


def to_corners(cxcywh: Tensor) -> Tensor:
    cx, cy, w, h = cxcywh.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def plain_decode(loc: Tensor, anchors: Tensor) -> Tensor:
    cx = anchors[:, 0] + loc[:, 0] * 0.1 * anchors[:, 2]
    cy = anchors[:, 1] + loc[:, 1] * 0.1 * anchors[:, 3]
    w = anchors[:, 2] * torch.exp(loc[:, 2] * 0.2)
    h = anchors[:, 3] * torch.exp(loc[:, 3] * 0.2)
    return to_corners(torch.stack([cx, cy, w, h], dim=-1))


def plain_encode(boxes: Tensor, anchors: Tensor) -> Tensor:
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = boxes[:, 0] + w / 2
    cy = boxes[:, 1] + h / 2
    return torch.stack(
        [
            (cx - anchors[:, 0]) / (0.1 * anchors[:, 2]),
            (cy - anchors[:, 1]) / (0.1 * anchors[:, 3]),
            torch.log(w / anchors[:, 2]) / 0.2,
            torch.log(h / anchors[:, 3]) / 0.2,
        ],
        dim=-1,
    )


def plain_balanced_l1(pred: Tensor, target: Tensor) -> Tensor:
    alpha, gamma, beta = 0.5, 1.5, 0.11
    b = math.e ** (gamma / alpha) - 1
    d = (pred - target).abs()
    small = alpha / b * (b * d + 1) * torch.log(b * d / beta + 1) - alpha * d
    large = gamma * d + gamma / b - alpha * beta
    return torch.where(d < beta, small, large)


def force_each_object(matrix: Tensor) -> Tensor:
    matrix = matrix.clone()
    for g in range(matrix.shape[0]):
        if matrix[g].max() > 0:
            matrix[g, matrix[g].argmax()] = 1.0
    return matrix


def keep_best_object_per_anchor(matrix: Tensor) -> Tensor:
    column_max = matrix.max(dim=0).values
    return torch.where(matrix == column_max, matrix, torch.zeros_like(matrix))


def top_nonzero_anchors(row: Tensor, k: int) -> Tensor:
    """The k best anchors of a row, never an entry that is 0 (k capped at the non-zero count: the fix)."""
    return row.topk(min(k, int((row > 0).sum()))).indices


def marks_to_assignment(marks: Tensor) -> tuple[Tensor, Tensor]:
    """marks [n, A]: 2 positive, 1 ignored, 0 nothing -> (gt_index [A], state [A]); first object wins ties."""
    best_mark, gt_index = marks.max(dim=0)
    state = torch.full_like(gt_index, NEGATIVE)
    state[best_mark == 1] = IGNORE
    state[best_mark == 2] = POSITIVE
    return gt_index, state


def reference_iou_assign(
    anchors: Tensor, boxes: Tensor, positive_threshold: float = 0.5, ignore_threshold: float = 0.4
) -> tuple[Tensor, Tensor]:
    """One image. anchors [A, 4] cxcywh; boxes [n, 4] xyxy -> (gt_index [A], state [A])."""
    num_anchors = anchors.shape[0]
    if len(boxes) == 0:
        return (
            torch.zeros(num_anchors, dtype=torch.long, device=anchors.device),
            torch.full((num_anchors,), NEGATIVE, device=anchors.device),
        )
    iou = box_iou(boxes, to_corners(anchors))
    overlap, gt_index = iou.max(dim=0)
    for g in range(len(boxes)):
        if iou[g].max() > 0:
            best = iou[g].argmax()
            gt_index[best] = g
            overlap[best] = 1.0
    state = torch.full((num_anchors,), NEGATIVE, device=anchors.device)
    state[overlap >= ignore_threshold] = IGNORE
    state[overlap >= positive_threshold] = POSITIVE
    return gt_index, state


def reference_mg_assign(
    anchors: Tensor, boxes: Tensor, labels: Tensor, loc: Tensor, conf: Tensor, sigma: float = 2.0,
    positive_threshold: float = 0.5, ignore_threshold: float = 0.4,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """One image. -> ((cls gt_index, cls state), (reg gt_index, reg state)), each [A]."""
    num_anchors = anchors.shape[0]
    if len(boxes) == 0:
        empty = (
            torch.zeros(num_anchors, dtype=torch.long, device=anchors.device),
            torch.full((num_anchors,), NEGATIVE, device=anchors.device),
        )
        return empty, empty
    anchor_iou = box_iou(boxes, to_corners(anchors))
    pred_iou = box_iou(boxes, plain_decode(loc, anchors)).nan_to_num(nan=0.0)
    own_prob = torch.sigmoid(conf[:, labels]).T  # [n, A]
    amplified = anchor_iou ** ((sigma - own_prob) / sigma)

    anchor_iou = keep_best_object_per_anchor(force_each_object(anchor_iou))
    pred_iou = keep_best_object_per_anchor(force_each_object(pred_iou))
    amplified = keep_best_object_per_anchor(force_each_object(amplified))

    cls_marks = torch.zeros(len(boxes), num_anchors, dtype=torch.long, device=anchors.device)
    reg_marks = torch.zeros(len(boxes), num_anchors, dtype=torch.long, device=anchors.device)
    for g in range(len(boxes)):
        num_pos = int((anchor_iou[g] >= positive_threshold).sum())
        num_ign = int((anchor_iou[g] >= ignore_threshold).sum())
        # one ranking for both quotas: with ties at rank num_pos, a second topk(num_pos) may pick a tied anchor
        # outside topk(num_ign), giving more than num_ign positive or ignored anchors
        ranked = top_nonzero_anchors(pred_iou[g], num_ign)
        cls_marks[g, ranked] = 1
        cls_marks[g, ranked[:num_pos]] = 2
        reg_marks[g, top_nonzero_anchors(amplified[g], num_pos)] = 2
    return marks_to_assignment(cls_marks), marks_to_assignment(reg_marks)


def reference_multibox_loss(
    loc: Tensor, conf: Tensor, anchors: Tensor, targets: list[Tensor], mutual_guide: bool
) -> tuple[Tensor, Tensor]:
    """Per-image loop: assign, dense one-hot focal loss (torchvision), balanced L1; facts §4 normalisation."""
    num_classes = conf.shape[2]
    focal_sum = loc.new_zeros(())
    box_sum = loc.new_zeros(())
    num_pos_cls = 0
    num_pos_reg = 0
    for b, target in enumerate(targets):
        boxes, labels = target[:, :4], target[:, 4].long()
        if mutual_guide:
            (cls_index, cls_state), (reg_index, reg_state) = reference_mg_assign(
                anchors, boxes, labels, loc[b].detach(), conf[b].detach()
            )
        else:
            cls_index, cls_state = reg_index, reg_state = reference_iou_assign(anchors, boxes)

        positive = cls_state == POSITIVE
        one_hot = torch.zeros(anchors.shape[0], num_classes, device=conf.device)
        one_hot[positive, labels[cls_index[positive]]] = 1.0
        kept = cls_state != IGNORE
        focal_sum = focal_sum + sigmoid_focal_loss(conf[b][kept], one_hot[kept], alpha=0.25, gamma=1.0, reduction="sum")
        num_pos_cls += int(positive.sum())

        positive = reg_state == POSITIVE
        if positive.any():
            offsets = plain_encode(boxes[reg_index[positive]], anchors[positive])
            box_sum = box_sum + plain_balanced_l1(loc[b][positive], offsets).sum()
        num_pos_reg += int(positive.sum())
    return box_sum / (4 * max(num_pos_reg, 1)), focal_sum / max(num_pos_cls, 1)


def random_targets(num_objects: int, num_classes: int, generator: torch.Generator) -> Tensor:
    """``[n, 5]`` random boxes (x1, y1, x2, y2 normalised, side 0.01-0.5) with classes 0..C-1.

    When n >= 4 the last box repeats the first with another class (a duplicate annotation, so every column of
    the two rows ties) and the third is a tiny box next to the second (both may share one best anchor).
    """
    top_left = torch.rand(num_objects, 2, generator=generator) * 0.9
    sizes = torch.rand(num_objects, 2, generator=generator) * 0.49 + 0.01
    boxes = torch.cat([top_left, (top_left + sizes).clamp(max=1.0)], dim=1)
    labels = torch.randint(0, num_classes, (num_objects, 1), generator=generator).float()
    if num_objects >= 4:
        boxes[-1] = boxes[0]
        labels[-1] = (labels[0] + 1) % num_classes
        boxes[2, :2] = boxes[1, :2] + 0.002
        boxes[2, 2:] = boxes[2, :2] + 0.012
        boxes[1, 2:] = boxes[1, :2] + 0.01
    return torch.cat([boxes, labels], dim=1)
