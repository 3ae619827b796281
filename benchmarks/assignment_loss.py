"""Assignment + loss speed: batched ``MultiBoxLoss`` against the plain per-image reference of the tests.

    python benchmarks/assignment_loss.py [--batch 32] [--repeats 4] [--reference_repeats 3] [--devices cpu cuda]
                                         [--profile] [--focal_bound]

One forward of the criterion (assignment, focal and balanced-L1 losses; no backward) on random head outputs,
batch 32, 1-20 objects per image (uniform), sizes 320 and 512, C = 20 and 80, IoU and Mutual-Guidance
assignment. The reference is ``tests/mg_reference.py``: a Python loop over images and objects, like the
authors' code. Targets (issue 3): >= 15x faster than the reference on CPU; <= 3 ms per batch of 32 at 320 on
an H100/H200. Times are the best (minimum) of the repeats after one warm-up call, the batched and reference
calls interleaved: on a shared machine the minimum is the least disturbed by other jobs. The batched criterion gets
the targets on the host, as in training (it copies them itself); the reference gets them on the device.
``--profile`` adds, per device, torch.profiler's top operations of the Mutual-Guidance criterion at the first size
and class count, by self device time. ``--focal_bound`` adds, per device, the time of the one term every criterion
must compute over all ``[B, A, C]`` logits (the target-0 focal loss, summed), eager and fused by ``torch.compile``
(needs a C++ compiler on CPU): reference time / that time bounds the speed-up of any batched criterion.
``--compile`` adds ``MultiBoxLoss(..., compile=True)`` (assignment + losses as one graph): its best time after
the compiling call, and how long that first call took; ``--profile`` then profiles it too.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import call_latencies, cpu_model, device_flag, input_size, int_at_least, utc_stamp  # noqa: E402

from tests.mg_reference import random_targets, reference_multibox_loss  # noqa: E402
from utils.box import PriorBox  # noqa: E402
from utils.loss import MultiBoxLoss  # noqa: E402


def call_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one ``fn()`` call in milliseconds, synchronising CUDA before and after."""
    return call_latencies(fn, device, warmup=0, iters=1)[0] * 1000


def best_times(batched: Callable[[], object], reference: Callable[[], object], device: torch.device, repeats: int,
               reference_repeats: int) -> tuple[float, float]:
    """Best (minimum) times of the two functions after a warm-up each, calls interleaved so that a burst of
    load from other jobs hits both alike."""
    batched(), reference()
    batched_ms, reference_ms = [], []
    for i in range(max(repeats, reference_repeats)):
        if i < repeats:
            batched_ms.append(call_ms(batched, device))
        if i < reference_repeats:
            reference_ms.append(call_ms(reference, device))
    return min(batched_ms), min(reference_ms)


def make_batch(batch: int, size: int, num_classes: int, device: torch.device,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A random batch: ``loc [B, A, 4]`` offsets, ``conf [B, A, C]`` logits near the focal prior, the anchors
    ``[A, 4]`` cxcywh normalised (on ``device``) and 1-20 random objects per image on the host (``[n, 5]``)."""
    generator = torch.Generator().manual_seed(seed)
    anchors = PriorBox(24.0, size)()
    counts = torch.randint(1, 21, (batch,), generator=generator).tolist()
    targets = [random_targets(n, num_classes, generator) for n in counts]  # on the host, as from a DataLoader
    loc = (torch.randn(batch, anchors.shape[0], 4, generator=generator) * 0.5).to(device)
    conf = (torch.randn(batch, anchors.shape[0], num_classes, generator=generator) - 4.0).to(device)
    return loc, conf, anchors.to(device), targets


def print_profile(loss_fn: MultiBoxLoss, loc: torch.Tensor, conf: torch.Tensor, anchors: torch.Tensor,
                  targets: list[torch.Tensor], device: torch.device, calls: int = 5) -> None:
    """torch.profiler's top operations of ``calls`` criterion calls, by self device (or CPU) time."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    loss_fn((loc, conf), anchors, targets)
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(calls):
            loss_fn((loc, conf), anchors, targets)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\nprofile: {calls} calls of MultiBoxLoss(mutual_guide={loss_fn.mutual_guide}, compile={loss_fn.compiled}) "
          f"on {device.type}, batch {loc.shape[0]}, {loc.shape[1]} anchors, C = {conf.shape[2]}")
    print(profiler.key_averages().table(sort_by=sort_by, row_limit=30, max_name_column_width=70))


def focal_term_sum(logits: torch.Tensor) -> torch.Tensor:
    """``sum(softplus(x) * sigmoid(x))`` over every logit, from one ``exp(-|x|)``: the focal loss of target 0
    (gamma 1), which no assignment can skip."""
    e = torch.exp(-logits.abs())
    inverse = 1 / (1 + e)
    probability = torch.where(logits >= 0, inverse, e * inverse)
    return ((logits.clamp(min=0) + torch.log1p(e)) * probability).sum()


def eager_focal_term_sum(logits: torch.Tensor) -> torch.Tensor:
    """The same sum as the loss computes it in eager mode (fewer passes than :func:`focal_term_sum` unfused)."""
    return (torch.nn.functional.softplus(logits) * torch.sigmoid(logits)).sum()


