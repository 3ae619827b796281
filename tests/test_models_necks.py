"""Necks and blocks: channel/stride contracts, the CEM sum, the top-down and bottom-up passes, RFB shapes."""

import torch
from torch import nn

from models.blocks import BasicConv, TopDownPath
from models.necks import FSSDNeck, PAFPNNeck, RFBNetNeck
from models.rfb_blocks import BasicRFB, BasicRFBa

VGG = ((512, 512), (8, 16))
RESNET18 = ((128, 256, 512), (8, 16, 32))


class Given(nn.Module):
    """Stands in for a stage: ignores its input and returns fixed maps."""

    def __init__(self, maps: list[torch.Tensor]) -> None:
        super().__init__()
        self.maps = maps

    def forward(self, _: object) -> list[torch.Tensor]:
        return list(self.maps)


def constant_levels() -> list[torch.Tensor]:
    return [torch.full((1, 1, 4, 4), 1.0), torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 1, 1), 4.0)]


def test_top_down_adds_every_coarser_level_into_finer_ones():
    path = TopDownPath(num_levels=3, channels=1)
    path.lateral = nn.ModuleList(nn.Identity() for _ in range(3))
    path.output = nn.ModuleList(nn.Identity() for _ in range(3))
    outputs = path(constant_levels())
    assert [o.shape[-1] for o in outputs] == [4, 2, 1]
    assert [o.unique().tolist() for o in outputs] == [[7.0], [6.0], [4.0]]  # 1+2+4, 2+4, 4


def test_pafpn_bottom_up_is_sequential_and_out_of_place():
    neck = PAFPNNeck(*VGG, num_levels=3)
    levels = constant_levels()
    neck.cem, neck.extractor, neck.top_down = nn.Identity(), Given(levels), nn.Identity()
    neck.downsample = nn.ModuleList(nn.MaxPool2d(1, stride=2) for _ in range(2))  # keeps every other pixel
    neck.output = nn.ModuleList(nn.Identity() for _ in range(3))
    outputs = neck(None)
    assert [o.unique().tolist() for o in outputs] == [[1.0], [3.0], [7.0]]  # 1, 2+1, 4+(2+1)
    assert [lv.unique().tolist() for lv in levels] == [[1.0], [2.0], [4.0]]  # inputs untouched


def test_cem_is_the_sum_of_reduced_maps_and_global_context():
    torch.manual_seed(0)
    neck = PAFPNNeck(*VGG, num_levels=4)
    c4, c5 = torch.randn(2, 512, 8, 8), torch.randn(2, 512, 4, 4)
    cem = neck.cem
    expected = cem.reduce[0](c4) + cem.reduce[1](c5) + cem.context(c5.mean(dim=(2, 3), keepdim=True))
    fused = cem([c4, c5])
    torch.testing.assert_close(fused, expected)
    assert fused.shape == (2, 256, 8, 8)


def test_resnet18_maps_all_reach_stride_8():
    fssd = FSSDNeck(*RESNET18, num_levels=4)
    assert fssd.transform.out_channels == 768  # facts §3: layer2 x1 + layer3 x2 + layer4 x4
    assert [r.upsample for r in fssd.transform.reduce] == [1, 2, 4]
    pafpn = PAFPNNeck(*RESNET18, num_levels=4)
    assert [r.conv.in_channels for r in pafpn.cem.reduce] == [128, 256, 512]
    assert pafpn.cem.context.conv.in_channels == 512


def test_rfbnet_level_channels_and_extras():
    vgg = RFBNetNeck(*VGG, num_levels=5)
    assert vgg.out_channels == (512, 512, 512, 256, 256)  # facts §3 (verified)
    assert vgg.level0.linear.conv.in_channels == 448 and len(vgg.level0.branches) == 7
    assert [len(e.branches) for e in vgg.extras] == [4, 4, 4, 3]  # the last is BasicRFB_c
    resnet = RFBNetNeck(*RESNET18, num_levels=4)
    assert resnet.out_channels == (512, 512, 512, 256)
    assert resnet.level0.branches[0][0].conv.in_channels == 768  # layer2 + layer3 + layer4 at stride 8
    assert resnet.extras[0].shortcut.conv.in_channels == 256  # extras start from layer3 (stride 16)


def test_rfb_block_shapes():
    x = torch.randn(1, 512, 10, 10)
    assert BasicRFB(512, 256, stride=2)(x).shape == (1, 256, 5, 5)
    assert BasicRFB(512, 256, stride=2, compact=True)(x).shape == (1, 256, 5, 5)
    assert BasicRFBa(512, 512)(x).shape == (1, 512, 10, 10)
    assert BasicRFB(256, 256, stride=2)(torch.randn(1, 256, 5, 5)).shape == (1, 256, 3, 3)


def test_basic_conv_is_conv_bn_relu_upsample():
    block = BasicConv(3, 4, 1, upsample=2)
    assert block.conv.bias is not None and block.bn.momentum == 0.01 and block.bn.eps == 1e-5
    out = block(torch.randn(2, 3, 5, 5))
    assert out.shape == (2, 4, 10, 10) and (out >= 0).all()
    torch.testing.assert_close(out[:, :, ::2, ::2], out[:, :, 1::2, 1::2])  # nearest neighbour
