"""Necks and blocks: channel/stride contracts, the CEM sum, the top-down and bottom-up passes, RFB shapes."""

import pytest
import torch
from torch import nn

from models import build_detector
from models.blocks import BasicConv, FeatureTransform, TopDownPath
from models.necks import FSSDNeck, PAFPNNeck, RetinaNetNeck, RFBNetNeck
from models.rfb_blocks import BasicRFB, BasicRFBa
from utils.box.prior_box import feature_map_sides

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


def test_top_down_is_lateral_1x1_then_add_then_output_3x3():
    """Facts §3 (FPN top-down pass): lateral 1x1 convs on every level, the coarser sums added into the finer maps,
    then the 3x3 output convs; written out here with the path's own layers."""
    torch.manual_seed(0)
    path = TopDownPath(num_levels=3, channels=2)
    levels = [torch.randn(2, 2, 4, 4), torch.randn(2, 2, 2, 2), torch.randn(2, 2, 1, 1)]
    got = path(levels)
    lateral = [conv(x) for conv, x in zip(path.lateral, levels)]
    middle = lateral[1] + lateral[2].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    fine = lateral[0] + middle.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    expected = [conv(x) for conv, x in zip(path.output, [fine, middle, lateral[2]])]
    for got_level, expected_level in zip(got, expected):
        torch.testing.assert_close(got_level, expected_level)


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


def test_the_feature_transform_concatenates_the_sources_finest_first():
    """Facts §3: conv4_3's reduced map comes first in the concatenation (channels 0..255), then conv5_3's upsampled
    one; a checkpoint's first extractor conv is trained on that channel order."""
    torch.manual_seed(0)
    transform = FeatureTransform([3, 5], [8, 16], channels=2)
    fine, coarse = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)
    out = transform([fine, coarse])
    torch.testing.assert_close(out, torch.cat([transform.reduce[0](fine), transform.reduce[1](coarse)], dim=1))
    assert out.shape == (2, 4, 4, 4) and transform.out_channels == 4


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


