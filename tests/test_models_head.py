"""Detection head: output order against PriorBox, the reshape helper, initialisation."""

import math

import pytest
import torch

from models import build_detector, reorder_classes
from models.head import DetectionHead, flatten_level_output
from utils.box.prior_box import PriorBox


def test_flatten_level_output_moves_channel_a_k_of_cell_i_j_to_row_i_w_j_a():
    height, width, anchors, k = 2, 3, 6, 4
    x = torch.arange(anchors * k * height * width, dtype=torch.float32).reshape(1, anchors * k, height, width)
    flat = flatten_level_output(x, k)
    assert flat.shape == (1, height * width * anchors, k)
    for i in range(height):
        for j in range(width):
            for a in range(anchors):
                for c in range(k):
                    assert flat[0, (i * width + j) * anchors + a, c] == x[0, a * k + c, i, j]


def anchor_channel_map(side: int, base: float) -> torch.Tensor:
    """A head-shaped map [1, 6 * 4, side, side] holding, in anchor a's 4 channels, the (cx, cy, w, h) of facts §1."""
    r = math.sqrt(2.0)
    shapes = [(base, base), (base * r, base / r), (base / r, base * r),
              (base * r, base * r), (2 * base, base), (base, 2 * base)]
    centres = (torch.arange(side, dtype=torch.float64) + 0.5) / side
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    channels = []
    for w, h in shapes:
        channels += [cx, cy, torch.full_like(cx, w), torch.full_like(cx, h)]
    return torch.stack(channels)[None]


def test_level_row_column_anchor_order_matches_prior_box():
    """Flattening per-level maps of the anchors' own (cx, cy, w, h) and concatenating the levels gives PriorBox."""
    for size, sides in ((320, [40, 20, 10, 5]), (512, [64, 32, 16, 8, 4])):
        maps = [anchor_channel_map(side, 24.0 * 2**k / size) for k, side in enumerate(sides)]
        flat = torch.cat([flatten_level_output(m, 4) for m in maps], dim=1)[0].clamp(0.0, 1.0)
        torch.testing.assert_close(flat.float(), PriorBox(base_anchor_size=24.0, size=size).forward())


def test_head_concatenates_levels_in_order():
    """Level 0 fills the first 6 * H0 * W0 rows: a head that outputs its level index shows the boundaries."""
    head = DetectionHead([8, 8], num_classes=3)
    for level, (loc, conf) in enumerate(zip(head.loc, head.conf)):
        torch.nn.init.zeros_(loc.weight)
        torch.nn.init.constant_(loc.bias, float(level))
        torch.nn.init.zeros_(conf.weight)
        torch.nn.init.constant_(conf.bias, float(level))
    loc, conf = head([torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2)])
    assert loc.shape == (2, 6 * 20, 4) and conf.shape == (2, 6 * 20, 3)
    expected = torch.cat([torch.zeros(6 * 16), torch.ones(6 * 4)])
    assert torch.equal(loc[0, :, 0], expected) and torch.equal(conf[1, :, 2], expected)


def test_head_initialisation():
    torch.manual_seed(0)
    head = DetectionHead([256, 256, 512], num_classes=20)
    for conv in head.conf:
        assert torch.equal(conv.bias, torch.full((6 * 20,), -math.log(99.0)))
        assert abs(conv.bias[0].item() - (-4.59512)) < 1e-5
    for conv in head.loc:
        assert torch.equal(conv.bias, torch.zeros(6 * 4))
    weights = torch.cat([conv.weight.flatten() for conv in [*head.loc, *head.conf]])
    assert abs(weights.mean().item()) < 5e-4
    assert abs(weights.std().item() - 0.01) < 1e-4
    assert [conv.in_channels for conv in head.conf] == [256, 256, 512]


def test_initial_scores_are_the_prior_probability():
    """With zero features every logit is the bias, so sigmoid(conf) = 0.01 and loc = 0."""
    head = DetectionHead([16], num_classes=2)
    loc, conf = head([torch.zeros(1, 16, 3, 3)])
    torch.testing.assert_close(conf.sigmoid(), torch.full((1, 54, 2), 0.01))
    assert torch.equal(loc, torch.zeros(1, 54, 4))


def test_load_all_but_classifier_takes_every_other_weight_and_refuses_another_architecture():
    torch.manual_seed(0)
    source = build_detector("fssd", "resnet18", 128, num_classes=6, pretrained=False)
    target = build_detector("fssd", "resnet18", 128, num_classes=2, pretrained=False)
    initial_classifier = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("head.conf.")}
    fresh = target.load_all_but_classifier(source.state_dict())
    assert fresh == sorted(initial_classifier) and len(fresh) == 8
    for key, value in target.state_dict().items():
        expected = initial_classifier[key] if key.startswith("head.conf.") else source.state_dict()[key]
        assert torch.equal(value, expected), key
    other = build_detector("retinanet", "resnet18", 128, num_classes=6, pretrained=False)
    with pytest.raises(RuntimeError, match="the weights do not fit this detector outside its classifier"):
        target.load_all_but_classifier(other.state_dict())


def test_reorder_classes_makes_each_class_score_what_it_scored_at_its_old_label():
    """Fine-tuning on the same classes listed in another order: class i of the reordered weights scores, for every
    anchor, what class order[i] scored (the head's channel a x C + c is anchor a's class c)."""
    torch.manual_seed(0)
    source = build_detector("fssd", "resnet18", 128, num_classes=3, pretrained=False).eval()
    for conv in source.head.conf:  # distinct per-class outputs: the initial bias is the same for every class
        torch.nn.init.normal_(conv.bias)
    target = build_detector("fssd", "resnet18", 128, num_classes=3, pretrained=False).eval()
    order = [2, 0, 1]  # the new list names the old class 2 first, then 0, then 1
    target.load_state_dict(reorder_classes(source.state_dict(), order))
    images = torch.randn(2, 3, 128, 128) * 50
    with torch.no_grad():
        (loc, conf), (new_loc, new_conf) = source(images), target(images)
    assert torch.equal(new_loc, loc)
    assert not torch.equal(new_conf, conf)
    torch.testing.assert_close(new_conf, conf[..., order], rtol=0, atol=0)
    kept = reorder_classes(source.state_dict(), [0, 1, 2])
    assert all(torch.equal(kept[key], value) for key, value in source.state_dict().items())


def test_the_head_convs_are_3x3_with_zero_padding():
    """Facts §3: a single 3x3 conv, pad 1 (zeros) per branch: with all-ones weights and a map of ones, a corner cell
    sums 4 of the 9 taps per input channel, an edge cell 6, an inner cell 9."""
    head = DetectionHead([2], num_classes=1)
    for conv in (head.loc[0], head.conf[0]):
        torch.nn.init.ones_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    loc, conf = head([torch.ones(1, 2, 3, 3)])
    sums = torch.tensor([[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]) * 2  # [3, 3], 2 input channels
    assert torch.equal(loc[0], sums.flatten().repeat_interleave(6 * 4).view(54, 4))
    assert torch.equal(conf[0, :, 0], sums.flatten().repeat_interleave(6))
