"""Optimizer and learning-rate schedule of the paper (facts §6).

SGD with momentum 0.9 and weight decay 5e-4 on conv/linear weights only: every bias and every 1-D parameter
(BatchNorm weights and biases) gets no decay. The learning rate is set per iteration: a linear warm-up from
``min_lr`` to ``base_lr`` over ``warm_iter`` iterations, then a cosine from ``base_lr`` down to ``min_lr`` at
``max_iter`` (a ``base_lr`` below ``min_lr`` is the floor: the rate stays there).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from utils.messages import counted

MIN_LR = 1e-6


def build_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split the trainable parameters into a decayed and a non-decayed group.

    Parameters with ``ndim <= 1`` (BatchNorm weights, all biases) and any parameter whose name ends in ``.bias``
    go to the group with ``weight_decay=0``; the rest (conv and linear weights) get ``weight_decay``.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4
) -> torch.optim.SGD:
    """SGD over :func:`build_param_groups`; the schedule sets ``lr`` every iteration."""
    return torch.optim.SGD(build_param_groups(model, weight_decay), lr=lr, momentum=momentum)


def warmup_cosine_lr(
    iteration: int, base_lr: float, warm_iter: int, max_iter: int, min_lr: float = MIN_LR
) -> float:
    """Learning rate of (0-based) ``iteration`` in a run of ``max_iter`` iterations.

    ``iteration < warm_iter``: ``min_lr + (base_lr - min_lr) * iteration / warm_iter``;
    from ``warm_iter`` on (both forms give ``base_lr`` there; without warm-up the run starts at ``base_lr``):
    ``min_lr + (base_lr - min_lr) * 0.5 * (1 + cos(pi * (iteration - warm_iter) / (max_iter - warm_iter)))``.
    A ``base_lr`` below ``min_lr`` is the floor itself (the rate stays at ``base_lr``): the warm-up would fall to it
    and the cosine rise back above it.
    """
    if not 0 <= warm_iter < max_iter:
        raise ValueError(
            f"warm-up ({counted(warm_iter, 'iteration')}) must be shorter than the run "
            f"({counted(max_iter, 'iteration')}); "
            "lower --warm_iter or raise --epochs/--max_iter"
        )
    min_lr = min(min_lr, base_lr)
    if iteration < warm_iter:
        return min_lr + (base_lr - min_lr) * iteration / warm_iter
    progress = (iteration - warm_iter) / (max_iter - warm_iter)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write ``lr`` into every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
