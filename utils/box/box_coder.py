"""Box formats and the anchor-relative box coding of facts §1.

Formats: "xyxy" = ``(x1, y1, x2, y2)``, "cxcywh" = ``(cx, cy, w, h)``; all normalised to [0, 1].
With variances ``(v_c, v_s) = (0.1, 0.2)``, a box g is encoded against an anchor a as

    t_x = (g_cx - a_cx) / (v_c a_w),  t_y = (g_cy - a_cy) / (v_c a_h),
    t_w = ln(g_w / a_w) / v_s,        t_h = ln(g_h / a_h) / v_s,

and ``decode`` is its exact inverse, returning xyxy. As in the authors' code there is no clamp on
``t_w, t_h`` before ``exp``.
"""
import torch
from torch import Tensor

DEFAULT_VARIANCES = (0.1, 0.2)


def corner_form(boxes: Tensor) -> Tensor:
    """``[..., 4]`` cxcywh -> ``[..., 4]`` xyxy."""
    centres, sizes = boxes[..., :2], boxes[..., 2:]
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)


def center_form(boxes: Tensor) -> Tensor:
    """``[..., 4]`` xyxy -> ``[..., 4]`` cxcywh."""
    top_left, bottom_right = boxes[..., :2], boxes[..., 2:]
    return torch.cat([(top_left + bottom_right) / 2, bottom_right - top_left], dim=-1)


def encode(matched_gt: Tensor, anchors: Tensor, variances: tuple[float, float] = DEFAULT_VARIANCES) -> Tensor:
    """Encode ground-truth boxes against anchors.

    Args:
        matched_gt: ``[..., A, 4]`` xyxy, normalised; the box each anchor regresses to.
        anchors: ``[A, 4]`` (or broadcastable to ``matched_gt``) cxcywh, normalised.
        variances: ``(centre, size)`` variances.

    Returns:
        ``[..., A, 4]`` offsets ``(t_x, t_y, t_w, t_h)``.
    """
    gt = center_form(matched_gt)
    centre_offsets = (gt[..., :2] - anchors[..., :2]) / (variances[0] * anchors[..., 2:])
    size_offsets = torch.log(gt[..., 2:] / anchors[..., 2:]) / variances[1]
    return torch.cat([centre_offsets, size_offsets], dim=-1)


def decode(deltas: Tensor, anchors: Tensor, variances: tuple[float, float] = DEFAULT_VARIANCES) -> Tensor:
    """Decode offsets into boxes; the inverse of :func:`encode`.

    Args:
        deltas: ``[..., A, 4]`` offsets ``(t_x, t_y, t_w, t_h)`` (the raw ``loc`` head output).
        anchors: ``[A, 4]`` (or broadcastable to ``deltas``) cxcywh, normalised.
        variances: ``(centre, size)`` variances.

    Returns:
        ``[..., A, 4]`` xyxy boxes, normalised, not clipped to the image.
    """
    centres = anchors[..., :2] + deltas[..., :2] * variances[0] * anchors[..., 2:]
    sizes = anchors[..., 2:] * torch.exp(deltas[..., 2:] * variances[1])
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)


class BoxCoder:
    """Encodes ground truth against anchors and decodes ``loc`` offsets, with fixed variances.

    ``encode(matched_gt, anchors)`` maps xyxy boxes to offsets and ``decode(deltas, anchors)`` maps offsets
    back to xyxy boxes; ``decode(encode(g, a), a) == g`` up to float rounding. Anchors are cxcywh.
    """

    def __init__(self, variances: tuple[float, float] = DEFAULT_VARIANCES) -> None:
        if len(variances) != 2 or min(variances) <= 0:
            raise ValueError(f"BoxCoder: variances={variances!r} must be two positive numbers (centre, size).")
        self.variances = (float(variances[0]), float(variances[1]))

    def encode(self, matched_gt: Tensor, anchors: Tensor) -> Tensor:
        """``[..., A, 4]`` xyxy ground truth, ``[A, 4]`` cxcywh anchors -> ``[..., A, 4]`` offsets."""
        return encode(matched_gt, anchors, self.variances)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """``[..., A, 4]`` offsets, ``[A, 4]`` cxcywh anchors -> ``[..., A, 4]`` xyxy boxes."""
        return decode(deltas, anchors, self.variances)
