"""Batched IoU and Mutual-Guidance assignment (facts §4) against hand-worked cases and the per-image reference."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.mg_reference import random_targets, reference_iou_assign, reference_mg_assign
from utils.assign import (
    IGNORE,
    NEGATIVE,
    POSITIVE,
    IoUAssigner,
    MutualGuidanceAssigner,
    amplified_iou,
    assign_by_iou,
    default_max_elements,
    image_chunks,
    pad_targets,
)
from utils.assign.quality import (
    anchor_iou,
    force_best_anchor_,
    keep_column_max,
    predicted_iou,
    select_top_ranked,
)
from utils.box import PriorBox, corner_form, decode, encode, pairwise_box_iou

NUM_CLASSES = 20
ANCHORS_320 = PriorBox(24.0, 320)()


def random_batch(counts, seed, loc_scale=0.7):
    generator = torch.Generator().manual_seed(seed)
    targets = [random_targets(n, NUM_CLASSES, generator) for n in counts]
    num_anchors = ANCHORS_320.shape[0]
    loc = torch.randn(len(counts), num_anchors, 4, generator=generator) * loc_scale
    conf = torch.randn(len(counts), num_anchors, NUM_CLASSES, generator=generator) * 2 - 3
    return targets, loc, conf


def assert_same_assignment(batched, b, reference):
    gt_index, state = reference
    assert torch.equal(batched.state[b].long(), state)
    assigned = state != NEGATIVE
    assert torch.equal(batched.gt_index[b][assigned], gt_index[assigned])


def test_iou_assignment_by_hand():
    iou = torch.tensor(
        [
            [  # image 0: object 1's best anchor (IoU 0.35) is forced positive; the all-zero row forces nothing.
                # Unforced: anchor 2 (0.52) is positive, anchor 1 (0.45) ignored, anchor 4 (0.33) negative
                [0.60, 0.45, 0.52, 0.00, 0.00],
                [0.20, 0.30, 0.00, 0.35, 0.33],
                [0.00, 0.00, 0.00, 0.00, 0.00],
            ],
            [  # image 1: all three objects' best anchor is anchor 0; the later object wins it
                [0.30, 0.10, 0.00, 0.00, 0.00],
                [0.35, 0.20, 0.00, 0.00, 0.00],
                [0.25, 0.00, 0.00, 0.00, 0.00],
            ],
        ]
    )
    result = assign_by_iou(iou)  # the function's own thresholds: 0.5 / 0.4, as facts §4
    assert result.state.dtype == torch.int8 and result.gt_index.dtype == torch.int64
    assert result.state.tolist() == [[POSITIVE, IGNORE, POSITIVE, POSITIVE, NEGATIVE], [POSITIVE] + [NEGATIVE] * 4]
    assert result.gt_index.tolist() == [[0, 0, 0, 1, 0], [2, 0, 0, 0, 0]]
    # a forced anchor's overlap is 1.0, so it stays positive under any positive threshold up to 1 (here 0.95),
    # while no unforced entry reaches 0.9
    strict = assign_by_iou(iou, positive_threshold=0.95, ignore_threshold=0.9)
    assert strict.state.tolist() == [[POSITIVE, NEGATIVE, NEGATIVE, POSITIVE, NEGATIVE], [POSITIVE] + [NEGATIVE] * 4]
    assert strict.gt_index.tolist() == [[0, 0, 0, 1, 0], [2, 0, 0, 0, 0]]


def test_rank_selection_by_hand_caps_quota_at_nonzero_entries():
    quality = torch.tensor(
        [
            [
                [0.9, 0.0, 0.7, 0.0, 0.0, 0.3],  # quotas 2 positive / 5 with ignored, but only 3 non-zero entries
                [0.0, 0.8, 0.0, 0.6, 0.0, 0.3],  # quotas 3 / 3; anchor 5 ties with object 0
            ]
        ]
    )
    result = select_top_ranked(quality, torch.tensor([[2, 3]]), torch.tensor([[5, 3]]))
    # anchor 5: ignored for object 0, positive for object 1 -> positive for object 1.
    # anchors 1, 3, 4 hold 0 for object 0: the authors' topk(5) could pick them; capped here (anchor 4 stays negative).
    assert result.state.tolist() == [[POSITIVE, POSITIVE, POSITIVE, POSITIVE, NEGATIVE, POSITIVE]]
    assert result.gt_index.tolist() == [[0, 1, 0, 1, 0, 1]]


def test_sigma_property():
    iou = torch.full((4,), 0.25)
    probability = torch.tensor([0.0, 0.01, 0.5, 1.0])
    amplified = amplified_iou(iou, probability, sigma=2.0)
    torch.testing.assert_close(amplified, torch.tensor([0.25, 0.25**0.995, 0.25**0.75, 0.5]))
    assert torch.all(amplified[1:] > amplified[:-1])
    assert amplified_iou(torch.tensor([0.0]), torch.tensor([0.9]), 2.0).item() == 0.0


def test_an_object_keeps_its_forced_best_anchor_against_an_object_overlapping_it_more():
    """Facts §4: each object's best anchor is set to 1.0 *before* each anchor keeps only its best object. All boxes
    span y 0.2..0.3, so IoU is the 1-D IoU in x. Anchor X = x 0.16..0.5 has IoU 0.37 with object A (x 0.3..0.7, its
    best anchor) and 0.85 with object B (x 0.1..0.5), whose best is anchor Y = x 0.1..0.46 (0.9). Forced to 1.0, A
    keeps X (1.0 > 0.85) and B keeps only Y: one positive each, in both branches. Forcing to less than B's 0.85 would
    hand X to B and leave A without an anchor."""
    def box(x1, x2):
        return [(x1 + x2) / 2, 0.25, x2 - x1, 0.1]

    anchors = torch.tensor([box(0.16, 0.5), box(0.1, 0.46), box(0.8, 0.9)])  # X, Y, and Z touching no object
    targets = [torch.tensor([[0.3, 0.2, 0.7, 0.3, 1.0], [0.1, 0.2, 0.5, 0.3, 2.0]])]  # A, B
    gt = pad_targets(targets, NUM_CLASSES)
    matrix = anchor_iou(gt.boxes, corner_form(anchors))
    torch.testing.assert_close(matrix, torch.tensor([[[0.2 / 0.54, 0.16 / 0.6, 0.0], [0.85, 0.9, 0.0]]]))
    assert keep_column_max(force_best_anchor_(matrix)).tolist() == [[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]
    loc = torch.zeros(1, 3, 4)  # R = A
    conf = torch.full((1, 3, NUM_CLASSES), -math.log(99.0))  # p = 0.01: Q = A ** 0.995
    mg = MutualGuidanceAssigner()(anchors, gt.boxes, gt.labels, gt.mask, loc, conf)
    for assignment in (mg.cls, mg.reg):
        assert assignment.state.tolist() == [[POSITIVE, POSITIVE, NEGATIVE]]
        assert assignment.gt_index.tolist() == [[0, 1, 0]]


def test_a_prediction_with_a_nan_corner_meets_no_object():
    """Offsets that are all infinite (an fp16 head output that overflowed, cast to float32) decode to the corners
    (inf - inf, inf - inf, inf, inf) = (NaN, NaN, inf, inf); a NaN offset gives NaN corners too. Such a prediction
    has IoU 0 with every object, as tests/mg_reference.py has it; the other predictions keep theirs."""
    anchors = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.2, 0.2]])
    loc = torch.tensor([[[math.inf] * 4, [0.0, 0.0, 0.0, 0.0], [math.nan, 0.0, 0.0, 0.0]]])
    predictions = decode(loc, anchors)
    assert predictions[0, 0, :2].isnan().all() and predictions[0, 0, 2:].isinf().all()
    gt_boxes = torch.tensor([[[0.1, 0.1, 0.95, 0.95], [0.3, 0.3, 0.7, 0.7]]])
    expected = torch.tensor([[[0.0, 0.16 / 0.7225, 0.0], [0.0, 1.0, 0.0]]])
    torch.testing.assert_close(predicted_iou(gt_boxes, predictions), expected)


def test_column_suppression_by_hand():
    """Each anchor keeps its best object: entries below the column maximum become exactly 0 (ties all stay, an
    all-zero column stays 0), so a suppressed entry can never be ranked as a non-zero quality."""
    quality = torch.tensor([[[0.3, 0.6, 0.0, 0.2], [0.5, 0.6, 0.0, 0.1]]])
    assert torch.equal(keep_column_max(quality), torch.tensor([[[0.0, 0.6, 0.0, 0.2], [0.5, 0.6, 0.0, 0.0]]]))


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_assigners_match_per_image_reference(seed):
    counts = [0, 60, 3, 1, 17] if seed == 0 else [5, 0, 9, 2]
    targets, loc, conf = random_batch(counts, seed, loc_scale=0.7 if seed == 0 else 3.0)
    gt = pad_targets(targets, NUM_CLASSES)
    iou = IoUAssigner()(ANCHORS_320, gt.boxes, gt.mask)
    mg = MutualGuidanceAssigner()(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf, with_iou_baseline=True)
    assert torch.equal(mg.iou_baseline.state, iou.state) and torch.equal(mg.iou_baseline.gt_index, iou.gt_index)
    for b, target in enumerate(targets):
        boxes, labels = target[:, :4], target[:, 4].long()
        assert_same_assignment(iou, b, reference_iou_assign(ANCHORS_320, boxes))
        reference_cls, reference_reg = reference_mg_assign(ANCHORS_320, boxes, labels, loc[b], conf[b])
        assert_same_assignment(mg.cls, b, reference_cls)
        assert_same_assignment(mg.reg, b, reference_reg)
    assert not torch.any(mg.reg.state == IGNORE)
    assert int((mg.cls.state == POSITIVE).sum()) > 0


def test_non_default_thresholds_and_sigma_match_the_per_image_reference():
    """The assigners' thresholds and sigma (every other test uses 0.5 / 0.4 / 2): IoU 0.6 / 0.3 and sigma 4 against
    the reference with the same values, and each setting changes the assignment (it is not ignored)."""
    counts = [5, 0, 12]
    targets, loc, conf = random_batch(counts, seed=10)
    gt = pad_targets(targets, NUM_CLASSES)
    iou = IoUAssigner(positive_threshold=0.6, ignore_threshold=0.3)(ANCHORS_320, gt.boxes, gt.mask)
    mg = MutualGuidanceAssigner(sigma=4.0, positive_threshold=0.6, ignore_threshold=0.3)(
        ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf, with_iou_baseline=True
    )
    assert torch.equal(mg.iou_baseline.state, iou.state) and torch.equal(mg.iou_baseline.gt_index, iou.gt_index)
    for b, target in enumerate(targets):
        boxes, labels = target[:, :4], target[:, 4].long()
        assert_same_assignment(iou, b, reference_iou_assign(ANCHORS_320, boxes, 0.6, 0.3))
        reference_cls, reference_reg = reference_mg_assign(ANCHORS_320, boxes, labels, loc[b], conf[b], 4.0, 0.6, 0.3)
        assert_same_assignment(mg.cls, b, reference_cls)
        assert_same_assignment(mg.reg, b, reference_reg)
    default_iou = IoUAssigner()(ANCHORS_320, gt.boxes, gt.mask)
    assert not torch.equal(iou.state, default_iou.state)
    default_mg = MutualGuidanceAssigner()(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf)
    assert not torch.equal(mg.cls.state, default_mg.cls.state)  # the quotas follow the thresholds
    sigma_only = MutualGuidanceAssigner(sigma=4.0)(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf)
    assert torch.equal(sigma_only.cls.state, default_mg.cls.state)  # sigma enters Q (regression) only
    assert not torch.equal(sigma_only.reg.state, default_mg.reg.state)


@pytest.mark.parametrize("make", [
    lambda: IoUAssigner(positive_threshold=0.4, ignore_threshold=0.5),
    lambda: IoUAssigner(positive_threshold=1.5),
    lambda: MutualGuidanceAssigner(ignore_threshold=-0.1),
])
def test_thresholds_out_of_order_are_refused(make):
    with pytest.raises(ValueError, match=r"need 0 <= ignore_threshold .* <= positive_threshold .* <= 1"):
        make()


def test_thresholds_at_the_ends_of_their_range_are_accepted():
    """0 <= ignore <= positive <= 1 is inclusive: equal thresholds (no ignore band) and 0 / 1 are valid settings."""
    targets, loc, conf = random_batch([5, 2], seed=14)
    gt = pad_targets(targets, NUM_CLASSES)
    no_band = IoUAssigner(positive_threshold=0.5, ignore_threshold=0.5)(ANCHORS_320, gt.boxes, gt.mask)
    default = IoUAssigner()(ANCHORS_320, gt.boxes, gt.mask)
    assert not torch.any(no_band.state == IGNORE) and torch.any(default.state == IGNORE)
    assert torch.equal(no_band.state == POSITIVE, default.state == POSITIVE)
    # positive threshold 1: only each object's forced anchor counts (K_pos = 1); ignore threshold 0: every other
    # anchor the object keeps in the column step counts towards K_ign
    extremes = MutualGuidanceAssigner(positive_threshold=1.0, ignore_threshold=0.0)
    assert extremes.quotas(ANCHORS_320, gt.boxes, gt.mask).num_positive.tolist() == [[1] * 5, [1, 1, 0, 0, 0]]
    mg = extremes(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf)
    assert 0 < int((mg.reg.state == POSITIVE).sum()) <= 7 and int((mg.cls.state == POSITIVE).sum()) <= 7


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_sigma_of_one_or_less_is_refused(sigma):
    """At sigma = 1 the exponent (sigma - p) / sigma is 0 for a confident class (sigmoid is exactly 1.0 in float32 from
    a logit of about 17), and 0 ** 0 = 1: every anchor not touching the object would get Q = 1 and could become one
    of its regression positives."""
    with pytest.raises(ValueError, match=f"sigma={sigma} must be > 1"):
        MutualGuidanceAssigner(sigma=sigma)


def test_a_confident_class_keeps_regression_positives_on_the_object():
    """p = 1.0 exactly (logit 20): with sigma 1.5, Q = A ** (1/3) ranks the anchors as A does, so the regression
    positives are the IoU assigner's, all overlapping the object; zero IoU stays zero."""
    targets = [torch.tensor([[0.4, 0.4, 0.6, 0.7, 3.0]])]
    gt = pad_targets(targets, NUM_CLASSES)
    loc = torch.zeros(1, ANCHORS_320.shape[0], 4)
    conf = torch.full((1, ANCHORS_320.shape[0], NUM_CLASSES), 20.0)
    assert torch.sigmoid(conf[0, 0, 0]).item() == 1.0
    mg = MutualGuidanceAssigner(sigma=1.5)(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf)
    iou = IoUAssigner()(ANCHORS_320, gt.boxes, gt.mask)
    assert torch.equal(mg.reg.state == POSITIVE, iou.state == POSITIVE)
    assert int((mg.reg.state == POSITIVE).sum()) > 0


