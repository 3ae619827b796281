"""Focal and balanced-L1 losses against their formulas, and MultiBoxLoss against the per-image reference."""
import math
import shutil

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou
from torchvision.ops import sigmoid_focal_loss as dense_sigmoid_focal_loss

from tests.mg_reference import (
    IGNORE,
    NEGATIVE,
    POSITIVE,
    plain_decode,
    random_targets,
    reference_iou_assign,
    reference_mg_assign,
    reference_multibox_loss,
    to_corners,
)
from utils.box import PriorBox
from utils.environment import compiled_criterion_problem
from utils.loss import BACKGROUND, MultiBoxLoss, balanced_l1_loss, sigmoid_focal_loss
from utils.loss.stats import stats_from_sums, summable_stats

NUM_CLASSES = 20
ANCHORS_320 = PriorBox(24.0, 320)()


def focal_by_formula(x: float, t: int, alpha: float = 0.25, gamma: float = 1.0) -> float:
    p = 1 / (1 + math.exp(-x))
    bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    pt_bar = (1 - p) * t + p * (1 - t)
    return bce * (alpha * t + (1 - alpha) * (1 - t)) * pt_bar**gamma


def test_focal_loss_at_hand_picked_points():
    # one anchor per row, 2 classes; label 1 means column 1 has target 1 and column 0 target 0
    logits = torch.tensor([[0.0, 0.0], [2.0, -3.0], [-1.5, 4.0]])
    labels = torch.tensor([1, BACKGROUND, 0])
    expected = [
        focal_by_formula(0.0, 0) + focal_by_formula(0.0, 1),
        focal_by_formula(2.0, 0) + focal_by_formula(-3.0, 0),
        focal_by_formula(-1.5, 1) + focal_by_formula(4.0, 0),
    ]
    assert focal_by_formula(0.0, 1) == pytest.approx(0.25 * 0.5 * math.log(2))
    keep = torch.ones(3, dtype=torch.bool)
    total = sigmoid_focal_loss(logits, labels, keep)
    assert total.item() == pytest.approx(sum(expected), rel=1e-6)
    keep[1] = False  # an ignored anchor takes no part
    assert sigmoid_focal_loss(logits, labels, keep).item() == pytest.approx(expected[0] + expected[2], rel=1e-6)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 0.5, 0.25])
def test_focal_loss_equals_dense_torchvision_form(gamma):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, 7, generator=generator) * 3
    labels = torch.randint(-1, 7, (3, 50), generator=generator)
    keep = torch.rand(3, 50, generator=generator) > 0.2
    one_hot = torch.zeros(3, 50, 7)
    positive = labels >= 0
    one_hot[positive, labels[positive]] = 1.0
    dense = dense_sigmoid_focal_loss(logits[keep], one_hot[keep], alpha=0.25, gamma=gamma, reduction="sum")
    torch.testing.assert_close(sigmoid_focal_loss(logits, labels, keep, 0.25, gamma), dense)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 0.5, 0.25])
