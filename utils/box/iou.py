"""Intersection over union of xyxy boxes, batched over images.

``torchvision.ops.box_iou`` handles one image (``[N, 4] x [M, 4] -> [N, M]``); the assigners need the same
quantity for a whole padded batch at once (``[B, G, 4] x [B, A, 4] -> [B, G, A]``), and the diagnostics need
it for matched pairs only. Both are the broadcasting function below. Boxes of zero area give IoU 0, also a box
with an infinite side and a zero one.
"""
from torch import Tensor

_MIN_UNION = 1e-12


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of ``boxes1[..., 4]`` and ``boxes2[..., 4]`` (xyxy, any frame) under broadcasting -> ``[...]``."""
    x1a, y1a, x2a, y2a = boxes1.unbind(-1)
    x1b, y1b, x2b, y2b = boxes2.unbind(-1)
    # in-place steps on fresh tensors: fewer full-size temporaries, and autograd still tracks them
    inter = x2a.minimum(x2b).sub_(x1a.maximum(x1b)).clamp_(min=0)
    inter.mul_(y2a.minimum(y2b).sub_(y1a.maximum(y1b)).clamp_(min=0))
    union = (_area(x1a, y1a, x2a, y2a) + _area(x1b, y1b, x2b, y2b)).sub_(inter).clamp_(min=_MIN_UNION)
    return inter.div_(union)


def _area(x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor) -> Tensor:
    """Box areas, 0 where the product is NaN: a box with an infinite side and a zero one (``inf * 0``), as a predicted
    box decoded from an overflowing size offset can be. Its intersection with a finite box is 0, and so is their
    IoU."""
    area = (x2 - x1) * (y2 - y1)
    return area.masked_fill(area.isnan(), 0.0)


def pairwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair, per image.

    Args:
        boxes1: ``[B, N, 4]`` xyxy (e.g. padded ground truth).
        boxes2: ``[B, M, 4]`` or ``[M, 4]`` xyxy (predicted boxes per image, or anchors shared by all images).

    Returns:
        ``[B, N, M]`` IoU.
    """
    if boxes2.dim() == 2:
        boxes2 = boxes2.unsqueeze(0)
    return elementwise_box_iou(boxes1.unsqueeze(-2), boxes2.unsqueeze(-3))
