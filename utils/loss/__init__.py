"""Losses of the paper (facts §4): sigmoid focal, balanced L1, and the MultiBoxLoss criterion."""
from .balanced_l1_loss import balanced_l1_loss
from .focal_loss import BACKGROUND, sigmoid_focal_loss
from .multibox_loss import MultiBoxLoss

__all__ = ["BACKGROUND", "MultiBoxLoss", "balanced_l1_loss", "sigmoid_focal_loss"]
