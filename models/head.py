"""Detection head (facts §3): per level, one unshared 3x3 conv for box offsets and one for class logits."""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from utils.box.prior_box import ANCHORS_PER_CELL  # one output group per anchor of a cell, in PriorBox's order

PRIOR_PROBABILITY = 0.01  # the classification bias starts every sigmoid at this probability


def flatten_level_output(x: Tensor, values_per_anchor: int) -> Tensor:
    """(B, A_cell * K, H, W) -> (B, H * W * A_cell, K), ordered row, column, anchor (PriorBox's order within a level).

    Channel a * K + k of cell (i, j) becomes row (i * W + j) * A_cell + a, column k.
    """
    batch = x.shape[0]
    return x.permute(0, 2, 3, 1).reshape(batch, -1, values_per_anchor)


class DetectionHead(nn.Module):
    """Pyramid levels [B, C_l, H_l, W_l] -> (loc [B, A, 4] encoded offsets, conf [B, A, num_classes] logits).

    A = 6 * sum_l H_l * W_l, ordered level, row, column, anchor. There is no background column.
    Weights start at Normal(0, 0.01); loc bias 0; conf bias -ln((1 - 0.01) / 0.01) ~= -4.595.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.loc = nn.ModuleList(nn.Conv2d(c, ANCHORS_PER_CELL * 4, 3, padding=1) for c in in_channels)
        self.conf = nn.ModuleList(nn.Conv2d(c, ANCHORS_PER_CELL * num_classes, 3, padding=1) for c in in_channels)
        for conv in [*self.loc, *self.conf]:
            nn.init.normal_(conv.weight, std=0.01)
        for conv in self.loc:
            nn.init.zeros_(conv.bias)
        for conv in self.conf:
            nn.init.constant_(conv.bias, -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))

    def forward(self, levels: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        loc = torch.cat([flatten_level_output(conv(x), 4) for conv, x in zip(self.loc, levels)], dim=1)
        conf = torch.cat([flatten_level_output(conv(x), self.num_classes) for conv, x in zip(self.conf, levels)], dim=1)
        return loc, conf
