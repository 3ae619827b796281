"""ImageNet backbones built from torchvision's own model definitions (facts §2).

Each backbone maps images [B, 3, S, S] (BGR minus (104, 117, 123), see `data/transforms.py`) to a tuple of
feature maps and declares `out_channels` and `strides` (one entry per map), which the necks check.
Module names equal torchvision's, so a torchvision ImageNet state dict loads with unchanged keys
(minus the dropped classifier, listed in `dropped_prefixes`); see `models/pretrained.py`.
"""

from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, VGG16_BN_Weights, resnet18
from torchvision.models.vgg import cfgs, make_layers

VGG_CONV4_3_RELU = 32  # torchvision vgg16_bn `features` index of conv4_3's ReLU (before pool4), stride 8
VGG_CONV5_3_RELU = 42  # index of conv5_3's ReLU; pool5 (43) is dropped, stride 16


class VGG16BN(nn.Module):
    """VGG16 with BN up to conv5_3: -> (conv4_3 [B, 512, S/8, S/8], conv5_3 [B, 512, S/16, S/16])."""

    out_channels = (512, 512)
    strides = (8, 16)
    imagenet_weights = VGG16_BN_Weights.IMAGENET1K_V1
    dropped_prefixes = ("classifier.",)

    def __init__(self) -> None:
        super().__init__()
        self.features = make_layers(cfgs["D"], batch_norm=True)[: VGG_CONV5_3_RELU + 1]
        for module in self.features.modules():  # torchvision VGG init, minus its 124 M-param classifier
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = images
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == VGG_CONV4_3_RELU:
                conv4_3 = x
        return conv4_3, x


class ResNet18(nn.Module):
    """ResNet18 without avgpool/fc: -> (layer2 [B, 128, S/8], layer3 [B, 256, S/16], layer4 [B, 512, S/32])."""

    out_channels = (128, 256, 512)
    strides = (8, 16, 32)
    imagenet_weights = ResNet18_Weights.IMAGENET1K_V1
    dropped_prefixes = ("fc.",)

    def __init__(self) -> None:
        super().__init__()
        net = resnet18(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(images)))))
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        return c3, c4, self.layer4(c4)
