"""Training throughput (images/s) of one full training step: forward, MultiBoxLoss (IoU or Mutual Guidance
assignment), backward and the SGD step, on random images with random boxes (3 objects per image). The images are on
the device, the boxes on the host, handed to the loss as main.py's training loop hands them (the loss copies them).

    python benchmarks/training_speed.py   # every detector, 320 and 512, MG off/on, fp32 (+AMP on CUDA)
    python benchmarks/training_speed.py --device cpu --batch_size 2 --iters 2 --versions fssd --sizes 320
    python benchmarks/training_speed.py --device cpu --memory_format nchw channels_last   # compare the layouts

``--memory_format auto`` (the default) is what ``main.py`` picks: channels-last on the CPU and under autocast on CUDA.

Prints a markdown table, the CPU model / GPU name, torch version and the date. CUDA timings synchronise.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import cpu_model, device_flag, input_size, int_at_least, utc_stamp  # noqa: E402

from models import BACKBONES, NECKS, build_detector  # noqa: E402
from models.memory_format import prefers_channels_last  # noqa: E402
from utils.box import PriorBox  # noqa: E402
from utils.loss import MultiBoxLoss  # noqa: E402
from utils.optim import build_optimizer  # noqa: E402


def three_boxes_per_image(batch: int, num_classes: int, generator: torch.Generator) -> list[torch.Tensor]:
    """3 boxes per image, x1y1x2y2 normalised, sides 0.1..0.5, labels 0..C-1."""
    targets = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=generator) * 0.5
        wh = 0.1 + torch.rand(3, 2, generator=generator) * 0.4
        labels = torch.randint(num_classes, (3, 1), generator=generator).float()
        targets.append(torch.cat([xy, xy + wh, labels], dim=1))
    return targets


def images_per_second(version: str, backbone: str, size: int, mutual_guide: bool, amp_dtype: torch.dtype | None,
                      device: torch.device, batch: int, iters: int, warmup: int, num_classes: int,
                      channels_last: bool | None = None) -> float:
    """Images/s of the training step; ``channels_last`` None follows ``main.py`` (``prefers_channels_last``)."""
    torch.manual_seed(0)
    model = build_detector(version, backbone, size, num_classes).to(device)
    channels_last = prefers_channels_last(device, amp_dtype) if channels_last is None else channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    priors = PriorBox(base_anchor_size=24.0, size=size).forward().to(device)
    loss_fn = MultiBoxLoss(num_classes, mutual_guide=mutual_guide)
    optimizer = build_optimizer(model, lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(batch, 3, size, size, generator=generator) * 255 - 117).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = three_boxes_per_image(batch, num_classes, generator)  # on the host, as main.py's loader gives them

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loc, conf = model(images)
        loss_l, loss_c = loss_fn((loc.float(), conf.float()), priors, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss_l + loss_c).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch * iters / (time.perf_counter() - start)


LAYOUTS = {"auto": None, "nchw": False, "channels_last": True}


def layout_name(layout: str, device: torch.device, amp_dtype: torch.dtype | None) -> str:
    if layout != "auto":
        return layout
    return f"auto ({'channels_last' if prefers_channels_last(device, amp_dtype) else 'nchw'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: auto, CUDA when available)")
    parser.add_argument("--versions", nargs="+", default=list(NECKS), choices=list(NECKS))
    parser.add_argument("--backbone", default="vgg16", choices=list(BACKBONES),
                        help="vgg16 (the paper's, default) or resnet18")
    parser.add_argument("--sizes", nargs="+", type=input_size, default=[320, 512])
    parser.add_argument("--batch_size", type=int_at_least(1), default=None,
                        help="default: 32 on CUDA (the paper's), 2 on CPU")
    parser.add_argument("--iters", type=int_at_least(1), default=None,
                        help="timed iterations (default: 20 on CUDA, 2 on CPU)")
    parser.add_argument("--warmup", type=int_at_least(0), default=None,
                        help="untimed iterations first (default: 5 on CUDA, 1 on CPU)")
    parser.add_argument("--num_classes", type=int_at_least(1), default=20)
    parser.add_argument("--amp", nargs="+", default=None, type=str.lower, choices=["fp32", "bf16", "fp16"],
                        help="precisions to time (default: fp32 and bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--memory_format", nargs="+", default=["auto"], choices=list(LAYOUTS),
                        help="layouts to time: auto (main.py's choice), nchw, channels_last")
    parser.add_argument("--repeats", type=int_at_least(1), default=1,
                        help="time each row this many times, rows interleaved, and print the median (shared machines)")
    args = parser.parse_args()

    device = device_flag(parser, args.device)
    on_cuda = device.type == "cuda"
    batch = args.batch_size or (32 if on_cuda else 2)
    iters = args.iters or (20 if on_cuda else 2)
    warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    precisions = args.amp or (["fp32", "bf16"] if on_cuda else ["fp32"])
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    where = torch.cuda.get_device_name(device) if on_cuda else f"{cpu_model()}, {torch.get_num_threads()} threads"
    print(f"# training throughput, {utc_stamp()}")
    print(f"device: {where}; torch {torch.__version__}; batch {batch}, {warmup} warm-up + {iters} timed iterations")
    print()
    print("| detector | backbone | size | assignment | precision | memory format | images/s |")
    print("|---|---|---|---|---|---|---|")
    for version in args.versions:
        for size in args.sizes:
            for mutual_guide in (False, True):
                for precision in precisions:
                    speeds = {layout: [] for layout in args.memory_format}
                    for _ in range(args.repeats):
                        for layout in args.memory_format:
                            speeds[layout].append(images_per_second(
                                version, args.backbone, size, mutual_guide, dtypes[precision], device, batch, iters,
                                warmup, args.num_classes, LAYOUTS[layout]))
                    for layout, values in speeds.items():
                        shown = layout_name(layout, device, dtypes[precision])
                        print(f"| {version} | {args.backbone} | {size} | "
                              f"{'MG' if mutual_guide else 'IoU'} | {precision} "
                              f"| {shown} | {statistics.median(values):.1f} |", flush=True)


if __name__ == "__main__":
    main()