def test_focal_loss_of_infinite_logits_whose_terms_are_finite_is_their_limit_with_zero_gradient(gamma):
    """An fp16 head can output +-inf. Where the loss term is finite in the limit (any logit of an ignored anchor,
    -inf with target 0, +inf with target 1) the loss is that limit (0, or the anchor left out) and the gradient 0;
    computing the masked or saturated terms and zeroing them afterwards gave 0 * inf = NaN gradients (and
    inf - inf = NaN as the loss of a positive anchor with +inf at its own class). With gamma < 1 the derivative of
    p ** gamma at p = 0 is infinite: the saturated terms' gradients were inf * 0 = NaN there too."""
    logits = torch.tensor([[0.5, -1.0, 2.0], [math.inf, -math.inf, 1.0], [-math.inf, 0.3, -0.7],
                           [1.5, -math.inf, 0.2], [-0.4, math.inf, -math.inf], [0.9, -2.0, -1.2]])
    labels = torch.tensor([2, 0, BACKGROUND, BACKGROUND, 1, BACKGROUND])
    keep = torch.tensor([True, False, True, True, True, True])
    limit = logits.nan_to_num(posinf=1e4, neginf=-1e4).double()  # the terms of +-1e4 are 0 in float64 too
    loss = sigmoid_focal_loss(logits.requires_grad_(True), labels, keep, gamma=gamma)
    expected = sigmoid_focal_loss(limit.requires_grad_(True), labels, keep, gamma=gamma)
    loss.backward()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[~logits.isfinite()] == 0) and torch.all(logits.grad[1] == 0)
    torch.testing.assert_close(logits.grad, limit.grad.float(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gamma", [0.5, 0.1])
def test_focal_gradient_with_gamma_below_1_is_finite_where_the_sigmoid_underflows(gamma):
    """sigmoid(x) is 0 in float32 below x = -104 (a denormal below -87): p ** gamma, whose derivative
    gamma * p ** (gamma - 1) is infinite at p = 0 (or overflows near it), gave NaN (or inf) gradients to logits
    whose terms' exact derivative is about exp((1 + gamma) x), 0 in float32. The loss values stay p ** gamma's."""
    logits = torch.tensor([[-120.0, -95.0, 2.0, -3.0], [-90.0, 150.0, 0.5, -200.0]], requires_grad=True)
    labels = torch.tensor([2, 1])
    loss = sigmoid_focal_loss(logits, labels, torch.ones(2, dtype=torch.bool), gamma=gamma)
    loss.backward()
    target = torch.zeros(2, 4)
    target[0, 2] = target[1, 1] = 1.0
    dense = dense_sigmoid_focal_loss(logits.detach(), target, alpha=0.25, gamma=gamma, reduction="sum")
    assert loss.item() == pytest.approx(dense.item(), rel=1e-6)
    # the reference in float64, p ** gamma written exp(gamma log p), whose derivative is finite everywhere
    reference = logits.detach().double().requires_grad_(True)
    signed = torch.where(target.bool(), -reference, reference)  # a target-1 term is the target-0 term of -x
    terms = torch.nn.functional.softplus(signed) * torch.exp(gamma * torch.nn.functional.logsigmoid(signed))
    (torch.where(target.bool(), 0.25, 0.75) * terms).sum().backward()
    underflowed = torch.tensor([[True, True, False, False], [True, True, False, True]])
    assert torch.isfinite(logits.grad).all() and torch.all(logits.grad[underflowed] == 0)
    torch.testing.assert_close(logits.grad, reference.grad.float(), rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("logit, label", [(math.inf, BACKGROUND), (math.inf, 0), (-math.inf, 1)])
def test_focal_loss_of_an_infinite_logit_with_an_infinite_term_is_inf(logit, label):
    """+inf with target 0, or -inf with target 1, at a kept anchor: the loss is +inf (never NaN), which the training
    loop's NaN/inf guard turns into NonFiniteLossError (utils/engine.py)."""
    logits = torch.tensor([[0.2, -1.0], [-0.5, 0.7]])
    logits[0, 1] = logit
    loss = sigmoid_focal_loss(logits, torch.tensor([label, 0]), torch.ones(2, dtype=torch.bool))
    assert loss.item() == math.inf


def test_focal_sum_over_a_whole_batch_stays_float32_exact():
    # the background sum of a batch of 32 at 320 (408,000 anchors x 20 classes) against a float64 sum
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(32 * 12750, 20, generator=generator) * 2 - 3
    labels = torch.full((len(logits),), BACKGROUND)
    keep = torch.rand(len(logits), generator=generator) > 0.01
    p = torch.sigmoid(logits.double())
    expected = (0.75 * torch.nn.functional.softplus(logits.double()) * p)[keep].sum()
    assert sigmoid_focal_loss(logits, labels, keep).double().item() == pytest.approx(expected.item(), rel=1e-6)


def test_balanced_l1_of_a_huge_finite_difference_has_the_linear_gradient():
    """From |d| of about 2e36 on, the small-d branch, computed everywhere and then dropped by torch.where, overflowed
    (ln(b d / beta + 1) = inf) and its zeroed gradient became 0 * inf = NaN behind a finite loss. The gradient of the
    linear branch is +-gamma = +-1.5 wherever d >= beta."""
    pred = torch.tensor([1e37, -3e37, 1e38, 0.05, 0.5], requires_grad=True)
    loss = balanced_l1_loss(pred, torch.zeros(5))
    loss.sum().backward()
    b = math.exp(3) - 1
    assert loss[:3].tolist() == pytest.approx([1.5 * abs(d) + 1.5 / b - 0.5 * 0.11 for d in (1e37, -3e37, 1e38)])
    assert pred.grad[[0, 1, 2, 4]].tolist() == [1.5, -1.5, 1.5, 1.5]
    small = 0.5 * math.log(b * 0.05 / 0.11 + 1) + 0.5 * (b * 0.05 + 1) / (b * 0.05 + 0.11) - 0.5  # d/dd, d < beta
    assert pred.grad[3].item() == pytest.approx(small, rel=1e-6)


def test_balanced_l1_at_hand_picked_points():
    alpha, gamma, beta = 0.5, 1.5, 0.11
    b = math.exp(3) - 1  # 19.0855, from alpha * log(b + 1) = gamma

    def inner(d):  # |d| < beta
        return alpha / b * (b * d + 1) * math.log(b * d / beta + 1) - alpha * d

    def outer(d):  # |d| >= beta
        return gamma * d + gamma / b - alpha * beta

    # either side of beta (0.10, 0.12), and the two branches meet at beta (continuity, by the choice of b)
    diffs = torch.tensor([0.0, 0.05, -0.05, 0.10, 0.12, 1.0, -2.5])
    expected = torch.tensor([0.0, inner(0.05), inner(0.05), inner(0.10), outer(0.12), outer(1.0), outer(2.5)])
    torch.testing.assert_close(balanced_l1_loss(diffs, torch.zeros(7)), expected)
    torch.testing.assert_close(balanced_l1_loss(diffs + 3.0, torch.full((7,), 3.0)), expected, atol=1e-5, rtol=1e-5)
    assert inner(beta) == pytest.approx(outer(beta), rel=1e-12)


@pytest.mark.parametrize("beta", [0.0, -0.11])
def test_balanced_l1_refuses_a_beta_that_is_not_positive(beta):
    # at beta = 0 the d < beta branch divides by 0: NaN that torch.where drops from the loss but not from its gradient
    with pytest.raises(ValueError, match=f"beta={beta} must be > 0"):
        balanced_l1_loss(torch.zeros(3), torch.ones(3), beta=beta)


def random_predictions(counts, seed, loc_scale=0.7):
    generator = torch.Generator().manual_seed(seed)
    targets = [random_targets(n, NUM_CLASSES, generator) for n in counts]
    loc = torch.randn(len(counts), ANCHORS_320.shape[0], 4, generator=generator) * loc_scale
    conf = torch.randn(len(counts), ANCHORS_320.shape[0], NUM_CLASSES, generator=generator) * 2 - 3
    return targets, loc, conf


@pytest.mark.parametrize("mutual_guide", [False, True])
def test_multibox_loss_matches_per_image_reference(mutual_guide):
    targets, loc, conf = random_predictions([0, 60, 3, 1, 17], seed=11)
    loss_l, loss_c = MultiBoxLoss(NUM_CLASSES, mutual_guide)((loc, conf), ANCHORS_320, targets)
    reference_l, reference_c = reference_multibox_loss(loc, conf, ANCHORS_320, targets, mutual_guide)
    assert loss_l.dtype == loss_c.dtype == torch.float32 and loss_l.dim() == loss_c.dim() == 0
    torch.testing.assert_close(loss_l, reference_l, rtol=1e-5, atol=0)
    # float32 sums of ~10^6 focal terms, in another order than the reference's (which also varies with threads)
    torch.testing.assert_close(loss_c, reference_c, rtol=5e-5, atol=0)


@pytest.mark.parametrize("mutual_guide", [False, True])
def test_a_single_class_detector_matches_the_per_image_reference(mutual_guide):
    """C = 1 (e.g. ``--classes person``): conf is [B, A, 1] and every object is class 0."""
    generator = torch.Generator().manual_seed(18)
    targets = [random_targets(n, 1, generator) for n in (3, 0, 5)]
    loc = torch.randn(3, ANCHORS_320.shape[0], 4, generator=generator) * 0.7
    conf = torch.randn(3, ANCHORS_320.shape[0], 1, generator=generator) * 2 - 3
    loss_l, loss_c = MultiBoxLoss(1, mutual_guide)((loc, conf), ANCHORS_320, targets)
    reference_l, reference_c = reference_multibox_loss(loc, conf, ANCHORS_320, targets, mutual_guide)
    torch.testing.assert_close(loss_l, reference_l, rtol=1e-5, atol=0)
    torch.testing.assert_close(loss_c, reference_c, rtol=5e-5, atol=0)
    with pytest.raises(ValueError, match="num_classes=0 must be an int >= 1"):
        MultiBoxLoss(0)


@pytest.mark.parametrize("offsets", [(0.0, 0.0, 500.0, -500.0), (math.inf,) * 4], ids=["inf_x_0_box", "nan_corners"])
def test_an_extreme_offset_changes_no_other_anchor_assignment(offsets):
    """One anchor's offsets overflow: (500, -500) for the size decodes to a box of width inf and height 0, four inf
    offsets (an fp16 head output that overflowed) to NaN corners (inf - inf). Either box meets no object, so Mutual
    Guidance assigns every anchor as before (a NaN IoU would take a positive slot of each object in the top-k and
    block their forcing), as the per-image reference does, and the losses equal the clean ones and the reference's."""
    targets, loc, conf = random_predictions([2, 5], seed=13)
    extreme = loc.clone()
    extreme[:, -1] = torch.tensor(offsets)
    loss_fn = MultiBoxLoss(NUM_CLASSES, mutual_guide=True)
    clean_l, clean_c, clean_stats = loss_fn((loc, conf), ANCHORS_320, targets, with_stats=True)
    loss_l, loss_c, stats = loss_fn((extreme, conf), ANCHORS_320, targets, with_stats=True)
    assert stats["num_pos_cls"] == clean_stats["num_pos_cls"] and stats["num_pos_reg"] == clean_stats["num_pos_reg"]
    assert torch.equal(loss_l, clean_l) and torch.equal(loss_c, clean_c)
    reference_l, reference_c = reference_multibox_loss(extreme, conf, ANCHORS_320, targets, mutual_guide=True)
    torch.testing.assert_close(loss_l, reference_l, rtol=1e-5, atol=0)
    torch.testing.assert_close(loss_c, reference_c, rtol=5e-5, atol=0)


def test_gradients_match_reference_and_reach_only_regression_positives():
    targets, loc, conf = random_predictions([4, 0, 9], seed=12)
    loc.requires_grad_(True)
    conf.requires_grad_(True)
    loss_l, loss_c = MultiBoxLoss(NUM_CLASSES, mutual_guide=True)((loc, conf), ANCHORS_320, targets)
    (loss_l + loss_c).backward()
    loc_ref = loc.detach().clone().requires_grad_(True)
    conf_ref = conf.detach().clone().requires_grad_(True)
    sum(reference_multibox_loss(loc_ref, conf_ref, ANCHORS_320, targets, mutual_guide=True)).backward()
    torch.testing.assert_close(loc.grad, loc_ref.grad, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(conf.grad, conf_ref.grad, rtol=1e-4, atol=1e-9)
    assert torch.all(loc.grad[1] == 0)  # the image without objects has no regression positive


@pytest.mark.parametrize("mutual_guide", [False, True])
def test_a_wild_offset_on_an_anchor_that_is_not_a_regression_positive_gets_no_gradient(mutual_guide):
    """The box loss covers regression positives only, also in its gradient: an anchor whose offsets are inf (an fp16
    overflow) or 1e37 but which regresses nothing gets gradient 0, as in the reference (and the authors' code), which
    index the positives. Masking the loss after computing it gave 0 * inf = NaN there, and NaN in every weight of the
    head behind a finite loss."""
    targets, loc, conf = random_predictions([3, 6], seed=20)
    loc[0, -1] = math.inf
    loc[1, -1] = 1e37
    loc.requires_grad_(True)
    loss_l, loss_c = MultiBoxLoss(NUM_CLASSES, mutual_guide)((loc, conf), ANCHORS_320, targets)
    loss_l.backward()
    loc_ref = loc.detach().clone().requires_grad_(True)
    reference_l, reference_c = reference_multibox_loss(loc_ref, conf, ANCHORS_320, targets, mutual_guide)
    reference_l.backward()
    assert torch.isfinite(loss_l) and torch.isfinite(loss_c)
    torch.testing.assert_close(loss_l, reference_l, rtol=1e-5, atol=0)
    assert torch.equal(loc.grad[:, -1], torch.zeros(2, 4))
    torch.testing.assert_close(loc.grad, loc_ref.grad, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("mutual_guide", [False, True])
def test_infinite_logits_whose_focal_terms_are_finite_give_the_reference_loss_and_zero_gradient(mutual_guide):
    """fp16 logits that overflowed to +-inf at ignored anchors (any class), at negatives (-inf) and at positives
    (+inf at the own class, -inf elsewhere): loss_c is the reference's for +-1e4 there (whose terms are 0), and
    the gradient is finite, 0 at the infinite logits. NaN gradients there made every weight of the head NaN behind
    a finite loss."""
    targets, loc, conf = random_predictions([6, 11], seed=23)
    limit = conf.clone()
    generator = torch.Generator().manual_seed(24)
    for b, target in enumerate(targets):
        boxes, labels = target[:, :4], target[:, 4].long()
        if mutual_guide:
            (gt_index, state), _ = reference_mg_assign(ANCHORS_320, boxes, labels, loc[b], conf[b])
        else:
            gt_index, state = reference_iou_assign(ANCHORS_320, boxes)
        ignored, positive = torch.nonzero(state == IGNORE)[:, 0], torch.nonzero(state == POSITIVE)[:, 0]
        negative = torch.nonzero(state == NEGATIVE)[:, 0][:500]
        assert len(ignored) > 0 and len(positive) > 0
        conf[b, ignored, 0::2], conf[b, ignored, 1::2] = math.inf, -math.inf
        columns = torch.randint(0, NUM_CLASSES, (len(negative),), generator=generator)
        conf[b, negative, columns] = limit[b, negative, columns] = -math.inf
        own = labels[gt_index[positive]]
        conf[b, positive, own] = limit[b, positive, own] = math.inf
        conf[b, positive, (own + 1) % NUM_CLASSES] = limit[b, positive, (own + 1) % NUM_CLASSES] = -math.inf
    limit = limit.nan_to_num(posinf=1e4, neginf=-1e4).requires_grad_(True)
    conf.requires_grad_(True)
    _, loss_c = MultiBoxLoss(NUM_CLASSES, mutual_guide)((loc, conf), ANCHORS_320, targets)
    loss_c.backward()
    _, reference_c = reference_multibox_loss(loc, limit, ANCHORS_320, targets, mutual_guide)
    reference_c.backward()
    torch.testing.assert_close(loss_c, reference_c, rtol=5e-5, atol=0)
    assert torch.isfinite(conf.grad).all() and torch.all(conf.grad[~conf.isfinite()] == 0)
    torch.testing.assert_close(conf.grad, limit.grad, rtol=1e-4, atol=1e-9)


def test_batch_without_objects_gives_zero_box_loss_and_finite_class_loss():
    loc = torch.randn(2, ANCHORS_320.shape[0], 4, requires_grad=True)
    conf = torch.randn(2, ANCHORS_320.shape[0], NUM_CLASSES, requires_grad=True)
    targets = [torch.zeros(0, 5), torch.zeros(0, 5)]
    for mutual_guide in (False, True):
        loss_fn = MultiBoxLoss(NUM_CLASSES, mutual_guide)
        loss_l, loss_c, stats = loss_fn((loc, conf), ANCHORS_320, targets, with_stats=True)
        assert loss_l.item() == 0.0
        # every anchor is a negative and the count of positives is clamped to 1: the plain sum of background terms
        p = torch.sigmoid(conf.detach())
        expected_c = (0.75 * torch.nn.functional.softplus(conf.detach()) * p).sum()
        torch.testing.assert_close(loss_c, expected_c, rtol=1e-5, atol=0)
        (loss_l + loss_c).backward()
        assert torch.isfinite(conf.grad).all() and torch.isfinite(loc.grad).all()
        assert all(torch.isfinite(v) for v in stats.values()) and stats["num_pos_cls"].item() == 0


@pytest.mark.parametrize("mutual_guide", [False, True])
def test_stats_match_reference_assignment(mutual_guide):
    """The logged statistics against the reference assignment, for both modes (IoU: one assignment for both heads,
    so disagree_with_iou is 0)."""
    targets, loc, conf = random_predictions([6, 0, 2], seed=13)
    loss_fn = MultiBoxLoss(NUM_CLASSES, mutual_guide=mutual_guide)
    _, _, stats = loss_fn((loc, conf), ANCHORS_320, targets, with_stats=True)
    expected = {"num_objects": 8.0, "num_pos_cls": 0, "num_pos_reg": 0}
    ious = {"cls_pos_anchor_iou": [], "cls_pos_pred_iou": [], "reg_pos_anchor_iou": [], "reg_pos_pred_iou": []}
    disagree = 0
    for b, target in enumerate(targets):
        boxes, labels = target[:, :4], target[:, 4].long()
        iou_index, iou_state = reference_iou_assign(ANCHORS_320, boxes)
        if mutual_guide:
            cls, reg = reference_mg_assign(ANCHORS_320, boxes, labels, loc[b], conf[b])
        else:
            cls = reg = iou_index, iou_state
        (cls_index, cls_state), (reg_index, reg_state) = cls, reg
        for name, index, state in (("cls", cls_index, cls_state), ("reg", reg_index, reg_state)):
            positive = state == POSITIVE
            expected[f"num_pos_{name}"] += int(positive.sum())
            matched = boxes[index[positive]]
            anchors = to_corners(ANCHORS_320[positive])
            predictions = plain_decode(loc[b][positive], ANCHORS_320[positive])
            ious[f"{name}_pos_anchor_iou"] += [box_iou(m[None], a[None]).item() for m, a in zip(matched, anchors)]
            ious[f"{name}_pos_pred_iou"] += [box_iou(m[None], p[None]).item() for m, p in zip(matched, predictions)]
        disagree += int(((cls_state == POSITIVE) & (iou_state != POSITIVE)).sum())
    for name, value in expected.items():
        assert stats[name].item() == value
    for name, values in ious.items():
        assert stats[name].item() == pytest.approx(sum(values) / len(values), rel=1e-5)
    assert stats["pos_per_object"].item() == pytest.approx(expected["num_pos_cls"] / 8)
    assert stats["num_images"].item() == 3  # positives per image: the empty image counts
    assert stats["cls_pos_per_image"].item() == pytest.approx(expected["num_pos_cls"] / 3)
    assert stats["reg_pos_per_image"].item() == pytest.approx(expected["num_pos_reg"] / 3)
    assert stats["disagree_with_iou"].item() == pytest.approx(disagree / expected["num_pos_cls"])
    if mutual_guide:
        assert 0 < stats["disagree_with_iou"].item() < 1
    else:
        assert stats["disagree_with_iou"].item() == 0 and expected["num_pos_cls"] == expected["num_pos_reg"]


@pytest.mark.parametrize("mutual_guide", [False, True])
def test_stats_of_processes_combine_into_the_stats_of_their_whole_batch(mutual_guide):
    """What torchrun logs (each process's stats made summable, summed, turned back) is what one process holding every
    image would log: counts add up, ratios are global ratios (not means of the processes' ratios). The second
    "process" has no object: its ratios are 0 over no positive and must weigh nothing."""
    targets, loc, conf = random_predictions([6, 1, 9, 0, 0], seed=14)
    loss_fn = MultiBoxLoss(NUM_CLASSES, mutual_guide)
    whole = loss_fn((loc, conf), ANCHORS_320, targets, with_stats=True)[2]
    shares = [slice(0, 1), slice(3, 5), slice(1, 3)]
    per_process = [loss_fn((loc[s], conf[s]), ANCHORS_320, targets[s], with_stats=True)[2] for s in shares]
    assert per_process[1]["num_pos_cls"].item() == 0
    assert per_process[0]["pos_per_object"].item() != pytest.approx(whole["pos_per_object"].item())
    combined = stats_from_sums(list(whole), sum(summable_stats(stats) for stats in per_process))
    assert list(combined) == list(whole)
    for name, value in whole.items():
        assert combined[name] == pytest.approx(value.item(), rel=1e-6, abs=1e-12), name


def test_stats_over_one_positive_and_over_none():
    """Image 0 holds one 0.02 x 0.02 object: no anchor reaches IoU 0.4 with it, so its best anchor (forced) is the
    only positive, and the mean IoUs are that anchor's (and its prediction's) IoU with the object. Image 1 holds no
    object: its ratios are 0, also after the torchrun round trip (summable_stats, stats_from_sums) with no positive."""
    box = torch.tensor([0.31, 0.52, 0.33, 0.54])
    targets = [torch.cat([box, torch.tensor([5.0])]).unsqueeze(0), torch.zeros(0, 5)]
    generator = torch.Generator().manual_seed(19)
    loc = torch.randn(2, ANCHORS_320.shape[0], 4, generator=generator) * 0.7
    conf = torch.randn(2, ANCHORS_320.shape[0], NUM_CLASSES, generator=generator)
    loss_fn = MultiBoxLoss(NUM_CLASSES)
    _, _, stats = loss_fn((loc[:1], conf[:1]), ANCHORS_320, targets[:1], with_stats=True)
    _, state = reference_iou_assign(ANCHORS_320, box[None])
    (anchor,) = torch.nonzero(state == POSITIVE).flatten().tolist()
    anchor_iou = box_iou(box[None], to_corners(ANCHORS_320[anchor][None])).item()
    pred_iou = box_iou(box[None], plain_decode(loc[0, anchor][None], ANCHORS_320[anchor][None])).item()
    assert 0 < anchor_iou < 0.4
    assert stats["num_pos_cls"].item() == stats["num_pos_reg"].item() == 1 and stats["pos_per_object"].item() == 1
    for name in ("cls", "reg"):
        assert stats[f"{name}_pos_anchor_iou"].item() == pytest.approx(anchor_iou, rel=1e-5)
        assert stats[f"{name}_pos_pred_iou"].item() == pytest.approx(pred_iou, rel=1e-5, abs=1e-7)
    combined = stats_from_sums(list(stats), summable_stats(stats))
    assert combined == pytest.approx({name: value.item() for name, value in stats.items()}, rel=1e-6)
    _, _, empty = loss_fn((loc[1:], conf[1:]), ANCHORS_320, targets[1:], with_stats=True)
    combined = stats_from_sums(list(empty), summable_stats(empty))
    assert empty.pop("num_images").item() == combined.pop("num_images") == 1  # positives per image: 0 of 1 image
    assert all(value.item() == 0 for value in empty.values()) and all(value == 0 for value in combined.values())


def test_mutual_guide_can_be_switched_on_during_a_run():
    targets, loc, conf = random_predictions([5, 2], seed=14)
    loss_fn = MultiBoxLoss(NUM_CLASSES)
    baseline = loss_fn((loc, conf), ANCHORS_320, targets)
    loss_fn.mutual_guide = True
    guided = loss_fn((loc, conf), ANCHORS_320, targets)
    expected_l, expected_c = reference_multibox_loss(loc, conf, ANCHORS_320, targets, True)
    torch.testing.assert_close(guided[0], expected_l)
    torch.testing.assert_close(guided[1], expected_c)
    assert guided[0].item() != baseline[0].item()


def test_half_precision_predictions_are_assigned_and_scored_in_float32():
    targets, loc, conf = random_predictions([3, 8], seed=15)
    loc16, conf16 = loc.bfloat16(), conf.bfloat16()
    loss_fn = MultiBoxLoss(NUM_CLASSES, mutual_guide=True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss_l, loss_c = loss_fn((loc16, conf16), ANCHORS_320, targets)
    assert loss_l.dtype == loss_c.dtype == torch.float32
    expected_l, expected_c = loss_fn((loc16.float(), conf16.float()), ANCHORS_320, targets)
    assert loss_l.item() == expected_l.item() and loss_c.item() == expected_c.item()


def test_bad_inputs_raise_clear_errors():
    loss_fn = MultiBoxLoss(NUM_CLASSES)
    loc = torch.zeros(1, ANCHORS_320.shape[0], 4)
    conf = torch.zeros(1, ANCHORS_320.shape[0], NUM_CLASSES)
    good = [torch.tensor([[0.1, 0.1, 0.5, 0.5, 3.0]])]
    with pytest.raises(ValueError, match="foreground indices 0..19"):
        loss_fn((loc, conf), ANCHORS_320, [torch.tensor([[0.1, 0.1, 0.5, 0.5, 20.0]])])
    with pytest.raises(ValueError, match="class index -1.0 but"):  # one bad object among good ones
        loss_fn((loc, conf), ANCHORS_320, [torch.tensor([[0.1, 0.1, 0.5, 0.5, 3.0], [0.2, 0.2, 0.6, 0.6, -1.0]])])
    with pytest.raises(ValueError, match=r"loc has shape \(1, 12750, 5\); expected \[B, A, 4\]"):
        loss_fn((torch.zeros(1, ANCHORS_320.shape[0], 5), conf), ANCHORS_320, good)
    with pytest.raises(ValueError, match=r"targets\[0\] has shape \(1, 4\)"):
        loss_fn((loc, conf), ANCHORS_320, [torch.zeros(1, 4)])
    with pytest.raises(ValueError, match="build PriorBox with the model's input size"):
        loss_fn((loc, conf), PriorBox(24.0, 512)(), good)
    two = (torch.zeros(2, ANCHORS_320.shape[0], 4), torch.zeros(2, ANCHORS_320.shape[0], NUM_CLASSES))
    with pytest.raises(ValueError, match=r"targets\[1\] is on meta, targets\[0\] on cpu; give a batch's targets on one "
                                         "device"):  # torch's pad_sequence failed with its own error
        loss_fn(two, ANCHORS_320, good + [good[0].to("meta")])
    with pytest.raises(ValueError, match="num_classes=20"):
        loss_fn((loc, torch.zeros(1, ANCHORS_320.shape[0], 80)), ANCHORS_320, good)
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        loss_fn((loc, conf), ANCHORS_320, good * 2)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_box_coordinate_that_is_not_finite_is_refused(value):
    """A NaN coordinate made every IoU of its image NaN: torch.max then returned NaN for every anchor, which silently
    turned the other objects' 34 positives into 1 (IoU) or 18 (MG) with a finite loss. A non-finite box is refused
    like an out-of-range class, naming the image and the object."""
    loc = torch.zeros(2, ANCHORS_320.shape[0], 4)
    conf = torch.zeros(2, ANCHORS_320.shape[0], NUM_CLASSES)
    bad = torch.tensor([[0.1, 0.1, 0.4, 0.4, 1.0], [0.5, 0.5, 0.9, 0.9, 2.0]])
    bad[1, 1] = value
    for mutual_guide in (False, True):
        with pytest.raises(ValueError, match=r"targets\[1\] row 1 has box .* not all finite"):
            MultiBoxLoss(NUM_CLASSES, mutual_guide)((loc, conf), ANCHORS_320, [torch.zeros(0, 5), bad])


@pytest.mark.parametrize(("box", "message"), [
    ([32.0, 48.0, 160.0, 200.0], r"targets\[1\] row 1 has box \[32.0, 48.0, 160.0, 200.0\] .* outside \[-0.5, 1.5\]"
                                 r".* divide pixel x by the image width"),
    ([0.5, 0.5, 0.3, 0.4], r"targets\[1\] row 1 has box \[0.5, 0.5, 0.3.*, 0.4.*\] with x2 < x1 or y2 < y1"
                           r".* utils.box.corner_form"),
    ([0.2, 0.6, 0.5, 0.3], r"with x2 < x1 or y2 < y1"),
])
def test_a_box_in_pixels_or_centre_size_form_is_refused(box, message):
    """Pixel coordinates and (cx, cy, w, h) boxes were trained on silently: a pixel box overlaps every anchor by
    almost nothing (loss 153 / 445 instead of 1.5 / 15 on a 128 x 128 batch, its objects trained on a forced anchor
    each), and an inside-out box has IoU 0 with every anchor, so its object was left out of the loss."""
    loc = torch.zeros(2, ANCHORS_320.shape[0], 4)
    conf = torch.zeros(2, ANCHORS_320.shape[0], NUM_CLASSES)
    bad = torch.tensor([[0.1, 0.1, 0.4, 0.4, 1.0], [*box, 2.0]])
    for mutual_guide in (False, True):
        with pytest.raises(ValueError, match=message):
            MultiBoxLoss(NUM_CLASSES, mutual_guide)((loc, conf), ANCHORS_320, [torch.zeros(0, 5), bad])


def test_boxes_at_the_image_border_a_little_outside_it_or_without_area_are_accepted():
    """The check above leaves valid targets alone: a box touching the border, one a little outside the image (a
    user's own loader that does not clip), a box without area (it forces no anchor, facts §11.7)."""
    loc = torch.zeros(1, ANCHORS_320.shape[0], 4)
    conf = torch.zeros(1, ANCHORS_320.shape[0], NUM_CLASSES)
    targets = [torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0], [-0.1, 0.2, 0.3, 1.1, 1.0], [0.5, 0.5, 0.5, 0.7, 2.0]])]
    loss_l, loss_c = MultiBoxLoss(NUM_CLASSES)((loc, conf), ANCHORS_320, targets)
    assert torch.isfinite(loss_l) and torch.isfinite(loss_c)


def compiled_and_eager_losses(device: torch.device) -> list[tuple[tuple, tuple]]:
    """Losses of ``MultiBoxLoss(compile=True)`` and of the eager criterion, both modes, on batches whose object
    count, batch size and largest quota all change (small anchors and 3 classes keep the compilation short)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    anchors = PriorBox(24.0, 128)().to(device)
    generator = torch.Generator().manual_seed(21)
    compiled, eager = MultiBoxLoss(3, compile=True), MultiBoxLoss(3)
    results = []
    for mutual_guide, with_stats, counts in [
        (True, False, [4, 0, 6, 1]),
        (True, False, [9, 2, 0, 5, 7]),
        (True, False, [13, 1, 8, 0]),  # a new object count, batch size and quota: no new graph
        (True, True, [5, 11, 0, 2]),
        (False, False, [6, 0, 3, 2]),
    ]:
        targets = [random_targets(n, 3, generator) for n in counts]
        loc = (torch.randn(len(counts), anchors.shape[0], 4, generator=generator) * 0.7).to(device)
        conf = (torch.randn(len(counts), anchors.shape[0], 3, generator=generator) * 2 - 3).to(device)
        compiled.mutual_guide = eager.mutual_guide = mutual_guide
        graphs_before = counters["stats"]["unique_graphs"]
        results.append((
            compiled((loc, conf), anchors, targets, with_stats=with_stats),
            eager((loc, conf), anchors, targets, with_stats=with_stats),
        ))
        if counts == [13, 1, 8, 0]:
            assert counters["stats"]["unique_graphs"] == graphs_before, "a new object count recompiled"
    return results


@pytest.mark.parametrize("device", [
    pytest.param("cpu", marks=pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                                                 reason="torch.compile on a CPU needs a C++ compiler")),
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
])
@pytest.mark.skipif(compiled_criterion_problem(torch.__version__) is not None,
                    reason=f"torch {torch.__version__} miscompiles the criterion (refused: the next test)")
def test_compiled_criterion_gives_the_eager_losses_and_stats(device):
    for compiled, eager in compiled_and_eager_losses(torch.device(device)):
        torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compiled[1], eager[1], rtol=1e-5, atol=1e-6)
        if len(eager) == 3:
            assert compiled[2].keys() == eager[2].keys()
            for name in eager[2]:
                torch.testing.assert_close(compiled[2][name], eager[2][name], rtol=1e-5, atol=1e-6)


def test_a_torch_that_miscompiles_the_criterion_refuses_to_compile_it(monkeypatch):
    """On the CPU torch 2.9.1 compiled the IoU-assignment criterion into wrong losses (loss_c 36.13 against the eager
    37.82 on the previous test's last batch) and 2.5.1 failed to build it: MultiBoxLoss(compile=True) says so."""
    monkeypatch.setattr(torch, "__version__", "2.9.1+cu128")
    with pytest.raises(RuntimeError, match=r"^MultiBoxLoss\(compile=True\): torch 2\.9\.1\+cu128 miscompiles the "
                                           r"criterion .* needs torch 2\.14 or newer"):
        MultiBoxLoss(3, compile=True)
    assert not MultiBoxLoss(3).compiled  # the eager criterion is unaffected
    monkeypatch.setattr(torch, "__version__", "2.14.1+cu130")
    assert MultiBoxLoss(3, compile=True).compiled


@pytest.mark.parametrize("version", ["2.7.1", "2.10.0", "2.13.0+cu126"])
def test_a_torch_not_tried_with_the_compiled_criterion_is_not_said_to_miscompile_it(version):
    """torch 2.7 and 2.10-2.13 were never run with --compile_loss: the refusal said each 'miscompiles the criterion',
    a claim made of 2.5-2.6 and 2.8-2.9 alone. It says that torch was not checked, and what the failing ones did."""
    problem = compiled_criterion_problem(version)
    assert problem.startswith(f"torch {version} was not checked with the compiled criterion (the oldest checked to "
                              "give the eager losses is 2.14; on the CPU 2.5-2.6 failed to build its kernel")
    assert "miscompiles" not in problem
    assert compiled_criterion_problem("2.9.1").startswith("torch 2.9.1 miscompiles the criterion (torch 2.5-2.6")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mutual_guide", [False, True])
@pytest.mark.parametrize("targets_on", ["cpu", "cuda"])  # the training loop hands over host targets
def test_cuda_gives_the_cpu_losses(mutual_guide, targets_on):
    targets, loc, conf = random_predictions([0, 60, 3, 17], seed=16)
    loss_fn = MultiBoxLoss(NUM_CLASSES, mutual_guide)
    cpu = loss_fn((loc, conf), ANCHORS_320, targets, with_stats=True)
    device = torch.device("cuda")
    cuda_targets = [t.to(targets_on) for t in targets]
    cuda = loss_fn((loc.to(device), conf.to(device)), ANCHORS_320.to(device), cuda_targets, with_stats=True)
    torch.testing.assert_close(cuda[0].cpu(), cpu[0], rtol=1e-4, atol=0)
    torch.testing.assert_close(cuda[1].cpu(), cpu[1], rtol=1e-4, atol=0)
    assert cuda[2]["num_pos_cls"].item() == cpu[2]["num_pos_cls"].item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mutual_guide, expected_syncs", [(False, 0), (True, 1)])
def test_cuda_loss_on_host_targets_waits_for_the_gpu_only_for_the_mg_quota(mutual_guide, expected_syncs):
    # Host targets travel in one pinned, non-blocking copy; MG reads its largest quota once (topk needs an int).
    from benchmarks.gpu_suite import host_sync_sites

    targets, loc, conf = random_predictions([0, 60, 3, 17], seed=17)
    device = torch.device("cuda")
    loss_fn = MultiBoxLoss(NUM_CLASSES, mutual_guide)
    loc, conf, anchors = loc.to(device), conf.to(device), ANCHORS_320.to(device)
    loss_fn((loc, conf), anchors, targets)  # warm-up: the pinned-memory pool and kernels
    sites = host_sync_sites(lambda: loss_fn((loc, conf), anchors, targets), device)
    assert sum(sites.values()) == expected_syncs, sites


def test_the_fused_focal_term_of_the_bound_benchmark_equals_the_loss_formula():
    # benchmarks/assignment_loss.py --focal_bound times this one-exp form; it must be the loss's target-0 term
    from benchmarks.assignment_loss import eager_focal_term_sum, focal_term_sum

    logits = torch.cat([torch.linspace(-30, 30, 601), torch.randn(2000) * 4]).double()
    expected = sum(math.log1p(math.exp(x)) / (1 + math.exp(-x)) for x in logits.tolist())
    assert focal_term_sum(logits).item() == pytest.approx(expected, rel=1e-12)
    assert eager_focal_term_sum(logits).item() == pytest.approx(expected, rel=1e-9)  # softplus is linear above 20


@pytest.mark.parametrize("num_classes", [2.5, "3", True])
def test_a_class_count_that_is_not_an_int_is_refused(num_classes):
    """"3" failed with a bare TypeError, 2.5 later as a conf shape of (B, A, 2.5), True counted one class."""
    with pytest.raises(ValueError, match=rf"MultiBoxLoss: num_classes={num_classes!r} must be an int >= 1"):
        MultiBoxLoss(num_classes)


def test_a_numpy_integer_class_count_is_taken_as_an_int():
    loss_fn = MultiBoxLoss(np.int64(NUM_CLASSES))
    assert loss_fn.num_classes == NUM_CLASSES and type(loss_fn.num_classes) is int


@pytest.mark.parametrize("batch", [1, 2])
def test_one_target_tensor_instead_of_a_list_is_refused_with_the_fix(batch):
    """A bare [n, 5] tensor was read as n targets ("got 2 targets for a batch of 1 images") or, with n = B, as rows
    of shape (5,); a [B, n, 5] stack of equal counts is one tensor per image and still works."""
    loc = torch.zeros(batch, ANCHORS_320.shape[0], 4)
    conf = torch.zeros(batch, ANCHORS_320.shape[0], NUM_CLASSES)
    target = torch.tensor([[0.1, 0.1, 0.5, 0.5, 3.0], [0.2, 0.2, 0.6, 0.6, 1.0]])
    with pytest.raises(ValueError, match=rf"MultiBoxLoss: targets is one tensor of shape \(2, 5\); pass a list of "
                                         rf"B = {batch} tensors \[n_i, 5\], one per image"):
        MultiBoxLoss(NUM_CLASSES)((loc, conf), ANCHORS_320, target)
    stacked = MultiBoxLoss(NUM_CLASSES)((loc, conf), ANCHORS_320, target.expand(batch, 2, 5))
    listed = MultiBoxLoss(NUM_CLASSES)((loc, conf), ANCHORS_320, [target] * batch)
    torch.testing.assert_close(stacked, listed)


@pytest.mark.parametrize("target", [np.array([[0.1, 0.1, 0.5, 0.5, 3.0]], np.float32), [[0.1, 0.1, 0.5, 0.5, 3.0]]])
def test_a_target_that_is_not_a_tensor_is_named_as_such(target):
    """A NumPy or list target was said to 'have shape ndarray' / 'shape list'."""
    loc = torch.zeros(1, ANCHORS_320.shape[0], 4)
    conf = torch.zeros(1, ANCHORS_320.shape[0], NUM_CLASSES)
    with pytest.raises(ValueError, match=rf"targets\[0\] is a {type(target).__name__}, not a tensor; convert it with "
                                         r"torch\.as_tensor\(target, dtype=torch\.float32\)"):
        MultiBoxLoss(NUM_CLASSES)((loc, conf), ANCHORS_320, [target])


@pytest.mark.parametrize("mutual_guide", [False, True])
def test_targets_that_require_grad_are_constants_of_the_loss(mutual_guide):
    """Boxes that still carry a graph (pseudo-labels from a teacher that was not detached, a differentiable
    augmentation) are ground truth, not parameters: the loss and the prediction gradients are those of the detached
    boxes, and no gradient flows back into them (it did: the regression targets were encoded from the live boxes,
    so a backward pass pulled the ground truth toward the predictions)."""
    anchors = PriorBox(24.0, 64)()
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(1, anchors.shape[0], 4, generator=generator)
    conf = torch.randn(1, anchors.shape[0], NUM_CLASSES, generator=generator)
    source = torch.tensor([[0.1, 0.1, 0.6, 0.7, 3.0], [0.5, 0.2, 0.9, 0.5, 7.0]], requires_grad=True)
    criterion = MultiBoxLoss(NUM_CLASSES, mutual_guide=mutual_guide)
    loc_live, loc_constant = loc.clone().requires_grad_(True), loc.clone().requires_grad_(True)
    live = criterion((loc_live, conf), anchors, [source * 1.0])
    constant = criterion((loc_constant, conf), anchors, [source.detach()])
    sum(live).backward()
    sum(constant).backward()
    assert source.grad is None
    torch.testing.assert_close(torch.stack(live).detach(), torch.stack(constant), rtol=0, atol=0)
    torch.testing.assert_close(loc_live.grad, loc_constant.grad, rtol=0, atol=0)
