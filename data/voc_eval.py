"""PASCAL VOC detection metric, vectorised, plus the VOC-devkit results files.

Two numbers come out of the same matching (facts §8, §11.10):

* **the paper's protocol**: for each IoU threshold in 0.50:0.05:0.95, the mean over classes of the
  VOC07 11-point AP; ``mAP`` is the mean over the ten thresholds, ``AP50`` / ``AP75`` are the
  thresholds 0.50 / 0.75. This "mAP" is *not* the standard VOC number.
* **the standard VOC07 mAP@0.5**: the mean over classes of the 11-point AP at IoU 0.5.

Matching follows the VOC devkit (``VOCevaldet.m``), in the devkit's 1-based pixel frame:

* IoU uses the "+1" pixel convention (a box from x1 to x2 covers ``x2 - x1 + 1`` pixels);
* each detection, in descending score order (equal scores in the results file's line order, as ``VOCevaldet``'s
  stable ``sort``: images in dataset order for the files this project writes and for detections scored in memory,
  each line's place for a file ``read_voc_results`` reads), looks at the ground truth of its image and class
  with the highest IoU (ties: the first box). It is a true positive if that IoU reaches the threshold
  and the box is not yet taken, a false positive if the IoU does not reach the threshold
  or the box is taken (a duplicate), and **neither** if the box is marked difficult;
* difficult boxes do not count in the number of positives.

"Reaches" differs between the official MATLAB devkit and the authors' Python port of it (py-faster-rcnn's
``voc_eval.py``, facts §8): ``VOCevaldet.m`` matches at ``IoU >= threshold``, the port needs ``IoU > threshold``. The
paper's protocol uses the port's rule, as the authors did; the standard VOC07 mAP@0.5 the devkit's, so an IoU of
exactly 0.5 counts for it and not for ``AP50``. One more difference is kept in both: where a class's first detections
all match difficult boxes, the devkit's precision is 0/0 (NaN, which MATLAB's ``max`` skips, so its AP is NaN only when
every detection of the class does), here 0 as in the port. The 11 recall points differ too: the devkit's ``for
t=0:0.1:1`` builds MATLAB's colon range (its second half ``1 - k * 0.1``, so 0.6 and 0.7 are the decimal values),
the port's ``np.arange(0.0, 1.1, 0.1)`` (``k * 0.1``: 0.6000000000000001, 0.7000000000000001); each number uses its
reference's, so a class with 5 objects of which 3 are found reaches the point 0.6 only in the standard number.

Because the best box of a detection does not depend on which boxes are taken, the greedy devkit
loop is equivalent to: "among the detections whose best box is g and whose IoU is above the
threshold, the highest-scoring one is the true positive". That is what lets one IoU computation per
detection serve all thresholds at once.

Coordinates: detections are ``x1y1x2y2`` 0-based continuous pixels of the original image (the
project's convention: a box from 0 to 10 covers the ten pixels 0..9); the ground truth is the XML's
1-based inclusive pixel indices (the same ten pixels are 1..10). ``to_devkit_pixels`` maps the first
frame onto the second, ``(x1 + 1, y1 + 1, x2, y2)``, for matching and for the results files. (The
authors added 1 to all four coordinates, which is right only for 0-based *inclusive* corners.)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from data.errors import DataError, DataWarning, format_problems
from data.voc import from_devkit_pixels, read_utf8_text, to_devkit_pixels
from utils.files import replace_text, write_arrays

PAPER_IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)
DEVKIT_RESULTS_TEMPLATE = "comp4_det_test_{}.txt"
PR_CURVES_TEMPLATE = "{}_pr.npz"  # named after the class, as the devkit results files


def iou_plus_one(boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Row-wise IoU with the devkit's "+1" pixel convention.

    Args:
        boxes: ``[N, 4]`` x1y1x2y2 in 1-based pixels.
        gt_boxes: ``[N, 4]`` x1y1x2y2 in 1-based pixels, paired with ``boxes`` row by row.

    Returns:
        ``[N]`` float64 IoU of each pair; 0 for a pair without positive union (two degenerate boxes, which can only
        come from an annotation: the devkit's 0/0 there matches nothing either).
    """
    inter_w = np.minimum(boxes[:, 2], gt_boxes[:, 2]) - np.maximum(boxes[:, 0], gt_boxes[:, 0]) + 1.0
    inter_h = np.minimum(boxes[:, 3], gt_boxes[:, 3]) - np.maximum(boxes[:, 1], gt_boxes[:, 1]) + 1.0
    inter = np.maximum(inter_w, 0.0) * np.maximum(inter_h, 0.0)
    area = (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0)
    gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0] + 1.0) * (gt_boxes[:, 3] - gt_boxes[:, 1] + 1.0)
    union = area + gt_area - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """MATLAB's ``start:step:stop`` bit for bit (``n`` whole steps): the first half ``start + k * step``, the second
    half ``stop - k * step``, the middle of an even count ``(start + stop) / 2`` (MathWorks' COLONOP description)."""
    n = int(round((stop - start) / step))
    k = np.arange(n // 2 + 1)
    values = np.empty(n + 1)
    values[k] = start + k * step
    values[n - k] = stop - k * step
    if n % 2 == 0:
        values[n // 2] = (start + stop) / 2
    return values


PORT_RECALL_POINTS = np.arange(0.0, 1.1, 0.1)
"""The 11 recall points of the authors' port (``np.arange``: ``0 + k * 0.1``, so 0.3, 0.6 and 0.7 are a hair above the
decimal values)."""
DEVKIT_RECALL_POINTS = _matlab_colon(0.0, 0.1, 1.0)
"""The 11 recall points of the official devkit (``VOCevaldet.m``: ``for t=0:0.1:1``): only 0.3 is a hair above."""


def voc_ap(
    recall: np.ndarray,
    precision: np.ndarray,
    use_07_metric: bool = True,
    recall_points: np.ndarray = PORT_RECALL_POINTS,
) -> float:
    """Average precision of one PR curve.

    Args:
        recall: ``[N]`` cumulative recall, in detection order.
        precision: ``[N]`` cumulative precision, in detection order.
        use_07_metric: VOC07 11-point interpolation (mean over ``recall_points`` of the highest precision at a
            recall >= that point, 0 where none) if True, else the VOC2010+ area under the monotone precision
            envelope.
        recall_points: ``[11]`` the points 0, 0.1, ..., 1 as float64 values: :data:`PORT_RECALL_POINTS` (the
            authors' port, the paper's protocol) or :data:`DEVKIT_RECALL_POINTS` (the official devkit). They differ
            at 0.6 and 0.7: with the port's, a recall of exactly 0.6 (3 of 5 objects) does not reach the point "0.6".
    """
    if use_07_metric:
        reached = recall[None, :] >= recall_points[:, None]  # [11, N]
        best = np.where(reached, precision[None, :], 0.0).max(axis=1, initial=0.0)
        return float(best.mean())
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _best_ground_truth(
    det_image: np.ndarray, det_boxes: np.ndarray, gt_start: np.ndarray, gt_count: np.ndarray, gt_boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For every detection, the highest IoU over the ground truth of its image and its argmax.

    Args:
        det_image: ``[N]`` image index of each detection.
        det_boxes: ``[N, 4]`` 1-based pixels.
        gt_start, gt_count: ``[num_images]`` where each image's boxes start in ``gt_boxes`` and how many.
        gt_boxes: ``[G, 4]`` 1-based pixels, grouped by image.

    Returns:
        ``best_iou [N]`` (0 for an image without boxes) and ``best_gt [N]`` (index into ``gt_boxes``,
        -1 for an image without boxes). Ties go to the first box, as ``np.argmax`` in the devkit.
    """
    counts = gt_count[det_image]  # [N] boxes to compare with
    pair_det = np.repeat(np.arange(len(det_image)), counts)  # [P] one row per (detection, box) pair
    pair_offset = np.arange(len(pair_det)) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_gt = gt_start[det_image][pair_det] + pair_offset
    iou = iou_plus_one(det_boxes[pair_det], gt_boxes[pair_gt])

    best_iou = np.zeros(len(det_image))
    best_gt = np.full(len(det_image), -1, dtype=np.int64)
    has_gt = counts > 0
    if has_gt.any():  # pairs are grouped by detection, so each detection's pairs form one segment
        segment_start = (np.cumsum(counts) - counts)[has_gt]
        best_iou[has_gt] = np.maximum.reduceat(iou, segment_start)
        is_best = np.flatnonzero(iou == best_iou[pair_det])
        first_det, first = np.unique(pair_det[is_best], return_index=True)
        best_gt[first_det] = pair_gt[is_best[first]]
    return best_iou, best_gt


TRUE_POSITIVE, FALSE_POSITIVE, NEITHER = 1, 0, -1  # a detection's outcome (NEITHER: it matched a difficult box)
PR_CURVES_KEYS = ("iou_thresholds", "scores", "outcome", "num_positives", "ap")  # the arrays of <class>_pr.npz


@dataclass(frozen=True)
class PRCurves:
    """One class's detections as the metric walks them, from which its precision-recall curves follow.

    Attributes:
        iou_thresholds: ``[T]`` float64, the thresholds (the paper's protocol: a match needs IoU strictly above).
        scores: ``[N]`` float32, the class's detection scores in the metric's order: descending, equal scores in the
            results file's line order (images in dataset order, unless the detections carry a ``rank``).
        outcome: ``[T, N]`` int8, each detection's outcome at each threshold: ``TRUE_POSITIVE`` (1),
            ``FALSE_POSITIVE`` (0: no box above the threshold, or a duplicate) or ``NEITHER`` (-1: matched a difficult
            box).
        num_positives: the class's non-difficult boxes (the denominator of recall).
        ap: ``[T]`` float64, the AP the metric reports (NaN for a class without a non-difficult object).
    """

    iou_thresholds: np.ndarray
    scores: np.ndarray
    outcome: np.ndarray
    num_positives: int
    ap: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name, as ``<class>_pr.npz`` holds them (:data:`PR_CURVES_KEYS`; 14 bytes a detection at
        T = 10)."""
        return {
            "iou_thresholds": np.asarray(self.iou_thresholds, dtype=np.float64),
            "scores": np.asarray(self.scores, dtype=np.float32),
            "outcome": np.asarray(self.outcome, dtype=np.int8),
            "num_positives": np.int64(self.num_positives),
            "ap": np.asarray(self.ap, dtype=np.float64),
        }


def recall_precision(outcome: np.ndarray, num_positives: int) -> tuple[np.ndarray, np.ndarray]:
    """The cumulative recall and precision after each detection, as the metric computes them.

    Args:
        outcome: ``[..., N]`` each detection's outcome in the metric's order (:class:`PRCurves`: 1 true positive,
            0 false positive, -1 neither).
        num_positives: the class's non-difficult boxes.

    Returns:
        ``recall [..., N]`` (NaN everywhere when ``num_positives`` is 0) and ``precision [..., N]`` (0 before the first
        true or false positive; a detection of a difficult object repeats the value before it), float64.
    """
    tp = np.cumsum(outcome == TRUE_POSITIVE, axis=-1, dtype=np.float64)
    fp = np.cumsum(outcome == FALSE_POSITIVE, axis=-1, dtype=np.float64)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    recall = tp / num_positives if num_positives else np.full(tp.shape, np.nan)
    return recall, precision


def read_pr_curves(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a ``<class>_pr.npz`` (:func:`write_voc_pr_curves`) without pickle and computes its curves.

    Returns:
        The file's arrays (:class:`PRCurves`: ``iou_thresholds [T]``, ``scores [N]``, ``outcome [T, N]``,
        ``num_positives`` (0-d), ``ap [T]``) and ``recall [T, N]`` and ``precision [T, N]``
        (:func:`recall_precision`): ``voc_ap(recall[t], precision[t])`` is ``ap[t]``.

    Raises :class:`DataError` naming the file when it lacks one of those arrays.
    """
    with np.load(path, allow_pickle=False) as saved:
        missing = [key for key in sorted(PR_CURVES_KEYS) if key not in saved.files]
        if missing:
            raise DataError(f"{path}: not a precision-recall curves file: no {', '.join(missing)}; an evaluation "
                            "writes <class>_pr.npz beside its comp4_det_test_<class>.txt (--eval_results <folder> "
                            "writes them again)")
        arrays = {key: saved[key] for key in PR_CURVES_KEYS}
    arrays["recall"], arrays["precision"] = recall_precision(arrays["outcome"], int(arrays["num_positives"]))
    return arrays


def _class_curves(
    scores: np.ndarray,
    rank: np.ndarray,
    best_iou: np.ndarray,
    best_gt: np.ndarray,
    gt_difficult: np.ndarray,
    num_positives: int,
    iou_thresholds: np.ndarray,
    use_07_metric: bool,
    devkit: bool = False,
) -> PRCurves:
    """Each detection's outcome and the AP of one class at every threshold (AP NaN when the class has no
    non-difficult box): as the official devkit if ``devkit`` (a match needs ``IoU >= threshold``, the devkit's 11
    recall points), else as the authors' port (``IoU > threshold``, the port's points); equal ``scores`` [N] are
    taken in ascending ``rank`` [N]."""
    order = np.lexsort((rank, -scores))
    best_iou, best_gt = best_iou[order], best_gt[order]
    hits_difficult = np.zeros(len(order), dtype=bool)
    hits_difficult[best_gt >= 0] = gt_difficult[best_gt[best_gt >= 0]]

    outcome = np.full((len(iou_thresholds), len(order)), FALSE_POSITIVE, dtype=np.int8)
    for t, threshold in enumerate(iou_thresholds):
        above = best_iou >= threshold if devkit else best_iou > threshold
        candidate = np.flatnonzero(above & ~hits_difficult)
        _, first = np.unique(best_gt[candidate], return_index=True)
        outcome[t, above & hits_difficult] = NEITHER
        outcome[t, candidate[first]] = TRUE_POSITIVE
    aps = np.full(len(iou_thresholds), np.nan)
    if num_positives:
        recall, precision = recall_precision(outcome, num_positives)
        points = DEVKIT_RECALL_POINTS if devkit else PORT_RECALL_POINTS
        aps = np.array([voc_ap(r, p, use_07_metric, points) for r, p in zip(recall, precision)])
    return PRCurves(iou_thresholds, scores[order].astype(np.float32), outcome, num_positives, aps)


def evaluate_voc(
    detections: Sequence[dict],
    ground_truth: Sequence[dict],
    class_names: Sequence[str],
    *,
    iou_thresholds: np.ndarray = PAPER_IOU_THRESHOLDS,
    use_07_metric: bool = True,
) -> dict:
    """VOC AP of every class at every IoU threshold, with the paper's and the standard summaries.

    Args:
        detections: one dict per image, ``{"boxes": [n, 4] x1y1x2y2 0-based continuous pixels,
            "scores": [n], "labels": int [n] in 0..C-1}`` (numpy arrays or CPU tensors), and optionally, in every
            dict, ``"rank": int [n]``: the order in which equal scores of a class are taken (a results file's line
            order, as :func:`read_voc_results` gives it); without it, the order of the list (images in dataset order,
            each image's detections in order).
        ground_truth: one dict per image, in the same order, ``{"boxes": [m, 4] x1y1x2y2 1-based
            pixels as in the XML, "labels": int [m], "difficult": bool [m]}``.
        class_names: the ``C`` class names.
        iou_thresholds: ``[T]`` thresholds of the paper's protocol; a match needs IoU strictly above the threshold.
        use_07_metric: 11-point interpolated AP (VOC07, the paper) if True, else the area metric.

    Returns:
        ``{"mAP", "AP50", "AP75"}`` (the paper's protocol; ``AP50``/``AP75`` are NaN if 0.5/0.75 is
        not among the thresholds), ``"VOC07_mAP50"`` (standard VOC07 11-point mAP at IoU 0.5, matched at IoU >= 0.5
        as the official devkit), ``"per_class_AP50"`` (class name -> that VOC07 11-point AP at IoU 0.5),
        ``"iou_thresholds"`` and
        ``"per_threshold_AP"`` (``[T][C]`` nested lists). Classes without a non-difficult box have
        AP NaN and are left out of every mean.
    """
    return evaluate_voc_with_curves(detections, ground_truth, class_names, iou_thresholds=iou_thresholds,
                                    use_07_metric=use_07_metric)[0]


def evaluate_voc_with_curves(
    detections: Sequence[dict],
    ground_truth: Sequence[dict],
    class_names: Sequence[str],
    *,
    iou_thresholds: np.ndarray = PAPER_IOU_THRESHOLDS,
    use_07_metric: bool = True,
) -> tuple[dict, dict[str, PRCurves]]:
    """:func:`evaluate_voc`'s metrics and, from the same matching, every class's :class:`PRCurves` (class name ->
    curves, in class order; their ``ap`` is the metric's: ``per_threshold_AP``'s column of the class)."""
    if len(detections) != len(ground_truth):
        raise ValueError(
            f"evaluate_voc: {len(detections)} detection entries but {len(ground_truth)} ground-truth entries; "
            "pass one entry per image, in dataset order"
        )
    iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    num_classes = len(class_names)

    det_boxes, det_scores, det_labels, det_image = _concatenate(detections, ("boxes", "scores", "labels"))
    ranked = bool(detections) and all("rank" in d for d in detections)
    det_rank = _concatenate(detections, ("rank",))[0].astype(np.int64) if ranked else np.arange(len(det_scores))
    gt_boxes, gt_labels, gt_difficult, gt_image = _concatenate(ground_truth, ("boxes", "labels", "difficult"))
    det_labels, gt_labels = det_labels.astype(np.int64), gt_labels.astype(np.int64)
    det_boxes = to_devkit_pixels(det_boxes)
    gt_boxes = gt_boxes.reshape(-1, 4).astype(np.float64)
    gt_difficult = gt_difficult.astype(bool)
    _check_labels(det_labels, num_classes, "detections")
    _check_labels(gt_labels, num_classes, "ground truth")

    gt_order = np.lexsort((gt_image, gt_labels))  # group by class, then by image
    gt_boxes, gt_labels, gt_difficult, gt_image = (a[gt_order] for a in (gt_boxes, gt_labels, gt_difficult, gt_image))
    det_order = np.argsort(det_labels, kind="stable")
    det_boxes, det_scores, det_labels, det_image, det_rank = (
        a[det_order] for a in (det_boxes, det_scores, det_labels, det_image, det_rank)
    )
    gt_bounds = np.searchsorted(gt_labels, np.arange(num_classes + 1))
    det_bounds = np.searchsorted(det_labels, np.arange(num_classes + 1))

    num_images = len(ground_truth)
    i50 = _threshold_index(iou_thresholds, 0.5)
    ap = np.empty((len(iou_thresholds), num_classes))
    voc07_ap50 = np.empty(num_classes)
    curves = {}
    for c in range(num_classes):
        gts = slice(gt_bounds[c], gt_bounds[c + 1])
        dets = slice(det_bounds[c], det_bounds[c + 1])
        gt_count = np.bincount(gt_image[gts], minlength=num_images)
        gt_start = np.cumsum(gt_count) - gt_count
        best_iou, best_gt = _best_ground_truth(det_image[dets], det_boxes[dets], gt_start, gt_count, gt_boxes[gts])
        num_positives = int(np.count_nonzero(~gt_difficult[gts]))
        match = (det_scores[dets], det_rank[dets], best_iou, best_gt, gt_difficult[gts], num_positives)
        curves[class_names[c]] = _class_curves(*match, iou_thresholds, use_07_metric)
        ap[:, c] = curves[class_names[c]].ap
        voc07_ap50[c] = _class_curves(*match, np.array([0.5]), True, devkit=True).ap[0]

    mean_ap = _mean_over_classes(ap)  # [T]
    i75 = _threshold_index(iou_thresholds, 0.75)
    metrics = {
        "mAP": float(mean_ap.mean()),
        "AP50": float(mean_ap[i50]) if i50 is not None else float("nan"),
        "AP75": float(mean_ap[i75]) if i75 is not None else float("nan"),
        "VOC07_mAP50": float(_mean_over_classes(voc07_ap50[None])[0]),
        "per_class_AP50": {name: float(v) for name, v in zip(class_names, voc07_ap50)},
        "iou_thresholds": [float(t) for t in iou_thresholds],
        "per_threshold_AP": ap.tolist(),
    }
    return metrics, curves


def _threshold_index(iou_thresholds: np.ndarray, value: float) -> int | None:
    hits = np.flatnonzero(np.isclose(iou_thresholds, value))
    return int(hits[0]) if len(hits) else None


def _mean_over_classes(ap: np.ndarray) -> np.ndarray:
    """``[T, C]`` -> ``[T]`` mean over the classes that have ground truth (NaN if none has)."""
    evaluated = ~np.isnan(ap).all(axis=0)
    return ap[:, evaluated].mean(axis=1) if evaluated.any() else np.full(len(ap), np.nan)


def _concatenate(items: Sequence[dict], keys: tuple[str, ...]) -> list[np.ndarray]:
    """Concatenates ``keys`` of per-image dicts and appends the image index of every row."""
    columns = [[np.asarray(item[key]).reshape((-1, 4) if key == "boxes" else -1) for item in items] for key in keys]
    counts = [len(a) for a in columns[0]]
    out = [np.concatenate(col) if col else np.zeros(0) for col in columns]
    out.append(np.repeat(np.arange(len(items)), counts))
    return out


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"evaluate_voc: {what} labels span {labels.min()}..{labels.max()} but there are {num_classes} classes; "
            "labels must be foreground indices 0..C-1"
        )


def write_voc_results(
    detections: Sequence[dict], image_ids: Sequence[str], class_names: Sequence[str], out_dir: Path
) -> list[Path]:
    """Writes the VOC-devkit results files ``out_dir/comp4_det_test_<class>.txt``.

    One line per detection: ``image_id score x1 y1 x2 y2``, the box in the devkit's 1-based pixels
    (``to_devkit_pixels``). Numbers are written with every digit they need (9 significant digits for the float32
    score, the shortest exact form of the float64 devkit coordinate), so ``read_voc_results`` gives back the very
    float32 detections and re-scoring the files (``--eval_results``) reproduces the evaluation that wrote them, ties
    included.
    Returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    boxes, scores, labels, image = _concatenate(detections, ("boxes", "scores", "labels"))
    boxes = to_devkit_pixels(boxes)
    labels = labels.astype(np.int64)
    ids = np.array([str(image_id) for image_id in image_ids], dtype=object)
    paths = []
    for c, name in enumerate(class_names):
        rows = np.flatnonzero(labels == c)
        path = out_dir / DEVKIT_RESULTS_TEMPLATE.format(name)
        replace_text(path, _results_text(ids[image[rows]], scores[rows], boxes[rows]))
        paths.append(path)
    return paths


def _results_text(image_ids: np.ndarray, scores: np.ndarray, boxes: np.ndarray) -> str:
    """The lines ``image_id score x1 y1 x2 y2`` of ``[N]`` ids (object array of str), ``[N]`` scores and ``[N, 4]``
    float64 devkit boxes: the score as ``%.9g``, each coordinate as ``%r`` (its shortest exact form), all the lines
    formatted by one ``%`` of a table of Python objects rather than one f-string per line."""
    table = np.empty((len(scores), 6), dtype=object)
    table[:, 0] = image_ids
    table[:, 1] = np.asarray(scores, dtype=np.float64)  # Python floats, as float32 .tolist() gives
    table[:, 2:] = boxes
    return ("%s %.9g %r %r %r %r\n" * len(table)) % tuple(table.ravel().tolist())


def write_voc_pr_curves(curves: dict[str, PRCurves], out_dir: Path) -> list[Path]:
    """Writes each class's curves (:func:`evaluate_voc_with_curves`) to ``out_dir/<class>_pr.npz``
    (:meth:`PRCurves.arrays`, no object array; :func:`read_pr_curves` reads it back with its recall and precision).
    Returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, class_curves in curves.items():
        path = out_dir / PR_CURVES_TEMPLATE.format(name)
        write_arrays(path, class_curves.arrays())
        paths.append(path)
    return paths


def read_voc_results(folder: Path, image_ids: Sequence[str], class_names: Sequence[str]) -> list[dict]:
    """Reads ``comp4_det_test_<class>.txt`` files back into per-image detections (0-based pixels), each with the
    ``rank`` of its line (its place among the files' lines, class file by class file), so that :func:`evaluate_voc`
    takes equal scores in the file's line order, as ``VOCevaldet`` does, whatever order the file lists its images in.

    A missing class file means no detection of that class, with a :class:`DataWarning` naming the classes
    (:func:`write_voc_results` writes a file for every class, even an empty one). Raises :class:`DataError` naming
    the folder when it holds no file of these classes, and one listing every file and line that is not
    ``image_id score x1 y1 x2 y2`` with an image id of ``image_ids`` and finite numbers.
    """
    folder = Path(folder)
    paths = {c: folder / DEVKIT_RESULTS_TEMPLATE.format(name) for c, name in enumerate(class_names)}
    missing = [class_names[c] for c, path in paths.items() if not path.is_file()]
    paths = {c: path for c, path in paths.items() if path.is_file()}
    if missing and paths:
        warnings.warn(f"{folder}: no {DEVKIT_RESULTS_TEMPLATE.format('<class>')} file for the classes {missing}: "
                      "scored as no detections of them (AP 0)", DataWarning, stacklevel=2)
    if not paths:
        expected = [DEVKIT_RESULTS_TEMPLATE.format(name) for name in class_names[:3]] + ["..."] * (len(class_names) > 3)
        raise DataError(
            f"{folder}: no results file of this dataset's classes ({', '.join(expected)}); "
            "pass the folder the evaluation wrote"
        )
    position = {str(image_id): i for i, image_id in enumerate(image_ids)}
    images, values, labels = [], [], []
    problems: list[str] = []
    for c, path in paths.items():
        text = read_utf8_text(path)
        parsed = _parse_results_text(text, position)
        if parsed is None:  # a malformed line: read again line by line, naming each one that is
            problems += _results_line_problems(text, position, path)
            continue
        images.append(parsed[0])
        values.append(parsed[1])
        labels.append(np.full(len(parsed[0]), c, dtype=np.int64))
    if problems:
        raise DataError(format_problems(f"VOC results in {folder}", problems))
    image, value, label = np.concatenate(images), np.concatenate(values), np.concatenate(labels)
    order = np.argsort(image, kind="stable")  # per image: the class files in order, each file's lines in order
    boxes = from_devkit_pixels(value[order, 1:]).astype(np.float32)
    if hint := _width_height_hint(boxes):
        warnings.warn(f"{folder}: {hint}", DataWarning, stacklevel=2)
    scores, label = value[order, 0].astype(np.float32), label[order]
    ends = np.cumsum(np.bincount(image, minlength=len(image_ids)))
    return [
        {"boxes": boxes[start:end], "scores": scores[start:end], "labels": label[start:end], "rank": order[start:end]}
        for start, end in zip([0, *ends[:-1].tolist()], ends.tolist())
    ]


def _width_height_hint(boxes: np.ndarray) -> str | None:
    """What to check when the results' boxes ``[N, 4]`` (0-based x1y1x2y2) look written as ``x y width height``: at
    least 3 of them, and a tenth, with x2 < x1 or y2 < y1, which no detector writes (a degenerate box has x2 = x1);
    ``None`` otherwise."""
    inverted = int(np.count_nonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])))
    if inverted < 3 or inverted * 10 < len(boxes):
        return None
    return (f"{inverted} of the {len(boxes)} detections have x2 < x1 or y2 < y1: the lines are "
            "'image_id score x1 y1 x2 y2' (corners); if they hold x y width height, write the corners "
            "x2 = x1 + width - 1, y2 = y1 + height - 1 (the devkit's pixels)")


def _parse_results_text(text: str, position: dict[str, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``[N]`` image indices and ``[N, 5]`` float64 ``score x1 y1 x2 y2`` of a results file's lines (blank lines
    skipped), parsed a column at a time; ``None`` if any line is malformed (``_results_line_problems`` names it).

    Every line break of ``str.splitlines`` is white space to ``str.split``, so once each line has 6 fields (or none)
    the fields of the whole text are those of its lines, in order. No list per line is kept: millions of them would
    make Python's garbage collector walk them all again and again.
    """
    if not set(map(len, map(str.split, text.splitlines()))) <= {0, 6}:
        return None
    fields = text.split()
    try:
        image = np.array(list(map(position.__getitem__, fields[0::6])), dtype=np.int64)
        del fields[0::6]
        values = np.array(list(map(float, fields)), dtype=np.float64).reshape(-1, 5)
    except (KeyError, ValueError):
        return None
    return (image, values) if np.isfinite(values).all() else None


def _results_line_problems(text: str, position: dict[str, int], path: Path) -> list[str]:
    """What is wrong with each malformed line of a results file, named ``path:line`` (blank lines counted): the lines
    ``_parse_results_text`` refuses the file for, as it splits each line the same way."""
    problems = []
    numbered = {_number_text(image_id): image_id for image_id in position if _number_text(image_id) is not None}
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        problem = _results_line_problem(fields, position, numbered) if fields else None
        if problem:
            problems.append(f"{path}:{line_number}: {problem[0]} in {line!r}; {problem[1]}")
    return problems


def _results_line_problem(fields: Sequence[str], position: dict[str, int],
                          numbered: dict[str, str]) -> tuple[str, str] | None:
    """What is wrong with a results line's fields and the fix, or ``None`` if they are ``image_id score x1 y1 x2 y2``
    of an image scored (``position``'s ids; ``numbered``: its ids of digits alone, by :func:`_number_text`)."""
    write = "write 'image_id score x1 y1 x2 y2'"
    if len(fields) != 6:
        return f"{len(fields)} fields instead of 6", write
    try:
        values = [float(field) for field in fields[1:]]
    except ValueError:
        return "the score and coordinates must be numbers", write
    if not all(np.isfinite(values)):
        return "the score and coordinates must be finite", write
    if fields[0] not in position:  # a well-formed line: the results are of other images, or ids written otherwise
        return (f"image id {fields[0]!r} is not among the images scored", _other_image_id_fix(fields[0], position,
                                                                                              numbered))
    return None


def _other_image_id_fix(image_id: str, position: dict[str, int], numbered: dict[str, str]) -> str:
    """The fix for a results line of an ``image_id`` not among the images scored: an image id another tool wrote
    otherwise (its file name ``000123.jpg``, or a number that lost its leading zeros ``123``), or else results of
    other images."""
    stem = image_id.rpartition(".")[0]
    if stem in position:
        return f"the images scored include {stem!r}: write the ids without a file extension"
    same_number = numbered.get(_number_text(image_id))
    if same_number is not None:
        return f"the images scored include {same_number!r}: write the ids as the image list does, leading zeros kept"
    return ("results of another dataset or split? score them on the dataset their evaluation had "
            "(--dataset, --data_root)")


def _number_text(image_id: str) -> str | None:
    """An id of ASCII digits alone without its leading zeros (``"000123"``: ``"123"``), the number it reads as;
    ``None`` for any other id."""
    return image_id.lstrip("0") if image_id.isascii() and image_id.isdigit() else None
