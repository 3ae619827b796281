"""Receptive Field Blocks as the authors built them (facts §3).

`i` below is the inter width in_channels // 8; "nr" = BasicConv without ReLU. Every block returns
ReLU(ConvLinear(concat(branches)) + shortcut(x)), with a 1x1 shortcut: the authors' residual scale is 1.0 in every
block (the original RFBNet used 0.1), so there is none.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.blocks import BasicConv


class _ResidualBranches(nn.Module):
    """ReLU(1x1(concat(branches(x))) + 1x1 shortcut(x)); both 1x1 convs are BN without ReLU."""

    def __init__(self, branches: list[nn.Sequential], concat_channels: int, in_channels: int, out_channels: int,
                 stride: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.linear = BasicConv(concat_channels, out_channels, 1, relu=False)
        self.shortcut = BasicConv(in_channels, out_channels, 1, stride=stride, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        merged = self.linear(torch.cat([branch(x) for branch in self.branches], dim=1))
        return F.relu(merged + self.shortcut(x))


class BasicRFB(_ResidualBranches):
    """RFB block: four branches of dilation 1, 3, 5, 7 (8i ch); `compact` drops the dilation-5 one (BasicRFB_c, 6i ch).

    [B, in, H, W] -> [B, out, ceil(H / stride), ceil(W / stride)].
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, compact: bool = False) -> None:
        i = in_channels // 8
        branches = [
            nn.Sequential(BasicConv(in_channels, 2 * i, 1, stride=stride),
                          BasicConv(2 * i, 2 * i, 3, padding=1, relu=False)),
            nn.Sequential(BasicConv(in_channels, i, 1),
                          BasicConv(i, 2 * i, 3, stride=stride, padding=1),
                          BasicConv(2 * i, 2 * i, 3, padding=3, dilation=3, relu=False)),
        ]
        if not compact:
            branches.append(nn.Sequential(BasicConv(in_channels, i, 1),
                                          BasicConv(i, 3 * (i // 2), 3, padding=1),
                                          BasicConv(3 * (i // 2), 2 * i, 3, stride=stride, padding=1),
                                          BasicConv(2 * i, 2 * i, 3, padding=5, dilation=5, relu=False)))
        branches.append(nn.Sequential(BasicConv(in_channels, i, 1),
                                      BasicConv(i, 3 * (i // 2), (1, 7), padding=(0, 3)),
                                      BasicConv(3 * (i // 2), 2 * i, (7, 1), stride=stride, padding=(3, 0)),
                                      BasicConv(2 * i, 2 * i, 3, padding=7, dilation=7, relu=False)))
        super().__init__(branches, 2 * i * len(branches), in_channels, out_channels, stride)


def _asymmetric_branch(in_channels: int, i: int, first: tuple[int, int] | None, dilation: int) -> nn.Sequential:
    """1x1 -> i, an optional 3x1 or 1x3 conv, then a 3x3 conv of the given dilation (nr)."""
    layers = [BasicConv(in_channels, i, 1)]
    if first is not None:
        layers.append(BasicConv(i, i, first, padding=(first[0] // 2, first[1] // 2)))
    layers.append(BasicConv(i, i, 3, padding=dilation, dilation=dilation, relu=False))
    return nn.Sequential(*layers)


def _factorised_branch(in_channels: int, i: int, order: tuple[tuple[int, int], tuple[int, int]]) -> nn.Sequential:
    """1x1 -> i//2, two factorised 3-tap convs (-> 3(i//4) -> i), then a 3x3 dilation-7 conv (nr)."""
    (k1, k2), half, mid = order, i // 2, 3 * (i // 4)
    return nn.Sequential(BasicConv(in_channels, half, 1),
                         BasicConv(half, mid, k1, padding=(k1[0] // 2, k1[1] // 2)),
                         BasicConv(mid, i, k2, padding=(k2[0] // 2, k2[1] // 2)),
                         BasicConv(i, i, 3, padding=7, dilation=7, relu=False))


class BasicRFBa(_ResidualBranches):
    """The stride-8 RFB block (BasicRFB_a), seven branches of width i, stride 1: [B, in, H, W] -> [B, out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        i = in_channels // 8
        branches = [
            _asymmetric_branch(in_channels, i, None, 1),
            _asymmetric_branch(in_channels, i, (3, 1), 3),
            _asymmetric_branch(in_channels, i, (1, 3), 3),
            _asymmetric_branch(in_channels, i, (3, 1), 5),
            _asymmetric_branch(in_channels, i, (1, 3), 5),
            _factorised_branch(in_channels, i, ((1, 3), (3, 1))),
            _factorised_branch(in_channels, i, ((3, 1), (1, 3))),
        ]
        super().__init__(branches, 7 * i, in_channels, out_channels, 1)
