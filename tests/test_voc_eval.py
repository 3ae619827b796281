"""VOC metric: hand-computed cases, and the vectorised evaluator against a plain devkit-style loop."""
import warnings

import numpy as np
import pytest

from data.errors import DataError, DataWarning
from data.voc_eval import (
    DEVKIT_RECALL_POINTS, evaluate_voc, evaluate_voc_with_curves, iou_plus_one, read_pr_curves, read_voc_results,
    voc_ap, write_voc_pr_curves, write_voc_results,
)

CLASSES = ["cat", "dog"]


def dets(boxes, scores, labels):
    """Detections in the project's frame: 0-based continuous pixels (a box 0..10 covers devkit pixels 1..10)."""
    return {
        "boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
        "scores": np.array(scores, dtype=np.float32),
        "labels": np.array(labels, dtype=np.int64),
    }


def gts(boxes, labels, difficult=None):
    """Ground truth in the devkit frame: 1-based pixels as in the XML."""
    labels = np.array(labels, dtype=np.int64)
    return {
        "boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4),
        "labels": labels,
        "difficult": np.zeros(len(labels), bool) if difficult is None else np.array(difficult, bool),
    }


def test_perfect_detections_score_one_at_every_threshold():
    gt = [gts([[11, 21, 60, 80], [100, 100, 150, 190]], [0, 1]), gts([[5, 5, 40, 40]], [1])]
    det = [dets(np.asarray(g["boxes"]) - [1, 1, 0, 0], [0.9] * len(g["labels"]), g["labels"]) for g in gt]
    result = evaluate_voc(det, gt, CLASSES)
    assert result["mAP"] == 1.0 and result["AP50"] == 1.0 and result["AP75"] == 1.0
    assert result["VOC07_mAP50"] == 1.0
    assert result["per_class_AP50"] == {"cat": 1.0, "dog": 1.0}


def test_duplicate_detection_is_a_false_positive():
    # One class, objects A and B. Detections: A (0.9), A again (0.8, duplicate), B (0.7).
    # tp = [1, 0, 1], recall = [.5, .5, 1], precision = [1, .5, 2/3]
    # 11-point: recall points 0..0.5 (6 of them) -> 1, points 0.6..1.0 (5) -> 2/3.
    gt = [gts([[1, 1, 50, 50], [101, 101, 150, 150]], [0, 0])]
    det = [dets([[0, 0, 50, 50], [0, 0, 50, 50], [100, 100, 150, 150]], [0.9, 0.8, 0.7], [0, 0, 0])]
    result = evaluate_voc(det, gt, ["cat"], iou_thresholds=np.array([0.5]))
    assert result["AP50"] == pytest.approx((6 * 1.0 + 5 * 2.0 / 3.0) / 11.0, abs=1e-12)


def test_detection_of_a_difficult_object_is_neither_tp_nor_fp():
    # A is difficult, B is not. Detections: A (0.9), a miss (0.85), B (0.8).
    # Ignored A: tp = [0, 0, 1], fp = [0, 1, 0], one positive -> recall reaches 1 at precision 0.5.
    # (A as a true positive would give 0.848..., A as a false positive 1/3.)
    gt = [gts([[1, 1, 50, 50], [101, 101, 150, 150]], [0, 0], difficult=[True, False])]
    det = [dets([[0, 0, 50, 50], [300, 300, 340, 340], [100, 100, 150, 150]], [0.9, 0.85, 0.8], [0, 0, 0])]
    result = evaluate_voc(det, gt, ["cat"], iou_thresholds=np.array([0.5]))
    assert result["AP50"] == pytest.approx(0.5, abs=1e-12)


def test_match_needs_iou_strictly_above_threshold_with_plus_one_pixels():
    # Devkit frame: gt [1, 1, 10, 10] covers 10x10 = 100 pixels; detection [1, 1, 10, 5] covers 10x5 = 50,
    # all inside, so IoU = 50 / 100 = 0.5 exactly. In the project's continuous frame the detection is [0, 0, 10, 5].
    gt = [gts([[1, 1, 10, 10]], [0])]
    det = [dets([[0, 0, 10, 5]], [0.9], [0])]
    assert evaluate_voc(det, gt, ["cat"], iou_thresholds=np.array([0.5]))["AP50"] == 0.0
    assert evaluate_voc(det, gt, ["cat"], iou_thresholds=np.array([0.45, 0.5]))["per_threshold_AP"] == [[1.0], [0.0]]


def test_eleven_point_interpolation_on_a_known_curve():
    recall = np.array([0.25, 0.45, 0.45, 0.65, 0.85])
    precision = np.array([1.0, 1.0, 0.67, 0.75, 0.5])
    # points 0, .1, .2, .3, .4 -> 1.0; .5, .6 -> 0.75; .7, .8 -> 0.5; .9, 1.0 -> 0 (recall never reaches them)
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(7.5 / 11.0, abs=1e-12)
    assert voc_ap(recall, precision) == voc_ap(recall, precision, use_07_metric=True)  # VOC07 unless asked otherwise
    # area under the envelope: .25 * 1 + .2 * 1 + .2 * .75 + .2 * .5
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(0.7, abs=1e-12)


def test_eleven_point_grid_is_the_ports_arange_by_default():
    # np.arange(0, 1.1, 0.1)[6] is 0.6000000000000001: a recall of exactly 3/5 reaches only points 0..0.5.
    assert voc_ap(np.array([3 / 5]), np.array([1.0]), use_07_metric=True) == pytest.approx(6.0 / 11.0, abs=1e-12)
    assert voc_ap(np.array([2 / 5]), np.array([1.0]), use_07_metric=True) == pytest.approx(5.0 / 11.0, abs=1e-12)
    assert voc_ap(np.array([7 / 10]), np.array([1.0])) == pytest.approx(7.0 / 11.0, abs=1e-12)  # 0.7 missed too