def test_basic_conv_without_relu_is_conv_then_bn_alone():
    """Facts §3, "nr": the last conv of each RFB branch, ConvLinear and the shortcut are conv + BN without ReLU, so
    their outputs keep their negative values; with ReLU the same layer gives their positive part."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5)
    linear = BasicConv(3, 4, 1, relu=False)
    expected = linear.bn(linear.conv(x))
    out = linear(x)
    torch.testing.assert_close(out, expected)
    assert (out < -0.5).any()
    rectified = BasicConv(3, 4, 1)
    rectified.load_state_dict(linear.state_dict())
    torch.testing.assert_close(rectified(x), expected.clamp(min=0))


def test_top_down_upsamples_with_nearest_neighbour():
    """A non-constant coarse level: each of its values must fill a 2 x 2 block of the finer level (no blending)."""
    path = TopDownPath(num_levels=2, channels=1)
    path.lateral = nn.ModuleList(nn.Identity() for _ in range(2))
    path.output = nn.ModuleList(nn.Identity() for _ in range(2))
    coarse = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    fine, top = path([torch.full((1, 1, 4, 4), 10.0), coarse])
    expected = torch.tensor([[11, 11, 12, 12], [11, 11, 12, 12], [13, 13, 14, 14], [13, 13, 14, 14]],
                            dtype=torch.float32)
    assert torch.equal(fine[0, 0], expected) and torch.equal(top, coarse)


def test_pyramid_levels_are_conv_bn_relu():
    """Facts §3: the extractor is a 3x3 BasicConv then chained 3x3 stride-2 BasicConvs, each with BN and ReLU."""
    neck = FSSDNeck(*VGG, num_levels=4)
    layers = neck.extractor.layers
    assert [(b.conv.kernel_size, b.conv.stride, b.conv.padding, b.relu) for b in layers] == (
        [((3, 3), (1, 1), (1, 1), True)] + [((3, 3), (2, 2), (1, 1), True)] * 3
    )
    torch.manual_seed(0)
    levels = neck([torch.randn(2, 512, 8, 8), torch.randn(2, 512, 4, 4)])
    assert [tuple(x.shape[-2:]) for x in levels] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert all((x >= 0).all() and (x == 0).any() for x in levels[:3])  # ReLU outputs (a 1x1 level may be all > 0)


def conv_spec(block: BasicConv) -> tuple:
    """(in, out, kernel, stride, padding, dilation, ReLU) of a BasicConv."""
    c = block.conv
    return (c.in_channels, c.out_channels, c.kernel_size, c.stride[0], c.padding, c.dilation[0], block.relu)


def test_rfb_branches_follow_the_facts():
    """Facts §3, BasicRFB(in, out, s) with i = in // 8, and BasicRFB_c, written out layer by layer."""
    cin, cout, s = 512, 256, 2
    i, t = cin // 8, 3 * (cin // 8 // 2)
    expected = [
        [(cin, 2 * i, (1, 1), s, (0, 0), 1, True), (2 * i, 2 * i, (3, 3), 1, (1, 1), 1, False)],
        [(cin, i, (1, 1), 1, (0, 0), 1, True), (i, 2 * i, (3, 3), s, (1, 1), 1, True),
         (2 * i, 2 * i, (3, 3), 1, (3, 3), 3, False)],
        [(cin, i, (1, 1), 1, (0, 0), 1, True), (i, t, (3, 3), 1, (1, 1), 1, True),
         (t, 2 * i, (3, 3), s, (1, 1), 1, True), (2 * i, 2 * i, (3, 3), 1, (5, 5), 5, False)],
        [(cin, i, (1, 1), 1, (0, 0), 1, True), (i, t, (1, 7), 1, (0, 3), 1, True),
         (t, 2 * i, (7, 1), s, (3, 0), 1, True), (2 * i, 2 * i, (3, 3), 1, (7, 7), 7, False)],
    ]
    block = BasicRFB(cin, cout, stride=s)
    assert [[conv_spec(layer) for layer in branch] for branch in block.branches] == expected
    assert conv_spec(block.linear) == (8 * i, cout, (1, 1), 1, (0, 0), 1, False)
    assert conv_spec(block.shortcut) == (cin, cout, (1, 1), s, (0, 0), 1, False)
    compact = BasicRFB(cin, cout, stride=s, compact=True)  # BasicRFB_c: branches 0, 1 and the 1x7/7x1 one
    assert ([[conv_spec(layer) for layer in branch] for branch in compact.branches]
            == [expected[0], expected[1], expected[3]])
    assert compact.linear.conv.in_channels == 6 * i


