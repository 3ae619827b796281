"""build_detector: every version x backbone x size builds, runs forward/backward, matches PriorBox; parameter counts."""

import math
import re

import numpy as np
import pytest
import torch

from models import BACKBONES, NECKS, SIZES, build_detector
from models.blocks import check_strides
from utils.box.prior_box import PriorBox
from utils.environment import release

COMBINATIONS = [(v, b, s) for v in NECKS for b in BACKBONES for s in SIZES]


def expected_anchors(size: int) -> int:
    """Facts §1: 6 anchors per cell over levels of side ceil(S / 2^(3+k)), 4 levels below 512, else 5."""
    levels = 4 if size < 512 else 5
    return 6 * sum(math.ceil(size / 2 ** (3 + k)) ** 2 for k in range(levels))


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_on_meta(version: str, backbone: str, size: int, num_classes: int) -> torch.nn.Module:
    """Build without allocating or initialising memory: shapes and counts only."""
    with torch.device("meta"):
        return build_detector(version, backbone, size, num_classes)


def test_expected_anchor_counts_match_facts_and_prior_box():
    assert expected_anchors(320) == 12_750 == PriorBox(size=320).forward().shape[0]
    assert expected_anchors(512) == 32_736 == PriorBox(size=512).forward().shape[0]


@pytest.mark.parametrize("version,backbone,size", COMBINATIONS)
def test_full_size_output_shapes_match_prior_box(version, backbone, size):
    """Shape propagation at the real input size, forward and backward, on the meta device (no arithmetic)."""
    model = build_on_meta(version, backbone, size, num_classes=20)
    images = torch.empty(2, 3, size, size, device="meta")
    loc, conf = model(images)
    anchors = PriorBox(size=size).num_anchors
    assert loc.shape == (2, anchors, 4)
    assert conf.shape == (2, anchors, 20)
    (loc.sum() + conf.sum()).backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


@pytest.mark.parametrize("version,backbone,size", COMBINATIONS)
def test_cpu_forward_backward_reaches_every_parameter(version, backbone, size):
    """Real CPU arithmetic at batch 2 on a 64 px input (levels 8, 4, 2, 1[, 1]) through the backbone, neck and head
    to keep the suite fast.

    Individual gradients may be exactly 0 (a bias feeding a train-mode BN linearly cancels in the mean), so the
    check is: every parameter takes part, and every part of the model gets a gradient.
    """
    torch.manual_seed(0)
    model = build_detector(version, backbone, size, num_classes=3)
    loc, conf = model.head(model.neck(model.backbone(torch.randn(2, 3, 64, 64))))  # Detector itself takes size only
    cells = [8, 4, 2, 1, 1][: len(model.head.loc)]
    assert loc.shape == (2, 6 * sum(c * c for c in cells), 4)
    assert conf.shape == (2, loc.shape[1], 3)
    (loc.square().mean() + conf.sigmoid().mean()).backward()
    for name, p in model.named_parameters():  # None would mean a parameter left out of the forward pass
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for part in (model.backbone, model.neck, model.head):
        assert sum(p.grad.abs().sum() for p in part.parameters()) > 0


@pytest.mark.parametrize("version", list(NECKS))
def test_cpu_full_size_resnet18_320(version):
    """Real arithmetic at full size for the cheapest backbone: the outputs have PriorBox's anchor count."""
    torch.manual_seed(0)
    model = build_detector(version, "resnet18", 320, num_classes=20)
    loc, conf = model(torch.randn(2, 3, 320, 320))
    assert loc.shape == (2, 12_750, 4) and conf.shape == (2, 12_750, 20)
    conf.mean().backward()
    assert torch.isfinite(loc).all() and torch.isfinite(conf).all()


def test_eval_mode_returns_the_same_pair():
    model = build_detector("pafpn", "resnet18", 128, num_classes=2).eval()
    with torch.no_grad():
        loc, conf = model(torch.randn(1, 3, 128, 128))
    assert loc.shape == (1, 6 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2), 4) and conf.shape == (1, loc.shape[1], 2)


def test_detector_records_its_configuration():
    model = build_on_meta("rfbnet", "resnet18", 512, num_classes=80)
    assert (model.version, model.backbone_name, model.size, model.num_classes) == ("rfbnet", "resnet18", 512, 80)


