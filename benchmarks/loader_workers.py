"""Wall-clock images/s of the training DataLoader alone, for several worker counts.

    python benchmarks/loader_workers.py [--workers 2 4 8 12] [--batches 140]
    python benchmarks/loader_workers.py --dataset voc --size 320 --workers 8 12

What ``main.py``'s training loop gets from ``data.build_loader(train=True)`` (the paper's augmentation in worker
processes, batches of 32 by default, pinned memory on a CUDA machine), without the model: the ceiling the loader
sets on the loop's images/s. The first 20 batches (worker start-up) are not timed. ``--dataset shapes`` (the
default) uses the synthetic set at ``datasets/shapes``, generated on first use, at 192 px without zoom-out, as
``main.py --dataset shapes`` trains; ``voc`` reads ``datasets/VOCdevkit`` (or ``--data_root``) with the paper's
zoom-out.
Compare with the loop's own images/s (``main.py --log_interval``) to see whether the loader or the step is the limit.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import cpu_model, input_size, int_at_least, utc_stamp  # noqa: E402

from data import DataError, DetectionDataset, build_dataset, build_loader  # noqa: E402
from data.loader import usable_cores  # noqa: E402

UNTIMED_BATCHES = 20  # worker start-up and the first prefetch


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("shapes", "voc"), default="shapes", help="image set (default: shapes)")
    parser.add_argument("--data_root", default=None, help="the set's folder (default: main.py's)")
    parser.add_argument("--size", type=input_size, default=None, help="input size (default: 192 shapes, 320 voc)")
    parser.add_argument("--workers", type=int_at_least(1), nargs="+", default=[2, 4, 8, 12],
                        help="worker counts to time (default: 2 4 8 12)")
    parser.add_argument("--batch_size", type=int_at_least(1), default=32, help="images per batch (default: 32)")
    parser.add_argument("--batches", type=int_at_least(1), default=140, help="timed batches per worker count")
    return parser


def loader_images_per_second(dataset: DetectionDataset, batch_size: int, workers: int, batches: int) -> float:
    """Images/s of ``batches`` training batches after the untimed first ones, with ``workers`` processes."""
    loader = build_loader(dataset, batch_size, train=True, workers=workers, max_iter=UNTIMED_BATCHES + batches,
                          pin_memory=torch.cuda.is_available())
    iterator = iter(loader)
    for _ in range(UNTIMED_BATCHES):
        next(iterator)
    start, images = time.perf_counter(), 0
    for image_batch, _, _ in iterator:
        images += image_batch.shape[0]
    return images / (time.perf_counter() - start)


def main(args: argparse.Namespace) -> None:
    shapes = args.dataset == "shapes"
    size = args.size or (192 if shapes else 320)
    try:
        dataset = build_dataset(args.dataset, "train", size, data_root=args.data_root,
                                **({"expand_probability": 0.0} if shapes else {}))
    except DataError as error:  # a missing or broken set: its one line, naming the path
        print(f"loader_workers.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    if len(dataset) < args.batch_size:
        print(f"loader_workers.py: error: the set has {len(dataset)} training images, fewer than --batch_size "
              f"{args.batch_size}", file=sys.stderr)
        sys.exit(2)
    print(f"# training loader alone: {args.dataset} ({len(dataset)} images) at {size} px, batch {args.batch_size}; "
          f"{cpu_model()}, {usable_cores()} usable cores, {utc_stamp()}, torch {torch.__version__}")
    print("| workers | images/s |")
    print("|---:|---:|")
    for workers in args.workers:
        images_per_s = loader_images_per_second(dataset, args.batch_size, workers, args.batches)
        print(f"| {workers} | {images_per_s:.0f} |", flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
