"""Mutual-Guidance assignment (Zhang et al., ACCV 2020; the authors' ``mutual_match``, facts §4), batched.

Inputs are the current training forward's predictions, detached: ``loc`` offsets and ``conf`` logits.
Steps, for every image and object at once (``[B, G, A]`` matrices):

    1. Quality matrices:  A = IoU(object, anchor);  R = IoU(object, decoded prediction);
       Q = A ** ((sigma - p) / sigma), p = sigmoid(conf) of the object's own class (sigma = 2), from A as is.
    2. At least one anchor per object: in A, R and Q each object's best anchor is set to 1.0.
    3. Each anchor keeps only its best object: entries below their column maximum become 0 (A', R', Q').
    4. Quotas from the anchor IoU: K_pos = #{A' >= 0.5}, K_ign = #{A' >= 0.4} per object.
    5. Localize to classify: in R' each object's K_pos best anchors are classification positives and the next
       K_ign - K_pos are ignored; every other anchor is a classification negative.
    6. Classify to localize: in Q' each object's K_pos best anchors are regression positives; the rest are
       negatives (regression has no ignore set).
    7. An anchor picked by several objects (ties in step 3) keeps the strongest mark, then the first object.

The authors mark ranks with the values 3.0 (positive) and 2.0 (ignored); here they are the ``POSITIVE`` and
``IGNORE`` states of an :class:`Assignment`, and step 5's positives are the K_pos highest of the K_ign.

Fixes to the authors' code (2dfba78), on purpose:
    * Zero-IoU top-k (facts §11.3): ``topk(K)`` there can pick entries that are 0 when K exceeds the non-zero
      entries left in a row after step 3, turning anchors that do not touch the object into positives. Here
      only non-zero entries are ranked, i.e. each quota is capped at the row's non-zero count (as 5b75dc5 does).
    * An all-zero row (no prediction overlaps the object, or a degenerate box) is not forced in step 2; the
      authors' argmax would force anchor 0, a corner anchor unrelated to the object. Such an object gets no
      positive in that matrix for this step.
    * Objects are padded per batch; padded slots hold the zero box and take no part.
"""
from typing import NamedTuple

import torch
from torch import Tensor

from utils.box import decode

from .assignment import Assignment, assigner_inputs, check_thresholds, concat_assignments, matrix_chunks
from .iou_assigner import assign_by_iou
from .quality import (
    amplified_iou,
    anchor_iou,
    count_at_least,
    force_best_anchor_,
    keep_column_max,
    largest_quota,
    own_class_probability,
    predicted_iou,
    select_top_ranked,
)


class Quotas(NamedTuple):
    """Steps 2-4 on the anchor IoU: per object, how many anchors become positive and positive-or-ignored.

    num_positive, num_ignored_or_positive: ``[B, G]`` int32 (0 in padded slots).
    max_rank: the largest ``num_ignored_or_positive`` of the batch, capped at A (how many ranks ``topk`` reads).
    anchor_iou: the step-1 matrix A ``[B, G, A]`` (before forcing and suppression) when the batch was a single chunk,
        so that the assignment reuses it instead of computing it again; None when the batch was split (memory bound).
        An assignment that splits the batch by another rule (e.g. :class:`MultiBoxLoss` also bounds the logits) reads
        its runs of images from it.
    """

    num_positive: Tensor
    num_ignored_or_positive: Tensor
    max_rank: int
    anchor_iou: Tensor | None = None

    def of_images(self, images: slice) -> "Quotas":
        """The quotas of a run of images (views; ``max_rank`` stays the batch's, an upper bound for the run)."""
        anchor_iou = None if self.anchor_iou is None else self.anchor_iou[images]
        return Quotas(self.num_positive[images], self.num_ignored_or_positive[images], self.max_rank, anchor_iou)


