"""Building the COCO train2017 split alone (``build_dataset("coco", "train")``) at COCO 2017's scale.

    python benchmarks/coco_build.py --root /tmp/scale [--scale 1.0] [--repeats 1] [--profile 25]

Writes under ``--root`` (once; the folder of ``benchmarks/data_scale.py``, whose generator it uses, is reused) a
coco2017 folder of COCO 2017's size (train2017: 118,287 images, 860,001 annotations; empty image files), then builds
its training split ``--repeats`` times and prints the best wall time with that build's CPU time (less sensitive to
other jobs on a shared CPU), and the best time of the JSON decoding alone (``json.loads`` of the file's text, timed
before each build) for comparison. ``--profile N`` runs one more build under cProfile and prints its N costliest
functions (cumulative time). Prints the SHA-256 of what the build produced (image ids, paths, sizes,
boxes, labels, class names, category ids, fix-up counts): compare it across commits, the dataset must not change.
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import platform
import pstats
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import cpu_model, int_at_least, positive_float, utc_stamp  # noqa: E402
from benchmarks.data_scale import write_coco  # noqa: E402

from data import COCODetection, build_dataset  # noqa: E402
from utils.checkpoint import check_writable_folder  # noqa: E402


def dataset_digest(dataset: COCODetection) -> str:
    """SHA-256 of everything a built split gives training: its items' ids, paths and sizes, the flat boxes, labels
    and offsets, class names and category ids, the fix-up counts and the small / crowd box counts."""
    digest = hashlib.sha256()
    annotations = dataset.annotations
    for array in (annotations.boxes, annotations.labels, annotations.offsets, annotations.sizes,
                  annotations.difficult):
        digest.update(np.ascontiguousarray(array).tobytes())
    paths = [str(dataset.image_path(index)) for index in range(len(dataset))]
    digest.update(json.dumps([list(map(str, dataset.image_ids)), paths, dataset.class_names, dataset.category_ids,
                              dataset.fixups, dataset.small_boxes_dropped, dataset.crowd_objects]).encode())
    return digest.hexdigest()


def build(root: Path) -> COCODetection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_dataset("coco", "train", 320, data_root=str(root))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="folder for the synthetic set (reused if there)")
    parser.add_argument("--scale", type=positive_float, default=1.0, help="fraction of COCO 2017's counts")
    parser.add_argument("--repeats", type=int_at_least(1), default=1, help="builds timed (best of)")
    parser.add_argument("--profile", type=int_at_least(0), default=0, metavar="N",
                        help="profile one more build and print its N costliest functions (default 0: none)")
    args = parser.parse_args()
    try:
        check_writable_folder(args.root, "--root")
    except ValueError as error:
        parser.error(str(error))
    root = args.root / f"coco_scale{args.scale:g}"
    if not (root / "complete").exists():
        start = time.perf_counter()
        write_coco(root / "coco2017", args.scale, np.random.default_rng(0))
        (root / "complete").touch()
        print(f"synthetic set written in {time.perf_counter() - start:.1f} s", flush=True)
    root /= "coco2017"
    seconds, cpu_seconds, decoding = [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        json.loads((root / "annotations" / "instances_train2017.json").read_text(encoding="utf-8"))
        decoding.append(time.perf_counter() - start)
        start, cpu_start = time.perf_counter(), time.process_time()
        dataset = build(root)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
        print(f"json.loads alone: {decoding[-1]:.1f} s, build: {seconds[-1]:.1f} s ({cpu_seconds[-1]:.1f} s CPU)",
              flush=True)
    print(f"\n# COCO train build at {args.scale:g} x COCO 2017, "
          f"{utc_stamp()}, CPU {cpu_model()} "
          f"({os.cpu_count()} cores), python {platform.python_version()}, numpy {np.__version__}")
    best = seconds.index(min(seconds))
    print(f"build_dataset('coco', 'train'), {len(dataset):,} images, {len(dataset.annotations.labels):,} boxes: "
          f"{seconds[best]:.1f} s ({cpu_seconds[best]:.1f} s CPU; best of {args.repeats}); "
          f"json.loads of the file alone: {min(decoding):.1f} s")
    print(f"dataset SHA-256: {dataset_digest(dataset)}")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(build, root)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)


if __name__ == "__main__":
    main()
