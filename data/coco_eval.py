"""COCO detection metric through pycocotools, and the official results format.

Box convention: detections are ``x1y1x2y2`` in 0-based *continuous* pixels, the frame COCO's own
``[x, y, w, h]`` annotations live in (a box covers ``x .. x + w``). The results file therefore
holds ``[x1, y1, x2 - x1, y2 - y1]``. The authors wrote ``x2 - x1 + 1`` because their loader turned
``[x, y, w, h]`` into the inclusive corners ``x2 = x + w - 1``; with continuous corners (``x2 = x + w``,
the project's convention) the "+1" would make every box one pixel too wide and tall.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data.coco import (
    box_problem, coco_class_names, corner_boxes_hint, count_objects_to_score, is_number, no_object_to_score,
    read_json_file,
)
from data.errors import DataError, DataWarning, format_problems
from utils.files import replace_text, write_arrays

RESULT_KEYS = ("image_id", "category_id", "bbox", "score")
PR_CURVES_FILE = "detection_results.npz"  # the accumulated COCOeval arrays (the authors pickled the object)

COCO_MAX_DETECTIONS = 100  # pycocotools' largest maxDets: the detections of an image and category it scores
STAT_NAMES = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)
STAT_LABELS = tuple(
    f" {title:<18} ({short}) @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ]"  # pycocotools' layout
    for title, short, iou, area, dets in (
        ("Average Precision", "AP", "0.50:0.95", "all", 100),
        ("Average Precision", "AP", "0.50", "all", 100),
        ("Average Precision", "AP", "0.75", "all", 100),
        ("Average Precision", "AP", "0.50:0.95", "small", 100),
        ("Average Precision", "AP", "0.50:0.95", "medium", 100),
        ("Average Precision", "AP", "0.50:0.95", "large", 100),
        ("Average Recall", "AR", "0.50:0.95", "all", 1),
        ("Average Recall", "AR", "0.50:0.95", "all", 10),
        ("Average Recall", "AR", "0.50:0.95", "all", 100),
        ("Average Recall", "AR", "0.50:0.95", "small", 100),
        ("Average Recall", "AR", "0.50:0.95", "medium", 100),
        ("Average Recall", "AR", "0.50:0.95", "large", 100),
    )
)


def detections_to_coco_results(
    detections: Sequence[dict], image_ids: Sequence[int], category_ids: Sequence[int]
) -> list[dict]:
    """Per-image detections -> the official COCO results list.

    Args:
        detections: one dict per image, ``{"boxes": [n, 4] x1y1x2y2 0-based continuous pixels,
            "scores": [n], "labels": int [n] 0..C-1}``.
        image_ids: the COCO image id of each entry of ``detections``.
        category_ids: contiguous label -> COCO category id.

    Returns:
        ``[{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}, ...]``, every digit kept
        (as detectron2 and mmdetection write them): rounding would move boxes across IoU thresholds and tie scores,
        so the file would score other numbers than the detections.
    """
    if len(detections) != len(image_ids):
        raise ValueError(f"{len(detections)} detection entries but {len(image_ids)} image ids; pass one per image")
    category_ids = np.asarray(category_ids, dtype=np.int64)
    results = []
    for image_id, det in zip(image_ids, detections):
        boxes = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        categories = category_ids[np.asarray(det["labels"], dtype=np.int64)]
        scores = np.asarray(det["scores"], dtype=np.float64)
        results.extend(
            {"image_id": int(image_id), "category_id": int(c), "bbox": b, "score": float(s)}
            for c, b, s in zip(categories.tolist(), xywh.tolist(), scores.tolist())
        )
    return results


def write_coco_results(results: list[dict], path: Path) -> Path:
    """Writes a results list as JSON (the file pycocotools' ``loadRes`` and the COCO server read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_text(path, json.dumps(results))
    return path


def evaluate_coco(
    results: str | Path | list[dict], coco_gt: COCO, image_ids: Sequence[int] | None = None,
    category_ids: Sequence[int] | None = None,
) -> dict:
    """Runs pycocotools' bbox evaluation (evaluate, accumulate, summarize).

    Args:
        results: a COCO results list or the path of a results JSON file (checked first: :class:`DataError`
            lists its entries that pycocotools would fail on, see :func:`result_problem`).
        coco_gt: the ground truth.
        image_ids: images to evaluate; default all images of ``coco_gt``.
        category_ids: the model's label order (label -> category id of ``coco_gt``, as the dataset's
            ``category_ids``), which orders ``per_class_AP``; default the json's ``getCatIds()`` order. Only these
            categories are scored (pycocotools' ``params.catIds``): a json's other categories, left out by
            ``--skip_unknown_classes``, count in no mean.

    Returns:
        The 12 standard numbers under ``STAT_NAMES`` (``"AP"``, ``"AP50"``, ... ``"AR_large"``) and as
        ``"stats"`` (list, pycocotools' order); ``"mAP"``, ``"AP50"``, ``"AP75"`` (= stats 0..2);
        ``"per_class_AP"``: class name -> AP@[.50:.95] (area all, 100 detections; NaN for a category without
        ground truth), in the model's class order (``category_ids``) with the json's names
        (:func:`data.coco.coco_class_names`: without surrounding spaces), not pycocotools' order of ascending category
        id. With no
        detection at all, pycocotools' numbers for an empty result set: 0 where there are objects to find, -1
        (stats) or NaN (per class) where there are none.

    Raises :class:`DataError` (naming the ground truth's file) when the evaluated images hold no object to score
    (none, or all ``iscrowd`` 1) of the categories scored: every AP would be undefined (pycocotools prints -1).
    """
    return evaluate_coco_with_curves(results, coco_gt, image_ids, category_ids)[0]


def evaluate_coco_with_curves(
    results: str | Path | list[dict], coco_gt: COCO, image_ids: Sequence[int] | None = None,
    category_ids: Sequence[int] | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """:func:`evaluate_coco`'s metrics and the arrays of the same ``COCOeval`` run that ``detection_results.npz``
    holds (:func:`coco_curves`)."""
    if isinstance(results, (str, Path)):
        results = _load_results(Path(results), coco_gt)
    check_objects_to_score(coco_gt, image_ids, category_ids)
    coco_gt = with_positive_annotation_ids(coco_gt)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; the caller prints the table
        # loadRes adds keys to the dicts it gets, and fails on an empty list
        coco_dt = coco_gt.loadRes([dict(r) for r in results]) if results else _no_results(coco_gt)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        if category_ids is not None:  # the model's classes: a json's other categories are not scored
            evaluator.params.catIds = sorted(int(i) for i in category_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    precision = evaluator.eval["precision"]  # [T IoU, R recall, K categories (params.catIds), A areas, M maxDets]
    column = {category_id: k for k, category_id in enumerate(evaluator.params.catIds)}  # ascending ids
    per_class = {}
    category_ids = coco_gt.getCatIds() if category_ids is None else category_ids  # the labels' order
    for name, category_id in zip(coco_class_names(coco_gt, category_ids), category_ids):
        p = precision[:, :, column[category_id], 0, -1]
        per_class[name] = float(p[p > -1].mean()) if np.any(p > -1) else float("nan")
    return _metrics(np.asarray(evaluator.stats, dtype=np.float64), per_class), coco_curves(evaluator, coco_gt)


def coco_curves(evaluator: COCOeval, coco_gt: COCO) -> dict[str, np.ndarray]:
    """The accumulated arrays of ``evaluator`` (after ``accumulate``) and the parameters that index them, none an
    object array (``np.load`` reads them without pickle):

    ``precision [T, R, K, A, M]`` and ``scores [T, R, K, A, M]`` (the precision and the score at each recall threshold;
    -1 where undefined), ``recall [T, K, A, M]`` (the highest recall; -1 for a category without ground truth), with
    ``iouThrs [T]``, ``recThrs [R]``, ``catIds [K]`` (ascending, pycocotools' order), ``class_names [K]`` (those
    categories' names, as :func:`data.coco.coco_class_names`), ``areaRng [A, 2]`` (square pixels), ``areaRngLbl [A]``
    (``all``, ``small``, ``medium``, ``large``) and ``maxDets [M]``."""
    params = evaluator.params
    arrays = {name: np.asarray(evaluator.eval[name], dtype=np.float64) for name in ("precision", "recall", "scores")}
    return arrays | {
        "iouThrs": np.asarray(params.iouThrs, dtype=np.float64),
        "recThrs": np.asarray(params.recThrs, dtype=np.float64),
        "catIds": np.asarray(params.catIds, dtype=np.int64),
        "class_names": np.asarray(coco_class_names(coco_gt, params.catIds), dtype=str),
        "areaRng": np.asarray(params.areaRng, dtype=np.float64),
        "areaRngLbl": np.asarray(params.areaRngLbl, dtype=str),
        "maxDets": np.asarray(params.maxDets, dtype=np.int64),
    }


def write_coco_pr_curves(curves: dict[str, np.ndarray], out_dir: Path) -> Path:
    """Writes :func:`coco_curves`'s arrays to ``out_dir/detection_results.npz``; returns its path."""
    path = Path(out_dir) / PR_CURVES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_arrays(path, curves)
    return path


def check_objects_to_score(coco_gt: COCO, image_ids: Sequence[int] | None = None,
                           category_ids: Sequence[int] | None = None) -> None:
    """Raise :class:`DataError` naming ``coco_gt``'s file when its images ``image_ids`` (default all) hold no
    annotation of ``category_ids`` (default all) that COCO's metric scores (one with ``iscrowd`` 0), as the VOC path
    does for difficult-only splits."""
    if count_objects_to_score(coco_gt, image_ids, category_ids):
        return
    source = getattr(coco_gt, "source_file", "the COCO ground truth")
    count = len(coco_gt.imgs) if image_ids is None else len(image_ids)
    raise DataError(f"{source}: the {no_object_to_score(count, 'evaluated image')}")


def _no_results(coco_gt: COCO) -> COCO:
    """An empty detection set over ``coco_gt``'s images and categories (what ``loadRes`` would give for ``[]``)."""
    empty = COCO()
    empty.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"],
                     "annotations": []}
    empty.createIndex()
    return empty


def with_positive_annotation_ids(coco_gt: COCO) -> COCO:
    """``coco_gt``, or when an annotation id is <= 0 or repeated, a copy whose annotations are numbered 1..N (all
    else shared). pycocotools' ``COCOeval`` records a detection's match as the matched annotation's id and counts it
    only when that id is > 0, so an object with id 0 (many converters number from 0) could never be detected, and
    ``loadAnns`` gives one of two annotations sharing an id twice."""
    annotations = coco_gt.dataset["annotations"]
    ids = [annotation.get("id") for annotation in annotations]
    if all(isinstance(i, (int, float)) and i > 0 for i in ids) and len(set(ids)) == len(ids):
        return coco_gt
    renumbered = COCO()
    renumbered.dataset = dict(coco_gt.dataset, annotations=[dict(a, id=n) for n, a in enumerate(annotations, 1)])
    with contextlib.redirect_stdout(io.StringIO()):
        renumbered.createIndex()
    return renumbered


def format_coco_report(metrics: dict) -> str:
    """The 12 standard lines, the per-class AP table and the ``mAP / AP50 / AP75`` headline."""
    lines = [f"{label} = {value:0.3f}" for label, value in zip(STAT_LABELS, metrics["stats"])]
    lines.append("per-class AP@[.50:.95]:")
    width = max((len(name) for name in metrics["per_class_AP"]), default=0)
    lines += [f"  {name:<{width}}  {ap:0.3f}" for name, ap in metrics["per_class_AP"].items()]
    lines.append(f"COCO mAP = {metrics['mAP']:.4f}  AP50 = {metrics['AP50']:.4f}  AP75 = {metrics['AP75']:.4f}")
    return "\n".join(lines)


def _metrics(stats: np.ndarray, per_class: dict) -> dict:
    metrics = {name: float(v) for name, v in zip(STAT_NAMES, stats)}
    metrics.update(stats=[float(v) for v in stats], mAP=float(stats[0]), per_class_AP=per_class)
    return metrics


def result_problem(entry: object, coco_gt: COCO) -> str | None:
    """What is wrong with one entry of a results list, ``None`` when nothing: not an object, a key of
    :data:`RESULT_KEYS` missing, an ``image_id`` or ``category_id`` not in ``coco_gt`` (or one of its ids written as a
    string, ``"10"``), a ``bbox`` that is not 4 finite numbers, a ``score`` that is not a finite number (pycocotools
    fails on these with a bare AssertionError or KeyError)."""
    if not isinstance(entry, dict):
        return f"{type(entry).__name__} {entry!r:.40} is not an object {{image_id, category_id, bbox, score}}"
    missing = [key for key in RESULT_KEYS if key not in entry]
    if missing:
        return f"no {', '.join(repr(key) for key in missing)} (needs {', '.join(RESULT_KEYS)})"
    image_id, category_id = entry["image_id"], entry["category_id"]
    if not (isinstance(image_id, Hashable) and image_id in coco_gt.imgs):
        return f"image_id {image_id!r:.40} " + (_quoted_id(image_id, coco_gt.imgs, "image") or
                                                "is not an image of the ground truth; were the results made on "
                                                "another split?")
    if not (isinstance(category_id, Hashable) and category_id in coco_gt.cats):
        return f"category_id {category_id!r:.40} " + (_quoted_id(category_id, coco_gt.cats, "category") or
                                                      f"is not in the categories {coco_gt.getCatIds()}")
    if problem := box_problem(entry["bbox"]):
        return problem
    if not is_number(entry["score"]):
        return f"score {entry['score']!r:.40} is not a finite number"
    return None


def _quoted_id(value: object, ids: Mapping[int, dict], kind: str) -> str | None:
    """``is a string: the ground truth's <kind> id is the number N; ...`` when ``value`` is a string holding one of
    ``ids`` (``"10"``, or a file stem ``"000000000010"``, as some tools write ids); ``None`` otherwise."""
    if not isinstance(value, str):
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    if number not in ids:
        return None
    return f"is a string: the ground truth's {kind} id is the number {number}; write the ids as numbers, without quotes"


def _load_results(path: Path, coco_gt: COCO) -> list[dict]:
    """The results list of a JSON file (UTF-8, a byte-order mark is fine); :class:`DataError` names the file and each
    bad entry's index, or why the file cannot be read as JSON."""
    if path.is_dir():
        raise DataError(f"COCO results file {path} is a folder; give the results JSON file in it")
    if not path.is_file():
        raise FileNotFoundError(f"COCO results file {path} does not exist")
    results = read_json_file(path)
    if not isinstance(results, list):
        raise DataError(
            f"{path}: expected a JSON list of {{image_id, category_id, bbox, score}}, got {type(results).__name__}"
        )
    problems = []
    for index, entry in enumerate(results):
        problem = result_problem(entry, coco_gt)
        if problem is not None:
            problems.append(f"{path}: entry {index}: {problem}")
    if problems:
        raise DataError(format_problems(f"COCO results {path}", problems))
    if hint := _corner_results_hint(results, coco_gt):
        warnings.warn(f"{path}: {hint}", DataWarning, stacklevel=3)
    return results


def _corner_results_hint(results: list[dict], coco_gt: COCO) -> str | None:
    """:func:`data.coco.corner_boxes_hint` of the results' boxes in their images (each image's ``height`` and
    ``width`` in ``coco_gt``): what to check when they look written as [x1, y1, x2, y2]; ``None`` otherwise, or when
    an image has no size."""
    images = [coco_gt.imgs[entry["image_id"]] for entry in results]
    if not images or not all(is_number(image.get("height")) and is_number(image.get("width")) for image in images):
        return None
    xywh = np.array([entry["bbox"] for entry in results], dtype=np.float64).reshape(-1, 4)
    heights, widths = (np.array([image[key] for image in images], dtype=np.float64) for key in ("height", "width"))
    return corner_boxes_hint(xywh, heights, widths)
