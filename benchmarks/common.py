"""Helpers shared by the benchmark scripts: what machine ran them, synchronised timers, and flag checks.

Timers synchronise CUDA before reading the clock, so a figure covers the device work of the timed calls,
not only their launch. On CPU the synchronisation is a no-op.
"""
from __future__ import annotations

import argparse
import datetime
import math
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch

from models.builder import MIN_SIZE
from utils.distributed import resolve_device


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


def utc_stamp() -> str:
    """Now as every benchmark prints its date: UTC to the minute, ``YYYY-MM-DD HH:MM UTC`` (e.g. 2026-11-27 03:17
    UTC), whatever the machine's time zone, so figures measured on different machines read on one clock."""
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"


def environment(device: torch.device) -> dict:
    """Where and when a benchmark ran: date (:func:`utc_stamp`), card, driver, CUDA/cuDNN/torch versions, CPU,
    precision flags."""
    info = {
        "date": utc_stamp(),
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


def device_flag(parser: argparse.ArgumentParser, requested: str, flag: str = "--device") -> torch.device:
    """The device a device flag names (cpu, cuda or cuda:N, in any letter case, as ``main.py --device``; ``auto``:
    CUDA when available). A name that is no device, or CUDA on a machine without it, ends the script through
    ``parser.error``: one line naming the flag and the fix, before any work starts."""
    try:
        return resolve_device(requested.lower())
    except ValueError as error:
        parser.error(re.sub(r"--device\b", flag, str(error)))  # the flag's own name, in the fix too


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``minimum``, else argparse's one-line error naming the flag."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0, else argparse's one-line error naming the flag."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    if math.isinf(value):  # an infinite scale or time: no count to make, no end to wait for
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def input_size(text: str) -> int:
    """An argparse ``type``: a detector input size (a multiple of 64 from ``models.builder.MIN_SIZE``)."""
    value = int_at_least(1)(text)
    if value < MIN_SIZE or value % 64:
        raise argparse.ArgumentTypeError(f"{value} is not an input size; use 320 or 512 (the paper's) or another "
                                         f"multiple of 64 >= {MIN_SIZE}")
    return value
