"""Layers the necks share: BasicConv, the multi-source feature transform and the pyramid paths.

Every map here is NCHW; "stride" is the input-pixel step of a map (8 = 1/8 of the image side).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NECK_CHANNELS = 256
NECK_BN_MOMENTUM = 0.01  # the authors' neck BN momentum (facts §3); backbones keep PyTorch's 0.1


class BasicConv(nn.Module):
    """Conv2d (with bias) -> BatchNorm2d -> optional ReLU -> optional nearest upsampling.

    ``[B, in_channels, H, W]`` -> ``[B, out_channels, H' * upsample, W' * upsample]``, where ``H' x W'`` is the
    Conv2d output size for ``kernel_size``, ``stride``, ``padding`` and ``dilation``.
    The conv bias before BN is redundant but kept: the authors' parameter counts include it (facts §3).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int = 1,
        relu: bool = True,
        upsample: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=True)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-5, momentum=NECK_BN_MOMENTUM)
        self.relu = relu
        self.upsample = upsample

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        if self.relu:
            x = F.relu(x, inplace=True)
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return x


def check_strides(strides: Sequence[int], neck: str) -> None:
    """Raise ValueError unless the backbone strides are 8, 16[, 32 ...] (each level doubles)."""
    expected = [8 * 2**k for k in range(len(strides))]
    if len(strides) < 2 or list(strides) != expected:
        raise ValueError(f"{neck} neck needs backbone outputs at strides 8, 16[, 32, ...]; got {tuple(strides)}")


class FeatureTransform(nn.Module):
    """FSSD feature transform: a 1x1 BasicConv per source to `channels`, nearest-upsampled to stride 8, concatenated.

    Input: backbone maps at strides 8, 16[, 32]; output: [B, channels * n_sources, S/8, S/8].
    """

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], channels: int = NECK_CHANNELS) -> None:
        super().__init__()
        self.reduce = nn.ModuleList(
            BasicConv(c, channels, 1, upsample=s // strides[0]) for c, s in zip(in_channels, strides)
        )
        self.out_channels = channels * len(in_channels)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return torch.cat([reduce(x) for reduce, x in zip(self.reduce, features)], dim=1)


class PyramidExtractor(nn.Module):
    """A 3x3 BasicConv to level 0 (stride 8), then chained 3x3 stride-2 BasicConvs for levels 1..L-1.

    Input: one map [B, in_channels, S/8, S/8]; output: L maps of [B, channels, ceil(S / 2^(3+k)), same], k = 0..L-1.
    """

    def __init__(self, in_channels: int, num_levels: int, channels: int = NECK_CHANNELS) -> None:
        super().__init__()
        self.layers = nn.ModuleList([BasicConv(in_channels, channels, 3, padding=1)])
        self.layers.extend(BasicConv(channels, channels, 3, stride=2, padding=1) for _ in range(num_levels - 1))

    def forward(self, x: Tensor) -> list[Tensor]:
        levels = []
        for layer in self.layers:
            x = layer(x)
            levels.append(x)
        return levels


class TopDownPath(nn.Module):
    """FPN top-down pass: lateral 1x1 per level, coarse-to-fine nearest-upsample-and-add, output 3x3 per level.

    L maps [B, channels, H_k, W_k], finest (stride 8) first -> L maps of the same shapes; each coarser map is
    nearest-upsampled to the exact size of the finer one before the add.
    """

    def __init__(self, num_levels: int, channels: int = NECK_CHANNELS) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(BasicConv(channels, channels, 1) for _ in range(num_levels))
        self.output = nn.ModuleList(BasicConv(channels, channels, 3, padding=1) for _ in range(num_levels))

    def forward(self, levels: Sequence[Tensor]) -> list[Tensor]:
        merged = [lateral(x) for lateral, x in zip(self.lateral, levels)]
        for i in range(len(merged) - 1, 0, -1):
            merged[i - 1] = merged[i - 1] + F.interpolate(merged[i], size=merged[i - 1].shape[-2:], mode="nearest")
        return [conv(x) for conv, x in zip(self.output, merged)]
