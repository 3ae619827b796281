"""Detectors of Mutual Guidance (ACCV 2020): VGG16-BN / ResNet18 backbones, FSSD / RetinaNet / RFBNet / PAFPN necks.

    from models import build_detector
    model = build_detector("pafpn", "vgg16", 320, num_classes=20, pretrained=True)
    loc, conf = model(images)  # [B, 12750, 4], [B, 12750, 20]
"""

from models.builder import BACKBONES, NECKS, SIZES, build_detector
from models.detector import Detector, reorder_classes
from models.pretrained import PretrainedWeightsError

__all__ = ["BACKBONES", "NECKS", "SIZES", "Detector", "PretrainedWeightsError", "build_detector", "reorder_classes"]