def test_rfb_a_branches_follow_the_facts():
    cin, i = 512, 64
    h, q = i // 2, 3 * (i // 4)

    def asym(first, dilation):
        layers = [(cin, i, (1, 1), 1, (0, 0), 1, True)]
        if first is not None:
            layers.append((i, i, first, 1, (first[0] // 2, first[1] // 2), 1, True))
        return layers + [(i, i, (3, 3), 1, (dilation, dilation), dilation, False)]

    def factorised(k1, k2):
        return [(cin, h, (1, 1), 1, (0, 0), 1, True), (h, q, k1, 1, (k1[0] // 2, k1[1] // 2), 1, True),
                (q, i, k2, 1, (k2[0] // 2, k2[1] // 2), 1, True), (i, i, (3, 3), 1, (7, 7), 7, False)]

    expected = [asym(None, 1), asym((3, 1), 3), asym((1, 3), 3), asym((3, 1), 5), asym((1, 3), 5),
                factorised((1, 3), (3, 1)), factorised((3, 1), (1, 3))]
    block = BasicRFBa(cin, 512)
    assert [[conv_spec(layer) for layer in branch] for branch in block.branches] == expected
    assert conv_spec(block.linear) == (7 * i, 512, (1, 1), 1, (0, 0), 1, False)
    assert conv_spec(block.shortcut) == (cin, 512, (1, 1), 1, (0, 0), 1, False)


def test_rfb_output_is_relu_of_linear_plus_shortcut_with_scale_1():
    """Facts §3: y = ReLU(1.0 * ConvLinear(concat) + shortcut) in every RFB block (the original RFBNet used 0.1)."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 6, 6)
    for block in (BasicRFB(64, 32, stride=2), BasicRFB(64, 32, stride=2, compact=True), BasicRFBa(64, 48)):
        block.eval()
        for module in block.modules():  # non-trivial BN statistics, so a missing or extra scale shows
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        with torch.no_grad():
            merged = block.linear(torch.cat([branch(x) for branch in block.branches], dim=1))
            expected = torch.relu(merged + block.shortcut(x))
            torch.testing.assert_close(block(x), expected)
            assert merged.abs().mean() > 0.1 * block.shortcut(x).abs().mean()  # the branch term is not negligible


def layer_spec(block: BasicConv) -> tuple:
    """(kernel, stride, padding, ReLU, upsample factor) of a BasicConv."""
    c = block.conv
    return (c.kernel_size, c.stride[0], c.padding, block.relu, block.upsample)


def test_fpn_and_pafpn_layers_follow_the_facts():
    """Facts §3 layer by layer (channels are pinned by the parameter counts): the feature transform's and CEM's 1x1
    convs with ReLU, nearest x1 / x2 to stride 8; lateral 1x1 and output 3x3 convs of the top-down pass with ReLU;
    PAFPN's bottom-up 3x3 stride-2 convs and its final 3x3 convs, all with ReLU."""
    one_by_one, three_by_three = ((1, 1), 1, (0, 0), True, 1), ((3, 3), 1, (1, 1), True, 1)
    retinanet = RetinaNetNeck(*VGG, num_levels=4)
    assert [layer_spec(b) for b in retinanet.transform.reduce] == [one_by_one, ((1, 1), 1, (0, 0), True, 2)]
    assert [layer_spec(b) for b in retinanet.top_down.lateral] == [one_by_one] * 4
    assert [layer_spec(b) for b in retinanet.top_down.output] == [three_by_three] * 4
    pafpn = PAFPNNeck(*VGG, num_levels=5)
    assert [layer_spec(b) for b in pafpn.cem.reduce] == [one_by_one, ((1, 1), 1, (0, 0), True, 2)]
    assert layer_spec(pafpn.cem.context) == one_by_one and isinstance(pafpn.cem.pool, nn.AdaptiveAvgPool2d)
    assert [layer_spec(b) for b in pafpn.top_down.lateral] == [one_by_one] * 5
    assert [layer_spec(b) for b in pafpn.top_down.output] == [three_by_three] * 5
    assert [layer_spec(b) for b in pafpn.downsample] == [((3, 3), 2, (1, 1), True, 1)] * 4
    assert [layer_spec(b) for b in pafpn.output] == [three_by_three] * 5


@pytest.mark.parametrize("version", ["fssd", "retinanet", "rfbnet", "pafpn"])
@pytest.mark.parametrize("backbone", ["vgg16", "resnet18"])
def test_batchnorm_momentum_and_nothing_frozen(version, backbone):
    """Facts §2-§3, §11.11: every neck BatchNorm has momentum 0.01 (eps 1e-5, affine), every backbone BatchNorm
    PyTorch's default 0.1 (13 in VGG16-BN); no parameter is frozen."""
    with torch.device("meta"):
        model = build_detector(version, backbone, 320, num_classes=20)
    neck_bns = [m for m in model.neck.modules() if isinstance(m, nn.BatchNorm2d)]
    backbone_bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert neck_bns and all((m.momentum, m.eps, m.affine) == (0.01, 1e-5, True) for m in neck_bns)
    assert all((m.momentum, m.eps, m.affine) == (0.1, 1e-5, True) for m in backbone_bns)
    assert len(backbone_bns) == (13 if backbone == "vgg16" else 20)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.head.modules())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("version", ["fssd", "retinanet", "rfbnet", "pafpn"])
@pytest.mark.parametrize("backbone", ["vgg16", "resnet18"])
@pytest.mark.parametrize("size", [128, 192])
def test_neck_levels_come_finest_first_with_priorbox_sides(version, backbone, size):
    """The head flattens levels in the neck's order and PriorBox lays anchors out finest level first, so each
    level's [B, channels, s, s] map must have PriorBox's side s at the same position (the total anchor count
    alone would not catch levels returned in reverse)."""
    model = build_detector(version, backbone, size, num_classes=3).eval()
    with torch.no_grad():
        levels = model.neck(model.backbone(torch.zeros(1, 3, size, size)))
    assert [tuple(level.shape[2:]) for level in levels] == [(side, side) for side in feature_map_sides(size)]
