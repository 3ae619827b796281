"""Anchors (priors) of the original code, facts §1.

Level k (k = 0..L-1, L = 4 below 512 and 5 from 512 on) has stride 2^(3+k), a square feature map of
side ceil(S / stride) and a base size of ``base_anchor_size * 2^k`` pixels (24, 48, 96, 192, 384 by default).
Each cell carries six anchors, two scales {s, s*sqrt2} times three area-keeping shapes, in this order:

    (s, s), (s*r, s/r), (s/r, s*r), (s', s'), (s'*r, s'/r), (s'/r, s'*r)    with r = sqrt2, s' = s*sqrt2

Flattening order: level, then row (y), then column (x), then the six anchors. This matches a head output
permuted NCHW -> NHWC and reshaped to ``[B, H*W*6, K]``. The whole ``(cx, cy, w, h)`` tensor is clamped to
[0, 1] afterwards, exactly as the authors do (so w, h are capped at 1 while the corner form of a large anchor
may still stick out of the image; facts §11.8).
"""
import math

import torch
from torch import Tensor, nn

from utils.integers import as_int

ANCHORS_PER_CELL = 6
SIZE_MULTIPLE = 64
DEFAULT_BASE_ANCHOR_SIZE = 24.0  # the original's --base_anchor_size: the first anchor's side at stride 8, in pixels
FIFTH_LEVEL_FROM = 512  # the input side from which the pyramid has a fifth level (stride 128)


def num_levels(size: int) -> int:
    """Number of pyramid levels for input side ``size``: 4 below 512, else 5."""
    return 4 if size < FIFTH_LEVEL_FROM else 5


def level_strides(size: int) -> list[int]:
    """Strides 8, 16, 32, 64 (, 128) of the pyramid levels for input side ``size``."""
    return [2 ** (3 + k) for k in range(num_levels(size))]


def feature_map_sides(size: int) -> list[int]:
    """Square feature-map side ``ceil(size / stride)`` per level, e.g. [40, 20, 10, 5] at 320."""
    return [math.ceil(size / stride) for stride in level_strides(size)]


class PriorBox(nn.Module):
    """Anchor generator of the paper's detectors (the authors' name ``PriorBox`` is kept).

    Args:
        base_anchor_size: side in pixels of the first anchor at stride 8 (``--base_anchor_size``, 24), above 0 and
            below ``size`` (``PriorBox(512)`` is this argument, not the input size: refused).
        size: square input side S in pixels, a positive multiple of 64 (an int; a NumPy integer too).

    ``forward()`` returns ``[A, 4]`` float32 anchors ``(cx, cy, w, h)`` normalised to [0, 1]
    (12,750 at S = 320, 32,736 at S = 512). ``num_anchors`` holds A.
    """

    def __init__(self, base_anchor_size: float = DEFAULT_BASE_ANCHOR_SIZE, size: int = 320) -> None:
        super().__init__()
        side = as_int(size)
        if side is None:
            raise ValueError(
                f"PriorBox: size={size!r} is not an int; use a positive multiple of {SIZE_MULTIPLE} such as 320 or 512 "
                f"(--size)."
            )
        if side <= 0 or side % SIZE_MULTIPLE:
            raise ValueError(
                f"PriorBox: size={size!r} is not a positive multiple of {SIZE_MULTIPLE}; "
                f"use an input size such as 320 or 512 (--size)."
            )
        if not base_anchor_size > 0:
            raise ValueError(
                f"PriorBox: base_anchor_size={base_anchor_size!r} must be > 0 pixels (--base_anchor_size)."
            )
        if not base_anchor_size < side:  # PriorBox(512): the input size given where the anchor size goes
            raise ValueError(
                f"PriorBox: base_anchor_size={base_anchor_size!r} must be below size={side}, the input side (every "
                f"anchor would cover the whole image); PriorBox(size=...) names the input size, the first argument is "
                f"the stride-8 anchor side in pixels (--base_anchor_size, {DEFAULT_BASE_ANCHOR_SIZE:g})."
            )
        self.base_anchor_size = float(base_anchor_size)
        self.size = side
        self.num_anchors = ANCHORS_PER_CELL * sum(cells * cells for cells in feature_map_sides(side))

    def forward(self) -> Tensor:
        """Return the anchors as ``[A, 4]`` float32 ``(cx, cy, w, h)``, normalised, in head-output order."""
        levels = [
            self._level_anchors(side, self.base_anchor_size * 2**k / self.size)
            for k, side in enumerate(feature_map_sides(self.size))
        ]
        return torch.cat(levels).clamp_(0.0, 1.0).float()

    @staticmethod
    def _level_anchors(side: int, base: float) -> Tensor:
        """Anchors of one level: ``[side * side * 6, 4]`` (cx, cy, w, h), rows then columns then shapes."""
        root2 = math.sqrt(2.0)
        large = base * root2
        shapes = torch.tensor(
            [
                [base, base],
                [base * root2, base / root2],
                [base / root2, base * root2],
                [large, large],
                [large * root2, large / root2],
                [large / root2, large * root2],
            ],
            dtype=torch.float64,
        )
        centres_1d = (torch.arange(side, dtype=torch.float64) + 0.5) / side
        cy, cx = torch.meshgrid(centres_1d, centres_1d, indexing="ij")  # [side, side] each, row-major
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, ANCHORS_PER_CELL, 2)
        sizes = shapes.expand(side * side, ANCHORS_PER_CELL, 2)
        return torch.cat([centres, sizes], dim=-1).reshape(-1, 4)