def test_at_initialisation_mg_gives_the_iou_assignment():
    """loc = 0 and conf at the prior (p = 0.01): R = A and Q = A^0.995, so the sets coincide (facts §4)."""
    targets, _, _ = random_batch([3, 12, 1, 30], seed=3)
    gt = pad_targets(targets, NUM_CLASSES)
    loc = torch.zeros(4, ANCHORS_320.shape[0], 4)
    conf = torch.full((4, ANCHORS_320.shape[0], NUM_CLASSES), -math.log((1 - 0.01) / 0.01))
    iou = IoUAssigner()(ANCHORS_320, gt.boxes, gt.mask)
    mg = MutualGuidanceAssigner()(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf)
    assert mg.iou_baseline is None  # only computed when asked for
    for state in (IGNORE, POSITIVE):
        assert torch.equal((mg.cls.state == state).sum(1), (iou.state == state).sum(1))
    assert torch.equal(mg.cls.state, iou.state)
    assert torch.equal(mg.reg.state == POSITIVE, iou.state == POSITIVE)
    assert int((iou.state == IGNORE).sum()) > 0


def test_quota_is_capped_at_the_predictions_that_overlap_the_object():
    """Only 3 predictions touch the object while its anchor-IoU quota is 16: exactly those 3 become positives
    (the authors' topk(16) would add 13 anchors whose predicted IoU is 0), the same as the reference."""
    object_box = torch.tensor([0.1, 0.3, 0.3, 0.5])
    targets = [torch.cat([object_box, torch.tensor([4.0])]).unsqueeze(0)]
    gt = pad_targets(targets, NUM_CLASSES)
    far_box = torch.tensor([0.8, 0.8, 0.95, 0.95]).expand(ANCHORS_320.shape[0], 4)
    loc = encode(far_box, ANCHORS_320)
    on_object = torch.tensor([100, 2000, 12000])
    loc[on_object] = encode(object_box.expand(3, 4), ANCHORS_320[on_object])
    loc, conf = loc.unsqueeze(0), torch.zeros(1, ANCHORS_320.shape[0], NUM_CLASSES)
    iou = IoUAssigner()(ANCHORS_320, gt.boxes, gt.mask)
    assert int((iou.state == POSITIVE).sum()) == 16
    mg = MutualGuidanceAssigner()(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf)
    assert torch.equal(torch.nonzero(mg.cls.state[0] == POSITIVE).flatten(), on_object)
    assert not torch.any(mg.cls.state == IGNORE)
    reference_cls, _ = reference_mg_assign(ANCHORS_320, gt.boxes[0], gt.labels[0], loc[0], conf[0])
    assert_same_assignment(mg.cls, 0, reference_cls)


