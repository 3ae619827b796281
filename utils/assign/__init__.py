"""Anchor assignment: the IoU baseline and Mutual Guidance (facts §4), batched over images and objects."""
from .assignment import (
    IGNORE,
    NEGATIVE,
    POSITIVE,
    Assignment,
    PaddedTargets,
    default_max_elements,
    image_chunks,
    pad_targets,
)
from .iou_assigner import IoUAssigner, assign_by_iou
from .mutual_guidance import MutualGuidanceAssigner, MutualGuidanceAssignment, Quotas
from .prefetch import QuotaPrefetcher
from .quality import amplified_iou

__all__ = [
    "IGNORE",
    "NEGATIVE",
    "POSITIVE",
    "Assignment",
    "IoUAssigner",
    "MutualGuidanceAssigner",
    "MutualGuidanceAssignment",
    "PaddedTargets",
    "QuotaPrefetcher",
    "Quotas",
    "amplified_iou",
    "assign_by_iou",
    "default_max_elements",
    "image_chunks",
    "pad_targets",
]
