"""Augmentation + loading throughput on one core (images/s), at 320 and 512.

    python benchmarks/data_loading.py [--images 200] [--seconds 5]

Two image sets: a small synthetic ``shapes`` set (256..384 px per side, generated with ``ensure_shapes_dataset``) and
a VOC-sized set of 500x375 JPEGs of noise with random boxes (written by this script to a temp folder). Everything runs
in this process with one OpenCV and one torch thread and is timed in process CPU time, so each figure is what one
DataLoader worker core delivers, even on a shared machine.
Target (issue 5): >= 150 images/s at 320 through the full training path (decode + TrainTransform + collate).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import cpu_model, int_at_least, positive_float, utc_stamp  # noqa: E402

from data import build_dataset, detection_collate  # noqa: E402
from data.shapes import SHAPES_CLASSES, ensure_shapes_dataset  # noqa: E402

BATCH = 32


def write_voc_sized_set(root: Path, count: int) -> Path:
    """``count`` 500x375 noise JPEGs with 1..4 random boxes each, in VOC layout (class ``thing``)."""
    rng = np.random.default_rng(0)
    for part in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / part).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(count)]
    for image_id in ids:
        image = cv2.GaussianBlur(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8), (7, 7), 0)
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), image)
        objects = ""
        for _ in range(rng.integers(1, 5)):
            x1, y1 = rng.integers(1, 300), rng.integers(1, 200)
            x2, y2 = x1 + rng.integers(20, 200), y1 + rng.integers(20, 175)
            objects += (f"<object><name>thing</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>500</width><height>375</height><depth>3</depth></size>{objects}</annotation>")
    (root / "ImageSets/Main/trainval.txt").write_text("\n".join(ids) + "\n")
    return root


def images_per_second(step: Callable[[int], object], count: int, seconds: float) -> float:
    """Calls of ``step(i)`` (indices ``0..count-1`` cyclically) per second of this process's CPU time, over about
    ``seconds`` of CPU time after a warm-up of 10 calls. CPU time, not wall time, so that other load on a shared
    machine does not count (with one thread it is the time of one core)."""
    for i in range(min(count, 10)):
        step(i)
    done, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        step(done % count)
        done += 1
    return done / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int_at_least(2), default=200, help="images per synthetic set (>= 2)")
    parser.add_argument("--seconds", type=positive_float, default=5.0, help="time per measurement")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        sets = {
            "shapes (256-384 px)": (
                ensure_shapes_dataset(Path(tmp) / "shapes", num_trainval=args.images, num_test=2),
                list(SHAPES_CLASSES),
            ),
            "VOC-sized (500x375)": (write_voc_sized_set(Path(tmp) / "voc_sized", args.images), ["thing"]),
        }
        rows = []
        for set_name, (root, classes) in sets.items():
            for size in (320, 512):
                train = build_dataset("voc", "train", size, data_root=str(root), classes=classes)
                test = build_dataset("voc", "train", size, data_root=str(root), classes=classes, augment=False)
                n = len(train)
                batch = lambda i: detection_collate([train[(i * BATCH + k) % n] for k in range(BATCH)])  # noqa: E731
                rows.append((set_name, size, {
                    "decode only": images_per_second(train.load_image, n, args.seconds),
                    "decode + test transform": images_per_second(test.__getitem__, n, args.seconds),
                    "decode + train augmentation": images_per_second(train.__getitem__, n, args.seconds),
                    "train + collate (batch 32)": BATCH * images_per_second(batch, n, args.seconds),
                }))
    print(f"# data loading throughput, one core: {cpu_model()}, {utc_stamp()}, "
          f"torch {torch.__version__}, OpenCV {cv2.__version__}")
    columns = list(rows[0][2])
    print("| image set | size | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for set_name, size, values in rows:
        print(f"| {set_name} | {size} | " + " | ".join(f"{values[c]:.0f}" for c in columns) + " |")
    print("images per CPU-second of one core (one OpenCV thread, one torch thread); the target is >= 150 images/s at "
          "320 for the train path.")


if __name__ == "__main__":
    main()
