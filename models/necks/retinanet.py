"""The authors' "RetinaNet" neck (facts §3): FSSD's transform and extractor, then an FPN top-down pass.

Not the real RetinaNet (no C3-C5 + P6/P7 and no conv towers); the name is the paper's.
"""

from collections.abc import Sequence

from torch import Tensor, nn

from models.blocks import NECK_CHANNELS, FeatureTransform, PyramidExtractor, TopDownPath, check_strides


class RetinaNetNeck(nn.Module):
    """Backbone maps -> `num_levels` maps of [B, 256, S/2^(3+k), S/2^(3+k)]."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_levels: int) -> None:
        super().__init__()
        check_strides(strides, "retinanet")
        self.transform = FeatureTransform(in_channels, strides)
        self.extractor = PyramidExtractor(self.transform.out_channels, num_levels)
        self.top_down = TopDownPath(num_levels)
        self.out_channels = (NECK_CHANNELS,) * num_levels

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        return self.top_down(self.extractor(self.transform(features)))
