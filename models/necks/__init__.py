"""Necks: backbone maps (strides 8, 16[, 32]) -> L pyramid levels at strides 8, 16, 32, 64[, 128].

Each neck takes `(in_channels, strides, num_levels)` and declares `out_channels` (one entry per level).
"""

from models.necks.fssd import FSSDNeck
from models.necks.pafpn import PAFPNNeck
from models.necks.retinanet import RetinaNetNeck
from models.necks.rfbnet import RFBNetNeck

__all__ = ["FSSDNeck", "PAFPNNeck", "RetinaNetNeck", "RFBNetNeck"]
