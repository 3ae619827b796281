"""The baseline IoU assigner (the authors' ``match``, facts §4), batched over images and objects.

Steps, per image, on the anchor IoU matrix ``[G, A]``:
    1. each anchor takes its best object (first object on ties);
    2. each object's best anchor (first anchor on ties) is forced to that object with overlap 1.0;
       when objects share a best anchor the later object wins, as in the authors' loop;
    3. overlap >= 0.5 is positive, [0.4, 0.5) ignored, < 0.4 negative.
Deviation from the authors' code: an object whose IoU with every anchor is 0 (a degenerate box) forces
nothing, instead of forcing anchor 0 and then encoding ``log(0)`` (facts §11.7).
"""
import torch
from torch import Tensor

from .assignment import (
    IGNORE,
    NEGATIVE,
    POSITIVE,
    Assignment,
    assigner_inputs,
    check_thresholds,
    concat_assignments,
    matrix_chunks,
)
from .quality import anchor_iou


def assign_by_iou(iou: Tensor, positive_threshold: float = 0.5, ignore_threshold: float = 0.4) -> Assignment:
    """Steps 1-3 above on a ``[B, G, A]`` IoU matrix (all-zero rows for padded slots) -> ``[B, A]``."""
    num_images, num_objects, num_anchors = iou.shape
    best_overlap, gt_index = iou.max(dim=1)  # [B, A]
    row_best, best_anchor = iou.max(dim=2)  # [B, G]
    object_index = torch.arange(num_objects, device=iou.device).expand(num_images, -1)
    forcing_object = torch.where(row_best > 0, object_index, -1)
    forced_to = torch.full((num_images, num_anchors), -1, dtype=torch.long, device=iou.device)
    forced_to.scatter_reduce_(1, best_anchor, forcing_object, reduce="amax")  # later object wins
    is_forced = forced_to >= 0
    gt_index = torch.where(is_forced, forced_to, gt_index)
    best_overlap = best_overlap.masked_fill(is_forced, 1.0)
    state = torch.full_like(gt_index, NEGATIVE, dtype=torch.int8)
    state.masked_fill_(best_overlap >= ignore_threshold, IGNORE)
    state.masked_fill_(best_overlap >= positive_threshold, POSITIVE)
    return Assignment(gt_index.masked_fill(state == NEGATIVE, 0), state)


class IoUAssigner:
    """Assign anchors to objects by anchor IoU alone (the paper's baseline).

    Args:
        positive_threshold: IoU at or above which an anchor is positive (0.5).
        ignore_threshold: IoU at or above which a non-positive anchor is ignored (0.4).
        max_elements: images are processed in chunks whose ``[b, G, A]`` IoU matrix holds at most this many
            entries, which bounds the peak memory for images with many objects (None: by device,
            see :func:`default_max_elements`).
    """

    def __init__(
        self, positive_threshold: float = 0.5, ignore_threshold: float = 0.4, max_elements: int | None = None
    ) -> None:
        check_thresholds("IoUAssigner", positive_threshold, ignore_threshold)
        self.positive_threshold = positive_threshold
        self.ignore_threshold = ignore_threshold
        self.max_elements = max_elements

    @torch.no_grad()
    def __call__(self, anchors: Tensor, gt_boxes: Tensor, gt_mask: Tensor) -> Assignment:
        """Assign.

        Args:
            anchors: ``[A, 4]`` cxcywh normalised.
            gt_boxes: ``[B, G, 4]`` xyxy normalised, padded.
            gt_mask: ``[B, G]`` bool, True for real objects.

        Returns:
            :class:`Assignment` ``[B, A]``.
        """
        anchors_xyxy, gt_boxes = assigner_inputs(anchors, gt_boxes, gt_mask)
        chunks = matrix_chunks(gt_boxes, anchors.shape[0], self.max_elements)
        return concat_assignments([self.assign_chunk(anchors_xyxy, gt_boxes[chunk]) for chunk in chunks])

    def assign_chunk(self, anchors_xyxy: Tensor, gt_boxes: Tensor) -> Assignment:
        """One run of images at once, without splitting it: ``anchors_xyxy`` ``[A, 4]`` corner form float32,
        ``gt_boxes`` ``[b, G, 4]`` xyxy with padded slots zeroed -> :class:`Assignment` ``[b, A]``."""
        return assign_by_iou(anchor_iou(gt_boxes, anchors_xyxy), self.positive_threshold, self.ignore_threshold)
