"""Detector inference speed: latency and throughput per version, batch size and precision, plus FLOPs per image.

    python benchmarks/inference_speed.py                      # CPU defaults: VGG16-320, batch 1 and 2
    python benchmarks/inference_speed.py --device cuda        # batch 1 and 32, fp32 / fp16 / bf16, synchronised
    python benchmarks/inference_speed.py --backbones vgg16 resnet18 --sizes 320 512 --iters 50
    python benchmarks/inference_speed.py --flops_only --backbones vgg16 resnet18 --sizes 320 512

Times the model forward only (images [B, 3, S, S] -> (loc, conf)), in eval mode under inference_mode, with random
weights (speed does not depend on their values). Decode and NMS are excluded, as in the paper's FPS (facts §10).
Each configuration runs `--warmup` untimed batches, then `--iters` timed ones; the table gives the median latency
per batch and images/s = batch / median. On CUDA every timed batch is bracketed by torch.cuda.synchronize().
FLOPs are counted once per image (batch 1) by torch.utils.flop_counter on the meta device: convolutions and
matrix products only (BN, ReLU, upsampling and adds are not counted); 1 multiply-add = 2 FLOPs.
"""

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python benchmarks/inference_speed.py`
from benchmarks.common import cpu_model, device_flag, input_size, int_at_least, utc_stamp  # noqa: E402
from models import BACKBONES, NECKS, build_detector
from models.memory_format import memory_format

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: auto, CUDA when available)")
    parser.add_argument("--versions", nargs="+", default=list(NECKS), choices=list(NECKS))
    parser.add_argument("--backbones", nargs="+", default=["vgg16"], choices=list(BACKBONES))
    parser.add_argument("--sizes", nargs="+", type=input_size, default=[320],
                        help="input sizes: 320 (default) and 512 are the paper's, any multiple of 64 from 128 builds")
    parser.add_argument("--batch_sizes", "--batch-sizes", nargs="+", type=int_at_least(1),
                        help="default: 1 2 on CPU, 1 32 on CUDA")
    parser.add_argument("--modes", nargs="+", type=mode,
                        help="precision[-cl] entries in any letter case, cl = channels_last; precisions: fp32, bf16, "
                             "fp16 (autocast). "
                             "Default: fp32 fp32-cl bf16-cl on CPU, fp32 fp32-cl fp16-cl bf16-cl on CUDA")
    parser.add_argument("--num_classes", "--num-classes", type=int_at_least(1), default=80,
                        help="80 = COCO, as the paper's FPS")
    parser.add_argument("--warmup", type=int_at_least(0),
                        help="untimed batches per configuration (default 2 CPU, 10 CUDA)")
    parser.add_argument("--iters", type=int_at_least(1),
                        help="timed batches per configuration (default 3 CPU, 50 CUDA)")
    parser.add_argument("--flops_only", "--flops-only", action="store_true",
                        help="FLOPs and parameters only, no timing")
    return parser


def mode(text: str) -> str:
    """An argparse ``type`` for a ``--modes`` entry: a precision of ``PRECISIONS``, optionally ``-cl``, in any letter
    case; returned in lower case."""
    precision, dash, layout = text.lower().partition("-")
    if precision not in PRECISIONS or (dash and layout != "cl"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a mode; use fp32, bf16 or fp16, each optionally with -cl "
                                         "(channels_last), e.g. bf16-cl")
    return text.lower()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def model_cost(version: str, backbone: str, size: int, num_classes: int) -> tuple[int, int]:
    """(FLOPs per image, parameters), from shapes alone on the meta device."""
    with torch.device("meta"):
        model = build_detector(version, backbone, size, num_classes).eval()
        images = torch.empty(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(images)
    return counter.get_total_flops(), sum(p.numel() for p in model.parameters())


def time_forward(model: torch.nn.Module, images: torch.Tensor, precision: str, warmup: int, iters: int) -> list[float]:
    """Seconds per forward pass, one entry per timed batch."""
    device = images.device
    autocast = (torch.autocast(device.type, dtype=PRECISIONS[precision]) if PRECISIONS[precision] is not None
                else nullcontext())
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode(), autocast:
        for step in range(warmup + iters):
            synchronize()
            start = time.perf_counter()
            model(images)
            synchronize()
            if step >= warmup:
                times.append(time.perf_counter() - start)
    return times


def main(args: argparse.Namespace) -> None:
    device = device_flag(get_args_parser(), args.device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = True
    batch_sizes = args.batch_sizes or ([1, 32] if on_cuda else [1, 2])
    modes = args.modes or (["fp32", "fp32-cl", "fp16-cl", "bf16-cl"] if on_cuda else ["fp32", "fp32-cl", "bf16-cl"])
    warmup = args.warmup if args.warmup is not None else (10 if on_cuda else 2)
    iters = args.iters if args.iters is not None else (50 if on_cuda else 3)
    print(f"# {utc_stamp()} | {device_name(device)} | torch {torch.__version__} | "
          f"warmup {warmup}, iters {iters}, {args.num_classes} classes")
    if args.flops_only:
        print("| model | GFLOPs/img | params (M) |")
        print("|---|---:|---:|")
    else:
        print("| model | GFLOPs/img | params (M) | batch | mode | latency ms (median) | images/s |")
        print("|---|---:|---:|---:|---|---:|---:|")
    for backbone in args.backbones:
        for size in args.sizes:
            for version in args.versions:
                flops, params = model_cost(version, backbone, size, args.num_classes)
                gflops, params = flops / 1e9, params / 1e6
                if args.flops_only:
                    print(f"| {version}-{backbone}-{size} | {gflops:.1f} | {params:.2f} |")
                    continue
                torch.manual_seed(0)
                model = build_detector(version, backbone, size, args.num_classes).to(device).eval()
                for batch in batch_sizes:
                    images = torch.randn(batch, 3, size, size, device=device)
                    for mode in modes:
                        precision, _, layout = mode.partition("-")
                        model = model.to(memory_format=memory_format(layout == "cl"))
                        times = time_forward(model, images.to(memory_format=memory_format(layout == "cl")), precision,
                                             warmup, iters)
                        latency = statistics.median(times)
                        print(f"| {version}-{backbone}-{size} | {gflops:.1f} | {params:.2f} | {batch} | {mode} | "
                              f"{latency * 1e3:.1f} | {batch / latency:.1f} |", flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