def print_focal_bound(batch: int, size: int, num_classes: int, device: torch.device, repeats: int) -> None:
    """Best time of :func:`focal_term_sum` eager and compiled, next to the reference criterion's."""
    loc, conf, anchors, targets = make_batch(batch, size, num_classes, device)
    device_targets = [t.to(device) for t in targets]
    reference_ms = min(call_ms(lambda: reference_multibox_loss(loc, conf, anchors, device_targets, False), device)
                       for _ in range(2))
    rows = [("eager: softplus(x) * sigmoid(x), as utils/loss/focal_loss.py", eager_focal_term_sum)]
    try:
        compiled = torch.compile(focal_term_sum)
        compiled(conf)
        rows.append(("torch.compile: one fused pass from exp(-|x|)", compiled))
    except Exception as error:  # no C++ compiler / Triton: report the eager bound only
        print(f"torch.compile unavailable here ({type(error).__name__}); eager bound only")
    print(f"\nfocal-term bound on {device.type}, batch {batch}, {size}, C = {num_classes}: IoU reference criterion "
          f"{reference_ms:.1f} ms")
    print("| focal term | ms | bound on the speed-up |\n|---|---:|---:|")
    for name, function in rows:
        function(conf)
        ms = min(call_ms(lambda: function(conf), device) for _ in range(repeats))
        print(f"| {name} | {ms:.1f} | {reference_ms / ms:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int_at_least(1), default=32)
    parser.add_argument("--sizes", type=input_size, nargs="+", default=[320, 512])
    parser.add_argument("--classes", type=int_at_least(1), nargs="+", default=[20, 80])
    parser.add_argument("--repeats", type=int_at_least(1), default=4, help="timed calls of the batched criterion")
    parser.add_argument("--reference_repeats", "--reference-repeats", type=int_at_least(1), default=3,
                        help="timed calls of the slow reference")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"],
                        help="cpu, cuda or cuda:N, in any letter case (default: cpu cuda); without CUDA, a plain cuda "
                             "beside another device is left out")
    parser.add_argument("--profile", action="store_true", help="print the MG criterion's top operations per device")
    parser.add_argument("--focal_bound", "--focal-bound", action="store_true",
                        help="time the all-logits focal term alone (eager and torch.compile): the bound on any "
                             "speed-up")
    parser.add_argument("--compile", action="store_true",
                        help="also time MultiBoxLoss(compile=True): assignment + losses as one torch.compile graph")
    args = parser.parse_args()

    requested = [name.lower() for name in args.devices]
    if not torch.cuda.is_available() and set(requested) != {"cuda"}:  # alone, it is refused: no row to measure
        requested = [name for name in requested if name != "cuda"]
    devices = [device_flag(parser, name, "--devices") for name in requested]
    print(f"date {utc_stamp()}, torch {torch.__version__}, "
          f"CPU {cpu_model()} ({torch.get_num_threads()} threads)")
    if torch.cuda.is_available():
        print(f"CUDA device {torch.cuda.get_device_name()}")
    else:
        print("CUDA: not available, CUDA rows not measured")
    print(f"batch {args.batch}, 1-20 objects per image; best of {args.repeats} (batched) / "
          f"{args.reference_repeats} (reference) calls after a warm-up; forward only")
    print()
    compiled_columns = " compiled ms | compiled speed-up | first compiled call s |" if args.compile else ""
    print(f"| device | size | C | assigner | batched ms | reference ms | speed-up |{compiled_columns}")
    print("|---|---|---|---|---|---|---|" + "---|" * 3 * args.compile)
    for device in devices:
        for num_classes in args.classes:
            compiled = {mg: MultiBoxLoss(num_classes, mg, compile=True) for mg in (False, True)} if args.compile else {}
            for size in args.sizes:
                loc, conf, anchors, targets = make_batch(args.batch, size, num_classes, device)
                device_targets = [t.to(device) for t in targets]
                for mutual_guide in (False, True):
                    loss_fn = MultiBoxLoss(num_classes, mutual_guide)
                    batched, reference = best_times(
                        lambda: loss_fn((loc, conf), anchors, targets),
                        lambda: reference_multibox_loss(loc, conf, anchors, device_targets, mutual_guide),
                        device,
                        args.repeats,
                        args.reference_repeats,
                    )
                    name = "MG" if mutual_guide else "IoU"
                    row = f"| {device.type} | {size} | {num_classes} | {name} | {batched:.1f} | {reference:.1f} | " \
                          f"{reference / batched:.1f}x |"
                    if args.compile:
                        compiled_fn = compiled[mutual_guide]
                        first_s = call_ms(lambda: compiled_fn((loc, conf), anchors, targets), device) / 1000
                        best = min(call_ms(lambda: compiled_fn((loc, conf), anchors, targets), device)
                                   for _ in range(args.repeats))
                        row += f" {best:.1f} | {reference / best:.1f}x | {first_s:.1f} |"
                    print(row, flush=True)
    if args.focal_bound:
        for device in devices:
            print_focal_bound(args.batch, args.sizes[0], args.classes[0], device, args.repeats)
    if args.profile:
        for device in devices:
            loc, conf, anchors, targets = make_batch(args.batch, args.sizes[0], args.classes[0], device)
            for compile in (False, True)[: 1 + args.compile]:
                loss_fn = MultiBoxLoss(args.classes[0], mutual_guide=True, compile=compile)
                print_profile(loss_fn, loc, conf, anchors, targets, device)


if __name__ == "__main__":
    main()
