"""The authors' simplified FSSD neck (facts §3): feature transform -> pyramid extractor.

VGG16: conv4_3 (x1) + conv5_3 (x2) -> 512 ch at stride 8. ResNet18: layer2 x1, layer3 x2, layer4 x4 -> 768 ch.
"""

from collections.abc import Sequence

from torch import Tensor, nn

from models.blocks import NECK_CHANNELS, FeatureTransform, PyramidExtractor, check_strides


class FSSDNeck(nn.Module):
    """Backbone maps -> `num_levels` maps of [B, 256, S/2^(3+k), S/2^(3+k)]."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_levels: int) -> None:
        super().__init__()
        check_strides(strides, "fssd")
        self.transform = FeatureTransform(in_channels, strides)
        self.extractor = PyramidExtractor(self.transform.out_channels, num_levels)
        self.out_channels = (NECK_CHANNELS,) * num_levels

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        return self.extractor(self.transform(features))
