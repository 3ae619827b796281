"""A small checkpoint in main.py's format for the demo and export tests: FSSD-ResNet18 at 128, three classes.

The weights are random; BatchNorm statistics are first measured on a few random images (train-mode forwards
without gradients), so that in eval mode the scores spread out instead of saturating at 0 or 1 and rankings,
thresholds and NMS behave as with a trained model.
"""
from __future__ import annotations

from pathlib import Path

import torch

from models import build_detector
from utils.checkpoint import FORMAT, save_checkpoint

CLASS_NAMES = ["circle", "square", "triangle"]
SIZE = 128


def write_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_detector("fssd", "resnet18", SIZE, len(CLASS_NAMES))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, SIZE, SIZE) * 60)
    config = {"version": "fssd", "backbone": "resnet18", "size": SIZE, "base_anchor_size": 24.0, "dataset": "shapes"}
    save_checkpoint({"format": FORMAT, "model": model.state_dict(), "iteration": 1, "max_iter": 1, "config": config,
                     "class_names": CLASS_NAMES}, path)
    return path
