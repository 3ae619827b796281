"""The whole evaluation chain with an oracle detector: dataset targets -> network outputs -> post-processing ->
rescaling to each original image -> results files -> metric.

The oracle outputs, for every object of the loader's target (normalised, the frame training learns), one anchor
regressing exactly onto it. Its detections must then land on the ground truth the metric reads (VOC XML 1-based
pixels, COCO ``[x, y, w, h]``) in each image's own size, so it scores AP 1 at every IoU threshold up to 0.95:
a one-pixel slip between the frames (the authors' +1 on every devkit coordinate, a +1 COCO width, an (h, w) swap)
drops the 3-4 px objects below IoU 0.95, most below 0.5.
"""
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from data import build_dataset, build_loader
from data.transforms import PIXEL_MEAN_BGR
from utils.box import BoxCoder, PriorBox
from utils.inference import evaluate_detections, run_inference

SIZE = 64
PRIORS = PriorBox(size=SIZE).forward()  # [510, 4] cxcywh


def grey_image(path: Path, height: int, width: int, index: int) -> None:
    """Image ``index`` is a flat grey 20 * (index + 1), which the oracle reads back from the network input."""
    cv2.imwrite(str(path), np.full((height, width, 3), 20 * (index + 1), np.uint8))


class OracleDetector(nn.Module):
    """``loc``/``conf`` per dataset image; the image's grey level (after the mean subtraction) picks its outputs."""

    def __init__(self, loc: torch.Tensor, conf: torch.Tensor):
        super().__init__()
        self.register_buffer("loc", loc)
        self.register_buffer("conf", conf)

    def forward(self, images):
        index = ((images[:, 0, 0, 0] + float(PIXEL_MEAN_BGR[0])) / 20).round().long() - 1
        return self.loc[index], self.conf[index]


def oracle_for(dataset, num_classes, extra=()):
    """Outputs regressing one anchor onto each object of each image's target, at scores 0.9, 0.89, ...; ``extra``:
    ``(image index, class, score)`` detections of the anchor box itself. Every other pair scores ~2e-9."""
    coder = BoxCoder()
    anchors_xyxy = torch.cat([PRIORS[:, :2] - PRIORS[:, 2:] / 2, PRIORS[:, :2] + PRIORS[:, 2:] / 2], 1)
    loc = torch.zeros(len(dataset), len(PRIORS), 4)
    conf = torch.full((len(dataset), len(PRIORS), num_classes), -20.0)
    for i in range(len(dataset)):
        _, target, _ = dataset[i]
        used = torch.zeros(len(PRIORS), dtype=torch.bool)
        for j, (box, label) in enumerate(zip(target[:, :4], target[:, 4].long())):
            overlap = torch.minimum(anchors_xyxy[:, 2:], box[2:]) - torch.maximum(anchors_xyxy[:, :2], box[:2])
            anchor = int(torch.where(used, -1.0, overlap.clamp(min=0).prod(1)).argmax())  # an unused anchor on it
            used[anchor] = True
            loc[i, anchor] = coder.encode(box[None], PRIORS[anchor][None])[0]
            conf[i, anchor, label] = math.log((0.9 - 0.01 * j) / (0.1 + 0.01 * j))
    for i, label, score in extra:
        conf[i, len(PRIORS) - 1, label] = math.log(score / (1 - score))
    return OracleDetector(loc, conf)


def detect(dataset, model):
    loader = build_loader(dataset, 2, train=False, workers=0)
    return run_inference(model, loader, PRIORS, torch.device("cpu"))


def test_voc_oracle_scores_one_and_its_devkit_lines_are_the_xml_boxes(tmp_path):
    # (height, width) per image, all different and not square; objects (name, XML x1, y1, x2, y2, difficult)
    samples = {
        "000005": ((48, 80), [("cat", 10, 20, 12, 23, 0), ("dog", 40, 5, 79, 47, 0), ("cat", 60, 30, 63, 33, 1)]),
        "000009": ((90, 30), [("dog", 1, 1, 4, 3, 0), ("cat", 5, 40, 30, 90, 0)]),
        "000013": ((40, 40), []),
    }
    for part in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / part).mkdir(parents=True)
    for index, (image_id, ((height, width), objects)) in enumerate(samples.items()):
        grey_image(tmp_path / "JPEGImages" / f"{image_id}.jpg", height, width, index)
        body = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                       f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for n, x1, y1, x2, y2, d in objects)
        (tmp_path / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>{body}"
            "</annotation>")
    (tmp_path / "ImageSets/Main/test.txt").write_text("".join(f"{i}\n" for i in samples))
    (tmp_path / "ImageSets/Main/train.txt").write_text("")
    dataset = build_dataset("custom", "test", SIZE, data_root=str(tmp_path), classes="cat,dog")

    detections = detect(dataset, oracle_for(dataset, 2))
    assert [len(d["scores"]) for d in detections] == [3, 2, 0]  # the difficult cat is detected too, and ignored
    metrics = evaluate_detections(dataset, detections, tmp_path / "eval", run_info={})
    assert metrics["per_threshold_AP"] == [[1.0, 1.0]] * 10
    assert metrics["mAP"] == metrics["AP50"] == metrics["AP75"] == metrics["VOC07_mAP50"] == 1.0

    for c, name in enumerate(("cat", "dog")):  # the devkit files hold the XML boxes, up to float32 rounding
        lines = [line.split() for line in (tmp_path / "eval" / f"comp4_det_test_{name}.txt").read_text().splitlines()]
        expected = sorted((image_id, *box) for image_id, (_, objects) in samples.items()
                          for n, *box, _ in objects if n == name)
        written = sorted((line[0], *map(float, line[2:])) for line in lines)
        assert [w[0] for w in written] == [e[0] for e in expected]
        np.testing.assert_allclose(np.array([w[1:] for w in written]), np.array([e[1:] for e in expected]),
                                   rtol=0, atol=1e-3)


CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 44, "name": "bottle"}]
IMAGES = [  # non-square, each its own size, ids not in file order; image 632 has no annotation
    {"id": 285, "file_name": "000000000285.jpg", "height": 60, "width": 90},
    {"id": 139, "file_name": "000000000139.jpg", "height": 100, "width": 45},
    {"id": 632, "file_name": "000000000632.jpg", "height": 40, "width": 40},
]
ANNOTATIONS = [  # [x, y, w, h] float boxes, sides over 7 px (smaller ones are not in the loader's targets)
    (285, 44, [3.25, 4.5, 8.5, 9.0], 0), (285, 90, [20.0, 30.0, 60.75, 25.5], 0), (285, 1, [60.0, 2.0, 29.0, 20.0], 1),
    (139, 1, [0.0, 0.0, 45.0, 100.0], 0), (139, 44, [10.5, 60.25, 9.0, 8.5], 0), (139, 44, [30.0, 5.0, 12.0, 30.0], 0),
]


def test_coco_oracle_scores_pycocotools_numbers_with_categories_mapped_back(tmp_path):
    """Categories listed out of id order with gaps (labels follow the json's order, results carry the ids), a crowd
    region (its detection is ignored), and an image without objects whose one detection, a 0.95 bottle, scores above
    everything: bottle's 3 objects then come at precisions 1/2, 2/3, 3/4, so its AP is 3/4 at every threshold (all 101
    recall points interpolate to 3/4); toothbrush and person have AP 1, and COCO's mAP is (1 + 1 + 3/4) / 3."""
    annotations = [{"id": n, "image_id": image_id, "category_id": category_id, "bbox": box, "area": box[2] * box[3],
                    "iscrowd": crowd} for n, (image_id, category_id, box, crowd) in enumerate(ANNOTATIONS, 1)]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val").mkdir()
    json_path = tmp_path / "annotations" / "instances_val.json"
    json_path.write_text(json.dumps({"images": IMAGES, "annotations": annotations, "categories": CATEGORIES}))
    for index, image in enumerate(IMAGES):
        grey_image(tmp_path / "val" / image["file_name"], image["height"], image["width"], index)
    dataset = build_dataset("custom", "test", SIZE, data_root=str(tmp_path))
    assert dataset.category_ids == [90, 1, 44] and dataset.image_ids == [285, 139, 632]

    bottle = dataset.category_ids.index(44)
    detections = detect(dataset, oracle_for(dataset, 3, extra=[(2, bottle, 0.95)]))
    metrics = evaluate_detections(dataset, detections, tmp_path / "eval", run_info={"split": "val"})
    assert metrics["per_class_AP"] == pytest.approx({"toothbrush": 1.0, "person": 1.0, "bottle": 0.75}, abs=1e-12)
    assert metrics["mAP"] == pytest.approx(2.75 / 3, abs=1e-12)
    assert metrics["AP50"] == metrics["AP75"] == metrics["mAP"]

    # the file is the official results format, and pycocotools scoring it over every image gives the same numbers
    written = json.loads((tmp_path / "eval" / "detections_val_results.json").read_text())
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} and type(r["image_id"]) is int
               and type(r["category_id"]) is int and type(r["score"]) is float
               and len(r["bbox"]) == 4 and all(type(v) is float for v in r["bbox"]) for r in written)
    ground_truth = COCO(str(json_path))
    evaluator = COCOeval(ground_truth, ground_truth.loadRes(str(tmp_path / "eval" / "detections_val_results.json")),
                         iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert metrics["stats"] == evaluator.stats.tolist()

    # every object (the crowd region too) has its detection: same image, category id and [x, y, w, h]
    found = {(r["image_id"], r["category_id"]): [] for r in written}
    for r in written:
        found[(r["image_id"], r["category_id"])].append(r["bbox"])
    for image_id, category_id, box, _ in ANNOTATIONS:
        assert np.abs(np.array(found[(image_id, category_id)]) - box).max(axis=1).min() < 1e-3
    assert len(written) == len(ANNOTATIONS) + 1