def test_devkit_grid_is_matlabs_colon_range():
    # MATLAB's 0:0.1:1 computes its first half as k * 0.1 and its second half as 1 - k * 0.1 (MathWorks' COLONOP).
    third = 3 * 0.1  # 0.30000000000000004, a hair above 0.3 in both grids
    expected = [0.0, 0.1, 0.2, third, 0.4, 0.5, 1 - 0.4, 1 - third, 1 - 0.2, 1 - 0.1, 1.0]
    assert DEVKIT_RECALL_POINTS.tolist() == expected
    assert DEVKIT_RECALL_POINTS[6] == 0.6 and DEVKIT_RECALL_POINTS[7] == 0.7 and DEVKIT_RECALL_POINTS[3] > 0.3
    assert voc_ap(np.array([3 / 5]), np.array([1.0]), recall_points=DEVKIT_RECALL_POINTS) == pytest.approx(7.0 / 11.0)
    assert voc_ap(np.array([7 / 10]), np.array([1.0]), recall_points=DEVKIT_RECALL_POINTS) == pytest.approx(8.0 / 11.0)
    assert voc_ap(np.array([3 / 10]), np.array([1.0]), recall_points=DEVKIT_RECALL_POINTS) == pytest.approx(3.0 / 11.0)


def test_standard_number_uses_the_devkit_grid_and_the_paper_protocol_the_ports():
    # Five images with one cat each; three are found exactly: recall 1/5, 2/5, 3/5 at precision 1.
    gt = [gts([[1, 1, 10, 10]], [0]) for _ in range(5)]
    det = [dets([[0, 0, 10, 10]], [0.9], [0]) for _ in range(3)] + [dets(np.zeros((0, 4)), [], []) for _ in range(2)]
    result = evaluate_voc(det, gt, ["cat"], iou_thresholds=np.array([0.5]))
    assert result["AP50"] == pytest.approx(6.0 / 11.0, abs=1e-12)  # the port: 0.6000000000000001 not reached
    assert result["VOC07_mAP50"] == pytest.approx(7.0 / 11.0, abs=1e-12)  # the devkit: 0.6 reached
    assert result["per_class_AP50"]["cat"] == result["VOC07_mAP50"]


def test_paper_summary_averages_the_ten_thresholds():
    # One object, one detection with IoU 0.8 (devkit frame gt [1,1,10,10], detection [1,1,10,8]: 80/100).
    # It is a match at 0.50..0.75 (6 thresholds) and a miss at 0.80..0.95 (4 thresholds).
    gt = [gts([[1, 1, 10, 10]], [0])]
    det = [dets([[0, 0, 10, 8]], [0.9], [0])]
    result = evaluate_voc(det, gt, ["cat"])
    assert result["mAP"] == pytest.approx(0.6, abs=1e-12)
    assert result["AP50"] == 1.0 and result["AP75"] == 1.0 and result["VOC07_mAP50"] == 1.0


def test_paper_thresholds_are_the_ten_decimal_values():
    """``np.arange(0.5, 0.96, 0.05)`` alone gives 0.6000000000000001, ..., 0.9500000000000004: the thresholds a summary
    reports (``iou_thresholds``, and ``summary.json``) and matches at are the decimal values 0.50, 0.55, ..., 0.95."""
    result = evaluate_voc([dets([[0, 0, 10, 10]], [0.9], [0])], [gts([[1, 1, 10, 10]], [0])], ["cat"])
    assert result["iou_thresholds"] == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


def test_ap50_and_ap75_are_the_thresholds_0_50_and_0_75():
    # One object, one detection with IoU 0.72 (devkit frame gt [1,1,10,10] = 100 pixels, detection [1,1,9,8] = 9 x 8
    # = 72 pixels inside it). A match at 0.50, 0.55, 0.60, 0.65 and 0.70 (5 of 10 thresholds), a miss from 0.75 on:
    # AP50 = 1, AP75 = 0 (a neighbour threshold would give 1 at 0.70 or 0 at 0.80), mAP = 5 / 10.
    gt = [gts([[1, 1, 10, 10]], [0])]
    det = [dets([[0, 0, 9, 8]], [0.9], [0])]
    result = evaluate_voc(det, gt, ["cat"])
    assert result["per_threshold_AP"] == [[1.0]] * 5 + [[0.0]] * 5
    assert result["AP50"] == 1.0 and result["AP75"] == 0.0 and result["mAP"] == pytest.approx(0.5, abs=1e-12)
    # and an IoU of 0.8 (detection [1,1,10,8]) is a match at 0.75 but not at 0.80
    result = evaluate_voc([dets([[0, 0, 10, 8]], [0.9], [0])], gt, ["cat"], iou_thresholds=np.array([0.75, 0.8]))
    assert result["AP75"] == 1.0 and result["per_threshold_AP"] == [[1.0], [0.0]] and np.isnan(result["AP50"])


def test_class_without_ground_truth_is_left_out_of_the_mean():
    gt = [gts([[1, 1, 50, 50]], [0])]
    det = [dets([[0, 0, 50, 50], [0, 0, 50, 50]], [0.9, 0.9], [0, 1])]
    result = evaluate_voc(det, gt, CLASSES)
    assert result["mAP"] == 1.0
    assert np.isnan(result["per_class_AP50"]["dog"])


