"""The VOC devkit results files (``comp4_det_test_<class>.txt``) written and read back at VOC2007 test's scale.

    python benchmarks/voc_results_files.py [--images 4952] [--repeats 3]

Synthetic float32 detections as ``benchmarks/evaluation.py`` makes them (300 per image, 20 classes: 1,485,600 lines
for VOC2007 test's 4,952 images), written by ``write_voc_results`` (every evaluation does) and read back by
``read_voc_results`` (``--eval_results``); the best of ``--repeats`` wall times of each. Prints the SHA-256 of the
files' bytes (compare it across commits: the files must not change) and checks that the detections read back are the
written ones, bit for bit.
"""
from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import cpu_model, int_at_least, utc_stamp  # noqa: E402
from benchmarks.evaluation import synthetic_set, timed  # noqa: E402

from data.voc import VOC_CLASSES  # noqa: E402
from data.voc_eval import read_voc_results, write_voc_results  # noqa: E402


def files_digest(paths: list[Path]) -> str:
    """SHA-256 of the files' bytes, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def check_round_trip(written: list[dict], back: list[dict]) -> None:
    """Raises ``AssertionError`` unless every image's detections read back are the written ones (grouped by class)."""
    for original, read in zip(written, back, strict=True):
        order = np.argsort(original["labels"], kind="stable")
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(read[key], original[key][order], err_msg=key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int_at_least(1), default=4952, help="images of 300 detections (VOC2007 test)")
    parser.add_argument("--repeats", type=int_at_least(1), default=3, help="times each step runs (best of)")
    args = parser.parse_args()
    _, detections = synthetic_set(args.images, len(VOC_CLASSES), 300)
    image_ids = [f"{i:06d}" for i in range(args.images)]
    with tempfile.TemporaryDirectory() as folder:
        write_seconds, paths = timed(lambda: write_voc_results(detections, image_ids, VOC_CLASSES, Path(folder)),
                                     args.repeats)
        read_seconds, back = timed(lambda: read_voc_results(Path(folder), image_ids, VOC_CLASSES), args.repeats)
        digest = files_digest(paths)
        size = sum(path.stat().st_size for path in paths) / 2**20
    check_round_trip(detections, back)
    lines = sum(len(d["scores"]) for d in detections)
    print(f"{utc_stamp()}, CPU {cpu_model()}, "
          f"python {platform.python_version()}, numpy {np.__version__}, best of {args.repeats}")
    print(f"{args.images:,} images x 300 = {lines:,} lines in {len(paths)} files ({size:.0f} MiB), sha256 {digest}")
    print(f"written: {write_seconds:.2f} s\nread back: {read_seconds:.2f} s\nread back = written detections: yes")


if __name__ == "__main__":
    main()
