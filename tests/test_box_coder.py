"""Box formats and the (0.1, 0.2)-variance coding of facts §1."""
import math

import pytest
import torch

from utils.box import BoxCoder, center_form, corner_form, decode, elementwise_box_iou, encode, pairwise_box_iou


def test_corner_and_center_form_are_inverse():
    cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.3, 0.1]])
    xyxy = torch.tensor([[0.4, 0.3, 0.6, 0.7], [-0.05, 0.85, 0.25, 0.95]])
    torch.testing.assert_close(corner_form(cxcywh), xyxy)
    torch.testing.assert_close(center_form(xyxy), cxcywh)
    # batched [B, N, 4] (the docstrings' [..., 4]): converted along the last dimension, image by image
    batched = torch.stack([cxcywh, cxcywh.flip(0)])
    torch.testing.assert_close(corner_form(batched), torch.stack([xyxy, xyxy.flip(0)]))
    torch.testing.assert_close(center_form(torch.stack([xyxy, xyxy.flip(0)])), batched)


def test_encode_by_hand():
    anchors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    gt = torch.tensor([[[0.45, 0.35, 0.65, 0.75]]])  # centre (0.55, 0.55), size (0.2, 0.4) -> same size
    expected = torch.tensor([[[(0.55 - 0.5) / (0.1 * 0.2), (0.55 - 0.5) / (0.1 * 0.4), 0.0, 0.0]]])
    torch.testing.assert_close(encode(gt, anchors), expected)
    gt_double = torch.tensor([[[0.3, 0.1, 0.7, 0.9]]])  # same centre as the anchor, twice its size
    torch.testing.assert_close(
        BoxCoder().encode(gt_double, anchors), torch.tensor([[[0.0, 0.0, math.log(2) / 0.2, math.log(2) / 0.2]]])
    )


def test_other_variances_encode_and_decode_by_hand():
    """BoxCoder's variances (every other test uses the default (0.1, 0.2)): centre (0.55, 0.55), twice the anchor's
    size, with variances (0.2, 0.5) -> t = (0.05 / (0.2 * 0.2), 0.05 / (0.2 * 0.4), ln 2 / 0.5, ln 2 / 0.5)."""
    anchors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    gt = torch.tensor([[[0.35, 0.15, 0.75, 0.95]]])
    offsets = torch.tensor([[[0.05 / 0.04, 0.05 / 0.08, math.log(2) / 0.5, math.log(2) / 0.5]]])
    coder = BoxCoder((0.2, 0.5))
    assert coder.variances == (0.2, 0.5)
    torch.testing.assert_close(coder.encode(gt, anchors), offsets)
    torch.testing.assert_close(coder.decode(offsets, anchors), gt)
    torch.testing.assert_close(encode(gt, anchors, (0.2, 0.5)), offsets)
    torch.testing.assert_close(decode(offsets, anchors, (0.2, 0.5)), gt)


@pytest.mark.parametrize("variances", [(0.1,), (0.1, 0.2, 0.3), (0.1, 0.0), (-0.1, 0.2)])
def test_box_coder_rejects_variances_that_are_not_two_positive_numbers(variances):
    with pytest.raises(ValueError, match="must be two positive numbers"):
        BoxCoder(variances)


def test_decode_of_zero_offsets_gives_the_anchor():
    anchors = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.2, 0.1, 0.1]])
    torch.testing.assert_close(decode(torch.zeros(3, 2, 4), anchors), corner_form(anchors).expand(3, 2, 4))


def test_round_trip_batched():
    torch.manual_seed(0)
    anchors = torch.cat([torch.rand(50, 2), torch.rand(50, 2) * 0.5 + 0.05], dim=1)
    deltas = torch.randn(4, 50, 4)
    coder = BoxCoder((0.1, 0.2))
    torch.testing.assert_close(coder.encode(coder.decode(deltas, anchors), anchors), deltas, atol=1e-4, rtol=1e-4)
    top_left = torch.rand(4, 50, 2) * 0.6
    boxes = torch.cat([top_left, top_left + torch.rand(4, 50, 2) * 0.3 + 0.01], dim=-1)
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes, atol=1e-5, rtol=1e-5)


def test_pairwise_iou_matches_torchvision_per_image():
    from torchvision.ops import box_iou

    torch.manual_seed(1)
    top_left = torch.rand(3, 7, 2)
    boxes = torch.cat([top_left, top_left + torch.rand(3, 7, 2) * 0.5], dim=-1)
    top_left = torch.rand(3, 11, 2)
    others = torch.cat([top_left, top_left + torch.rand(3, 11, 2) * 0.5], dim=-1)
    iou = pairwise_box_iou(boxes, others)
    assert iou.shape == (3, 7, 11)
    for b in range(3):
        torch.testing.assert_close(iou[b], box_iou(boxes[b], others[b]))
    torch.testing.assert_close(pairwise_box_iou(boxes, others[0])[2], box_iou(boxes[2], others[0]))


def test_elementwise_iou_by_hand_and_zero_area():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(elementwise_box_iou(a, b), torch.tensor([1 / 7, 0.0]))
    # the same at the scale of small normalised boxes (a 3 px object at 320, union ~1e-4): no floor on the union
    small = torch.tensor([[0.0, 0.0, 0.01, 0.01], [0.5, 0.5, 0.51, 0.51]])
    torch.testing.assert_close(
        elementwise_box_iou(small, torch.tensor([[0.0, 0.0, 0.01, 0.005], [0.505, 0.505, 0.515, 0.515]])),
        torch.tensor([0.5, 0.25 / 1.75]),
    )


def test_iou_of_a_box_with_an_infinite_side_and_a_zero_one_is_zero():
    """Decoding a size offset above ~443 overflows exp to inf; such a box of width inf and height 0 has area inf * 0
    (NaN), but meets no box: its IoU is 0 (NaN would outrank every anchor in the assigner's top-k)."""
    line = torch.tensor([[-math.inf, 0.9, math.inf, 0.9], [0.2, -math.inf, 0.2, math.inf]])
    box = torch.tensor([[0.1, 0.1, 0.95, 0.95]])
    assert torch.equal(elementwise_box_iou(line, box), torch.zeros(2))
    assert torch.equal(pairwise_box_iou(box.unsqueeze(0), line), torch.zeros(1, 1, 2))
    band = torch.tensor([[-math.inf, 0.0, math.inf, 0.5]])  # infinite area: finite intersection over inf
    assert torch.equal(elementwise_box_iou(band, box), torch.zeros(1))


def test_iou_is_differentiable():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]], requires_grad=True)
    elementwise_box_iou(a, torch.tensor([[1.0, 1.0, 3.0, 3.0]])).sum().backward()
    # iou = I / U with I = (x2 - 1)(y2 - 1), U = x2 y2 + 4 - I; at x2 = y2 = 2: I = 1, U = 7,
    # dI/dx2 = 1, dU/dx2 = y2 - (y2 - 1) = 1, so d iou / dx2 = (1 * 7 - 1 * 1) / 49 = 6 / 49
    torch.testing.assert_close(a.grad[0, 2], torch.tensor(6 / 49))
