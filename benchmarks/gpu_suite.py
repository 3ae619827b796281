"""GPU speed suite (issue 8): training and inference speed of the detectors, in one call to a GPU machine.

    python benchmarks/gpu_suite.py --out $OUT/gpu_suite.json             # H100/H200: about 7 minutes
    python benchmarks/gpu_suite.py --dry_run --out /tmp/gpu_suite.json   # CPU, tiny sizes: every section but compile

Sections, most important first. ``--budget_s`` (default 420) skips every case whose estimated cost no longer
fits, and the JSON is rewritten after every case, so a run stopped early keeps what it measured.

1. ``train``: RetinaNet-VGG16-320, batch 32, IoU / Mutual Guidance x fp32 / AMP (bf16): model, assignment,
   losses, backward and SGD step on synthetic tensors (images on the device; targets handed to the loss on the
   host, as the training loop does), plus the host syncs of one step and where they come from.
2. ``inference``: RetinaNet-VGG16-320 end to end (pinned host images -> device -> model -> decode, top-k, per-class
   NMS -> detections on the host), batch 1 / 32 / 64, fp32 and bf16 + channels_last; forward-only and
   post-processing-only rows; on CUDA, the forward pass and post-processing replayed from one CUDA graph
   (``utils.cuda_graph.CUDAGraphDetector``, as ``main.py --cuda_graph``). BatchNorm is folded into the
   convolutions, as in ``run_inference`` (``models.fold``); one row without folding, and on CUDA at the largest
   batch one row with the model through ``torch.compile`` (not in ``main.py``).
3. ``profile``: torch.profiler top ops by device time, and the device time of each phase (forward, loss, backward,
   optimizer) of the RetinaNet-320 MG AMP step.
4. ``ladder``: the MG step with one speed option added at a time, from the per-image loss loop of the authors'
   code to bf16, channels_last and fused SGD: each option is kept only if its row shows a gain.
5. ``loader``: real data through ``data.build_loader(train=True)`` and ``utils.engine.train`` (JPEG decode and
   the paper's augmentation in worker processes, pinned memory), and the loader alone.
6. ``compile``: the best ``ladder`` rung + ``torch.compile(model)``, then + the compiled criterion
   (``MultiBoxLoss(compile=True)``; ``main.py --compile`` and ``--compile_loss``), compile times reported.
7. ``grid``: the rest of the ``train`` grid (every version at 320 and 512) and of the ``inference`` grid (every
   version at 320).

Synthetic targets: 1-20 random boxes per image (``tests/mg_reference.random_targets``, as the assignment benchmark),
20 classes, random weights (speed does not depend on their values). Under random weights every (anchor, class)
score passes the 0.005 threshold, so post-processing always runs its worst case: 1,000 candidates per image into NMS.
Peak memory is ``torch.cuda.max_memory_allocated`` over the case (model, optimizer state, activations).
The authors' figures quoted in the table come from the issue (H200, PyTorch 2.11, fp32, their code).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    call_latencies,
    environment,
    int_at_least,
    positive_float,
    seconds_per_call,
    synchronize,
)
from benchmarks.data_loading import write_voc_sized_set  # noqa: E402
from benchmarks.inference_speed import model_cost  # noqa: E402
from data import build_dataset, build_loader  # noqa: E402
from data.loader import iterations_per_epoch  # noqa: E402
from models import build_detector  # noqa: E402
from models.fold import fold_batchnorm  # noqa: E402
from models.memory_format import memory_format  # noqa: E402
from tests.mg_reference import random_targets, reference_multibox_loss  # noqa: E402
from utils.box import PriorBox  # noqa: E402
from utils.checkpoint import check_writable_folder  # noqa: E402
from utils.cuda_graph import CUDAGraphDetector  # noqa: E402
from utils.distributed import DistributedContext, resolve_device  # noqa: E402
from utils.engine import TrainSettings, train  # noqa: E402
from utils.loss import MultiBoxLoss  # noqa: E402
from utils.optim import build_optimizer, build_param_groups  # noqa: E402
from utils.postprocess import PostProcessor, detections_to_numpy  # noqa: E402

# The authors' code as the issue measured it: H200, PyTorch 2.11, fp32, RetinaNet-VGG16-320, 20 classes.
AUTHORS = {
    "train_step_ms_batch32": {"IoU": 103.0, "MG": 166.0},
    "mg_assignment_and_loss_ms_batch32": 92.0,
    "inference_batch1_images_per_s_forward_decode_no_nms": {"retinanet": 333.0, "pafpn": 260.0, "fssd": 440.0},
    "forward_gflops_per_image": 71.8,
}
VERSIONS = ("retinanet", "fssd", "pafpn", "rfbnet")
NUM_CLASSES = 20
LR = 1e-5  # tiny, so random weights do not diverge during the timed steps (speed does not depend on it)


@dataclass(frozen=True)
class Settings:
    """Sizes and iteration counts of a run: :data:`FULL` on a GPU, :data:`DRY` for the CPU dry run."""

    backbone: str
    headline_size: int
    sizes: tuple[int, ...]
    batch: int
    infer_batches: tuple[int, ...]
    train_warmup: int
    train_iters: int  # 0: the first step is the timed one (dry run)
    latency_warmup: int
    latency_iters: int
    throughput_warmup: int
    throughput_iters: int
    per_image_loss_iters: int
    loader_images: int
    loader_log_interval: int
    loader_intervals: int
    profile_steps: int
    headline_precisions: tuple[str, ...]
    ladder_rungs: tuple[int, ...]  # indices into LADDER
    grid_versions: tuple[str, ...]
    grid_precisions: tuple[str, ...]


FULL = Settings(
    backbone="vgg16", headline_size=320, sizes=(320, 512), batch=32, infer_batches=(1, 32, 64),
    train_warmup=3, train_iters=10, latency_warmup=10, latency_iters=50, throughput_warmup=3, throughput_iters=10,
    per_image_loss_iters=3, loader_images=256, loader_log_interval=8, loader_intervals=5, profile_steps=3,
    headline_precisions=("fp32", "bf16"), ladder_rungs=tuple(range(6)), grid_versions=VERSIONS,
    grid_precisions=("fp32", "bf16"),
)
# The dry run: one step per training case, the first and last ladder rungs, no grid beyond the headline model
# (the grid runs the same functions); batch 2, as BatchNorm on PAFPN's 1x1 map needs two images in training.
DRY = Settings(
    backbone="resnet18", headline_size=128, sizes=(128,), batch=2, infer_batches=(1, 2),
    train_warmup=0, train_iters=0, latency_warmup=0, latency_iters=1, throughput_warmup=0, throughput_iters=1,
    per_image_loss_iters=0, loader_images=4, loader_log_interval=1, loader_intervals=2, profile_steps=1,
    headline_precisions=("bf16",), ladder_rungs=(0, 5), grid_versions=("retinanet",), grid_precisions=("bf16",),
)
AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
SECTIONS = ("train", "inference", "profile", "ladder", "loader", "compile", "grid")


@dataclass(frozen=True)
class StepOptions:
    """How one training step runs. The defaults are what ``main.py`` does with ``--amp`` on CUDA, plus
    cudnn.benchmark (the fixed input size makes the autotuner's choice valid for every step)."""

    precision: str = "bf16"  # "fp32" or "bf16" (autocast; the assignment and the losses stay float32)
    channels_last: bool = True
    cudnn_benchmark: bool = True
    fused_sgd: bool = False  # False: PyTorch's default implementation (foreach on CUDA)
    per_image_loss: bool = False  # tests/mg_reference.py: a Python loop over images and objects, like the authors'
    compile: bool = False  # torch.compile(model), default mode
    compile_loss: bool = False  # MultiBoxLoss(compile=True): assignment + losses as one graph

    def label(self) -> str:
        parts = [self.precision, "channels_last" if self.channels_last else "contiguous"]
        parts += ["cudnn.benchmark"] if self.cudnn_benchmark else []
        parts += ["fused SGD"] if self.fused_sgd else []
        parts += ["per-image loss loop"] if self.per_image_loss else []
        parts += ["torch.compile"] if self.compile else []
        parts += ["compiled criterion"] if self.compile_loss else []
        return ", ".join(parts)


FP32_BASELINE = StepOptions(precision="fp32", channels_last=False, cudnn_benchmark=False)
LADDER = (
    ("authors-like: per-image loss loop, fp32", dataclasses.replace(FP32_BASELINE, per_image_loss=True)),
    ("fp32 baseline (batched assignment and loss)", FP32_BASELINE),
    ("+ cudnn.benchmark", dataclasses.replace(FP32_BASELINE, cudnn_benchmark=True)),
    ("+ bf16 autocast", StepOptions(precision="bf16", channels_last=False)),
    ("+ channels_last", StepOptions(precision="bf16")),
    ("+ fused SGD", StepOptions(precision="bf16", fused_sgd=True)),
)
COMPILED = ("+ torch.compile(model)", StepOptions(precision="bf16", fused_sgd=True, compile=True))
COMPILED_LOSS = ("+ compiled criterion",
                 StepOptions(precision="bf16", fused_sgd=True, compile=True, compile_loss=True))

# Estimated seconds per case on an H100/H200 (model build, cudnn autotuning, warm-up and timed steps); the
# budget guard skips a case whose estimate no longer fits.
ESTIMATE_S = {"train": 6.0, "train512": 10.0, "per_image": 15.0, "inference": 4.0, "inference_compile": 60.0,
              "profile": 15.0, "loader": 45.0, "compile": 150.0}


class Budget:
    """Wall-clock budget of the run; ``fits(estimate)`` says whether a case of that cost can still start."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fits(self, estimate_s: float) -> bool:
        return self.elapsed() + estimate_s <= self.seconds


class Report:
    """The JSON record: environment, settings, rows per section, the profile, skipped cases and errors.
    Rewritten (atomically) after every change, so a run killed midway leaves a valid file."""

    def __init__(self, path: Path | None, header: dict) -> None:
        self.path = path
        self.data = header | {"train": [], "inference": [], "profile": [], "ladder": [], "loader": [],
                              "skipped": [], "errors": [], "targets": []}
        self.save()

    def add(self, section: str, row: dict) -> None:
        self.data[section].append(row)
        print(f"[{section}] " + ", ".join(f"{k}={_short(v)}" for k, v in row.items() if k != "table"), flush=True)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        partial.replace(self.path)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_case(report: Report, budget: Budget, section: str, case: dict, estimate_s: float,
             measure: Callable[[], dict], device: torch.device) -> dict | None:
    """Run ``measure()`` unless the budget forbids it; record its row, or the skip, or the error, and free memory."""
    if not budget.fits(estimate_s):
        report.data["skipped"].append(case | {"section": section, "reason": f"budget ({budget.elapsed():.0f} s used)"})
        report.save()
        print(f"[{section}] skipped (budget): {case}", flush=True)
        return None
    _free_memory(device)
    try:
        row = case | measure()
    except Exception as error:  # one failing case must not cost the rest of the device call
        report.data["errors"].append(case | {"section": section, "error": f"{type(error).__name__}: {error}"[:600],
                                             "where": traceback.format_exc(limit=-3)[-1200:]})
        report.save()
        print(f"[{section}] ERROR {case}: {type(error).__name__}: {error}", flush=True)
        return None
    finally:
        _free_memory(device)
    report.add(section, row)
    return row


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


@functools.cache
def forward_gflops(version: str, backbone: str, size: int) -> float:
    """Forward GFLOPs per image (convolutions and matrix products; ``benchmarks/inference_speed.py``)."""
    return model_cost(version, backbone, size, NUM_CLASSES)[0] / 1e9


def autocast(device: torch.device, precision: str, cache_enabled: bool = True) -> AbstractContextManager:
    """``torch.autocast`` to ``precision``'s dtype on ``device`` ("fp32": no autocast)."""
    dtype = AMP_DTYPES[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache_enabled)


def synthetic_targets(batch: int, seed: int = 0) -> list[torch.Tensor]:
    """``batch`` targets ``[n_i, 5]`` (x1, y1, x2, y2 normalised, class 0..19), n_i uniform in 1..20."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 21, (batch,), generator=generator).tolist()
    return [random_targets(n, NUM_CLASSES, generator) for n in counts]


def pinned(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    return tensor.pin_memory() if device.type == "cuda" else tensor


class TrainingStep:
    """One training step of ``version``-``backbone`` at ``size`` under ``options``, on a fixed synthetic batch.

    Images ``[B, 3, S, S]`` live on the device; targets (B tensors ``[n_i, 5]``) stay on the host and the loss
    copies them, as in ``utils/engine.py`` (the per-image reference loss gets them on the device).
    """

    def __init__(self, version: str, backbone: str, size: int, batch: int, mutual_guide: bool,
                 options: StepOptions, device: torch.device) -> None:
        torch.backends.cudnn.benchmark = options.cudnn_benchmark
        torch.manual_seed(0)
        with torch.device(device):
            model = build_detector(version, backbone, size, NUM_CLASSES)
        layout = memory_format(options.channels_last)
        self.model = model.to(memory_format=layout).train()
        self.forward = torch.compile(self.model) if options.compile else self.model
        self.priors = PriorBox(base_anchor_size=24.0, size=size).forward().to(device)
        self.loss_fn = MultiBoxLoss(NUM_CLASSES, mutual_guide=mutual_guide, compile=options.compile_loss)
        self.mutual_guide = mutual_guide
        if options.fused_sgd:
            self.optimizer = torch.optim.SGD(build_param_groups(model, 5e-4), lr=LR, momentum=0.9, fused=True)
        else:
            self.optimizer = build_optimizer(model, LR)
        self.images = (torch.randn(batch, 3, size, size, device=device) * 60).contiguous(memory_format=layout)
        self.host_targets = synthetic_targets(batch)
        self.options = options
        self.device = device

    def __call__(self, mark: Callable[[str], None] = lambda phase: None) -> None:
        """One step; ``mark(phase)`` is called after each phase (forward, loss, backward, optimizer)."""
        with autocast(self.device, self.options.precision):
            loc, conf = self.forward(self.images)
        mark("forward")
        if self.options.per_image_loss:
            targets = [t.to(self.device) for t in self.host_targets]
            loss_l, loss_c = reference_multibox_loss(loc.float(), conf.float(), self.priors, targets, self.mutual_guide)
        else:
            loss_l, loss_c = self.loss_fn((loc.float(), conf.float()), self.priors, self.host_targets)
        mark("loss")
        self.optimizer.zero_grad(set_to_none=True)
        (loss_l + loss_c).backward()
        mark("backward")
        self.optimizer.step()
        mark("optimizer")


def host_sync_sites(function: Callable[[], object], device: torch.device) -> dict[str, int] | None:
    """Synchronising CUDA calls made by one ``function()`` call, counted per repository source line (followed by the
    file and line the warning names, in brackets) with ``torch.cuda.set_sync_debug_mode("warn")``; ``None`` on CPU,
    where nothing is asynchronous."""
    if device.type != "cuda":
        return None
    synchronize(device)
    sites: Counter[str] = Counter()

    def record(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None,
               line: str | None = None) -> None:
        if "synchroniz" in str(message):  # keyed by the repository line, then where Python placed the warning
            sites[f"{_innermost_repo_frame(traceback.extract_stack()[:-1])} ({Path(filename).name}:{lineno})"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda *args, **kwargs: None  # switching the mode on can itself warn, once per process
        torch.cuda.set_sync_debug_mode("warn")
        warnings.showwarning = record
        try:
            function()
        finally:
            warnings.showwarning = lambda *args, **kwargs: None
            torch.cuda.set_sync_debug_mode("default")
    synchronize(device)
    return dict(sites)


def _innermost_repo_frame(stack: traceback.StackSummary) -> str:
    """``path:line`` of the innermost frame of ``stack`` that lies in this repository (relative path)."""
    for frame in reversed(stack):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(REPO) and ".venv" not in path.parts:
            return f"{path.relative_to(REPO)}:{frame.lineno}"
    return "outside the repository"


def measure_training(version: str, backbone: str, size: int, batch: int, mutual_guide: bool, options: StepOptions,
                     warmup: int, iters: int, device: torch.device, count_syncs: bool = False) -> dict:
    """One :class:`TrainingStep` case timed: ``step_ms`` (the mean of ``iters`` steps after ``warmup``; the first
    step when ``iters`` is 0), ``images_per_s``, ``tflops`` (3 x the forward FLOPs per image, for forward and
    backward), ``peak_mem_mib`` (``None`` on CPU), ``first_step_s`` (with cuDNN autotuning and compilation) and,
    with ``count_syncs``, the host syncs of one step and where they happen."""
    step = TrainingStep(version, backbone, size, batch, mutual_guide, options, device)
    first_start = time.perf_counter()
    step()
    synchronize(device)
    first_step_s = time.perf_counter() - first_start  # includes cudnn autotuning and any compilation
    seconds = seconds_per_call(step, device, warmup, iters) if iters else first_step_s
    images_per_s = batch / seconds
    row = {"step_ms": 1e3 * seconds, "images_per_s": images_per_s,
           "tflops": 3 * forward_gflops(version, backbone, size) * images_per_s / 1e3,
           "peak_mem_mib": peak_memory_mib(device), "first_step_s": first_step_s}
    if count_syncs:
        sites = host_sync_sites(step, device)
        row["host_syncs_per_step"] = None if sites is None else sum(sites.values())
        row["host_sync_sites"] = sites
    return row


def train_case(version: str, size: int, batch: int, mutual_guide: bool, precision: str, backbone: str) -> dict:
    return {"version": version, "backbone": backbone, "size": size, "batch": batch,
            "assignment": "MG" if mutual_guide else "IoU", "precision": precision}


def run_training_cases(report: Report, budget: Budget, settings: Settings, device: torch.device,
                       versions: Sequence[str], sizes: Sequence[int], precisions: Sequence[str],
                       count_syncs: bool) -> None:
    """Training steps of every version x size x precision x assigner (IoU, MG) into ``report``."""
    for version in versions:
        for size in sizes:
            for precision in precisions:
                for mutual_guide in (False, True):
                    options = StepOptions(precision=precision, channels_last=precision != "fp32")
                    case = train_case(version, size, settings.batch, mutual_guide, precision, settings.backbone)
                    case["options"] = options.label()
                    run_case(report, budget, "train", case, ESTIMATE_S["train512" if size >= 512 else "train"],
                             lambda: measure_training(version, settings.backbone, size, settings.batch, mutual_guide,
                                                      options, settings.train_warmup, settings.train_iters, device,
                                                      count_syncs), device)


def run_ladder(report: Report, budget: Budget, settings: Settings, device: torch.device,
               rungs: Sequence[tuple[str, StepOptions]]) -> None:
    """Training steps of the headline model under each rung's options (name, :class:`StepOptions`) into ``report``."""
    for name, options in rungs:
        iters = settings.per_image_loss_iters if options.per_image_loss else settings.train_iters
        warmup = min(settings.train_warmup, 2) if options.per_image_loss else settings.train_warmup
        estimate = ESTIMATE_S["compile" if options.compile or options.compile_loss
                              else "per_image" if options.per_image_loss else "train"]
        case = train_case("retinanet", settings.headline_size, settings.batch, True, options.precision,
                          settings.backbone)
        case |= {"rung": name, "options": options.label()}
        run_case(report, budget, "ladder", case, estimate,
                 lambda: measure_training("retinanet", settings.backbone, settings.headline_size, settings.batch, True,
                                          options, warmup, iters, device, count_syncs=True), device)


class Inference:
    """Inference of ``version`` at ``size`` on a fixed batch of preprocessed images in pinned host memory.

    ``end_to_end()`` copies the batch to the device, runs the model (under autocast for bf16; BatchNorm folded into
    the convolutions unless ``fold=False``) and ``PostProcessor`` (score > 0.005, top-1000, per-class NMS 0.5, 300
    per image), and copies the detections to the host with ``utils.postprocess.detections_to_numpy``, as
    ``run_inference`` does. ``compile_model`` runs the model through ``torch.compile`` (not in ``main.py``).
    ``cast_weights`` (bf16 only) stores the network's weights in bf16 and feeds it bf16 images instead of using
    autocast, which casts the weights again at every call (not in ``main.py``; the same outputs, since the detectors
    use no operation that autocast keeps in float32).
    """

    def __init__(self, version: str, backbone: str, size: int, batch: int, precision: str, channels_last: bool,
                 device: torch.device, dense_nms: bool | None = None, fold: bool = True, compile_model: bool = False,
                 cast_weights: bool = False) -> None:
        torch.backends.cudnn.benchmark = True
        torch.manual_seed(0)
        with torch.device(device):
            model = build_detector(version, backbone, size, NUM_CLASSES).eval()
        self.memory_format = memory_format(channels_last)
        model = model.to(memory_format=self.memory_format)
        model = fold_batchnorm(model) if fold else model
        self.weights_dtype = AMP_DTYPES[precision] if cast_weights else None
        if cast_weights and self.weights_dtype is None:
            raise ValueError("Inference: cast_weights needs a reduced precision (bf16), not fp32")
        model = model.to(self.weights_dtype) if cast_weights else model
        self.model = torch.compile(model) if compile_model else model
        priors = PriorBox(base_anchor_size=24.0, size=size).forward().to(device)
        self.postprocessor = PostProcessor(priors, dense_nms=dense_nms)
        self.host_images = pinned(torch.randn(batch, 3, size, size) * 60, device)
        self.image_sizes = torch.tensor([[375, 500]] * batch, device=device)  # (height, width) of VOC-like images
        self.precision = precision
        self.device = device

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.weights_dtype is not None:
            return self.model(images.to(self.weights_dtype))
        with autocast(self.device, self.precision):
            return self.model(images)

    @torch.inference_mode()
    def detections_on_host(self, loc: torch.Tensor, conf: torch.Tensor) -> list[dict[str, np.ndarray]]:
        return detections_to_numpy(self.postprocessor(loc, conf, self.image_sizes))

    def end_to_end(self) -> list[dict[str, np.ndarray]]:
        return self.detections_on_host(*self.forward(self.to_device(self.host_images)))

    def graphed_end_to_end(self) -> Callable[[], list[dict[str, np.ndarray]]]:
        """``end_to_end`` replayed from one CUDA graph (forward pass and post-processing; CUDA only)."""
        graphed = CUDAGraphDetector(self.model, self.postprocessor, len(self.host_images), self.host_images.shape[-1],
                                    amp_dtype=AMP_DTYPES[self.precision],
                                    channels_last=self.memory_format == torch.channels_last)
        host_sizes = self.image_sizes.cpu()
        return lambda: graphed(self.host_images, host_sizes)


def measure_inference(version: str, backbone: str, size: int, batch: int, precision: str, mode: str,
                      settings: Settings, device: torch.device) -> dict:
    """Median latency per batch and images/s of one inference ``mode``: ``end to end`` (what ``run_inference`` runs),
    ``end to end, BatchNorm not folded``, ``end to end, torch.compile``, ``end to end, bf16 weights`` (no autocast),
    ``forward only``, ``post-processing only``
    (the NMS PostProcessor picks), ``post-processing only, torchvision NMS`` / ``dense NMS`` or ``end to end, CUDA
    graph`` (``main.py --cuda_graph``). Batch 1 is timed call by call (latency); larger batches back to back
    (throughput)."""
    dense_nms = {"torchvision NMS": False, "dense NMS": True}.get(mode.rpartition(", ")[2])  # None: PostProcessor picks
    inference = Inference(version, backbone, size, batch, precision, precision != "fp32", device, dense_nms,
                          fold=not mode.endswith("BatchNorm not folded"), compile_model=mode.endswith("torch.compile"),
                          cast_weights=mode.endswith("bf16 weights"))
    if mode in ("end to end", "end to end, BatchNorm not folded", "end to end, torch.compile",
                "end to end, bf16 weights"):
        function = inference.end_to_end
    elif mode.startswith("end to end, CUDA graph"):
        function = inference.graphed_end_to_end()
    elif mode.startswith("forward only"):
        images = inference.to_device(inference.host_images)
        function = functools.partial(inference.forward, images)
    elif mode.startswith("post-processing only"):
        function = functools.partial(inference.detections_on_host,
                                     *inference.forward(inference.to_device(inference.host_images)))
    else:
        raise ValueError(f"unknown inference mode {mode!r}")
    if batch == 1:
        seconds = statistics.median(call_latencies(function, device, settings.latency_warmup, settings.latency_iters))
    else:
        seconds = seconds_per_call(function, device, settings.throughput_warmup, settings.throughput_iters)
    return {"latency_ms": 1e3 * seconds, "images_per_s": batch / seconds, "peak_mem_mib": peak_memory_mib(device)}


def run_inference_cases(report: Report, budget: Budget, settings: Settings, device: torch.device,
                        versions: Sequence[str], modes_for: Callable[[int, str], list[str]],
                        precisions: Sequence[str] = ("fp32", "bf16")) -> None:
    """Inference of every version x batch x precision x mode (``modes_for(batch, precision)``) into ``report``."""
    for version in versions:
        for batch in settings.infer_batches:
            for precision in precisions:
                for mode in modes_for(batch, precision):
                    case = {"version": version, "backbone": settings.backbone, "size": settings.headline_size,
                            "batch": batch, "precision": precision + ("" if precision == "fp32" else ", channels_last"),
                            "mode": mode}
                    estimate = ESTIMATE_S["inference_compile" if mode.endswith("torch.compile") else "inference"]
                    run_case(report, budget, "inference", case, estimate,
                             lambda: measure_inference(version, settings.backbone, settings.headline_size, batch,
                                                       precision, mode, settings, device), device)


def headline_inference_modes(device: torch.device, largest_batch: int) -> Callable[[int, str], list[str]]:
    """``modes(batch, precision)``: the inference modes timed for that case; fp32 end to end only, reduced
    precision every mode (CUDA graph on CUDA, ``torch.compile`` on CUDA at ``largest_batch`` alone)."""

    def modes(batch: int, precision: str) -> list[str]:
        if precision == "fp32":
            return ["end to end"]
        extra = ["end to end, CUDA graph"] if device.type == "cuda" else []
        extra += ["end to end, torch.compile"] if device.type == "cuda" and batch == largest_batch else []
        extra += ["post-processing only, torchvision NMS", "post-processing only, dense NMS"]
        return ["end to end", "end to end, BatchNorm not folded", "end to end, bf16 weights", "forward only",
                "post-processing only"] + extra
    return modes


class PhaseClock:
    """Device time between consecutive ``mark(name)`` calls: CUDA events on CUDA (no host sync until
    :meth:`durations_ms`), ``perf_counter`` on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks: list[tuple[str, object]] = [("start", self._now())]

    def _now(self):
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def mark(self, name: str) -> None:
        self.marks.append((name, self._now()))

    def durations_ms(self) -> dict[str, float]:
        synchronize(self.device)
        durations = {}
        for (_, before), (name, after) in zip(self.marks, self.marks[1:]):
            if self.device.type == "cuda":
                durations[name] = before.elapsed_time(after)
            else:
                durations[name] = 1e3 * (after - before)
        return durations


def measure_profile(settings: Settings, device: torch.device, steps: int) -> dict:
    """Phase times (mean over ``steps`` steps) and the torch.profiler table of the RetinaNet MG AMP step."""
    step = TrainingStep("retinanet", settings.backbone, settings.headline_size, settings.batch, True, StepOptions(),
                        device)
    for _ in range(settings.train_warmup):
        step()
    phases: dict[str, list[float]] = {}
    for _ in range(steps):
        clock = PhaseClock(device)
        step(clock.mark)
        for name, ms in clock.durations_ms().items():
            phases.setdefault(name, []).append(ms)
    sort_by, table = profiler_table(step, steps, device, "training step")
    return {"config": "retinanet-" + f"{settings.backbone}-{settings.headline_size}, batch {settings.batch}, MG, "
                      + StepOptions().label(),
            "steps": steps, "phase_ms": {name: statistics.mean(values) for name, values in phases.items()},
            "sorted_by": sort_by, "table": table}


def measure_inference_profile(settings: Settings, device: torch.device, calls: int) -> dict:
    """The torch.profiler table of end-to-end RetinaNet inference at the largest batch, bf16 + channels_last: where
    the time goes against the 5,000 images/s target."""
    batch = max(settings.infer_batches)
    inference = Inference("retinanet", settings.backbone, settings.headline_size, batch, "bf16", True, device)
    for _ in range(settings.throughput_warmup):
        inference.end_to_end()
    sort_by, table = profiler_table(inference.end_to_end, calls, device, "inference batch")
    return {"config": f"retinanet-{settings.backbone}-{settings.headline_size} inference end to end, batch {batch}, "
                      "bf16, channels_last", "steps": calls, "sorted_by": sort_by, "table": table}


def profiler_table(function: Callable[[], object], calls: int, device: torch.device, label: str) -> tuple[str, str]:
    """torch.profiler's top 25 operations of ``calls`` calls of ``function``, by self device (CPU: host) time."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    synchronize(device)
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(calls):
            with torch.profiler.record_function(label):
                function()
        synchronize(device)
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return sort_by, profiler.key_averages().table(sort_by=sort_by, row_limit=25, max_name_column_width=60)


class MetricsLog:
    """Stands in for ``utils.logging.RunLog`` in :func:`utils.engine.train`: keeps the train rows in memory."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def info(self, message: str) -> None:
        print(message, flush=True)

    def metrics(self, kind: str, row: dict) -> None:
        if kind == "train":
            self.rows.append(dict(row))


def measure_loader(settings: Settings, device: torch.device, workers: int, data_root: Path) -> dict:
    """Images/s of ``utils.engine.train`` on VOC-sized JPEGs through the training loader, and of the loader alone."""
    dataset = build_dataset("voc", "train", settings.headline_size, data_root=str(data_root), classes=["thing"])
    batch = min(settings.batch, len(dataset))
    max_iter = settings.loader_log_interval * settings.loader_intervals
    ctx = DistributedContext()
    pin_memory = device.type == "cuda"
    loader = build_loader(dataset, batch, train=True, workers=workers, max_iter=max_iter, pin_memory=pin_memory)
    iterator = iter(loader)
    next(iterator)  # worker start-up
    start, images = time.perf_counter(), 0
    for image_batch, _, _ in iterator:
        images += image_batch.shape[0]
    loader_images_per_s = images / max(time.perf_counter() - start, 1e-9)

    options = StepOptions()
    torch.backends.cudnn.benchmark = options.cudnn_benchmark
    torch.manual_seed(0)
    with torch.device(device):
        model = build_detector("retinanet", settings.backbone, settings.headline_size, dataset.num_classes)
    model = model.to(memory_format=torch.channels_last)
    priors = PriorBox(base_anchor_size=24.0, size=settings.headline_size).forward().to(device)
    optimizer = build_optimizer(model, LR)
    train_settings = TrainSettings(
        max_iter=max_iter, epoch_size=iterations_per_epoch(len(dataset), batch), base_lr=LR, warm_iter=0,
        log_interval=settings.loader_log_interval, checkpoint_interval=max_iter + 1,
        amp_dtype=AMP_DTYPES[options.precision], channels_last=True,
    )
    log = MetricsLog()
    loader = build_loader(dataset, batch, train=True, workers=workers, max_iter=max_iter, pin_memory=pin_memory)
    train(model, MultiBoxLoss(dataset.num_classes, mutual_guide=True), priors, optimizer,
          torch.amp.GradScaler(device.type, enabled=False), loader, 0, train_settings, device, ctx, log,
          save=lambda done: None)
    timed_rows = log.rows[1:]  # the first interval holds worker start-up and cudnn autotuning
    return {"images_per_s": statistics.mean(row["images_per_s"] for row in timed_rows),
            "loader_only_images_per_s": loader_images_per_s,
            "timed_iterations": len(timed_rows) * settings.loader_log_interval,
            "peak_mem_mib": peak_memory_mib(device)}


def check_targets(report: Report, settings: Settings) -> None:
    """The issue's targets against this run's rows (RetinaNet at the headline size, batch 32 / 1 / 64)."""
    def find(section: str, **match) -> dict | None:
        return next((row for row in report.data[section] if all(row.get(k) == v for k, v in match.items())), None)

    size = settings.headline_size
    targets = []
    mg_amp = find("train", version="retinanet", size=size, assignment="MG", precision="bf16")
    iou_amp = find("train", version="retinanet", size=size, assignment="IoU", precision="bf16")
    mg_compiled = find("ladder", size=size, rung=COMPILED[0])
    mg_compiled_loss = find("ladder", size=size, rung=COMPILED_LOSS[0])
    authors = 32 / (AUTHORS["train_step_ms_batch32"]["MG"] / 1e3)
    for name, row in (("AMP", mg_amp), ("AMP + torch.compile", mg_compiled),
                      ("AMP + torch.compile + compiled criterion", mg_compiled_loss)):
        if row:
            targets.append({"target": f"MG training, {name}, images/s >= 1000", "measured": row["images_per_s"],
                            "unit": "images/s", "met": row["images_per_s"] >= 1000})
            targets.append({"target": f"MG training, {name}, >= 5x the authors' {authors:.0f} images/s",
                            "measured": row["images_per_s"] / authors, "unit": "x",
                            "met": row["images_per_s"] >= 5 * authors})
    if mg_amp and iou_amp:
        share = 1 - iou_amp["step_ms"] / mg_amp["step_ms"]
        targets.append({"target": "MG costs <= 5 % of the step over IoU (AMP)", "measured": share, "unit": "fraction",
                        "met": share <= 0.05})
    for infer_batch, goal in ((1, 1000), (64, 5000)):
        for mode in ("end to end", "end to end, bf16 weights", "end to end, CUDA graph", "end to end, torch.compile"):
            row = find("inference", version="retinanet", size=size, batch=infer_batch, mode=mode,
                       precision="bf16, channels_last")
            if row:
                targets.append({"target": f"inference, batch {infer_batch}, {mode} incl. NMS, AMP, images/s >= {goal}",
                                "measured": row["images_per_s"], "unit": "images/s",
                                "met": row["images_per_s"] >= goal})
    report.data["targets"] = targets
    report.save()


def print_tables(report: Report) -> None:
    env = report.data["environment"]
    print(f"\n# GPU speed suite, {env['date']}: {env['card'] or 'no GPU'} (driver {env['driver']}, CUDA {env['cuda']}, "
          f"cuDNN {env['cudnn']}), torch {env['torch']}, CPU {env['cpu']}"
          f"{' [DRY RUN]' if report.data['dry_run'] else ''}")
    columns = {
        "train": ["version", "backbone", "size", "batch", "assignment", "precision", "step_ms", "images_per_s",
                  "tflops", "peak_mem_mib", "host_syncs_per_step"],
        "ladder": ["rung", "precision", "step_ms", "images_per_s", "peak_mem_mib", "first_step_s",
                   "host_syncs_per_step"],
        "inference": ["version", "size", "batch", "precision", "mode", "latency_ms", "images_per_s", "peak_mem_mib"],
        "loader": ["version", "size", "batch", "workers", "images_per_s", "loader_only_images_per_s", "peak_mem_mib"],
    }
    for section, names in columns.items():
        if not report.data[section]:
            continue
        print(f"\n## {section}\n\n| " + " | ".join(names) + " |\n|" + "---|" * len(names))
        for row in report.data[section]:
            print("| " + " | ".join(_cell(row.get(name)) for name in names) + " |")
    for profile in report.data["profile"]:
        phases = ", ".join(f"{name} {ms:.1f} ms" for name, ms in profile.get("phase_ms", {}).items())
        phases = f"phases (mean per step): {phases}\n\n" if phases else ""
        print(f"\n## profile: {profile['config']}\n\n{phases}{profile['table']}")
    for target in report.data["targets"]:
        value, unit = target["measured"], target["unit"]
        measured = f"{value:.1%}" if unit == "fraction" else f"{value:.2f}x" if unit == "x" else f"{value:.1f} {unit}"
        print(f"target: {target['target']}: measured {measured} -> {'MET' if target['met'] else 'NOT MET'}")
    for key in ("skipped", "errors"):
        if report.data[key]:
            print(f"{key}: {len(report.data[key])} case(s), listed in the JSON")


def _cell(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_suite.json"),
                        help="JSON record (default: gpu_suite.json)")
    parser.add_argument("--dry_run", "--dry-run", action="store_true",
                        help="tiny sizes (ResNet18 at 128, batch 1-2), one timed iteration per case: checks the code "
                             "paths on any device (90 s on a busy 2-core CPU), compile's aside (listed as skipped); "
                             "the figures mean nothing")
    parser.add_argument("--budget_s", "--budget-s", type=positive_float, default=420.0,
                        help="skip the cases that no longer fit in this many seconds of wall time (default: 420)")
    parser.add_argument("--device", type=str.lower, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda, cuda:N or cpu, in any letter case")
    parser.add_argument("--workers", type=int_at_least(0), default=None,
                        help="DataLoader workers of the loader section (default: CPU cores - 2, at most 12; "
                             "0 in --dry_run)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="what to run, always in this order: " + " ".join(SECTIONS) + " (default: all; the dry run "
                             "leaves out compile)")
    parser.add_argument("--check_only", "--check-only", action="store_true",
                        help="check the arguments, the device and --out, then stop without running anything "
                             "(gpu_check.sh does this first, so a typo costs seconds, not minutes of device time)")
    return parser


def main(args: argparse.Namespace) -> dict:
    """Run the sections of ``args`` and return the report's data (``{}`` after ``--check_only``'s checks)."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here; run with --device cpu --dry_run")
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if device.type == "cpu" and not args.dry_run:
        raise SystemExit("the full suite needs a GPU (hours on a CPU); add --dry_run to check the code paths")
    if args.out.is_dir():  # e.g. --out $OUT, the folder gpu_check.sh takes
        raise SystemExit(f"--out {args.out} is a folder; give a file name such as {args.out / 'gpu_suite.json'}")
    try:
        check_writable_folder(args.out.parent, "the folder of --out")
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if args.check_only:
        return {}
    settings = DRY if args.dry_run else FULL
    workers = (args.workers if args.workers is not None
               else (0 if args.dry_run else max(1, min(12, (os.cpu_count() or 4) - 2))))
    sections = set(args.sections)
    budget = Budget(args.budget_s)
    report = Report(args.out, {"environment": environment(device), "dry_run": args.dry_run,
                               "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                               "settings": dataclasses.asdict(settings) | {"workers": workers,
                                                                           "budget_s": args.budget_s},
                               "authors_reference": AUTHORS})
    headline, size = "retinanet", settings.headline_size
    others = [v for v in settings.grid_versions if v != headline]

    if "train" in sections:
        run_training_cases(report, budget, settings, device, [headline], [size], settings.headline_precisions,
                           count_syncs=True)
    if "inference" in sections:
        run_inference_cases(report, budget, settings, device, [headline],
                            headline_inference_modes(device, max(settings.infer_batches)), settings.headline_precisions)
        run_case(report, budget, "profile", {"mode": "inference"}, ESTIMATE_S["profile"],
                 lambda: measure_inference_profile(settings, device, settings.profile_steps), device)
    if "profile" in sections:
        run_case(report, budget, "profile", {}, ESTIMATE_S["profile"],
                 lambda: measure_profile(settings, device, settings.profile_steps), device)
    if "ladder" in sections:
        run_ladder(report, budget, settings, device, [LADDER[i] for i in settings.ladder_rungs])
    if "loader" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            data_root = write_voc_sized_set(Path(tmp) / "voc_sized", settings.loader_images)
            case = {"version": headline, "backbone": settings.backbone, "size": size, "batch": settings.batch,
                    "assignment": "MG", "precision": "bf16", "workers": workers}
            run_case(report, budget, "loader", case, ESTIMATE_S["loader"],
                     lambda: measure_loader(settings, device, workers, data_root), device)
    if "compile" in sections and args.dry_run:  # said, or --dry_run --sections compile would end without a word
        reason = "dry run: torch.compile takes minutes to compile even at its tiny sizes; run the section on a GPU"
        report.data["skipped"].append({"section": "compile", "reason": reason})
        report.save()
        print(f"[compile] skipped ({reason})", flush=True)
    elif "compile" in sections:
        run_ladder(report, budget, settings, device, [COMPILED, COMPILED_LOSS])
    if "grid" in sections:
        run_training_cases(report, budget, settings, device, others, [size], settings.grid_precisions,
                           count_syncs=False)
        run_training_cases(report, budget, settings, device, settings.grid_versions,
                           [s for s in settings.sizes if s != size], settings.grid_precisions, count_syncs=False)
        run_inference_cases(report, budget, settings, device, others, lambda batch, precision: ["end to end"],
                            settings.grid_precisions)

    check_targets(report, settings)
    report.data["elapsed_s"] = budget.elapsed()
    report.save()
    print_tables(report)
    return report.data


if __name__ == "__main__":
    main(get_args_parser().parse_args())
