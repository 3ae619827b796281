"""Combining the assignment statistics of ``MultiBoxLoss(..., with_stats=True)`` over processes.

Counts (``num_objects``, ``num_pos_cls``, ``num_pos_reg``) add up; a ratio (a mean over positives, positives per
object) is combined as the global ratio: its numerators and its counts summed, then divided. N processes of B
images then log what one process holding the N x B images would.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

# each ratio statistic -> the count it is a mean over
RATIO_COUNTS = {
    "pos_per_object": "num_objects",
    "cls_pos_per_image": "num_images",
    "reg_pos_per_image": "num_images",
    "cls_pos_anchor_iou": "num_pos_cls",
    "cls_pos_pred_iou": "num_pos_cls",
    "reg_pos_anchor_iou": "num_pos_reg",
    "reg_pos_pred_iou": "num_pos_reg",
    "disagree_with_iou": "num_pos_cls",
}


def mean_over_rows(rows: Sequence[Mapping[str, float]], names: Iterable[str]) -> dict[str, float]:
    """The mean of each statistic of ``names`` over logged ``rows`` (log intervals' metrics rows). A ratio
    (:data:`RATIO_COUNTS`) is averaged over the rows where its count is not 0 (0 where none is): a batch without
    objects logs a ratio over no positive as 0, which is no mean IoU of 0."""
    def mean(name: str) -> float:
        count = RATIO_COUNTS.get(name)
        values = [row[name] for row in rows if count not in row or row[count] > 0]
        return sum(values) / len(values) if values else 0.0

    return {name: mean(name) for name in names}


def summable_stats(stats: Mapping[str, Tensor]) -> Tensor:
    """``[2, S]`` float64, one column per statistic in ``stats``' order: row 0 the numerator (a count itself, or a
    ratio times its count), row 1 the count a ratio is over (0 for a count). Summing these over processes and
    passing the sum to :func:`stats_from_sums` gives the statistics of all their images together."""
    values = torch.stack([value.double() for value in stats.values()])
    counts = torch.stack([stats[RATIO_COUNTS[name]].double() if name in RATIO_COUNTS else torch.zeros_like(value)
                          for name, value in zip(stats, values)])
    return torch.stack([torch.where(counts > 0, values * counts, values), counts])


def stats_from_sums(names: list[str], sums: Tensor) -> dict[str, float]:
    """The statistics named ``names`` from summed :func:`summable_stats` rows (a ratio over no positive is 0)."""
    numerators, counts = sums.tolist()
    return {name: (numerator / count if count > 0 else 0.0) if name in RATIO_COUNTS else numerator
            for name, numerator, count in zip(names, numerators, counts)}