def test_pr_curves_of_a_hand_worked_example(tmp_path):
    """Image 0: A = devkit [1,1,10,10] and B (difficult, far away); image 1: C = [1,1,10,10]. Detections, by score:
    0.9 on A (IoU 1, TP), 0.8 on A again (IoU 0.9, duplicate: FP), 0.7 on B (difficult: neither), 0.6 far from C (FP),
    0.5 on C with IoU 0.6 (TP at 0.50, FP at 0.75). Two positives.
    IoU 0.50: tp 1 1 1 1 2, fp 0 1 1 2 2 -> recall .5 .5 .5 .5 1, precision 1 .5 .5 1/3 .5;
    11-point AP = (6 points up to recall .5 at precision 1 + 5 points at .5) / 11.
    IoU 0.75: tp 1 1 1 1 1, fp 0 1 1 2 3 -> recall .5 everywhere, precision 1 .5 .5 1/3 .25; AP = 6 / 11."""
    gt = [gts([[1, 1, 10, 10], [51, 51, 60, 60]], [0, 0], difficult=[False, True]), gts([[1, 1, 10, 10]], [0])]
    det = [dets([[0, 0, 10, 9], [50, 50, 60, 60], [0, 0, 10, 10]], [0.8, 0.7, 0.9], [0, 0, 0]),
           dets([[0, 0, 10, 6], [80, 80, 90, 90]], [0.5, 0.6], [0, 0])]
    metrics, curves = evaluate_voc_with_curves(det, gt, ["cat"], iou_thresholds=np.array([0.5, 0.75]))
    (path,) = write_voc_pr_curves(curves, tmp_path)
    assert path == tmp_path / "cat_pr.npz"
    with np.load(path, allow_pickle=False) as saved:
        assert sorted(saved.files) == ["ap", "iou_thresholds", "num_positives", "outcome", "scores"]
        assert saved["outcome"].dtype == np.int8 and saved["scores"].dtype == np.float32
        assert saved["outcome"].tolist() == [[1, 0, -1, 0, 1], [1, 0, -1, 0, 0]]
        assert saved["num_positives"].shape == () and saved["num_positives"] == 2
    pr = read_pr_curves(path)
    np.testing.assert_array_equal(pr["iou_thresholds"], [0.5, 0.75])
    np.testing.assert_array_equal(pr["scores"], np.float32([0.9, 0.8, 0.7, 0.6, 0.5]))
    np.testing.assert_array_equal(pr["recall"], [[0.5, 0.5, 0.5, 0.5, 1.0], [0.5] * 5])
    np.testing.assert_allclose(pr["precision"], [[1, 0.5, 0.5, 1 / 3, 0.5], [1, 0.5, 0.5, 1 / 3, 0.25]],
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(pr["ap"], [8.5 / 11, 6 / 11], rtol=0, atol=1e-15)
    assert pr["ap"].tolist() == [row[0] for row in metrics["per_threshold_AP"]]
    assert [voc_ap(r, p) for r, p in zip(pr["recall"], pr["precision"])] == pr["ap"].tolist()


def test_pr_curves_of_a_class_without_ground_truth_have_nan_recall_and_ap(tmp_path):
    gt = [gts([[1, 1, 50, 50]], [0])]
    det = [dets([[0, 0, 50, 50], [0, 0, 50, 50]], [0.9, 0.8], [0, 1])]
    _, curves = evaluate_voc_with_curves(det, gt, CLASSES)
    assert curves["dog"].outcome.tolist() == [[0]] * 10 and curves["dog"].num_positives == 0
    dog = read_pr_curves(write_voc_pr_curves(curves, tmp_path)[1])
    assert dog["recall"].shape == dog["precision"].shape == (10, 1) and np.isnan(dog["recall"]).all()
    assert np.isnan(dog["ap"]).all() and dog["precision"].tolist() == [[0.0]] * 10
    assert curves["cat"].ap.tolist() == [1.0] * 10


def test_pr_curves_file_takes_under_16_bytes_per_detection(tmp_path):
    """4 bytes of float32 score and 10 int8 outcomes per detection at T = 10, plus the archive's headers: some
    15 MB for the 1.5 M detections of a VOC07 test evaluation, where float64 recall and precision took 250 MB."""
    rng = np.random.default_rng(0)
    count = 5000
    corners = rng.uniform(0, 200, (count, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 50, (count, 2))], axis=1)
    gt = [gts(boxes[:100] + [1, 1, 0, 0], [0] * 100)]
    det = [dets(boxes, rng.uniform(0, 1, count), [0] * count)]
    _, curves = evaluate_voc_with_curves(det, gt, ["cat"])
    (path,) = write_voc_pr_curves(curves, tmp_path)
    assert path.stat().st_size < 16 * count + 2048
    pr = read_pr_curves(path)
    assert pr["recall"].shape == (10, count) and 0 < pr["ap"][0] < 1
    assert [voc_ap(r, p) for r, p in zip(pr["recall"], pr["precision"])] == pr["ap"].tolist()


def test_reading_a_file_that_is_not_a_pr_curves_file_names_it_and_what_it_lacks(tmp_path):
    path = tmp_path / "cat_pr.npz"
    np.savez(path, recall=np.zeros((10, 3)), precision=np.zeros((10, 3)))
    with pytest.raises(DataError, match=r"cat_pr\.npz: not a precision-recall curves file: no ap, iou_thresholds, "
                                        r"num_positives, outcome, scores"):
        read_pr_curves(path)


def test_equal_scores_are_taken_in_dataset_order_as_the_devkit_reads_the_results_file():
    """Scores tie often (bf16 logits have 8 bits): the devkit sorts the results file stably, so tied detections count
    in the file's order, images in dataset order. 20 images with one cat each. Even images: a hit at 0.9. Odd images
    1-9: a miss at 0.5; odd images 11-19: a hit at 0.5. Every image also has a 0.7 dog (no dog object: AP NaN, left
    out), so the classes interleave. In order: 10 hits (recall .5, precision 1), 5 misses, 5 hits (recall .75,
    precision 15/20): the 11 points are 1 up to recall .5 (6 points), 3/4 at .6 and .7 (the devkit's 0.6 and 0.7 are a
    hair above 12/20 and 14/20), 0 above: AP 7.5/11. The reversed dataset puts the tied hits first: 8/11."""
    gt, det = [], []
    for i in range(20):
        gt.append(gts([[1, 1, 10, 10]], [0]))
        score, box = (0.9, [0, 0, 10, 10]) if i % 2 == 0 else (0.5, [50, 50, 60, 60] if i < 10 else [0, 0, 10, 10])
        det.append(dets([box, [20, 20, 30, 30]], [score, 0.7], [0, 1]))
    result = evaluate_voc(det, gt, CLASSES)
    assert [row[0] for row in result["per_threshold_AP"]] == pytest.approx([7.5 / 11] * 10, abs=1e-12)
    assert result["mAP"] == pytest.approx(7.5 / 11, abs=1e-12) and np.isnan(result["per_class_AP50"]["dog"])
    assert evaluate_voc(det[::-1], gt[::-1], CLASSES)["mAP"] == pytest.approx(8 / 11, abs=1e-12)
    # area under the envelope: recall .5 at precision 1, then .25 more at precision 3/4
    assert evaluate_voc(det, gt, CLASSES, use_07_metric=False)["AP50"] == pytest.approx(0.5 + 0.25 * 0.75, abs=1e-12)


