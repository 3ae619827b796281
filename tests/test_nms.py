"""utils.nms.dense_batched_nms against torchvision's greedy NMS, one (image, class) group at a time."""
import pytest
import torch
from torchvision.ops import nms

from utils.nms import dense_batched_nms, nms_steps, suppression_matrix


def per_group_reference(boxes, scores, labels, valid, iou_threshold):
    """torchvision.ops.nms on each (image, class) group separately -> [B, K] bool."""
    keep = torch.zeros(labels.shape, dtype=torch.bool)
    for b in range(boxes.shape[0]):
        for c in labels[b][valid[b]].unique().tolist():
            members = torch.nonzero(valid[b] & (labels[b] == c)).squeeze(1)
            keep[b, members[nms(boxes[b, members], scores[b, members], iou_threshold)]] = True
    return keep


def random_candidates(generator, batch, k, num_classes, spread):
    """Boxes crowded into a ``spread``-pixel square (heavy overlap), distinct descending scores per image."""
    xy = torch.rand(batch, k, 2, generator=generator) * spread
    wh = torch.rand(batch, k, 2, generator=generator) * 60 + 4
    scores = torch.rand(batch, k, generator=generator).sort(dim=1, descending=True).values
    labels = torch.randint(0, num_classes, (batch, k), generator=generator)
    valid = torch.rand(batch, k, generator=generator) < 0.9
    return torch.cat([xy, xy + wh], dim=2), scores, labels, valid


@pytest.mark.parametrize("spread, num_classes, iou_threshold", [(40, 1, 0.5), (200, 3, 0.5), (400, 20, 0.3)])
def test_equals_torchvision_per_group(spread, num_classes, iou_threshold):
    generator = torch.Generator().manual_seed(spread + num_classes)
    boxes, scores, labels, valid = random_candidates(generator, 3, 300, num_classes, spread)
    keep = dense_batched_nms(boxes, labels, valid, iou_threshold)
    expected = per_group_reference(boxes, scores, labels, valid, iou_threshold)
    assert torch.equal(keep, expected)
    assert 0 < int(keep.sum()) < int(valid.sum())  # NMS suppressed some candidates and kept others


def test_long_suppression_chain_is_resolved_exactly():
    # Box i overlaps box i+1 with IoU 0.54 and box i+2 with IoU 0.25: greedy keeps every other box, which the
    # fixed point reaches only after walking the whole chain (hundreds of steps, many convergence checks).
    k = 301
    x = torch.arange(k, dtype=torch.float32) * 3.0
    boxes = torch.stack([x, torch.zeros(k), x + 10.0, torch.full((k,), 10.0)], dim=1).unsqueeze(0)
    keep = dense_batched_nms(boxes, torch.zeros(1, k, dtype=torch.long), torch.ones(1, k, dtype=torch.bool), 0.5)
    assert torch.equal(keep[0], torch.arange(k) % 2 == 0)
    # the same chain next to an image holding a single candidate, settled at the first check: the batch is done only
    # when every image is
    batch = torch.cat([boxes, boxes])
    valid = torch.ones(2, k, dtype=torch.bool)
    valid[1, 1:] = False
    keep = dense_batched_nms(batch, torch.zeros(2, k, dtype=torch.long), valid, 0.5)
    assert torch.equal(keep[0], torch.arange(k) % 2 == 0) and keep[1].tolist() == [True] + [False] * (k - 1)


def test_fixed_steps_must_be_at_least_one():
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    suppresses = suppression_matrix(boxes, torch.zeros(1, 2, dtype=torch.long), valid, 0.5)
    with pytest.raises(ValueError, match="steps=0 must be >= 1"):
        nms_steps(valid, suppresses, valid, 0)
    keep, settled = nms_steps(valid, suppresses, valid, 1)  # one step from "all kept": box 1 is suppressed
    assert keep.tolist() == [[True, False]] and settled.tolist() == [False]
    keep, settled = nms_steps(keep, suppresses, valid, 1)
    assert keep.tolist() == [[True, False]] and settled.tolist() == [True]


def test_padding_never_suppresses_and_is_never_kept():
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]]])
    labels = torch.zeros(1, 3, dtype=torch.long)
    keep = dense_batched_nms(boxes, labels, torch.tensor([[False, True, True]]), 0.5)
    assert keep.tolist() == [[False, True, False]]


def test_no_candidates_and_degenerate_boxes():
    assert dense_batched_nms(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long),
                             torch.zeros(2, 0, dtype=torch.bool), 0.5).shape == (2, 0)
    # Two identical zero-area boxes: IoU is 0/0, which suppresses nothing (as in torchvision).
    point = torch.tensor([[[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0]]])
    keep = dense_batched_nms(point, torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool), 0.5)
    expected = nms(point[0], torch.tensor([0.9, 0.8]), 0.5)
    assert keep.tolist() == [[True, True]] and expected.tolist() == [0, 1]


def test_a_pair_at_exactly_the_threshold_is_not_suppressed():
    # [0, 0, 10, 10] and [0, 0, 10, 5]: intersection 50, union 100, IoU 0.5 exactly. Suppression needs IoU strictly
    # above the threshold (torchvision's rule, and the authors' NumPy NMS keeps boxes with IoU <= thresh).
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 6.0]]])
    labels = torch.zeros(1, 3, dtype=torch.long)
    valid = torch.ones(1, 3, dtype=torch.bool)
    # box 2 has IoU 0.6 with box 0 (suppressed) and 50 / 60 = 0.83 with box 1
    assert dense_batched_nms(boxes, labels, valid, 0.5).tolist() == [[True, True, False]]
    assert nms(boxes[0], torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 1]