def test_object_no_prediction_overlaps_gets_no_classification_positive():
    """All predictions pushed far away: R is all zero, so no anchor is forced (the authors forced anchor 0)."""
    targets = [torch.tensor([[0.4, 0.4, 0.6, 0.7, 3.0]])]
    gt = pad_targets(targets, NUM_CLASSES)
    loc = torch.zeros(1, ANCHORS_320.shape[0], 4)
    loc[..., 0] = 1000.0
    conf = torch.zeros(1, ANCHORS_320.shape[0], NUM_CLASSES)
    mg = MutualGuidanceAssigner()(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf)
    assert torch.all(mg.cls.state == NEGATIVE)
    iou = IoUAssigner()(ANCHORS_320, gt.boxes, gt.mask)
    assert torch.equal(mg.reg.state == POSITIVE, iou.state == POSITIVE)  # Q depends on anchors and conf only
    assert int((mg.reg.state == POSITIVE).sum()) > 0


def test_images_without_objects_are_all_negative():
    targets = [torch.zeros(0, 5), torch.zeros(0, 5)]
    gt = pad_targets(targets, NUM_CLASSES)
    assert gt.boxes.shape == (2, 1, 4) and not gt.mask.any()
    loc = torch.randn(2, ANCHORS_320.shape[0], 4)
    conf = torch.randn(2, ANCHORS_320.shape[0], NUM_CLASSES)
    mg = MutualGuidanceAssigner()(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf, with_iou_baseline=True)
    for assignment in (IoUAssigner()(ANCHORS_320, gt.boxes, gt.mask), mg.cls, mg.reg, mg.iou_baseline):
        assert torch.all(assignment.state == NEGATIVE) and torch.all(assignment.gt_index == 0)