def test_a_detection_equally_close_to_two_objects_is_matched_to_the_first_as_np_argmax():
    """Devkit frame: objects A [1, 1, 10, 10] then B [2, 1, 11, 10] (XML order). Detection 1 (0.9) is A itself: a
    true positive, A taken. Detection 2 (0.8) is [2, 1, 10, 10]: 90 pixels, all inside A and inside B, IoU 0.9 with
    both. The devkit takes the first maximum, A, already taken: a false positive, so recall stops at 1/2 and the
    11-point AP is 6/11 at every threshold (above 0.85 detection 2 misses anyway). With B written first, detection 2
    goes to B, a true positive: AP 1 at the 8 thresholds 0.50..0.85, 6/11 at 0.90 and 0.95."""
    det = [dets([[0, 0, 10, 10], [1, 0, 10, 10]], [0.9, 0.8], [0, 0])]
    result = evaluate_voc(det, [gts([[1, 1, 10, 10], [2, 1, 11, 10]], [0, 0])], ["cat"])
    assert np.ravel(result["per_threshold_AP"]) == pytest.approx([6 / 11] * 10, abs=1e-12)
    swapped = evaluate_voc(det, [gts([[2, 1, 11, 10], [1, 1, 10, 10]], [0, 0])], ["cat"])
    assert np.ravel(swapped["per_threshold_AP"]) == pytest.approx([1.0] * 8 + [6 / 11] * 2, abs=1e-12)


def test_a_false_detection_in_an_image_without_objects_of_its_class():
    """The only cat is in image 0; image 1 holds a dog only. A cat detection in image 1 (0.9, no cat to match: a false
    positive) ranks above the hit in image 0 (0.8): precision 0 then 1/2 at recall 1, so the 11-point AP is 1/2 at
    every threshold (and 1 for the dog, detected exactly)."""
    gt = [gts([[1, 1, 10, 10]], [0]), gts([[21, 21, 40, 40]], [1])]
    det = [dets([[0, 0, 10, 10]], [0.8], [0]), dets([[20, 20, 40, 40], [0, 0, 10, 10]], [0.7, 0.9], [1, 0])]
    result = evaluate_voc(det, gt, CLASSES)
    assert result["per_threshold_AP"] == [[0.5, 1.0]] * 10
    assert result["mAP"] == pytest.approx(0.75, abs=1e-12)


def test_labels_outside_the_classes_are_rejected():
    gt = [gts([[1, 1, 50, 50]], [0])]
    with pytest.raises(ValueError, match="labels must be foreground indices 0..C-1"):
        evaluate_voc([dets([[0, 0, 9, 9]], [0.5], [2])], gt, CLASSES)
    # one bad label among good ones is enough, at either end of the range
    with pytest.raises(ValueError, match="detections labels span 0..2 but there are 2 classes"):
        evaluate_voc([dets([[0, 0, 9, 9], [0, 0, 9, 9]], [0.5, 0.4], [0, 2])], gt, CLASSES)
    with pytest.raises(ValueError, match="ground truth labels span -1..1 but there are 2 classes"):
        evaluate_voc([dets([[0, 0, 9, 9]], [0.5], [0])], [gts([[1, 1, 50, 50], [1, 1, 9, 9], [2, 2, 9, 9]],
                                                              [0, -1, 1])], CLASSES)