@pytest.mark.parametrize(
    "args,message",
    [
        (("ssd", "vgg16", 320, 20), "unknown version 'ssd'; choose one of fssd, retinanet, rfbnet, pafpn"),
        (("fssd", "resnet50", 320, 20), "unknown backbone 'resnet50'; choose one of vgg16, resnet18"),
        (("fssd", "vgg16", 300, 20), "unknown size 300; use a multiple of 64 >= 128"),
        (("fssd", "vgg16", 64, 20), "unknown size 64; use a multiple of 64 >= 128"),
        (("fssd", "vgg16", 320, 0), "num_classes must be an int >= 1"),
    ],
)
def test_bad_choices_raise_value_error_naming_the_choices(args, message):
    with pytest.raises(ValueError, match=message):
        build_detector(*args)


@pytest.mark.parametrize(
    "args,message",
    [
        # a float class count failed deep in torch's Conv2d ("empty(): argument 'size' ... must be tuple of ints")
        (("fssd", "resnet18", 128, 3.0), r"num_classes must be an int >= 1 .*; got 3.0 \(float\)"),
        (("fssd", "resnet18", 128, "3"), r"num_classes must be an int >= 1 .*; got '3' \(str\)"),  # was a TypeError
        (("fssd", "resnet18", 128, True), r"num_classes must be an int >= 1 .*; got True \(bool\)"),  # built 1 class
        (("fssd", "resnet18", 320.0, 3), r"size 320.0 is not an int; use a multiple of 64 >= 128"),
    ],
)
def test_a_class_count_or_size_that_is_not_an_int_is_refused_by_name(args, message):
    with pytest.raises(ValueError, match=message):
        build_on_meta(*args)


def test_numpy_and_tensor_integers_are_taken_as_ints():
    """A NumPy integer (a config read through NumPy) was refused as "unknown size np.int64(128)"."""
    model = build_on_meta("fssd", "resnet18", np.int64(128), np.int64(3))
    assert (model.size, model.num_classes) == (128, 3) and type(model.size) is type(model.num_classes) is int
    assert build_on_meta("fssd", "resnet18", 128, torch.tensor(3)).num_classes == 3


def test_neck_rejects_backbone_strides_it_cannot_use():
    message = r"pafpn neck needs backbone outputs at strides 8, 16\[, 32, ...\]; got \(16, 32\)"
    with pytest.raises(ValueError, match=message):
        check_strides((16, 32), "pafpn")


# Exact parameter counts of our builds. Facts §3 gives the authors' counts (verified on 2dfba78) in millions with
# two decimals: each exact count must round to that value. Combinations the authors never built have no facts value.
PARAMETER_COUNTS = [
    # version, backbone, size, classes, exact count, facts §3 (M)
    ("fssd", "vgg16", 320, 20, 19_266_688, 19.27),
    ("fssd", "vgg16", 512, 20, 20_189_200, 20.19),
    ("fssd", "vgg16", 320, 80, 22_585_888, 22.59),
    ("fssd", "vgg16", 512, 80, 24_338_200, 24.34),
    ("fssd", "resnet18", 320, 20, 16_277_888, 16.28),
    ("fssd", "resnet18", 512, 20, 17_200_400, 17.20),
    ("retinanet", "vgg16", 320, 20, 21_894_272, 21.89),
    ("retinanet", "vgg16", 512, 20, 23_473_680, 23.47),
    ("retinanet", "vgg16", 320, 80, 25_213_472, 25.21),
    ("retinanet", "vgg16", 512, 80, 27_622_680, 27.62),
    ("rfbnet", "vgg16", 320, 20, 23_037_792, 23.04),
    ("rfbnet", "vgg16", 512, 20, 23_681_472, 23.68),
    ("rfbnet", "vgg16", 320, 80, 28_845_312, 28.85),
    ("rfbnet", "vgg16", 512, 80, 30_318_792, 30.32),
    ("pafpn", "vgg16", 320, 20, 25_570_432, 25.57),
    ("pafpn", "vgg16", 512, 20, 28_331_024, 28.33),
    ("pafpn", "vgg16", 320, 80, 28_889_632, 28.89),
    ("pafpn", "vgg16", 512, 80, 32_480_024, 32.48),
    # no facts value: RetinaNet-ResNet18 runs in the authors' code (facts §2) but its count was not recorded;
    # PAFPN-/RFBNet-ResNet18 were never built by the authors (channel mappings in models/necks/{pafpn,rfbnet}.py).
    # All three are summed layer by layer in test_resnet18_builds_count_by_hand
    ("retinanet", "resnet18", 320, 20, 18_905_472, None),
    ("rfbnet", "resnet18", 320, 20, 19_265_232, None),
    ("pafpn", "resnet18", 320, 20, 21_991_808, None),
]