def test_padded_slots_with_garbage_boxes_are_masked():
    """Image 1 has 3 padded slots; a large box in them (which would take many anchors) changes no assignment."""
    targets, loc, conf = random_batch([4, 1], seed=5)
    gt = pad_targets(targets, NUM_CLASSES)
    garbage_boxes = torch.where(gt.mask.unsqueeze(2), gt.boxes, torch.tensor([0.1, 0.1, 0.9, 0.9]))
    assert not torch.equal(garbage_boxes, gt.boxes)
    clean = MutualGuidanceAssigner()(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf, with_iou_baseline=True)
    masked = MutualGuidanceAssigner()(ANCHORS_320, garbage_boxes, gt.labels, gt.mask, loc, conf,
                                      with_iou_baseline=True)
    masked_iou = IoUAssigner()(ANCHORS_320, garbage_boxes, gt.mask)
    for got, expected in (*zip(masked, clean), (masked_iou, clean.iou_baseline)):
        assert torch.equal(got.state, expected.state) and torch.equal(got.gt_index, expected.gt_index)
    assert_same_assignment(masked_iou, 1, reference_iou_assign(ANCHORS_320, targets[1][:, :4]))


def test_chunking_over_images_gives_the_same_result():
    assert image_chunks(5, 3 * 10, max_elements=60) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert image_chunks(3, 300 * 32736, max_elements=default_max_elements(torch.device("cuda"))) == [slice(0, 3)]
    assert image_chunks(32, 20 * 12750, max_elements=default_max_elements(torch.device("cuda"))) == [slice(0, 32)]
    assert image_chunks(32, 20 * 12750, max_elements=default_max_elements(torch.device("cpu")))[0] == slice(0, 4)
    assert image_chunks(4, 300 * 32736, max_elements=2**22) == [slice(i, i + 1) for i in range(4)]
    targets, loc, conf = random_batch([7, 0, 2, 11], seed=6)
    gt = pad_targets(targets, NUM_CLASSES)
    whole = MutualGuidanceAssigner(max_elements=2**25)(
        ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf, with_iou_baseline=True
    )
    one_by_one = MutualGuidanceAssigner(max_elements=1)(
        ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf, with_iou_baseline=True
    )
    for a, b in zip(whole, one_by_one):
        assert torch.equal(a.state, b.state) and torch.equal(a.gt_index, b.gt_index)
    one_by_one = IoUAssigner(max_elements=1)(ANCHORS_320, gt.boxes, gt.mask)
    whole = IoUAssigner(max_elements=2**25)(ANCHORS_320, gt.boxes, gt.mask)
    assert torch.equal(one_by_one.state, whole.state) and torch.equal(one_by_one.gt_index, whole.gt_index)


