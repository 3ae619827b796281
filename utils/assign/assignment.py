"""What every assigner returns, and the padded ground truth every assigner reads.

Shapes: B images, A anchors, G padded object slots per image (``G = max(1, max_i n_i)``).
Padded slots hold the zero box, whose IoU with any box is 0, so they never take part in an assignment.
"""
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from utils.box import corner_form

IGNORE = -1
NEGATIVE = 0
POSITIVE = 1

TARGET_COLUMNS = 5
# box coordinates accepted in targets: [0, 1] and some slack for a loader that does not clip to the image; a
# pixel coordinate is far outside
BOX_RANGE = (-0.5, 1.5)


class Assignment(NamedTuple):
    """Per-anchor result of an assigner.

    gt_index: ``[B, A]`` int64, index of the matched object slot in ``[0, G)``; meaningful where
        ``state != NEGATIVE`` and 0 elsewhere (so it is always a valid gather index).
    state: ``[B, A]`` int8, one of ``IGNORE`` (-1, left out of the loss), ``NEGATIVE`` (0, background)
        and ``POSITIVE`` (1, trained towards object ``gt_index``).
    """

    gt_index: Tensor
    state: Tensor


class PaddedTargets(NamedTuple):
    """A batch of per-image targets padded to G slots.

    boxes: ``[B, G, 4]`` float32 xyxy normalised; zero in padded slots.
    labels: ``[B, G]`` int64 foreground class 0..C-1; zero in padded slots.
    mask: ``[B, G]`` bool, True for real objects.
    """

    boxes: Tensor
    labels: Tensor
    mask: Tensor


def pad_targets(
    targets: Sequence[Tensor], num_classes: int | None = None, device: torch.device | str | None = None
) -> PaddedTargets:
    """Pad a list of B targets ``[n_i, 5]`` = ``(x1, y1, x2, y2, class 0..C-1)`` into :class:`PaddedTargets`.

    Checks the shapes, that all targets are on one device, that every box coordinate is finite and in
    ``BOX_RANGE`` (not pixels), that no box is inside out (``x2 < x1`` or ``y2 < y1``: not cxcywh; a box without area
    is valid and forces no anchor) and, when ``num_classes`` is given, the class range (before moving to ``device``,
    so targets that come from a CPU DataLoader are checked without a device sync).
    Images with no object (``[0, 5]``) are valid. Targets that require grad are detached: they are ground truth,
    and no gradient of the loss flows back into them.
    """
    if len(targets) == 0:
        raise ValueError("pad_targets: got an empty list of targets; pass one [n_i, 5] tensor per image.")
    for i, target in enumerate(targets):
        if not isinstance(target, Tensor):
            raise ValueError(
                f"pad_targets: targets[{i}] is a {type(target).__name__}, not a tensor; convert it with "
                f"torch.as_tensor(target, dtype=torch.float32) (a float tensor [n, 5] per image)."
            )
        if target.dim() != 2 or target.shape[1] != TARGET_COLUMNS:
            raise ValueError(
                f"pad_targets: targets[{i}] has shape {tuple(target.shape)}; expected a float tensor [n, 5] = "
                f"x1, y1, x2, y2 (normalised), class index (use a [0, 5] tensor for an image with no object)."
            )
        if target.device != targets[0].device:  # an attribute: no device sync
            raise ValueError(
                f"pad_targets: targets[{i}] is on {target.device}, targets[0] on {targets[0].device}; give a batch's "
                "targets on one device (the DataLoader gives them on the host; ``device`` moves them together)."
            )
    counts = torch.tensor([len(target) for target in targets])
    # ground truth is a constant of the loss: no gradient flows back into boxes that still carry a graph
    padded = pad_sequence([target.detach().float() for target in targets], batch_first=True)  # [B, n_max, 5]
    if padded.shape[1] == 0:
        padded = padded.new_zeros(len(targets), 1, TARGET_COLUMNS)
    mask = torch.arange(padded.shape[1]) < counts.unsqueeze(1)  # [B, G]
    _check_values(padded, mask.to(padded.device), num_classes)
    packed = torch.cat([padded, mask.to(padded).unsqueeze(2)], dim=2)  # [B, G, 6]: box, class, mask
    packed = _to_device(packed, torch.device(device) if device is not None else packed.device)
    return PaddedTargets(boxes=packed[..., :4], labels=packed[..., 4].long(), mask=packed[..., 5] > 0)


