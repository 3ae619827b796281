"""Anchors, box formats, box coding and IoU (facts §1)."""
from .box_coder import BoxCoder, center_form, corner_form, decode, encode
from .iou import elementwise_box_iou, pairwise_box_iou
from .prior_box import DEFAULT_BASE_ANCHOR_SIZE, PriorBox, feature_map_sides, level_strides, num_levels

__all__ = [
    "DEFAULT_BASE_ANCHOR_SIZE",
    "BoxCoder",
    "PriorBox",
    "center_form",
    "corner_form",
    "decode",
    "elementwise_box_iou",
    "encode",
    "feature_map_sides",
    "level_strides",
    "num_levels",
    "pairwise_box_iou",
]