def plain_devkit_ap(det, gt, class_index, threshold, use_07_metric, official=False):
    """The VOC devkit's loop, written out plainly: one detection at a time, in score order. A match needs
    IoU >= threshold if ``official`` (VOCevaldet.m), IoU > threshold otherwise (the authors' Python port)."""
    positives = sum(int(np.sum((g["labels"] == class_index) & ~g["difficult"])) for g in gt)
    taken = [np.zeros(len(g["labels"]), bool) for g in gt]
    rows = [
        (float(d["scores"][k]), image, d["boxes"][k].astype(np.float64) + [1.0, 1.0, 0.0, 0.0])
        for image, d in enumerate(det)
        for k in range(len(d["scores"]))
        if d["labels"][k] == class_index
    ]
    rows.sort(key=lambda r: -r[0])  # stable: equal scores keep image order
    tp, fp = np.zeros(len(rows)), np.zeros(len(rows))
    for i, (_, image, bb) in enumerate(rows):
        g = gt[image]
        mine = np.flatnonzero(g["labels"] == class_index)
        best, best_j = -np.inf, -1
        for j in mine:
            gb = g["boxes"][j]
            iw = max(min(bb[2], gb[2]) - max(bb[0], gb[0]) + 1.0, 0.0)
            ih = max(min(bb[3], gb[3]) - max(bb[1], gb[1]) + 1.0, 0.0)
            union = (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0) + (gb[2] - gb[0] + 1.0) * (gb[3] - gb[1] + 1.0)
            iou = iw * ih / (union - iw * ih)
            if iou > best:
                best, best_j = iou, j
        if best >= threshold if official else best > threshold:
            if g["difficult"][best_j]:
                continue
            if not taken[image][best_j]:
                tp[i], taken[image][best_j] = 1.0, True
            else:
                fp[i] = 1.0
        else:
            fp[i] = 1.0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07_metric:
        return np.mean([precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in np.arange(0.0, 1.1, 0.1)])
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def random_case(seed, num_images=12, num_classes=3, whole_pixels=False):
    """Random objects and detections; ``whole_pixels`` rounds the detections too, so that IoUs often equal a
    threshold exactly."""
    rng = np.random.default_rng(seed)
    gt, det = [], []
    for _ in range(num_images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(1, 200, size=(n, 2)).round()
        wh = rng.uniform(10, 120, size=(n, 2)).round()
        boxes = np.concatenate([xy, xy + wh], axis=1)
        gt.append(gts(boxes, rng.integers(0, num_classes, n), rng.random(n) < 0.2))
        # detections: jittered copies of the objects (several per object: duplicates) plus random boxes
        copies = np.repeat(boxes, rng.integers(0, 4, n), axis=0) if n else np.zeros((0, 4))
        copies = copies - [1, 1, 0, 0] + rng.normal(0, 6, copies.shape)
        noise_xy = rng.uniform(0, 250, size=(int(rng.integers(0, 5)), 2))
        noise = np.concatenate([noise_xy, noise_xy + rng.uniform(5, 100, noise_xy.shape)], axis=1)
        boxes_d = np.concatenate([copies, noise])
        labels_copy = np.repeat(gt[-1]["labels"], rng.integers(0, 4, n)) if n else np.zeros(0, np.int64)
        labels_d = rng.integers(0, num_classes, len(boxes_d))
        labels_d[: min(len(labels_copy), len(labels_d))] = labels_copy[: len(labels_d)]
        det.append(dets(boxes_d.round() if whole_pixels else boxes_d, rng.random(len(boxes_d)), labels_d))
    return det, gt


@pytest.mark.parametrize("seed", [0, 1, 2, "whole pixels"])
@pytest.mark.parametrize("use_07_metric", [True, False])
def test_matches_plain_devkit_loop_on_random_detections(seed, use_07_metric):
    """The paper's numbers against the loop with the authors' rule (IoU > threshold), the standard VOC07 ones against
    the loop with the MATLAB devkit's (IoU >= 0.5). Whole-pixel detections (seed 20) put some IoUs exactly at 0.5, where
    the two rules part (class "a": 0.312 by the devkit's, 0.260 by the authors')."""
    det, gt = random_case(20, whole_pixels=True) if seed == "whole pixels" else random_case(seed)
    names = ["a", "b", "c"]
    result = evaluate_voc(det, gt, names, use_07_metric=use_07_metric)
    expected = np.array(
        [[plain_devkit_ap(det, gt, c, t, use_07_metric) for c in range(3)] for t in result["iou_thresholds"]]
    )
    np.testing.assert_allclose(np.array(result["per_threshold_AP"]), expected, rtol=0, atol=1e-12)
    assert result["mAP"] == pytest.approx(np.nanmean(expected, axis=1).mean(), abs=1e-12)
    voc07 = [plain_devkit_ap(det, gt, c, 0.5, True, official=True) for c in range(3)]
    assert list(result["per_class_AP50"].values()) == pytest.approx(voc07, abs=1e-12)
    assert result["VOC07_mAP50"] == pytest.approx(np.mean(voc07), abs=1e-12)


def test_devkit_files_round_trip(tmp_path):
    det = [
        dets([[0, 1.5, 20.25, 30], [5, 5, 9, 9.75]], [0.875, 0.5], [0, 1]),
        dets(np.zeros((0, 4)), [], []),
        dets([[10, 10, 40, 40]], [0.25], [1]),
    ]
    image_ids = ["000001", "000002", "000007"]
    out_dir = tmp_path / "results" / "VOC2007" / "Main"  # made, parents included
    written = write_voc_results(det, image_ids, CLASSES, out_dir)
    assert written == [out_dir / "comp4_det_test_cat.txt", out_dir / "comp4_det_test_dog.txt"]
    # devkit pixels: (x1 + 1, y1 + 1, x2, y2)
    assert (out_dir / "comp4_det_test_cat.txt").read_text() == "000001 0.875 1.0 2.5 20.25 30.0\n"
    assert (out_dir / "comp4_det_test_dog.txt").read_text().splitlines() == [
        "000001 0.5 6.0 6.0 9.0 9.75",
        "000007 0.25 11.0 11.0 40.0 40.0",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class file is there: no warning
        back = read_voc_results(out_dir, image_ids, CLASSES)
    for original, read in zip(det, back):
        order = np.argsort(read["labels"], kind="stable")
        np.testing.assert_array_equal(read["boxes"][order], original["boxes"])
        np.testing.assert_array_equal(read["scores"][order], original["scores"])
        np.testing.assert_array_equal(read["labels"][order], original["labels"])


def test_devkit_files_give_back_the_very_float32_detections(tmp_path):
    """Scores and coordinates of no short decimal form (float32 thirds, boxes at 0 and at 1e-3 px) survive the
    files bit for bit, so re-scoring the files reproduces the evaluation, ties in score included."""
    generator = np.random.default_rng(3)
    det = []
    for count in (40, 0, 25):
        corner = generator.uniform(0, 500, (count, 2))
        boxes = np.concatenate([corner, corner + generator.uniform(0.01, 200, (count, 2))], axis=1).astype(np.float32)
        boxes[:3, :2] = np.float32(0.0)
        boxes[3:6, 0] = np.float32(1e-3)
        scores = (generator.integers(1, 30, count) / np.float32(3)).astype(np.float32) / 10  # many equal scores
        det.append(dets(boxes, scores, generator.integers(0, 2, count)))
    image_ids = ["a", "b", "c"]
    write_voc_results(det, image_ids, CLASSES, tmp_path)
    back = read_voc_results(tmp_path, image_ids, CLASSES)
    for original, read in zip(det, back):
        order = np.argsort(original["labels"], kind="stable")  # the files group each image's detections by class
        assert read["boxes"].dtype == np.float32 and read["scores"].dtype == np.float32
        np.testing.assert_array_equal(read["boxes"], original["boxes"][order])
        np.testing.assert_array_equal(read["scores"], original["scores"][order])
        np.testing.assert_array_equal(read["labels"], original["labels"][order])
    gt = [gts([[0, 0, 50, 50], [100, 100, 300, 260]], [0, 1]), gts([[5, 5, 60, 90]], [1]), gts([[0, 0, 500, 500]], [0])]
    assert evaluate_voc(back, gt, CLASSES) == evaluate_voc(det, gt, CLASSES)


def test_reading_a_results_line_with_an_unknown_image_names_file_and_line(tmp_path):
    (tmp_path / "comp4_det_test_cat.txt").write_text("000001 0.5 1 1 5 5\nxyz 0.5 1 1 5 5\n")
    (tmp_path / "comp4_det_test_dog.txt").write_text("")
    with pytest.raises(DataError) as error:
        read_voc_results(tmp_path, ["000001"], CLASSES)
    # the line is well formed: the fix is the dataset scored, not the line's format
    assert str(error.value).endswith(
        "comp4_det_test_cat.txt:2: image id 'xyz' is not among the images scored in 'xyz 0.5 1 1 5 5'; results "
        "of another dataset or split? score them on the dataset their evaluation had (--dataset, --data_root)")


def test_results_ids_that_lost_their_leading_zeros_or_carry_an_extension_are_named_as_such(tmp_path):
    """Another tool's ids read as numbers ("123" for "000123") or written as file names ("000123.jpg") were called
    images of another dataset or split."""
    (tmp_path / "comp4_det_test_cat.txt").write_text("123 0.5 1 1 5 5\n000123.jpg 0.5 1 1 5 5\n7 0.5 1 1 5 5\n")
    (tmp_path / "comp4_det_test_dog.txt").write_text("a.b.jpg 0.5 1 1 5 5\n")
    with pytest.raises(DataError, match="4 problem") as error:
        read_voc_results(tmp_path, ["000123", "a.b", "x.jpg"], CLASSES)
    assert [line.split(": ", 1)[1] for line in str(error.value).splitlines()[1:]] == [
        "image id '123' is not among the images scored in '123 0.5 1 1 5 5'; the images scored include '000123': "
        "write the ids as the image list does, leading zeros kept",
        "image id '000123.jpg' is not among the images scored in '000123.jpg 0.5 1 1 5 5'; the images scored include "
        "'000123': write the ids without a file extension",
        "image id '7' is not among the images scored in '7 0.5 1 1 5 5'; results of another dataset or split? score "
        "them on the dataset their evaluation had (--dataset, --data_root)",
        "image id 'a.b.jpg' is not among the images scored in 'a.b.jpg 0.5 1 1 5 5'; the images scored include "
        "'a.b': write the ids without a file extension",
    ]


def test_results_files_of_width_and_height_instead_of_corners_get_a_warning(tmp_path):
    """Another tool's lines 'image_id score x y width height' scored near 0 without a word: most of their boxes have
    x2 < x1 or y2 < y1, which no detector writes. A few such boxes (a detector's degenerate ones) are no sign."""
    xywh = "000001 0.9 30 40 10 12\n000001 0.8 50 20 8 8\n000002 0.7 60 60 20 5\n000002 0.6 2 3 10 10\n"
    (tmp_path / "comp4_det_test_cat.txt").write_text(xywh)
    (tmp_path / "comp4_det_test_dog.txt").write_text("")
    with pytest.warns(DataWarning, match=rf"^{tmp_path}: 3 of the 4 detections have x2 < x1 or y2 < y1: the lines are "
                                         r"'image_id score x1 y1 x2 y2' \(corners\); if they hold x y width height, "
                                         r"write the corners x2 = x1 \+ width - 1, y2 = y1 \+ height - 1"):
        read_voc_results(tmp_path, ["000001", "000002"], CLASSES)
    corners = "".join(f"00000{i % 2 + 1} 0.5 {i} {i} {i + 10} {i + 10}\n" for i in range(40))
    (tmp_path / "comp4_det_test_cat.txt").write_text(xywh[: xywh.index("000002")] + corners)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_voc_results(tmp_path, ["000001", "000002"], CLASSES)[0]["scores"]) == 22


def test_reading_a_folder_without_results_files_names_the_folder(tmp_path):
    (tmp_path / "comp4_det_test_zebra.txt").write_text("000001 0.5 1 1 5 5\n")
    with pytest.raises(DataError, match=rf"^{tmp_path}: no results file of this dataset's classes "
                                        r"\(comp4_det_test_cat"):
        read_voc_results(tmp_path, ["000001"], CLASSES)


def test_a_missing_class_file_is_scored_as_no_detections_with_a_warning(tmp_path):
    (tmp_path / "comp4_det_test_cat.txt").write_text("000001 0.5 1 1 5 5\n")
    with pytest.warns(DataWarning, match=r"no comp4_det_test_<class>\.txt file for the classes \['dog'\]: "
                                         r"scored as no"):
        detections = read_voc_results(tmp_path, ["000001"], CLASSES)
    assert detections[0]["labels"].tolist() == [0]


def test_reading_results_lines_with_bad_numbers_names_each_file_and_line(tmp_path):
    (tmp_path / "comp4_det_test_cat.txt").write_text("000001 abc 1 1 5 5\n000001 0.5 1 1 5 5\n")
    (tmp_path / "comp4_det_test_dog.txt").write_bytes(b"\xef\xbb\xbf000001 0.5 1 1 5 5\n\n000001 0.5 1 1 nan 5\n")
    with pytest.raises(DataError, match="2 problem") as error:
        read_voc_results(tmp_path, ["000001"], CLASSES)
    assert ("comp4_det_test_cat.txt:1: the score and coordinates must be numbers in '000001 abc 1 1 5 5'"
            in str(error.value))
    assert "comp4_det_test_dog.txt:3: the score and coordinates must be finite" in str(error.value)


TRICKY_CLASSES = ["cat", "dog", "bird"]
TRICKY_IDS = ["000001", "café_ü-2", "a.b#c'1", "nan", "1e5"]  # any text without white space is an image id


def tricky_detections() -> list[dict]:
    """Scores and coordinates needing every digit: float32 1e-7 and thirds, 0.1 + 0.2 (float32 and float64), a
    coordinate at 3.4e38 and at 2**24, a negative zero; an image without detections, a class without any, and one
    image of float64 boxes (the writer takes any float dtype)."""
    f32 = np.float32
    return [
        dets([[0, 0, 0.1, 0.2], [1e-7, 2.5e-8, 1234567.9, 3.4e38], [-1, -0.5, -0.0, 7]], [1e-7, 1 / 3, 1.0], [0, 2, 0]),
        dets(np.zeros((0, 4)), [], []),
        {"boxes": np.array([[0.1 + 0.2, 1e16, 123456789.123456789, 2.0**53 + 1], [5e-324, 1e-7, 0.1 + 0.2, 99.99]]),
         "scores": np.array([0.1 + 0.2, 0.0], np.float32), "labels": np.array([2, 0])},
        dets([[10, 20, 30, 40]], [f32(0.1) + f32(0.2)], [2]),
        dets([[0.5, 1.25, 16777215, 16777216]], [0.99999994], [0]),
    ]


def test_devkit_files_hold_these_exact_bytes(tmp_path):
    """The bytes of the results files, pinned: ``%.9g`` of the float32 score, ``repr`` of the float64 devkit
    coordinate, classes in file order, images in dataset order, an empty file for a class without detections."""
    write_voc_results(tricky_detections(), TRICKY_IDS, TRICKY_CLASSES, tmp_path)
    assert (tmp_path / "comp4_det_test_cat.txt").read_bytes() == (
        b"000001 1.00000001e-07 1.0 1.0 0.10000000149011612 0.20000000298023224\n"
        b"000001 1 0.0 0.5 0.0 7.0\n"
        b"a.b#c'1 0 1.0 1.0000001 0.30000000000000004 99.99\n"
        b"1e5 0.99999994 1.5 2.25 16777215.0 16777216.0\n"
    )
    assert (tmp_path / "comp4_det_test_dog.txt").read_bytes() == b""
    assert (tmp_path / "comp4_det_test_bird.txt").read_bytes() == (
        b"000001 0.333333343 1.0000001000000012 1.0000000250000003 1234567.875 3.3999999521443642e+38\n"
        b"a.b#c'1 0.300000012 1.3 1e+16 123456789.12345679 9007199254740992.0\n"
        b"nan 0.300000012 11.0 21.0 30.0 40.0\n"
    )


def test_devkit_files_give_back_tricky_detections_as_float32(tmp_path):
    """Read back, every image's detections (grouped by class file) are the written ones as float32, bit for bit."""
    detections = tricky_detections()
    write_voc_results(detections, TRICKY_IDS, TRICKY_CLASSES, tmp_path)
    back = read_voc_results(tmp_path, TRICKY_IDS, TRICKY_CLASSES)
    assert len(back) == len(detections)
    for original, read in zip(detections, back):
        order = np.argsort(original["labels"], kind="stable")
        assert read["boxes"].dtype == np.float32 and read["boxes"].shape == (len(order), 4)
        assert read["scores"].dtype == np.float32 and read["labels"].dtype == np.int64
        np.testing.assert_array_equal(read["boxes"], original["boxes"][order].astype(np.float32))
        np.testing.assert_array_equal(read["scores"], original["scores"][order])
        np.testing.assert_array_equal(read["labels"], original["labels"][order])
    assert back[0]["boxes"][2].tolist() == [1.0000000116860974e-07, 2.5000000292152436e-08, 1234567.875,
                                            3.3999999521443642e+38]


def test_reading_results_files_takes_any_white_space_and_python_numbers(tmp_path):
    """A byte-order mark, CRLF, tabs, blank lines, no final newline, and every number Python's ``float`` reads
    (``+.25``, ``1_0``, ``1E1``, Arabic-Indic digits, ``12.``)."""
    (tmp_path / "comp4_det_test_cat.txt").write_bytes(
        "\ufeff000001\t0.5  1 1 5 5\r\n\r\ncafé_ü-2 +.25 1_0 1E1 ١٢ 12.\n \t\n000001 0.75 2 2 6 6".encode())
    (tmp_path / "comp4_det_test_dog.txt").write_bytes(b"")
    (tmp_path / "comp4_det_test_bird.txt").write_bytes(b"\n000001 0.125 3 3 7 7\n")
    back = read_voc_results(tmp_path, ["000001", "café_ü-2"], TRICKY_CLASSES)
    assert back[0]["boxes"].tolist() == [[0, 0, 5, 5], [1, 1, 6, 6], [2, 2, 7, 7]]
    assert back[0]["scores"].tolist() == [0.5, 0.75, 0.125] and back[0]["labels"].tolist() == [0, 0, 2]
    assert back[1]["boxes"].tolist() == [[9, 9, 12, 12]]
    assert back[1]["scores"].tolist() == [0.25] and back[1]["labels"].tolist() == [0]


def test_reading_malformed_results_lines_lists_every_file_and_line(tmp_path):
    """Every kind of bad line, with its file and line number (blank lines counted), in class-file order; the good
    lines and files around them do not hide or shift them."""
    # lines 3 and 4: 5 + 7 fields, 24 in the file as 4 good lines would have
    (tmp_path / "comp4_det_test_cat.txt").write_bytes(
        b"000001 0.5 1 1 5 5\r\n\r\n000001 0.5 1 1 5\n000001 0.5 1 1 5 5 6\n000001 0.5 1 1 5 5\n")
    (tmp_path / "comp4_det_test_dog.txt").write_bytes(b"000001 0.5 1 1 5 5\n" * 3)
    (tmp_path / "comp4_det_test_bird.txt").write_bytes(
        b"000001 0.5 1 1 5 5 6\n000002 0.5 1 1 5 5\n000001 0x1 1 1 5 5\n000001 0.5 1 1 inf 5\n000001 -nan 1 1 5 5\n")
    with pytest.raises(DataError) as error:
        read_voc_results(tmp_path, ["000001"], TRICKY_CLASSES)
    write = "; write 'image_id score x1 y1 x2 y2'"
    assert str(error.value) == "\n".join([
        f"VOC results in {tmp_path}: 7 problem(s)",
        f"  - {tmp_path}/comp4_det_test_cat.txt:3: 5 fields instead of 6 in '000001 0.5 1 1 5'{write}",
        f"  - {tmp_path}/comp4_det_test_cat.txt:4: 7 fields instead of 6 in '000001 0.5 1 1 5 5 6'{write}",
        f"  - {tmp_path}/comp4_det_test_bird.txt:1: 7 fields instead of 6 in '000001 0.5 1 1 5 5 6'{write}",
        f"  - {tmp_path}/comp4_det_test_bird.txt:2: image id '000002' is not among the images scored in "
        "'000002 0.5 1 1 5 5'; results of another dataset or split? score them on the dataset their evaluation had "
        "(--dataset, --data_root)",
        f"  - {tmp_path}/comp4_det_test_bird.txt:3: the score and coordinates must be numbers in "
        f"'000001 0x1 1 1 5 5'{write}",
        f"  - {tmp_path}/comp4_det_test_bird.txt:4: the score and coordinates must be finite in "
        f"'000001 0.5 1 1 inf 5'{write}",
        f"  - {tmp_path}/comp4_det_test_bird.txt:5: the score and coordinates must be finite in "
        f"'000001 -nan 1 1 5 5'{write}",
    ])


def test_two_degenerate_boxes_have_iou_zero_without_a_numpy_warning():
    """Boxes of zero +1-pixel width (x2 = x1 - 1, only an annotation can hold one): the union is 0, the devkit's 0/0
    matches nothing; the IoU is 0, with no RuntimeWarning from numpy."""
    degenerate = np.array([[10.0, 10.0, 9.0, 20.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert iou_plus_one(degenerate, degenerate).tolist() == [0.0]
    assert iou_plus_one(np.array([[1.0, 1.0, 10.0, 10.0]]), np.array([[1.0, 1.0, 10.0, 5.0]])).tolist() == [0.5]


def test_iou_plus_one_of_boxes_side_by_side_and_of_a_one_pixel_box():
    """Devkit frame: [1, 1, 10, 10] and [12, 1, 20, 10] share rows but no column (a negative +1 width overlap), and
    [1, 12, 10, 20] shares its columns but no row: IoU 0. A one-pixel box [5, 5, 5, 5] (area 1 with the +1 convention)
    with itself: IoU 1."""
    boxes = np.array([[1.0, 1.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [5.0, 5.0, 5.0, 5.0]])
    others = np.array([[12.0, 1.0, 20.0, 10.0], [1.0, 12.0, 10.0, 20.0], [5.0, 5.0, 5.0, 5.0]])
    assert iou_plus_one(boxes, others).tolist() == [0.0, 0.0, 1.0]


def test_the_standard_voc07_number_matches_at_iou_equal_to_the_threshold_as_vocevaldet():
    """The official devkit (VOCevaldet.m) matches at ``ovmax >= minoverlap``; the authors' Python port (the paper's
    protocol) needs IoU strictly above. Devkit frame: the detection [1, 1, 10, 5] covers 50 of the object's 100 pixels,
    IoU exactly 0.5: a hit for the standard VOC07 mAP@0.5 (AP 1), a miss for the paper's AP50 (AP 0)."""
    result = evaluate_voc([dets([[0, 0, 10, 5]], [0.9], [0])], [gts([[1, 1, 10, 10]], [0])], ["cat"])
    assert result["AP50"] == 0.0
    assert result["VOC07_mAP50"] == 1.0 and result["per_class_AP50"] == {"cat": 1.0}


def test_equal_scores_of_a_results_file_count_in_its_line_order_as_vocevaldet(tmp_path):
    """A results file from another tool need not list its images in dataset order. VOCevaldet sorts its lines stably,
    so equal scores count in the file's line order. Two images with one cat each; the file lists image b's hit, then
    image a's miss, both 0.5: hit first, precision 1 at recall 1/2, AP 6/11 (taken in dataset order, a's miss first:
    precision 0 then 1/2, AP 3/11). Reversing the lines gives 3/11. A file of this project's (dataset order) reads
    back as written: ``test_equal_scores_are_taken_in_dataset_order_as_the_devkit_reads_the_results_file``."""
    gt = [gts([[1, 1, 10, 10]], [0]), gts([[1, 1, 10, 10]], [0])]
    lines = ["b 0.5 1 1 10 10", "a 0.5 50 50 60 60"]
    (tmp_path / "comp4_det_test_cat.txt").write_text("\n".join(lines) + "\n")
    result = evaluate_voc(read_voc_results(tmp_path, ["a", "b"], ["cat"]), gt, ["cat"])
    assert result["VOC07_mAP50"] == pytest.approx(6 / 11, abs=1e-12) and result["AP50"] == result["VOC07_mAP50"]
    (tmp_path / "comp4_det_test_cat.txt").write_text("\n".join(lines[::-1]) + "\n")
    result = evaluate_voc(read_voc_results(tmp_path, ["a", "b"], ["cat"]), gt, ["cat"])
    assert result["VOC07_mAP50"] == pytest.approx(3 / 11, abs=1e-12)