def test_iou_assigner_splits_the_batch_by_its_element_bound(monkeypatch):
    """max_elements = 2 images' [G, A] matrices: a batch of 5 is assigned in runs of 2, 2 and 1 images (the peak-memory
    bound), with the same result as in one piece."""
    targets, _, _ = random_batch([7, 0, 2, 11, 3], seed=11)
    gt = pad_targets(targets, NUM_CLASSES)
    assigner = IoUAssigner(max_elements=2 * gt.boxes.shape[1] * ANCHORS_320.shape[0])
    runs = []
    assign_chunk = assigner.assign_chunk
    monkeypatch.setattr(assigner, "assign_chunk", lambda anchors, boxes: runs.append(len(boxes)) or
                        assign_chunk(anchors, boxes))
    split = assigner(ANCHORS_320, gt.boxes, gt.mask)
    assert runs == [2, 2, 1]
    whole = IoUAssigner(max_elements=2**25)(ANCHORS_320, gt.boxes, gt.mask)
    assert torch.equal(split.state, whole.state) and torch.equal(split.gt_index, whole.gt_index)


@pytest.mark.parametrize("images_per_chunk", [2, 5])  # three chunks, one chunk
def test_quotas_computed_ahead_give_the_same_assignment(images_per_chunk):
    # The CUDA loss computes the quotas on a side stream (utils/assign/prefetch.py) and hands them over.
    targets, loc, conf = random_batch([7, 0, 2, 11, 60], seed=8)
    gt = pad_targets(targets, NUM_CLASSES)
    assigner = MutualGuidanceAssigner(max_elements=images_per_chunk * 60 * ANCHORS_320.shape[0])
    quotas = assigner.quotas(ANCHORS_320, gt.boxes, gt.mask)
    assert quotas.num_positive.shape == quotas.num_ignored_or_positive.shape == gt.mask.shape
    assert quotas.max_rank == int(quotas.num_ignored_or_positive.max()) > 0
    assert torch.all(quotas.num_positive[~gt.mask] == 0) and torch.all(quotas.num_positive[gt.mask] >= 1)
    if images_per_chunk == 5:  # one chunk: the raw anchor IoU comes along, unmodified by the counting
        expected = pairwise_box_iou(gt.boxes * gt.mask.unsqueeze(2), corner_form(ANCHORS_320))
        assert torch.equal(quotas.anchor_iou, expected)
    else:  # split batches do not keep the whole matrix (the chunks bound the memory)
        assert quotas.anchor_iou is None
    inline = assigner(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf, with_iou_baseline=True)
    ahead = assigner(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf, with_iou_baseline=True, quotas=quotas)
    for a, b in zip(inline, ahead):
        assert torch.equal(a.state, b.state) and torch.equal(a.gt_index, b.gt_index)


