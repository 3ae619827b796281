"""Speed of the demo (end to end) and of the exported ONNX graph versus PyTorch.

    python benchmarks/demo_export.py                       # FSSD-ResNet18 at 320, 16 shapes images, CPU
    python benchmarks/demo_export.py --device cuda --images 64 --batch_sizes 1 8 32

Rows:
- ``demo``: ``run_demo`` wall time per image: loading the checkpoint, reading, resizing, the forward pass,
  post-processing (score > 0.3, NMS, at most 100 per image), drawing and writing the JPEG and the JSON (images
  rendered by the shapes generator, 256..384 px; random weights give the full 100 detections per image);
- ``load``: reading the checkpoint and building the model, paid once per demo run (ms per run, not per image);
- ``pytorch`` / ``onnxruntime``: the decode graph (network + decode + sigmoid) on one batch, median of the timed
  runs after warm-up; onnxruntime runs on the CPU (``CPUExecutionProvider``), so compare it with the CPU rows.

The weights are random (speed does not depend on them). Prints the CPU / GPU model, the date and the versions.
Needs the optional export packages onnx and onnxruntime (``pip install -r requirements-export.txt``).
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import call_latencies, cpu_model, device_flag, input_size, int_at_least, utc_stamp  # noqa: E402

from data.shapes import SHAPES_CLASSES, render_sample  # noqa: E402
from models import BACKBONES, NECKS, build_detector  # noqa: E402
from utils.checkpoint import FORMAT, save_checkpoint  # noqa: E402
from utils.demo import run_demo  # noqa: E402
from utils.export import DecodedDetector, export_onnx, onnx_max_abs_diff  # noqa: E402
from utils.messages import counted  # noqa: E402
from utils.trained_model import load_trained_detector  # noqa: E402


def write_checkpoint(path: Path, version: str, backbone: str, size: int) -> Path:
    model = build_detector(version, backbone, size, len(SHAPES_CLASSES))
    config = {"version": version, "backbone": backbone, "size": size, "base_anchor_size": 24.0}
    # a finished run of one iteration: load_checkpoint refuses a run of 0 iterations as a damaged file
    save_checkpoint({"format": FORMAT, "model": model.state_dict(), "iteration": 1, "max_iter": 1, "config": config,
                     "class_names": list(SHAPES_CLASSES)}, path)
    return path


def timed(function: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median seconds of ``function()`` over ``repeats`` calls after ``warmup`` calls (CUDA synchronised)."""
    return statistics.median(call_latencies(function, device, warmup, repeats))


def missing_export_packages() -> list[str]:
    """Which of the export packages this benchmark needs (onnx to write the file, onnxruntime to run it) do not
    import."""
    missing = []
    for package in ("onnx", "onnxruntime"):
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="fssd", choices=list(NECKS))
    parser.add_argument("--backbone", default="resnet18", choices=list(BACKBONES))
    parser.add_argument("--size", type=input_size, default=320)
    parser.add_argument("--images", type=int_at_least(1), default=16, help="images given to the demo (default: 16)")
    parser.add_argument("--batch_sizes", type=int_at_least(1), nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int_at_least(1), default=5,
                        help="timed runs of the graph benchmarks (default: 5)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    args = parser.parse_args()
    device = device_flag(parser, args.device)
    if missing := missing_export_packages():
        parser.error(f"the export benchmark needs the {' and '.join(map(repr, missing))} "
                     f"package{'s' if len(missing) > 1 else ''}; install with `pip install -r requirements-export.txt`")
    import onnxruntime

    torch.manual_seed(0)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = write_checkpoint(tmp / "bench.pth", args.version, args.backbone, args.size)
        folder = tmp / "images"
        folder.mkdir()
        for index in range(args.images):
            cv2.imwrite(str(folder / f"{index:04d}.jpg"), render_sample(0, "test", index).image)
        for batch_size in args.batch_sizes:
            run_demo(checkpoint, str(folder), tmp / "warmup", device=device, batch_size=batch_size)  # warm-up pass
            start = time.perf_counter()
            run_demo(checkpoint, str(folder), tmp / f"out{batch_size}", device=device, batch_size=batch_size)
            seconds = time.perf_counter() - start
            rows.append(("demo (end to end)", device.type, batch_size, 1000 * seconds / args.images,
                         args.images / seconds))

        start = time.perf_counter()
        onnx_path = export_onnx(checkpoint, tmp / "bench.onnx")
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        detector = load_trained_detector(checkpoint, device)
        load_ms = 1000 * (time.perf_counter() - start)
        rows.append(("load checkpoint + build model (once per run)", device.type, "-", load_ms, None))
        graph = DecodedDetector(detector.model, detector.priors).eval()
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        for batch_size in args.batch_sizes:
            images = torch.randn(batch_size, 3, args.size, args.size) * 60
            on_device = images.to(device)
            with torch.inference_mode():
                seconds = timed(lambda: graph(on_device), args.repeats, 2, device)
            rows.append(("pytorch decode graph", device.type, batch_size, 1000 * seconds / batch_size,
                         batch_size / seconds))
            feed = {"images": images.numpy()}
            seconds = timed(lambda: session.run(None, feed), args.repeats, 2, torch.device("cpu"))
            rows.append(("onnxruntime decode graph", "cpu", batch_size, 1000 * seconds / batch_size,
                         batch_size / seconds))
        cpu = load_trained_detector(checkpoint, "cpu")
        cpu_graph = DecodedDetector(cpu.model, cpu.priors)
        diff = onnx_max_abs_diff(onnx_path, cpu_graph, torch.randn(2, 3, args.size, args.size) * 60)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"\n{args.version}-{args.backbone} at {args.size}, {counted(args.images, 'image')}; {utc_stamp()}; "
          f"CPU {cpu_model()} ({torch.get_num_threads()} threads); GPU {gpu}; torch {torch.__version__}")
    print(f"ONNX export {export_seconds:.1f} s; ONNX vs PyTorch max abs diff {diff:.2e}\n")
    print("| what | device | batch | ms / image | images / s |")
    print("|---|---|---:|---:|---:|")
    for what, where, batch_size, ms, rate in rows:
        print(f"| {what} | {where} | {batch_size} | {ms:.1f} | {'-' if rate is None else f'{rate:.1f}'} |")


if __name__ == "__main__":
    main()