def _to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """One transfer; host to CUDA goes through pinned memory with ``non_blocking``, so it does not wait for the GPU."""
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _check_values(padded: Tensor, mask: Tensor, num_classes: int | None) -> None:
    """Raise ValueError naming the first real object (``mask`` ``[B, G]``) of ``padded`` ``[B, G, 5]`` whose box has a
    coordinate that is not finite (a NaN one made every IoU of its image NaN, which silently emptied the other
    objects' assignments), outside ``BOX_RANGE`` (pixel coordinates: the object was trained on one forced anchor of
    almost no overlap) or inside out (``x2 < x1`` or ``y2 < y1``: a (cx, cy, w, h) box, whose IoU 0 with every anchor
    left it out of the loss), or, with ``num_classes``, whose class is not an integer in 0..C-1. One host sync on a
    GPU."""
    boxes, labels = padded[..., :4], padded[..., 4]
    bad_box = ~torch.isfinite(boxes).all(dim=2)
    outside = ((boxes < BOX_RANGE[0]) | (boxes > BOX_RANGE[1])).any(dim=2)
    inside_out = (boxes[..., 2:] < boxes[..., :2]).any(dim=2)
    bad_label = torch.zeros_like(bad_box)
    if num_classes is not None:
        bad_label = (labels < 0) | (labels > num_classes - 1) | (labels != labels.round())
    bad = mask & (bad_box | outside | inside_out | bad_label)
    if not bool(bad.any()):
        return
    image, row = bad.nonzero()[0].tolist()
    where = f"targets[{image}] row {row} has box {boxes[image, row].tolist()}"
    if bool(bad_box[image, row]):
        raise ValueError(
            f"{where} whose coordinates are not all finite; each object needs "
            f"finite x1, y1, x2, y2 normalised by the image size in columns 0-3 (fix or drop it in the dataset)."
        )
    if bool(outside[image, row]):
        raise ValueError(
            f"{where} with a coordinate outside [{BOX_RANGE[0]}, {BOX_RANGE[1]}]; boxes are x1, y1, x2, y2 "
            f"normalised to [0, 1] by the image size: divide pixel x by the image width and y by its height."
        )
    if bool(inside_out[image, row]):
        raise ValueError(
            f"{where} with x2 < x1 or y2 < y1; columns 0-3 are the corners x1, y1, x2, y2 (convert (cx, cy, w, h) "
            f"boxes with utils.box.corner_form)."
        )
    raise ValueError(
        f"targets[{image}] row {row} holds class index {labels[image, row].item()} but MultiBoxLoss("
        f"num_classes={num_classes}) expects foreground indices 0..{num_classes - 1} in column 4 (the authors' 1..C "
        f"labels must be shifted by -1 in data/)."
    )


def check_thresholds(owner: str, positive_threshold: float, ignore_threshold: float) -> None:
    """Raise ValueError unless ``0 <= ignore_threshold <= positive_threshold <= 1`` (anchor-IoU thresholds)."""
    if not 0 <= ignore_threshold <= positive_threshold <= 1:
        raise ValueError(
            f"{owner}: need 0 <= ignore_threshold ({ignore_threshold}) <= positive_threshold "
            f"({positive_threshold}) <= 1."
        )


def default_max_elements(device: torch.device) -> int:
    """Entries per ``[b, G, A]`` chunk when an assigner is not given one.

    CUDA: 2^25 (128 MB per float32 matrix; a batch of 32 at 320 with 20 objects is one chunk).
    CPU: 2^20 (4 MB). Small blocks stay in the allocator's heap instead of being mapped and page-faulted
    afresh at every step, which makes CPU assignment about 1.7x faster; results do not depend on the chunking.
    """
    return 2**25 if device.type == "cuda" else 2**20


def image_chunks(num_images: int, entries_per_image: int, max_elements: int) -> list[slice]:
    """Split the batch into runs of images holding at most ``max_elements`` entries together
    (``entries_per_image`` is G * A for a quality matrix, A * C for the logits).

    One image per chunk is the floor, so a single image larger than the budget is still processed whole.
    """
    step = max(1, max_elements // max(entries_per_image, 1))
    return [slice(start, min(start + step, num_images)) for start in range(0, num_images, step)]


def matrix_chunks(gt_boxes: Tensor, num_anchors: int, max_elements: int | None) -> list[slice]:
    """Runs of images whose ``[b, G, A]`` matrices hold at most ``max_elements`` entries (None:
    :func:`default_max_elements` of the boxes' device); ``gt_boxes`` is ``[B, G, 4]``."""
    max_elements = max_elements or default_max_elements(gt_boxes.device)
    return image_chunks(gt_boxes.shape[0], gt_boxes.shape[1] * num_anchors, max_elements)


def assigner_inputs(anchors: Tensor, gt_boxes: Tensor, gt_mask: Tensor) -> tuple[Tensor, Tensor]:
    """What every assigner starts from.

    Args:
        anchors: ``[A, 4]`` cxcywh normalised.
        gt_boxes: ``[B, G, 4]`` xyxy normalised, padded.
        gt_mask: ``[B, G]`` bool, True for real objects.

    Returns:
        ``(anchors [A, 4] xyxy float32, gt_boxes [B, G, 4] float32 with padded slots zeroed)``.
    """
    return corner_form(anchors.float()), gt_boxes.float() * gt_mask.unsqueeze(2)


def concat_assignments(parts: Sequence[Assignment]) -> Assignment:
    """Join per-chunk assignments along the image dimension."""
    if len(parts) == 1:
        return parts[0]
    return Assignment(torch.cat([p.gt_index for p in parts]), torch.cat([p.state for p in parts]))