class MutualGuidanceAssignment(NamedTuple):
    """cls: classification targets (positive / ignored / negative); reg: regression targets (positive / negative);
    iou_baseline: the IoU assigner's result on the same anchor IoU matrix, when asked for (diagnostics), else None."""

    cls: Assignment
    reg: Assignment
    iou_baseline: Assignment | None


class MutualGuidanceAssigner:
    """Assign classification and regression targets with Mutual Guidance (steps in the module docstring).

    Args:
        sigma: the sigma of ``Q = A ** ((sigma - p) / sigma)`` (2.0), > 1.
        positive_threshold: anchor IoU giving the positive quota (0.5).
        ignore_threshold: anchor IoU giving the ignored quota (0.4).
        max_elements: images are processed in chunks whose ``[b, G, A]`` matrices hold at most this many
            entries, which bounds the peak memory for images with many objects (None: by device,
            see :func:`utils.assign.assignment.default_max_elements`).
    """

    def __init__(
        self,
        sigma: float = 2.0,
        positive_threshold: float = 0.5,
        ignore_threshold: float = 0.4,
        max_elements: int | None = None,
    ) -> None:
        if not sigma > 1:
            raise ValueError(
                f"MutualGuidanceAssigner: sigma={sigma} must be > 1 so the exponent (sigma - p) / sigma stays > 0 up "
                "to p = 1 (a confident sigmoid is exactly 1.0 in float32, and 0 ** 0 = 1 would rank anchors that do "
                "not touch the object); the paper uses 2."
            )
        check_thresholds("MutualGuidanceAssigner", positive_threshold, ignore_threshold)
        self.sigma = sigma
        self.positive_threshold = positive_threshold
        self.ignore_threshold = ignore_threshold
        self.max_elements = max_elements

    @torch.no_grad()
    def __call__(
        self,
        anchors: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_mask: Tensor,
        loc: Tensor,
        conf: Tensor,
        with_iou_baseline: bool = False,
        quotas: Quotas | None = None,
    ) -> MutualGuidanceAssignment:
        """Assign, in float32 whatever the dtype of the predictions.

        Args:
            anchors: ``[A, 4]`` cxcywh normalised.
            gt_boxes: ``[B, G, 4]`` xyxy normalised, padded.
            gt_labels: ``[B, G]`` int64 class 0..C-1.
            gt_mask: ``[B, G]`` bool, True for real objects.
            loc: ``[B, A, 4]`` predicted offsets (detached here).
            conf: ``[B, A, C]`` predicted logits (detached here).
            with_iou_baseline: also return the IoU assigner's result from the same anchor IoU matrix.
            quotas: :meth:`quotas` of these anchors and boxes, when computed ahead (e.g. on a side CUDA stream:
                :class:`utils.assign.QuotaPrefetcher`); None computes them here, with one host sync per chunk.

        Returns:
            :class:`MutualGuidanceAssignment` of ``[B, A]`` assignments.
        """
        anchors = anchors.float()
        anchors_xyxy, gt_boxes = assigner_inputs(anchors, gt_boxes, gt_mask)
        chunks = matrix_chunks(gt_boxes, anchors.shape[0], self.max_elements)
        loc, conf = loc.detach().float(), conf.detach().float()
        parts = [
            self.assign_chunk(
                anchors,
                anchors_xyxy,
                gt_boxes[chunk],
                gt_labels[chunk],
                loc[chunk],
                conf[chunk],
                with_iou_baseline,
                None if quotas is None else quotas.of_images(chunk),
            )
            for chunk in chunks
        ]
        return MutualGuidanceAssignment(
            cls=concat_assignments([part.cls for part in parts]),
            reg=concat_assignments([part.reg for part in parts]),
            iou_baseline=concat_assignments([part.iou_baseline for part in parts]) if with_iou_baseline else None,
        )

    def assign_chunk(
        self,
        anchors: Tensor,
        anchors_xyxy: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        loc: Tensor,
        conf: Tensor,
        with_iou_baseline: bool,
        quotas: Quotas | None,
    ) -> MutualGuidanceAssignment:
        """Steps 1-7 on one run of images at once, without splitting it (what ``__call__`` does per chunk).

        Inputs as :meth:`__call__`'s, already prepared: ``anchors`` ``[A, 4]`` cxcywh and ``anchors_xyxy`` the same
        in corner form, float32; ``gt_boxes`` ``[b, G, 4]`` xyxy with padded slots zeroed; ``loc``, ``conf`` float32
        and not requiring grad. With ``quotas`` given, nothing here depends on tensor values, so ``torch.compile``
        traces it as one graph; without them, the quotas are computed here (one host sync on CUDA).
        """
        if quotas is not None and quotas.anchor_iou is not None:
            anchor_quality = quotas.anchor_iou  # A  [b, G, A], computed with the quotas
        else:
            anchor_quality = anchor_iou(gt_boxes, anchors_xyxy)  # A  [b, G, A]
        baseline = None
        if with_iou_baseline:
            baseline = assign_by_iou(anchor_quality, self.positive_threshold, self.ignore_threshold)
        regression_quality = amplified_iou(anchor_quality, own_class_probability(conf, gt_labels), self.sigma)  # Q
        classification_quality = predicted_iou(gt_boxes, decode(loc, anchors))  # R
        if quotas is None:
            quotas = self._quotas_from(anchor_quality)
        del anchor_quality

        num_positive, num_ignored_or_positive, max_rank, _ = quotas
        cls = select_top_ranked(
            keep_column_max(force_best_anchor_(classification_quality)), num_positive, num_ignored_or_positive, max_rank
        )
        del classification_quality
        reg = select_top_ranked(
            keep_column_max(force_best_anchor_(regression_quality)), num_positive, num_positive, max_rank
        )
        return MutualGuidanceAssignment(cls, reg, baseline)

    @torch.no_grad()
    def quotas(self, anchors: Tensor, gt_boxes: Tensor, gt_mask: Tensor) -> Quotas:
        """Steps 2-4 alone (they read the anchor IoU only, not the predictions); one host sync on CUDA.

        When the batch fits in one chunk the anchor IoU matrix is kept in the result (``Quotas.anchor_iou``) and the
        assignment reuses it: with the quotas on a side CUDA stream, that saves computing it twice.

        Args:
            anchors: ``[A, 4]`` cxcywh normalised.
            gt_boxes: ``[B, G, 4]`` xyxy normalised, padded.
            gt_mask: ``[B, G]`` bool, True for real objects.
        """
        anchors_xyxy, gt_boxes = assigner_inputs(anchors, gt_boxes, gt_mask)
        chunks = matrix_chunks(gt_boxes, anchors.shape[0], self.max_elements)
        if len(chunks) == 1:
            matrix = anchor_iou(gt_boxes, anchors_xyxy)
            return self._quotas_from(matrix.clone())._replace(anchor_iou=matrix)  # counting modifies its input
        parts = [self._counts_from(anchor_iou(gt_boxes[chunk], anchors_xyxy)) for chunk in chunks]
        num_ignored_or_positive = torch.cat([part[1] for part in parts])
        return Quotas(torch.cat([part[0] for part in parts]), num_ignored_or_positive,
                      largest_quota(num_ignored_or_positive, anchors.shape[0]))

    def _quotas_from(self, anchor_quality: Tensor) -> Quotas:
        num_positive, num_ignored_or_positive = self._counts_from(anchor_quality)
        largest = largest_quota(num_ignored_or_positive, anchor_quality.shape[2])
        return Quotas(num_positive, num_ignored_or_positive, largest)

    def _counts_from(self, anchor_quality: Tensor) -> tuple[Tensor, Tensor]:
        """Steps 2-4 on a ``[b, G, A]`` anchor IoU matrix (modified in place) -> two ``[b, G]`` int32 counts."""
        anchor_quality = keep_column_max(force_best_anchor_(anchor_quality))
        return (count_at_least(anchor_quality, self.positive_threshold),
                count_at_least(anchor_quality, self.ignore_threshold))
