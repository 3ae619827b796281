"""`build_detector`: pick a backbone and a neck from two dicts, add the head, return a `Detector`."""

import os
from collections.abc import Collection, Mapping

from torch import Tensor, nn

from models.backbones import ResNet18, VGG16BN
from models.detector import Detector
from models.head import DetectionHead
from models.necks import FSSDNeck, PAFPNNeck, RetinaNetNeck, RFBNetNeck
from models.pretrained import load_backbone_weights
from utils.box.prior_box import SIZE_MULTIPLE, num_levels
from utils.integers import as_int

BACKBONES: dict[str, type[nn.Module]] = {"vgg16": VGG16BN, "resnet18": ResNet18}
NECKS: dict[str, type[nn.Module]] = {
    "fssd": FSSDNeck, "retinanet": RetinaNetNeck, "rfbnet": RFBNetNeck, "pafpn": PAFPNNeck,
}
SIZES = (320, 512)  # the paper's sizes; any multiple of 64 from MIN_SIZE builds (4 levels below 512, 5 from 512)
MIN_SIZE = 128


def build_detector(version: str, backbone: str, size: int, num_classes: int,
                   pretrained: bool | str | os.PathLike | Mapping[str, Tensor] | None = False) -> Detector:
    """Build `version` (fssd | retinanet | rfbnet | pafpn) on `backbone` (vgg16 | resnet18) for S x S input.

    size: the square input side, 320 or 512 in the paper; any multiple of 64 >= 128 works (smaller sizes suit
    quick CPU runs on the synthetic set). num_classes: foreground classes (VOC 20, COCO 80). Both are ints (NumPy
    integers too).
    pretrained: True = torchvision ImageNet backbone weights (weights API and cache), a path = a local torchvision
    state dict, a mapping = the weights ``models.pretrained.read_backbone_weights`` read from one, False/None =
    random init. Raises ValueError on an unknown choice, PretrainedWeightsError when the
    weights cannot be loaded.
    """
    _check_choice("version", version, NECKS)
    _check_choice("backbone", backbone, BACKBONES)
    side, classes = as_int(size), as_int(num_classes)
    if side is None:
        raise ValueError(f"size {size!r} is not an int; use a multiple of {SIZE_MULTIPLE} >= {MIN_SIZE} "
                         "(the paper uses 320 or 512)")
    if side < MIN_SIZE or side % SIZE_MULTIPLE:
        raise ValueError(f"unknown size {size!r}; use a multiple of {SIZE_MULTIPLE} >= {MIN_SIZE} "
                         "(the paper uses 320 or 512)")
    if classes is None or classes < 1:
        raise ValueError(f"num_classes must be an int >= 1 (foreground classes, no background); "
                         f"got {num_classes!r} ({type(num_classes).__name__})")
    backbone_net = BACKBONES[backbone]()
    load_backbone_weights(backbone_net, pretrained)
    neck = NECKS[version](backbone_net.out_channels, backbone_net.strides, num_levels(side))  # PriorBox's level count
    head = DetectionHead(neck.out_channels, classes)
    return Detector(backbone_net, neck, head, version=version, backbone_name=backbone, size=side,
                    num_classes=classes)


def _check_choice(name: str, value: object, choices: Collection[object]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, choices))}")
