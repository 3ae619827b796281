"""Evaluation speed: post-processing per batch, and the VOC / COCO metrics on 5,000 images of detections.

    python benchmarks/evaluation.py [--images 5000] [--batches 3] [--device cpu|cuda]

Synthetic data with COCO-like counts: about 7.3 objects per image (val2017: 36,781 boxes / 5,000 images),
detections = jittered copies of the objects plus random boxes, 300 per image for the VOC metric (the paper's
max_per_image) and 100 for the COCO metric (its maxDets). Post-processing runs on head
outputs of the paper's 320 model (12,750 anchors, batch 32) with untrained-like logits (sigmoid near 0.01,
so every (anchor, class) pair passes the 0.005 threshold and the pre-NMS top-k binds).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import cpu_model, device_flag, int_at_least, utc_stamp  # noqa: E402

from data.coco_eval import detections_to_coco_results, evaluate_coco  # noqa: E402
from data.voc_eval import evaluate_voc  # noqa: E402
from utils.box import PriorBox  # noqa: E402
from utils.postprocess import PRE_NMS_TOPK, PostProcessor  # noqa: E402


def synthetic_set(num_images: int, num_classes: int, dets_per_image: int,
                  seed: int = 0) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Per image: ground truth (float64 boxes ``[n, 4]`` x1y1x2y2 continuous pixels of a 640 x 640 image, int64 labels
    ``[n]``), n ~ Poisson(7.3) as COCO's, and ``dets_per_image`` detections (``{"boxes", "scores", "labels"}``), half
    jittered copies of the objects (none in an image without objects), the rest random boxes."""
    rng = np.random.default_rng(seed)
    ground_truth, detections = [], []
    for _ in range(num_images):
        n = int(rng.poisson(7.3))
        xy = rng.uniform(0, 500, (n, 2))
        boxes = np.concatenate([xy, xy + rng.lognormal(3.5, 0.9, (n, 2)).clip(2, 600)], 1).clip(0, 640)
        labels = rng.integers(0, num_classes, n)
        ground_truth.append((boxes, labels))
        copies = rng.integers(0, n, dets_per_image // 2) if n else np.zeros(0, np.int64)
        det_boxes = boxes[copies] + rng.normal(0, 4, (len(copies), 4))
        noise_xy = rng.uniform(0, 550, (dets_per_image - len(copies), 2))
        noise = np.concatenate([noise_xy, noise_xy + rng.uniform(5, 150, noise_xy.shape)], 1)
        det_labels = np.concatenate([labels[copies], rng.integers(0, num_classes, len(noise))])
        detections.append({"boxes": np.concatenate([det_boxes, noise]).astype(np.float32),
                           "scores": rng.random(dets_per_image).astype(np.float32), "labels": det_labels})
    return ground_truth, detections


def coco_ground_truth(ground_truth: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> COCO:
    """``synthetic_set``'s ground truth as an in-memory pycocotools COCO of 640x640 images (categories 1..C)."""
    annotations = []
    for image_id, (boxes, labels) in enumerate(ground_truth):
        for box, label in zip(boxes, labels):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i, "width": 640, "height": 640} for i in range(len(ground_truth))],
                        "annotations": annotations,
                        "categories": [{"id": c + 1, "name": f"class{c}"} for c in range(num_classes)]}
        coco.createIndex()
    return coco


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """The best of ``repeat`` wall times of ``fn()`` in seconds, and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int_at_least(1), default=5000)
    parser.add_argument("--batches", type=int_at_least(1), default=3, help="post-processing batches timed (best of)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: auto, CUDA when available)")
    args = parser.parse_args()
    device = device_flag(parser, args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"date {utc_stamp()}  device {device} ({card})  CPU {cpu_model()}  torch {torch.__version__}")

    rows = []
    priors = PriorBox(size=320).forward()
    for num_classes in (20, 80):
        generator = torch.Generator().manual_seed(0)
        loc = (torch.randn(32, len(priors), 4, generator=generator) * 0.5).to(device)
        conf = (torch.randn(32, len(priors), num_classes, generator=generator) * 0.3 - 4.6).to(device)
        sizes = torch.tensor([[480, 640]] * 32, device=device)
        post = PostProcessor(priors)

        def run() -> list[dict[str, torch.Tensor]]:
            out = post(loc, conf, sizes)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return out

        run()  # warm-up
        seconds, _ = timed(run, args.batches)
        rows.append((f"post-process, batch 32, A=12750, C={num_classes}, top-k {PRE_NMS_TOPK}", seconds))

    for name, num_classes, dets in (("VOC metric (paper: 10 IoUs x 11-point)", 20, 300),
                                    ("COCO metric (pycocotools)", 80, 100)):
        ground_truth, detections = synthetic_set(args.images, num_classes, dets)
        if num_classes == 20:
            gt = [{"boxes": b + [1, 1, 0, 0], "labels": l, "difficult": np.zeros(len(l), bool)}
                  for b, l in ground_truth]
            seconds, metrics = timed(lambda: evaluate_voc(detections, gt, [str(c) for c in range(num_classes)]))
        else:
            coco = coco_ground_truth(ground_truth, num_classes)
            seconds, metrics = timed(lambda: evaluate_coco(
                detections_to_coco_results(detections, list(range(args.images)), list(range(1, num_classes + 1))),
                coco))
        total = sum(len(d["scores"]) for d in detections)
        rows.append((f"{name}, {args.images} images, {total:,} detections (mAP {metrics['mAP']:.3f})", seconds))

    width = max(len(r[0]) for r in rows)
    print(f"| {'what':<{width}} | seconds |\n|{'-' * (width + 2)}|---------|")
    for what, seconds in rows:
        print(f"| {what:<{width}} | {seconds:7.2f} |")


if __name__ == "__main__":
    main()
