"""Times the generation of the synthetic shapes dataset and prints its statistics (read back from the XML).

    python benchmarks/shapes_generation.py                 # default size: 2,000 trainval + 500 test
    python benchmarks/shapes_generation.py --num_trainval 200 --num_test 50

Target: the default size in under 60 s on one CPU core (generation is single-process).
"""
import argparse
import platform
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import cpu_model, int_at_least, utc_stamp  # noqa: E402
from data.shapes import DEFAULT_NUM_TEST, DEFAULT_NUM_TRAINVAL, SHAPES_CLASSES, generate_shapes_dataset  # noqa: E402


def read_split(root: Path, split: str) -> list[list[dict]]:
    """Per image of ``split`` (``ImageSets/Main/<split>.txt``), its objects as read from the VOC XML:
    ``{"name", "difficult", "truncated", "side"}``, ``side`` the longer box side in pixels (devkit values are
    1-based inclusive, hence the + 1)."""
    images = []
    for image_id in (root / "ImageSets/Main" / f"{split}.txt").read_text().split():
        xml = ET.parse(root / "Annotations" / f"{image_id}.xml").getroot()
        images.append(
            [
                {
                    "name": obj.findtext("name"),
                    "difficult": obj.findtext("difficult") == "1",
                    "truncated": obj.findtext("truncated") == "1",
                    "side": max(
                        int(obj.findtext("bndbox/xmax")) - int(obj.findtext("bndbox/xmin")),
                        int(obj.findtext("bndbox/ymax")) - int(obj.findtext("bndbox/ymin")),
                    )
                    + 1,
                }
                for obj in xml.iter("object")
            ]
        )
    return images


def print_statistics(root: Path) -> None:
    """Markdown tables of the set at ``root``: per split, image, object, difficult, truncated and per-class counts;
    then the histogram of the longer box side over both splits."""
    header = (
        "| split | images | objects | objects/image (max) | empty | >= 50 obj | difficult | truncated | "
        + " | ".join(SHAPES_CLASSES)
        + " |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for split in ("trainval", "test"):
        images = read_split(root, split)
        objects = [obj for image in images for obj in image]
        counts = [len(image) for image in images]
        per_class = Counter(obj["name"] for obj in objects)
        print(
            f"| {split} | {len(images)} | {len(objects)} | {np.mean(counts):.2f} ({max(counts)}) | "
            f"{sum(c == 0 for c in counts)} | {sum(c >= 50 for c in counts)} | "
            f"{np.mean([o['difficult'] for o in objects]):.1%} | {np.mean([o['truncated'] for o in objects]):.1%} | "
            + " | ".join(str(per_class[name]) for name in SHAPES_CLASSES)
            + " |"
        )
    sides = np.array(
        [obj["side"] for split in ("trainval", "test") for image in read_split(root, split) for obj in image]
    )
    edges = [0, 16, 32, 64, 128, 256, 10_000]
    histogram, _ = np.histogram(sides, bins=edges)
    print("\nLonger box side (px), all splits:\n")
    print(
        "| "
        + " | ".join(f"{lo}-{hi - 1}" if hi < 10_000 else f">= {lo}" for lo, hi in zip(edges[:-1], edges[1:]))
        + " | min | median | max |"
    )
    print("|" + "---|" * (len(edges) + 2))
    print(
        "| "
        + " | ".join(f"{n / len(sides):.1%}" for n in histogram)
        + f" | {sides.min()} | {int(np.median(sides))} | {sides.max()} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="generator seed (default: 0, main.py's)")
    parser.add_argument("--num_trainval", type=int_at_least(2), default=DEFAULT_NUM_TRAINVAL,
                        help=f"at least 2 (one empty image, one crowded); default {DEFAULT_NUM_TRAINVAL}")
    parser.add_argument("--num_test", type=int_at_least(2), default=DEFAULT_NUM_TEST,
                        help=f"at least 2 (one empty image, one crowded); default {DEFAULT_NUM_TEST}")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        start, cpu_start = time.perf_counter(), time.process_time()
        root = generate_shapes_dataset(
            Path(temp) / "shapes", seed=args.seed, num_trainval=args.num_trainval, num_test=args.num_test
        )
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        total = args.num_trainval + args.num_test
        print(
            f"\n{utc_stamp()} | {cpu_model()} | 1 process | "
            f"python {platform.python_version()}\n"
        )
        print("| images | wall seconds | CPU seconds | images/s (wall) | target |")
        print("|---|---|---|---|---|")
        print(f"| {total} | {seconds:.1f} | {cpu_seconds:.1f} | {total / seconds:.0f} | default size < 60 s |\n")
        print_statistics(root)


if __name__ == "__main__":
    main()
