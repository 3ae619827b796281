"""Helpers shared by the benchmark scripts: what machine ran them, and synchronised timers.

Timers synchronise CUDA before reading the clock, so a figure covers the device work of the timed calls,
not only their launch. On CPU the synchronisation is a no-op.
"""
from __future__ import annotations

import datetime
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver version as ``nvidia-smi`` reports it (e.g. ``570.124.06``); ``None`` without it."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else None


def environment(device: torch.device) -> dict:
    """Where and when a benchmark ran: date, card, driver, CUDA/cuDNN/torch versions, CPU, precision flags."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            card=properties.name,
            card_memory_gib=round(properties.total_memory / 2**30, 1),
            driver=nvidia_driver_version(),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        info.update(card=None, driver=None, cuda=None, cudnn=None)
    return info


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(function: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Mean seconds per ``function()`` over ``iters`` back-to-back calls after ``warmup`` calls.

    Synchronised once before and once after the timed block, so the calls overlap on the device as they
    would in a loop (the throughput figure).
    """
    for _ in range(warmup):
        function()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        function()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def call_latencies(function: Callable[[], object], device: torch.device, warmup: int, iters: int) -> list[float]:
    """Seconds of each of ``iters`` calls after ``warmup`` calls, synchronised around every call (latency)."""
    for _ in range(warmup):
        function()
    latencies = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        latencies.append(time.perf_counter() - start)
    return latencies
