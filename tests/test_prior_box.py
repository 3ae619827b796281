"""PriorBox against the anchors of the authors' code (facts §1), written out by hand."""
import math

import numpy as np
import pytest
import torch

from utils.box import DEFAULT_BASE_ANCHOR_SIZE, PriorBox, feature_map_sides

R2 = math.sqrt(2.0)


def test_counts_and_feature_maps():
    assert feature_map_sides(320) == [40, 20, 10, 5]
    assert feature_map_sides(512) == [64, 32, 16, 8, 4]
    assert PriorBox(24.0, 320)().shape == (12750, 4)
    assert PriorBox(24.0, 512)().shape == (32736, 4)
    assert PriorBox(24.0, 320).num_anchors == 12750
    assert PriorBox(24.0, 512).num_anchors == 32736


def test_first_cell_at_320():
    s = 24 / 320
    expected = torch.tensor(
        [
            [0.0125, 0.0125, s, s],
            [0.0125, 0.0125, s * R2, s / R2],
            [0.0125, 0.0125, s / R2, s * R2],
            [0.0125, 0.0125, s * R2, s * R2],
            [0.0125, 0.0125, 2 * s, s],
            [0.0125, 0.0125, s, 2 * s],
        ]
    )
    anchors = PriorBox(24.0, 320)()
    assert anchors.dtype == torch.float32
    torch.testing.assert_close(anchors[:6], expected)
    # pixel sizes at level 0 as the facts list them: 24, 33.94x16.97, 16.97x33.94, 33.94, 48x24, 24x48
    torch.testing.assert_close(
        anchors[:6, 2:] * 320,
        torch.tensor([[24, 24], [33.94, 16.97], [16.97, 33.94], [33.94, 33.94], [48, 24], [24, 48]]),
        atol=0.01,
        rtol=0,
    )


def test_order_is_level_row_column_shape():
    anchors = PriorBox(24.0, 320)()
    torch.testing.assert_close(anchors[6, :2], torch.tensor([1.5 / 40, 0.5 / 40]))  # next column, same row
    torch.testing.assert_close(anchors[6 * 40, :2], torch.tensor([0.5 / 40, 1.5 / 40]))  # next row
    level1 = 6 * 40 * 40
    torch.testing.assert_close(anchors[level1], torch.tensor([0.5 / 20, 0.5 / 20, 48 / 320, 48 / 320]))


def test_last_anchor_is_clamped_in_centre_size_form():
    # 320: level 3 (5x5, 192 px) last cell, shape (s, 2s) = 0.6 x 1.2 -> h clamped to 1.0
    torch.testing.assert_close(PriorBox(24.0, 320)()[-1], torch.tensor([0.9, 0.9, 0.6, 1.0]))
    # 512: level 4 (4x4, 384 px) last cell, 0.75 x 1.5 -> 0.75 x 1.0
    torch.testing.assert_close(PriorBox(24.0, 512)()[-1], torch.tensor([0.875, 0.875, 0.75, 1.0]))


def test_first_cell_at_512():
    s = 24 / 512
    c = 0.5 / 64
    torch.testing.assert_close(
        PriorBox(24.0, 512)()[:6],
        torch.tensor(
            [[c, c, s, s], [c, c, s * R2, s / R2], [c, c, s / R2, s * R2], [c, c, s * R2, s * R2], [c, c, 2 * s, s],
             [c, c, s, 2 * s]]
        ),
    )


def test_other_multiples_of_64():
    assert PriorBox(24.0, 384)().shape[0] == 6 * (48**2 + 24**2 + 12**2 + 6**2)
    assert PriorBox(24.0, 576)().shape[0] == 6 * (72**2 + 36**2 + 18**2 + 9**2 + 5**2)  # ceil(576/128) = 5
    assert PriorBox(24.0, 64)().shape[0] == 6 * (8**2 + 4**2 + 2**2 + 1)


@pytest.mark.parametrize("size", [0, -64, 300, 320.0, True])
def test_rejects_sizes_that_are_not_positive_multiples_of_64(size):
    with pytest.raises(ValueError, match="multiple of 64"):
        PriorBox(24.0, size)


