"""RFBNet neck (facts §3). Levels have 512, 512, 512, 256[, 256] channels, not 256.

Level 0 (stride 8): the feature transform (a 1x1 BasicConv per backbone map to 256 ch, upsampled to stride 8,
concatenated) -> BasicRFB_a(-> 512). For VGG16 this is exactly the authors' reduce(conv4_3) + up_reduce(conv5_3).
Levels 1.. : RFB extras chained from the backbone's stride-16 map: RFB(s1) -> 512, RFB(s2) -> 512, RFB(s2) -> 256,
and at 512 input a compact RFB(s2) -> 256.
ResNet18 (the authors silently built VGG16 instead, facts §11.2): level 0 fuses layer2 x1, layer3 x2 and
layer4 x4 (768 ch -> BasicRFB_a -> 512); the extras start from layer3 (256 ch, stride 16), as they start from
conv5_3 for VGG16. So every backbone map is used and the strides match VGG16's.
"""

from collections.abc import Sequence

from torch import Tensor, nn

from models.blocks import FeatureTransform, check_strides
from models.rfb_blocks import BasicRFB, BasicRFBa

LEVEL0_CHANNELS = 512


class RFBNetNeck(nn.Module):
    """Backbone maps -> `num_levels` (4 or 5) maps at strides 8, 16, 32, 64[, 128]."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_levels: int) -> None:
        super().__init__()
        check_strides(strides, "rfbnet")
        if num_levels not in (4, 5):
            raise ValueError(f"rfbnet neck supports 4 or 5 levels (input 320 or 512); got {num_levels}")
        self.transform = FeatureTransform(in_channels, strides)
        self.level0 = BasicRFBa(self.transform.out_channels, LEVEL0_CHANNELS)
        self.extras = nn.ModuleList([
            BasicRFB(in_channels[1], 512, stride=1),
            BasicRFB(512, 512, stride=2),
            BasicRFB(512, 256, stride=2),
        ])
        if num_levels == 5:
            self.extras.append(BasicRFB(256, 256, stride=2, compact=True))
        self.out_channels = (LEVEL0_CHANNELS, 512, 512, 256, 256)[:num_levels]

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        levels = [self.level0(self.transform(features))]
        x = features[1]
        for extra in self.extras:
            x = extra(x)
            levels.append(x)
        return levels