def test_a_split_assignment_reads_its_anchor_iou_from_quotas_computed_whole(monkeypatch):
    # MultiBoxLoss splits a batch by its logits too ([b, A, C]), so it may split a batch whose quotas (and anchor IoU
    # matrix) were computed in one piece on the side stream: each run of images then reads its rows of that matrix.
    import utils.assign.mutual_guidance as mutual_guidance

    targets, loc, conf = random_batch([7, 0, 2, 11, 60], seed=9)
    gt = pad_targets(targets, NUM_CLASSES)
    quotas = MutualGuidanceAssigner(max_elements=2**25).quotas(ANCHORS_320, gt.boxes, gt.mask)  # one piece
    assert quotas.anchor_iou is not None
    split = MutualGuidanceAssigner(max_elements=2 * 60 * ANCHORS_320.shape[0])  # runs of 2, 2 and 1 images
    inline = split(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf)
    calls = []
    monkeypatch.setattr(mutual_guidance, "anchor_iou", lambda *args: calls.append(args) or anchor_iou(*args))
    ahead = split(ANCHORS_320, gt.boxes, gt.labels, gt.mask, loc, conf, quotas=quotas)
    assert calls == []
    for a, b in zip(inline, ahead):
        if a is not None:
            assert torch.equal(a.state, b.state) and torch.equal(a.gt_index, b.gt_index)
    assert int((ahead.cls.state == 1).sum()) > 80