def test_a_numpy_integer_size_is_taken_as_an_int():
    """np.int64(320) was refused as "not a positive multiple of 64"; a float size is refused as not an int."""
    prior_box = PriorBox(24.0, np.int64(320))
    assert prior_box.size == 320 and type(prior_box.size) is int
    torch.testing.assert_close(prior_box(), PriorBox(24.0, 320)())
    with pytest.raises(ValueError, match=r"size=320.0 is not an int; use a positive multiple of 64"):
        PriorBox(24.0, 320.0)


def plain_anchors(base_anchor_size: float, size: int) -> torch.Tensor:
    """Facts §1 as plain loops: ``[A, 4]`` float32 (cx, cy, w, h) normalised, in level, row, column, shape order,
    each value clamped to [0, 1]. Level k has side ceil(size / 2^(3+k)) and base side base_anchor_size * 2^k px."""
    rows = []
    for k in range(4 if size < 512 else 5):
        side = math.ceil(size / 2 ** (3 + k))
        small = base_anchor_size * 2**k / size
        large = small * R2
        shapes = [(small, small), (small * R2, small / R2), (small / R2, small * R2),
                  (large, large), (large * R2, large / R2), (large / R2, large * R2)]
        for row in range(side):
            for column in range(side):
                for w, h in shapes:
                    rows.append([min(max(v, 0.0), 1.0) for v in ((column + 0.5) / side, (row + 0.5) / side, w, h)])
    return torch.tensor(rows, dtype=torch.float64).float()


@pytest.mark.parametrize("base_anchor_size, size", [(32.0, 320), (16.5, 512), (0.5, 64)])
def test_base_anchor_size_scales_the_anchors_of_every_level(base_anchor_size, size):
    """--base_anchor_size other than the default 24 (every other test uses 24): the whole tensor against the loops;
    any size above 0 is accepted, a sub-pixel one too."""
    anchors = PriorBox(base_anchor_size, size)()
    torch.testing.assert_close(anchors, plain_anchors(base_anchor_size, size))
    if base_anchor_size == 32.0:  # by hand: 32 px at 320 is 0.1; level 1 starts at 64 px (0.2)
        torch.testing.assert_close(anchors[0], torch.tensor([0.0125, 0.0125, 0.1, 0.1]))
        torch.testing.assert_close(anchors[6 * 40 * 40], torch.tensor([0.025, 0.025, 0.2, 0.2]))


@pytest.mark.parametrize("base_anchor_size", [320, 512, math.inf])
def test_a_size_given_as_the_first_argument_is_refused(base_anchor_size):
    """PriorBox(512), meant as the input size, is base_anchor_size=512 at size 320: every anchor was clamped to the
    whole image (w = h = 1) without a word. A stride-8 anchor at least the image's side is refused, as main.py
    refuses --base_anchor_size from --size up."""
    with pytest.raises(ValueError, match=rf"PriorBox: base_anchor_size={base_anchor_size!r} must be below "
                                         r"size=320.*PriorBox\(size=...\) names the input size"):
        PriorBox(base_anchor_size)


@pytest.mark.parametrize("base_anchor_size", [0.0, -24.0, math.nan])
def test_rejects_a_base_anchor_size_that_is_not_positive(base_anchor_size):
    with pytest.raises(ValueError, match="must be > 0 pixels"):
        PriorBox(base_anchor_size, 320)


@pytest.mark.parametrize("size", [320, 512])
def test_default_anchors_equal_the_facts_written_as_loops(size):
    """The paper's anchors (base 24 px) as a whole against facts §1 written as loops; at 320 the largest level's
    (2s, s) anchor is 384 x 192 px, whose width the centre-size clamp caps at 1.0 (the corners stick out)."""
    anchors = PriorBox(24.0, size)()
    torch.testing.assert_close(anchors, plain_anchors(24.0, size))
    if size == 320:
        level3 = 6 * (40 * 40 + 20 * 20 + 10 * 10)
        torch.testing.assert_close(anchors[level3 + 4], torch.tensor([0.1, 0.1, 1.0, 0.6]))


def test_defaults_are_the_papers_base_24_at_320():
    assert DEFAULT_BASE_ANCHOR_SIZE == 24.0
    default = PriorBox()
    assert (default.base_anchor_size, default.size, default.num_anchors) == (24.0, 320, 12750)
    torch.testing.assert_close(default(), plain_anchors(24.0, 320))
