"""PAFPN neck (facts §3): context enhancement -> pyramid extractor -> FPN top-down -> bottom-up path -> 3x3 convs.

Context enhancement module (CEM), for VGG16 exactly the authors' a + b + c:
  a + b: a 1x1 BasicConv per backbone map to 256 ch, nearest-upsampled to stride 8 (conv4_3 x1, conv5_3 x2);
  c:     global average pool of the deepest map -> 1x1 BasicConv -> broadcast over the stride-8 map.
ResNet18 (never built by the authors; their code crashes, facts §11.2): the same rule over all three maps,
layer2 (128 ch) x1 + layer3 (256 ch) x2 + layer4 (512 ch) x4, with the global context taken from layer4.
The bottom-up additions are out of place (the authors' in-place add breaks backward, facts §11.1).
"""

from collections.abc import Sequence

import torch.distributed as dist
from torch import Tensor, nn

from models.blocks import NECK_CHANNELS, BasicConv, PyramidExtractor, TopDownPath, check_strides


class ContextEnhancement(nn.Module):
    """Sum of per-source 1x1 BasicConvs at stride 8 and a global-context term -> [B, 256, S/8, S/8], no ReLU after."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], channels: int = NECK_CHANNELS) -> None:
        super().__init__()
        self.reduce = nn.ModuleList(
            BasicConv(c, channels, 1, upsample=s // strides[0]) for c, s in zip(in_channels, strides)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.context = BasicConv(in_channels[-1], channels, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if self.training and features[-1].shape[0] == 1 and not _normalises_across_processes(self.context.bn):
            raise ValueError(
                "PAFPN trains on at least 2 images per batch: the BatchNorm of its global-context branch normalises "
                "one pooled value per image, so a batch of 1 has nothing to normalise over; give batches of 2 or "
                "more, use SyncBatchNorm across several processes, or call model.eval() for inference"
            )
        reduced = [reduce(x) for reduce, x in zip(self.reduce, features)]
        fused = reduced[0]
        for x in reduced[1:]:
            fused = fused + x
        return fused + self.context(self.pool(features[-1]))  # [B, 256, 1, 1] broadcast over the map


def _normalises_across_processes(norm: nn.Module) -> bool:
    """Whether ``norm`` is a SyncBatchNorm whose statistics span more than one process."""
    return isinstance(norm, nn.SyncBatchNorm) and dist.is_available() and dist.is_initialized() \
        and dist.get_world_size(norm.process_group) > 1


class PAFPNNeck(nn.Module):
    """Backbone maps -> `num_levels` maps of [B, 256, S/2^(3+k), S/2^(3+k)]."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_levels: int) -> None:
        super().__init__()
        check_strides(strides, "pafpn")
        self.cem = ContextEnhancement(in_channels, strides)
        self.extractor = PyramidExtractor(NECK_CHANNELS, num_levels)
        self.top_down = TopDownPath(num_levels)
        self.downsample = nn.ModuleList(
            BasicConv(NECK_CHANNELS, NECK_CHANNELS, 3, stride=2, padding=1) for _ in range(num_levels - 1)
        )
        self.output = nn.ModuleList(BasicConv(NECK_CHANNELS, NECK_CHANNELS, 3, padding=1) for _ in range(num_levels))
        self.out_channels = (NECK_CHANNELS,) * num_levels

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        levels = self.top_down(self.extractor(self.cem(features)))
        for i, down in enumerate(self.downsample):  # sequential: level i is already updated when it feeds i+1
            levels[i + 1] = levels[i + 1] + down(levels[i])
        return [conv(x) for conv, x in zip(self.output, levels)]