PEAK_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from tests.mg_reference import random_targets
from utils.assign import MutualGuidanceAssigner, pad_targets
from utils.box import PriorBox, corner_form, decode, encode, pairwise_box_iou
torch.set_num_threads(1)
anchors = PriorBox(24.0, 512)()
g = torch.Generator().manual_seed(0)
gt = pad_targets([random_targets(300, 80, g) for _ in range(3)], 80)
loc = torch.randn(3, anchors.shape[0], 4, generator=g)
conf = torch.randn(3, anchors.shape[0], 80, generator=g)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = MutualGuidanceAssigner(max_elements={max_elements})(anchors, gt.boxes, gt.labels, gt.mask, loc, conf)
assert int((result.cls.state == 1).sum()) > 300
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_peak_memory_is_bounded_by_the_chunk_for_300_objects_at_512():
    """3 images x 300 objects x 32,736 anchors: one image per chunk keeps the peak near 1/3 of the whole batch."""
    per_image_matrix_bytes = 300 * 32736 * 4  # one [1, G, A] float32 matrix, 39 MB
    script = PEAK_SCRIPT.format(root=str(Path(__file__).resolve().parents[1]), max_elements=300 * 32736)
    growth = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert growth < 12 * per_image_matrix_bytes, f"peak grew by {growth / 2**20:.0f} MiB"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_bounds_memory_for_300_objects_at_512():
    anchors = PriorBox(24.0, 512)()
    generator = torch.Generator().manual_seed(7)
    targets = [random_targets(300, 80, generator) for _ in range(32)]
    gt = pad_targets(targets, 80)
    loc = torch.randn(32, anchors.shape[0], 4, generator=generator)
    conf = torch.randn(32, anchors.shape[0], 80, generator=generator)
    assigner = MutualGuidanceAssigner(max_elements=default_max_elements(torch.device("cuda")))
    cpu = assigner(anchors, gt.boxes[:2], gt.labels[:2], gt.mask[:2], loc[:2], conf[:2])
    device = torch.device("cuda")
    inputs = [t.to(device) for t in (anchors, gt.boxes, gt.labels, gt.mask, loc, conf)]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    cuda = assigner(*inputs)
    torch.cuda.synchronize()
    growth = torch.cuda.max_memory_allocated() - start
    chunk_images = image_chunks(32, 300 * anchors.shape[0], assigner.max_elements)[0].stop
    assert growth < 12 * chunk_images * 300 * anchors.shape[0] * 4, f"peak grew by {growth / 2**20:.0f} MiB"
    for name in ("cls", "reg"):
        assert torch.equal(getattr(cuda, name).state[:2].cpu(), getattr(cpu, name).state)