@pytest.mark.parametrize("version,backbone,size,classes,count,facts_millions", PARAMETER_COUNTS)
def test_parameter_count(version, backbone, size, classes, count, facts_millions):
    assert num_parameters(build_on_meta(version, backbone, size, classes)) == count
    if facts_millions is not None:
        assert round(count / 1e6, 2) == facts_millions


def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def basic_conv(k: int, cin: int, cout: int) -> int:
    return conv(k, cin, cout) + 2 * cout  # conv with bias + BN weight and bias


VGG16_BN_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                  (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]


def test_fssd_and_pafpn_vgg16_320_counts_by_hand():
    """The layer-by-layer sum of facts §2-§3, written out, for VOC at 320 (4 levels)."""
    backbone = sum(basic_conv(3, cin, cout) for cin, cout in VGG16_BN_CONVS)
    assert backbone == 14_723_136  # facts §2: 14.72 M
    heads = 4 * (conv(3, 256, 6 * 4) + conv(3, 256, 6 * 20))
    fssd = backbone + 2 * basic_conv(1, 512, 256) + basic_conv(3, 512, 256) + 3 * basic_conv(3, 256, 256) + heads
    assert num_parameters(build_on_meta("fssd", "vgg16", 320, 20)) == fssd
    cem = 3 * basic_conv(1, 512, 256)
    extractor = 4 * basic_conv(3, 256, 256)
    top_down = 4 * basic_conv(1, 256, 256) + 4 * basic_conv(3, 256, 256)
    bottom_up_and_outputs = 3 * basic_conv(3, 256, 256) + 4 * basic_conv(3, 256, 256)
    pafpn = backbone + cem + extractor + top_down + bottom_up_and_outputs + heads
    assert num_parameters(build_on_meta("pafpn", "vgg16", 320, 20)) == pafpn


def rect_basic_conv(kh: int, kw: int, cin: int, cout: int) -> int:
    return kh * kw * cin * cout + cout + 2 * cout  # basic_conv with a kh x kw kernel (RFB's 1x3, 3x1, 1x7, 7x1)


