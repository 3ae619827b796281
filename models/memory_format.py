"""Where a detector's convolutions run channels-last (NHWC), and how to tell what a model stores.

Measured (docs/benchmarks.md): on the CPU, channels-last is faster for training and inference in float32 and in bf16
autocast (oneDNN; FSSD-ResNet18-192 training, batch 32: 31.8 -> 44.0 images/s in bf16, 13.7 -> 16.1 in float32).
On CUDA it is faster under autocast (tensor-core convolutions read NHWC); float32 on CUDA stays NCHW, where it was not
measured to gain.
"""
from __future__ import annotations

import torch
from torch import nn


def prefers_channels_last(device: torch.device, amp_dtype: torch.dtype | None) -> bool:
    """Whether models and images on ``device`` should be channels-last: always on the CPU, under autocast on CUDA."""
    return device.type == "cpu" or (device.type == "cuda" and amp_dtype is not None)


def memory_format(channels_last: bool) -> torch.memory_format:
    """``torch.channels_last`` or ``torch.contiguous_format`` (NCHW), for ``Tensor.contiguous`` and ``Module.to``."""
    return torch.channels_last if channels_last else torch.contiguous_format


def stores_channels_last(model: nn.Module) -> bool:
    """Whether the model's first spatial convolution weight is stored channels-last."""
    for parameter in model.parameters():
        if parameter.dim() == 4 and parameter.shape[2] * parameter.shape[3] > 1:
            return parameter.is_contiguous(memory_format=torch.channels_last)
    return False