def test_thresholds_are_inclusive_at_exactly_0_5_and_0_4():
    """One object [0, 0, 0.5, 0.5] (area 0.25) and four anchors with IoU 1, 0.5, 0.4 and 0 with it, all exact in
    float32: [0, 0, 1, 0.5] covers it (0.25 / 0.5), [0, 0, 0.5, 0.2] lies inside it (0.1 / 0.25). Facts §4: positive
    if IoU >= 0.5, ignored if 0.4 <= IoU < 0.5, and the MG quotas count A' >= 0.5 and A' >= 0.4."""
    anchors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.5, 0.25, 1.0, 0.5], [0.25, 0.1, 0.5, 0.2],
                            [0.95, 0.95, 0.1, 0.1]])
    targets = [torch.tensor([[0.0, 0.0, 0.5, 0.5, 7.0]])]
    gt = pad_targets(targets, NUM_CLASSES)
    assert anchor_iou(gt.boxes, corner_form(anchors)).tolist() == [[[1.0, 0.5, pytest.approx(0.4, abs=1e-7), 0.0]]]
    iou = IoUAssigner()(anchors, gt.boxes, gt.mask)
    assert iou.state.tolist() == [[POSITIVE, POSITIVE, IGNORE, NEGATIVE]]
    quotas = MutualGuidanceAssigner().quotas(anchors, gt.boxes, gt.mask)
    assert quotas.num_positive.tolist() == [[2]] and quotas.num_ignored_or_positive.tolist() == [[3]]
    # predictions at their initial values (loc 0, p = 0.01): MG picks the same anchors
    loc = torch.zeros(1, 4, 4)
    conf = torch.full((1, 4, NUM_CLASSES), -math.log(99.0))
    mg = MutualGuidanceAssigner()(anchors, gt.boxes, gt.labels, gt.mask, loc, conf)
    assert mg.cls.state.tolist() == [[POSITIVE, POSITIVE, IGNORE, NEGATIVE]]
    assert mg.reg.state.tolist() == [[POSITIVE, POSITIVE, NEGATIVE, NEGATIVE]]


def test_tied_predicted_ious_at_the_positive_quota_select_exactly_the_ignore_quota():
    """Every prediction shifted 3 anchor widths right of its anchor (conf at the prior): many decoded boxes meet the
    whole-image object with the same IoU, ties that straddle rank K_pos = 16. The assigner ranks the row once, so
    K_ign = 24 anchors are selected, the first 16 positive; the reference ranked it twice (topk(24), then
    topk(16)), and the second topk chose tied anchors outside the first, giving 16 positives and 10 ignored."""
    anchors = PriorBox(24.0, 512)()
    targets = [torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]])]
    gt = pad_targets(targets, NUM_CLASSES)
    loc = torch.zeros(1, anchors.shape[0], 4)
    loc[..., 0] = 30.0
    conf = torch.full((1, anchors.shape[0], NUM_CLASSES), -math.log(99.0))
    assigner = MutualGuidanceAssigner()
    quotas = assigner.quotas(anchors, gt.boxes, gt.mask)
    assert (quotas.num_positive.item(), quotas.num_ignored_or_positive.item()) == (16, 24)
    mg = assigner(anchors, gt.boxes, gt.labels, gt.mask, loc, conf)
    assert (int((mg.cls.state == POSITIVE).sum()), int((mg.cls.state == IGNORE).sum())) == (16, 8)
    reference_cls, _ = reference_mg_assign(anchors, gt.boxes[0], gt.labels[0], loc[0], conf[0])
    assert_same_assignment(mg.cls, 0, reference_cls)
