"""The data and evaluation code at the real datasets' scale, on synthetic annotations without pixels.

    python benchmarks/data_scale.py --root /tmp/scale [--scale 1.0] [--what voc coco]

Writes under ``--root`` (once; an existing set of the same scale is reused) a VOCdevkit of VOC2007+2012's size
(16,551 trainval XML files, 4,952 VOC2007 test) and a coco2017 folder of COCO 2017's size (train2017: 118,287 images,
860,001 annotations, val2017: 5,000 images, 36,781 annotations, COCO's 80 non-contiguous category ids, a 24-number
polygon per annotation); every image file is empty (0 bytes: the datasets stat the files, only the loader decodes
them). ``--scale`` shrinks every count. Then measures, in this process: the time and resident memory (RSS) to build
each split with ``build_dataset``, what a forked DataLoader worker copies of it (Private_Dirty after reading every
annotation as ``__getitem__`` does, then after a full ``gc.collect()``), the size of the dataset pickled for a
spawn / forkserver worker, and the evaluation paths on synthetic detections: VOC (300 per image) metric and devkit
files written and read back (``--eval_results``), COCO (100 per image) results conversion, json writing, loading and
checking, and pycocotools' metric. Prints each figure as it is measured, then a markdown table headed by the date,
the CPU and the versions.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import platform
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import cpu_model, positive_float, utc_stamp  # noqa: E402

from data import build_dataset  # noqa: E402
from data.coco_eval import _load_results, detections_to_coco_results, evaluate_coco, write_coco_results  # noqa: E402
from data.dataset import DetectionDataset  # noqa: E402
from data.voc import VOC_CLASSES  # noqa: E402
from data.voc_eval import evaluate_voc, read_voc_results, write_voc_results  # noqa: E402
from utils.checkpoint import check_writable_folder  # noqa: E402

COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # 80 ids
# (images, annotations, images without annotation) of COCO 2017
COCO_SPLITS = {"val2017": (5_000, 36_781, 48), "train2017": (118_287, 860_001, 1_021)}
VOC_SPLITS = {("VOC2007", "trainval"): 5_011, ("VOC2007", "test"): 4_952, ("VOC2012", "trainval"): 11_540}


def _count(number: int, scale: float) -> int:
    return max(1, round(number * scale))


def write_voc(root: Path, scale: float, rng: np.random.Generator) -> None:
    """A VOCdevkit of VOC's layout and size: XML with ``<size>`` and 1..5 objects (10 % difficult), empty images."""
    for (year, list_name), number in VOC_SPLITS.items():
        folder = root / year
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        ids = [f"{year}_{list_name}_{i:06d}" for i in range(_count(number, scale))]
        (folder / "ImageSets" / "Main" / f"{list_name}.txt").write_text("".join(f"{i}\n" for i in ids))
        for image_id in ids:
            height, width = (int(v) for v in rng.integers(200, 501, 2))
            objects = []
            for _ in range(int(rng.integers(1, 6))):
                x1, y1 = int(rng.integers(1, width - 20)), int(rng.integers(1, height - 20))
                x2, y2 = int(rng.integers(x1 + 10, width + 1)), int(rng.integers(y1 + 10, height + 1))
                objects.append(
                    f"<object><name>{VOC_CLASSES[int(rng.integers(0, 20))]}</name><pose>Left</pose>"
                    f"<truncated>0</truncated><difficult>{int(rng.random() < 0.1)}</difficult><bndbox>"
                    f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>\n")
            (folder / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><folder>{year}</folder><filename>{image_id}.jpg</filename>\n"
                f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>\n"
                f"<segmented>0</segmented>\n{''.join(objects)}</annotation>\n")
            (folder / "JPEGImages" / f"{image_id}.jpg").touch()


def write_coco(root: Path, scale: float, rng: np.random.Generator) -> None:
    """A coco2017 folder of COCO 2017's size: instances jsons with COCO's keys, empty images."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, counts in COCO_SPLITS.items():
        num_images, num_annotations, num_empty = (_count(n, scale) for n in counts)
        (root / split).mkdir(exist_ok=True)
        ids = np.sort(rng.choice(np.arange(1, 10 * num_images), num_images, replace=False))
        sizes = np.stack([rng.integers(240, 641, num_images), rng.integers(320, 641, num_images)], 1)
        images = []
        for image_id, (height, width) in zip(ids.tolist(), sizes.tolist()):
            name = f"{image_id:012d}.jpg"
            images.append({"license": 1, "file_name": name, "coco_url": f"http://images.cocodataset.org/{split}/{name}",
                           "height": height, "width": width, "date_captured": "2013-11-14 17:02:52", "id": image_id})
            (root / split / name).touch()
        annotations = []
        owners = rng.integers(0, max(num_images - num_empty, 1), num_annotations)
        for number, owner in enumerate(owners.tolist(), start=1):
            height, width = sizes[owner]
            w, h = float(rng.uniform(2, width / 2)), float(rng.uniform(2, height / 2))
            x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
            polygon = np.round(rng.uniform(0, 1, 24) * np.tile([w, h], 12) + np.tile([x, y], 12), 2).tolist()
            annotations.append({"segmentation": [polygon], "area": w * h * 0.7, "iscrowd": int(number % 100 == 0),
                                "image_id": int(ids[owner]), "bbox": [round(v, 2) for v in (x, y, w, h)],
                                "category_id": COCO_CATEGORY_IDS[int(rng.integers(0, 80))], "id": number})
        categories = [{"supercategory": "thing", "id": i, "name": f"class{i}"} for i in COCO_CATEGORY_IDS]
        with open(root / "annotations" / f"instances_{split}.json", "w") as file:
            json.dump({"info": {}, "licenses": [], "images": images, "annotations": annotations,
                       "categories": categories}, file)


def memory_mib(field: str = "Rss") -> float:
    """This process's ``field`` of ``/proc/self/smaps_rollup`` (Linux), in MiB."""
    with open("/proc/self/smaps_rollup") as file:
        for line in file:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def forked_worker_copy(dataset: DetectionDataset | None) -> tuple[float, float]:
    """MiB a forked child copies (Private_Dirty growth) reading every item's annotation, size and path as
    ``__getitem__`` does, and then after a full ``gc.collect()`` (which touches every tracked Python object: the
    interpreter's and torch's own too, the figure for ``dataset=None``)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        start = memory_mib("Private_Dirty")
        for index in range(len(dataset) if dataset is not None else 0):
            dataset.annotation(index), dataset.image_size(index), dataset.image_path(index)
        walked = memory_mib("Private_Dirty")
        gc.collect()
        os.write(write, f"{walked - start} {memory_mib('Private_Dirty') - start}".encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    walked, collected = (float(v) for v in os.read(read, 100).split())
    os.close(read)
    return walked, collected


def timed(rows: list[tuple[str, str]], what: str, function: Callable[[], object]) -> object:
    """Run ``function``, print and add to ``rows`` its wall time."""
    start = time.perf_counter()
    value = function()
    rows.append((what, f"{time.perf_counter() - start:.1f} s"))
    print(f"{what}: {rows[-1][1]}", flush=True)
    return value


def synthetic_detections(dataset: DetectionDataset, per_image: int, rng: np.random.Generator) -> list[dict]:
    """``per_image`` detections per image: jittered copies of its boxes (up to half) and random boxes."""
    detections = []
    for index in range(len(dataset)):
        height, width = dataset.image_size(index)
        boxes, labels, _ = dataset.annotation(index)
        near = min(len(boxes) * 5, per_image // 2)
        picked = rng.integers(0, max(len(boxes), 1), near)
        jittered = boxes[picked] + rng.normal(0, 4, (near, 4)) if len(boxes) else np.zeros((0, 4))
        x, y = rng.uniform(0, width - 10, per_image - near), rng.uniform(0, height - 10, per_image - near)
        random = np.stack([x, y, x + rng.uniform(5, width / 2, len(x)), y + rng.uniform(5, height / 2, len(y))], 1)
        all_boxes = np.clip(np.concatenate([jittered, random]), 0, [width, height, width, height])
        detections.append({
            "boxes": all_boxes.astype(np.float32), "scores": rng.random(per_image).astype(np.float32),
            "labels": np.concatenate([labels[picked] if len(boxes) else np.zeros(0, np.int64),
                                      rng.integers(0, dataset.num_classes, per_image - near)]),
        })
    return detections


def measure_splits(name: str, root: Path, rows: list[tuple[str, str]]) -> DetectionDataset:
    """Build ``name``'s train and test splits; add their figures to ``rows``; return the test split."""
    test = None
    for split in ("train", "test"):
        gc.collect()
        before = memory_mib()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = build_dataset(name, split, 320, data_root=str(root))
        seconds = time.perf_counter() - start
        gc.collect()
        held = memory_mib() - before
        walked, collected = forked_worker_copy(dataset)
        pickled = len(pickle.dumps(dataset)) / 2**20
        rows.append((f"{name} {split}: build ({len(dataset):,} images, {len(dataset.annotations.labels):,} boxes)",
                     f"{seconds:.1f} s, RSS +{held:.0f} MiB held"))
        rows.append((f"{name} {split}: forked worker copies (read all items / then gc.collect())",
                     f"{walked:.0f} / {collected:.0f} MiB"))
        rows.append((f"{name} {split}: pickled for a spawn worker", f"{pickled:.1f} MiB"))
        print(*(f"{what}: {figure}" for what, figure in rows[-3:]), sep="\n", flush=True)
        test = dataset
    return test


def main() -> None:
    parser = get_args_parser()
    args = parser.parse_args()
    try:
        check_writable_folder(args.root, "--root")
    except ValueError as error:
        parser.error(str(error))
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str]] = []
    rows.append(("a forked worker's copy without a dataset (read nothing / then gc.collect())",
                 "{:.0f} / {:.0f} MiB".format(*forked_worker_copy(None))))
    for name in args.what:
        root = args.root / f"{name}_scale{args.scale:g}"
        if not (root / "complete").exists():
            timed(rows, f"{name}: write the synthetic set", lambda: (write_voc if name == "voc" else write_coco)(
                root / ("VOCdevkit" if name == "voc" else "coco2017"), args.scale, rng))
            (root / "complete").touch()
        test = measure_splits(name, root / ("VOCdevkit" if name == "voc" else "coco2017"), rows)
        out = Path(tempfile.mkdtemp(dir=root))
        if name == "voc":
            detections = synthetic_detections(test, 300, rng)
            ground_truth = test.ground_truth()
            count = f"{len(test):,} x 300 detections"
            timed(rows, f"voc metric (paper protocol), {count}",
                  lambda: evaluate_voc(detections, ground_truth, test.class_names))
            timed(rows, "voc devkit results files written",
                  lambda: write_voc_results(detections, test.image_ids, test.class_names, out))
            timed(rows, "voc devkit results files read back (--eval_results)",
                  lambda: read_voc_results(out, test.image_ids, test.class_names))
        else:
            detections = synthetic_detections(test, 100, rng)
            count = f"{len(test):,} x 100 detections"
            results = timed(rows, f"coco results list, {count}",
                            lambda: detections_to_coco_results(detections, test.image_ids, test.category_ids))
            path = timed(rows, "coco results json written", lambda: write_coco_results(results, out / "results.json"))
            timed(rows, "coco results json read and checked (--eval_results)", lambda: _load_results(path, test.coco))
            timed(rows, "coco metric (pycocotools evaluate + accumulate + summarize)",
                  lambda: evaluate_coco(results, test.coco, test.image_ids))
    print(f"\n# data and evaluation at {args.scale:g} x the real datasets' scale, "
          f"{utc_stamp()}, CPU {cpu_model()} "
          f"({os.cpu_count()} cores), torch {torch.__version__}, python {platform.python_version()}")
    print("| what | figure |\n|---|---|")
    print("\n".join(f"| {what} | {figure} |" for what, figure in rows))
    print(f"peak RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="folder for the synthetic sets (reused if there)")
    parser.add_argument("--scale", type=positive_float, default=1.0,
                        help="fraction of the real counts (default 1: full size)")
    parser.add_argument("--what", nargs="+", choices=("voc", "coco"), default=["voc", "coco"])
    return parser


if __name__ == "__main__":
    main()