def basic_rfb(cin: int, cout: int) -> int:
    """Facts §3 BasicRFB(in, out), i = in // 8 (the stride changes no count)."""
    i = cin // 8
    branch0 = basic_conv(1, cin, 2 * i) + basic_conv(3, 2 * i, 2 * i)
    branch1 = basic_conv(1, cin, i) + basic_conv(3, i, 2 * i) + basic_conv(3, 2 * i, 2 * i)  # last: dilation 3
    branch2 = (basic_conv(1, cin, i) + basic_conv(3, i, 3 * (i // 2)) + basic_conv(3, 3 * (i // 2), 2 * i)
               + basic_conv(3, 2 * i, 2 * i))  # last: dilation 5
    branch3 = (basic_conv(1, cin, i) + rect_basic_conv(1, 7, i, 3 * (i // 2))
               + rect_basic_conv(7, 1, 3 * (i // 2), 2 * i) + basic_conv(3, 2 * i, 2 * i))  # last: dilation 7
    conv_linear, shortcut = basic_conv(1, 8 * i, cout), basic_conv(1, cin, cout)
    return branch0 + branch1 + branch2 + branch3 + conv_linear + shortcut


def basic_rfb_a(cin: int, cout: int) -> int:
    """Facts §3 BasicRFB_a(in, out), i = in // 8, seven branches (concatenation 7i)."""
    i = cin // 8
    b0 = basic_conv(1, cin, i) + basic_conv(3, i, i)
    b1_to_b4 = 4 * (basic_conv(1, cin, i) + rect_basic_conv(3, 1, i, i) + basic_conv(3, i, i))  # 3x1 / 1x3, dilated
    b5_b6 = 2 * (basic_conv(1, cin, i // 2) + rect_basic_conv(1, 3, i // 2, 3 * (i // 4))
                 + rect_basic_conv(3, 1, 3 * (i // 4), i) + basic_conv(3, i, i))  # 1x3 then 3x1 (or 3x1 then 1x3)
    return b0 + b1_to_b4 + b5_b6 + basic_conv(1, 7 * i, cout) + basic_conv(1, cin, cout)


def test_resnet18_builds_count_by_hand():
    """The four detectors on ResNet18 at 320 (4 levels), 20 classes, summed layer by layer.

    Backbone: torchvision's own resnet18 (stem, layer1, and layer2-4 whose outputs the necks take; avgpool/fc dropped).
    Necks and heads: facts §3 (BasicConv = conv with bias + BN, RFB blocks, heads) with the ResNet18 channel mapping of
    facts §3 / README "Combinations the paper never built" / models/necks docstrings: layer2, layer3, layer4 =
    128, 256, 512 ch at strides 8, 16, 32, each reduced to 256 ch (768 ch concatenated); RFB extras from layer3.
    """
    import torchvision

    with torch.device("meta"):
        reference = torchvision.models.resnet18()
    stages = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
    backbone = sum(num_parameters(getattr(reference, name)) for name in stages)
    assert backbone == num_parameters(reference) - conv(1, 512, 1000)  # all of it but the fc classifier
    assert backbone == 11_176_512

    def heads(channels: list[int]) -> int:  # facts §3: per level one 3x3 conv each for loc (6 x 4) and conf (6 x C)
        return sum(conv(3, c, 6 * 4) + conv(3, c, 6 * 20) for c in channels)

    # 1x1 to 256 ch per map: layer2 (x1), layer3 (x2 upsampled), layer4 (x4 upsampled)
    reduce = basic_conv(1, 128, 256) + basic_conv(1, 256, 256) + basic_conv(1, 512, 256)
    extractor_768 = basic_conv(3, 768, 256) + 3 * basic_conv(3, 256, 256)  # level 0 on the concat, then 3 x stride 2
    top_down = 4 * basic_conv(1, 256, 256) + 4 * basic_conv(3, 256, 256)  # lateral 1x1 and output 3x3 per level

    fssd = backbone + reduce + extractor_768 + heads([256] * 4)
    assert num_parameters(build_on_meta("fssd", "resnet18", 320, 20)) == fssd
    assert round(fssd / 1e6, 2) == 16.28  # facts §3: ResNet18 FSSD VOC 16.28 M

    retinanet = backbone + reduce + extractor_768 + top_down + heads([256] * 4)
    assert num_parameters(build_on_meta("retinanet", "resnet18", 320, 20)) == retinanet

    cem = reduce + basic_conv(1, 512, 256)  # a + b over the three maps (summed, 256 ch), c: global context of layer4
    extractor_256 = basic_conv(3, 256, 256) + 3 * basic_conv(3, 256, 256)
    bottom_up_and_outputs = 3 * basic_conv(3, 256, 256) + 4 * basic_conv(3, 256, 256)  # 3x3 s2 per step, pafpn_convs
    pafpn = backbone + cem + extractor_256 + top_down + bottom_up_and_outputs + heads([256] * 4)
    assert num_parameters(build_on_meta("pafpn", "resnet18", 320, 20)) == pafpn

    # The RFB terms, checked first on the authors' own VGG16 build (facts §3: 23.04 M) ...
    vgg16_rfbnet = (14_723_136 + 2 * basic_conv(1, 512, 256) + basic_rfb_a(512, 512) + basic_rfb(512, 512)
                    + basic_rfb(512, 512) + basic_rfb(512, 256) + heads([512, 512, 512, 256]))
    assert vgg16_rfbnet == num_parameters(build_on_meta("rfbnet", "vgg16", 320, 20))
    assert round(vgg16_rfbnet / 1e6, 2) == 23.04
    # ... then on ResNet18: level 0 = BasicRFB_a(768 -> 512); extras RFB(256 -> 512, s1), RFB(512 -> 512, s2),
    # RFB(512 -> 256, s2) from layer3
    rfbnet = (backbone + reduce + basic_rfb_a(768, 512) + basic_rfb(256, 512) + basic_rfb(512, 512)
              + basic_rfb(512, 256) + heads([512, 512, 512, 256]))
    assert num_parameters(build_on_meta("rfbnet", "resnet18", 320, 20)) == rfbnet

    assert (fssd, retinanet, rfbnet, pafpn) == (16_277_888, 18_905_472, 19_265_232, 21_991_808)  # PARAMETER_COUNTS


@pytest.mark.parametrize("version", list(NECKS))
@pytest.mark.parametrize("size", [128, 256, 576])
def test_any_multiple_of_64_builds_with_anchor_count_of_prior_box(version, size):
    model = build_on_meta(version, "resnet18", size, num_classes=3).eval()
    loc, conf = model(torch.empty(1, 3, size, size, device="meta"))
    num_anchors = PriorBox(24.0, size).num_anchors
    assert loc.shape == (1, num_anchors, 4) and conf.shape == (1, num_anchors, 3)


def test_vgg16_outputs_are_torchvision_vgg16_bn_features_up_to_conv4_3_and_conv5_3():
    """Facts §2: conv4_3 = features[0..32] (after its BN and ReLU, before pool4), conv5_3 = features[33..42]
    (after its ReLU, pool5 dropped); checked against torchvision's own vgg16_bn with the same weights."""
    import torchvision

    from models.backbones import VGG16BN

    torch.manual_seed(0)
    backbone = VGG16BN().eval()
    reference = torchvision.models.vgg16_bn().eval()
    missing, unexpected = reference.load_state_dict(backbone.state_dict(), strict=False)
    assert unexpected == [] and all(key.startswith("classifier.") for key in missing)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        conv4_3, conv5_3 = backbone(images)
        torch.testing.assert_close(conv4_3, reference.features[:33](images))
        torch.testing.assert_close(conv5_3, reference.features[:43](images))
    assert conv4_3.shape == (1, 512, 8, 8) and conv5_3.shape == (1, 512, 4, 4)
    assert conv4_3.min() == 0 and conv5_3.min() == 0  # ReLU outputs


def test_a_vgg16_built_without_pretrained_weights_has_torchvision_s_initialisation():
    """torchvision's VGG init (the backbone's docstring): conv weights Kaiming-normal over fan_out (std sqrt(2 / (out
    x 3 x 3)): 0.0589 for the 64-channel first conv, 0.0208 for the 512-channel ones), biases 0, BN weight 1, bias 0."""
    from models.backbones import VGG16BN

    torch.manual_seed(0)
    features = VGG16BN().features
    first, last = features[0], features[40]
    assert (first.out_channels, last.in_channels, last.out_channels) == (64, 512, 512)
    assert first.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    assert last.weight.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.01)
    assert all(not conv.bias.any() for conv in features if isinstance(conv, torch.nn.Conv2d))
    norms = [bn for bn in features if isinstance(bn, torch.nn.BatchNorm2d)]
    assert len(norms) == 13 and all((bn.weight == 1).all() and not bn.bias.any() for bn in norms)


def test_pafpn_training_on_one_image_is_refused_with_advice_and_inference_is_not():
    """The global-context BatchNorm sees one value per channel for a batch of 1 (torch's own error says only that)."""
    model = build_detector("pafpn", "resnet18", 128, num_classes=2).train()
    with pytest.raises(ValueError, match="PAFPN trains on at least 2 images per batch: .* call model.eval"):
        model(torch.randn(1, 3, 128, 128))
    loc, conf = model(torch.randn(2, 3, 128, 128))
    assert loc.shape == (2, 6 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2), 4) and conf.shape == (2, loc.shape[1], 2)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 128, 128))[0].shape == (1, loc.shape[1], 4)


@pytest.mark.parametrize("images, message", [
    # a raw image batch (torchvision.io.read_image, cv2 and torch.from_numpy): torch's "expected scalar type Byte
    # but found Float"
    (torch.zeros(1, 3, 128, 128, dtype=torch.uint8, device="meta"), r"images are torch.uint8"),
    (np.zeros((1, 3, 128, 128), np.float32), r"images are a NumPy array"),  # conv2d's "invalid combination of ..."
])
def test_images_that_are_not_a_float_tensor_are_refused_with_the_conversion(images, message):
    model = build_on_meta("fssd", "resnet18", 128, 3).eval()
    expected = (rf"Detector: {message}; the model takes a float tensor \[B, 3, S, S\] = BGR minus \(104, 117, 123\) "
                r"\(data.transforms.normalize_image of each uint8 BGR")
    with pytest.raises(ValueError, match=expected):
        model(images)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_images_of_another_float_dtype_than_the_weights_are_refused_naming_both(dtype):
    """A float64 batch (NumPy arithmetic with a float mean: image - np.array([104.0, 117.0, 123.0])) failed with
    torch's "expected scalar type Double but found Float", a half one with "... Half but found Float"."""
    model = build_on_meta("fssd", "resnet18", 128, 3).eval()
    images = torch.zeros(1, 3, 128, 128, dtype=dtype, device="meta")
    with pytest.raises(ValueError, match=rf"^Detector: images are {dtype} but the model's weights are torch.float32: "
                                         r"convert them with images.float\(\) \(data.transforms.normalize_image gives "
                                         r"float32\), or run the model under torch.autocast"):
        model(images)
    assert model.to(dtype)(images)[1].dtype == dtype  # weights of the images' dtype
    with pytest.raises(ValueError, match=rf"^Detector: images are torch.float32 but the model's weights are {dtype}: "
                                         rf"convert them with images.to\({dtype}\)"):
        model(images.float())


def test_under_autocast_half_images_are_taken_and_float64_ones_refused(one_torch_thread):
    torch.manual_seed(0)
    model = build_detector("fssd", "resnet18", 128, 3).eval()
    images = torch.zeros(1, 3, 128, 128)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(images.bfloat16())[0].shape == (1, 2040, 4)
        # torch's "expected scalar type Double but found BFloat16"
        with pytest.raises(ValueError, match=r"^Detector: images are torch.float64 but"):
            model(images.double())


@pytest.mark.parametrize("shape", [
    (1, 3, 129, 128),  # torch's "Sizes of tensors must match except in dimension 1. Expected size 17 but got size 18"
    (2, 3, 127, 127),  # ran silently: 128's anchor count, each anchor a little off its PriorBox position
    (1, 3, 192, 192),  # ran silently: 4,590 anchors, which PriorBox(size=128)'s 2,040 do not describe
    (1, 128, 128, 3),  # channels last in the shape (an HWC image batch): conv2d's "expected input to have 3 channels"
    (3, 128, 128),  # one image without its batch dimension
])
def test_images_of_another_shape_than_b_3_s_s_are_refused_naming_the_built_size(shape):
    model = build_on_meta("fssd", "resnet18", 128, 3).eval()
    expected = (rf"Detector: images are \[{', '.join(map(str, shape))}\]; this fssd-resnet18 was built for "
                r"\[B, 3, 128, 128\] \(size=128\): resize each image to 128 x 128 \(data.transforms\)")
    with pytest.raises(ValueError, match=expected):
        model(torch.zeros(shape, device="meta"))
    assert model(torch.zeros(2, 3, 128, 128, device="meta"))[0].shape == (2, 2040, 4)


def test_a_compiled_detector_still_names_the_built_size_for_images_of_another_shape(one_torch_thread):
    """torch.compile traces Detector.forward's shape check on static shapes: without fullgraph the ValueError comes out
    as it is. Under fullgraph=True Dynamo lets no exception out of the graph (torch._check and torch._check_value fare
    the same in torch 2.14): its Unsupported error names the check's line, and from torch 2.9 carries the message in
    its text too (torch 2.5.1 and 2.8.0 say "Observed exception" and the line alone)."""
    model = build_on_meta("fssd", "resnet18", 128, 3).eval()
    images = torch.zeros(1, 3, 160, 160, device="meta")
    expected = (r"Detector: images are \[1, 3, 160, 160\]; this fssd-resnet18 was built for \[B, 3, 128, 128\] "
                r"\(size=128\): resize each image to 128 x 128")
    torch._dynamo.reset()  # Dynamo's caches of earlier tests' frames would change what it does here
    try:
        with pytest.raises((RuntimeError, ValueError)) as error:  # torch._dynamo.exc.Unsupported, for now
            torch.compile(model, backend="eager", fullgraph=True)(images)
        text, dynamo_error = str(error.value), not isinstance(error.value, ValueError)
        if dynamo_error:
            assert re.search(r"models/detector\.py\", line \d+, in forward\n +self\._check_shape\(images\)", text), text
        if not dynamo_error or release(torch.__version__) >= (2, 9):
            assert re.search(expected, text), text
        torch._dynamo.reset()
        with pytest.raises(ValueError, match=expected):
            torch.compile(model, backend="eager")(images)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("version", list(NECKS))
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_layer_has_the_same_shape_at_every_size_of_as_many_pyramid_levels(version, backbone):
    """What lets ``--init_from`` fine-tune a checkpoint at another ``--size`` (``check_init_architecture``): the state
    dicts of 128 and 448 (4 levels) have the same keys and shapes, as have 512 and 576 (5 levels); 448 and 512 do not
    (the fifth level's layers)."""
    def shapes(size: int) -> dict[str, tuple[int, ...]]:
        with torch.device("meta"):  # the shapes alone: no weight is initialised
            model = build_detector(version, backbone, size, 3)
        return {key: tuple(value.shape) for key, value in model.state_dict().items()}

    four, five = shapes(128), shapes(512)
    assert shapes(448) == four and shapes(576) == five
    assert set(four) < set(five)
