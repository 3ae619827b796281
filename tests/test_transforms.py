"""Each augmentation step keeps boxes consistent with the pixels, on images whose pixels encode where they come from."""
import re
import tracemalloc

import cv2
import numpy as np
import pytest

from data import transforms as T


def coordinate_image(height: int, width: int) -> np.ndarray:
    """Pixel (y, x) holds B = x, G = y, R = 0: any crop/shift/flip can be read back from the pixels (H, W < 256)."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = np.arange(width)[None, :]
    image[..., 1] = np.arange(height)[:, None]
    return image


def gray_object_image(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Black image with a white filled box ``x1y1x2y2`` (pixels x1..x2-1, y1..y2-1)."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def test_normalize_image_is_bgr_minus_mean_chw():
    image = np.array([[[0, 1, 2], [104, 117, 123]]], dtype=np.uint8)  # H=1, W=2, BGR
    out = T.normalize_image(image)
    assert out.dtype == np.float32 and out.shape == (3, 1, 2)
    np.testing.assert_array_equal(out[:, 0, 0], [-104, -116, -121])
    np.testing.assert_array_equal(out[:, 0, 1], [0, 0, 0])


def test_mirror_moves_box_with_pixels():
    image = gray_object_image(40, 60, (5, 10, 20, 30))
    flipped, boxes = T.mirror(image, np.array([[5, 10, 20, 30]], dtype=np.float32))
    np.testing.assert_array_equal(boxes, [[40, 10, 55, 30]])  # x1' = 60 - 20, x2' = 60 - 5
    assert (flipped[10:30, 40:55] == 255).all() and flipped.sum() == image.sum()


def test_mirror_keeps_empty_boxes():
    _, boxes = T.mirror(np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4), np.float32))
    assert boxes.shape == (0, 4)


@pytest.mark.parametrize("seed", range(10))
def test_expand_places_image_on_mean_canvas(seed):
    image = coordinate_image(30, 50)
    boxes = np.array([[10, 5, 20, 25]], dtype=np.float32)
    canvas, moved = T.expand(image, boxes, np.random.default_rng(seed))
    height, width = canvas.shape[:2]
    assert 50 <= width <= 4 * 50 * np.sqrt(2) and 30 <= height <= 4 * 30 * np.sqrt(2)
    rows, cols = np.nonzero(canvas[..., 2] == 0)  # image pixels have R = 0, the fill R = 123
    top, left = rows.min(), cols.min()
    np.testing.assert_array_equal(canvas[top : top + 30, left : left + 50], image)
    np.testing.assert_array_equal(moved, boxes + [left, top, left, top])
    outside = np.ones((height, width), bool)
    outside[top : top + 30, left : left + 50] = False
    assert (canvas[outside] == T.PIXEL_MEAN_BGR).all()


def test_expand_canvas_follows_the_authors_sampling():
    """Canvas (s r W) x (s/r H) with s ~ U(1, 4), r^2 in [0.5, 2]: area s^2 W H up to 16x; uniform position."""
    height, width = 30, 50
    image = coordinate_image(height, width)
    areas, ratios, left_fraction, top_fraction = [], [], [], []
    for seed in range(300):
        canvas, moved = T.expand(image, np.zeros((1, 4), np.float32), np.random.default_rng(seed))
        canvas_h, canvas_w = canvas.shape[:2]
        left, top = moved[0, :2]
        assert canvas_w >= width and canvas_h >= height
        areas.append(canvas_w * canvas_h / (width * height))
        ratios.append((canvas_w / width) / (canvas_h / height))
        left_fraction.append(left / max(canvas_w - width, 1))
        top_fraction.append(top / max(canvas_h - height, 1))
    # s reaches 4 (area 16): P(s > 3.85), an area over 14.5 after truncation, is 5 % per draw (s < 3.5 would fail)
    assert max(areas) <= 16 and max(areas) > 14.5 and min(areas) < 1.5
    # r^2 spans [0.5, 2] (for s >= sqrt(2)), up to the truncation of each side: a narrower range would fail
    assert 0.5 * 0.95 < min(ratios) < 0.55 and 1.85 < max(ratios) < 2.0 * 1.05
    assert 0.4 < np.mean(left_fraction) < 0.6 and 0.4 < np.mean(top_fraction) < 0.6
    assert min(left_fraction) < 0.05 and max(left_fraction) > 0.95


def test_expand_draws_the_canvas_then_a_uniform_left_then_a_uniform_top():
    """Facts §5 step 3 written out as a plain reference on the same generator: s ~ U(1, 4), r = sqrt(U(max(0.5,
    1/s^2), min(2, s^2))), canvas int(s r W) x int(s/r H), left uniform in 0..canvas_w - W, top in 0..canvas_h - H."""
    height, width = 30, 50
    for seed in range(20):
        reference = np.random.default_rng(seed)
        scale = reference.uniform(1.0, 4.0)
        ratio = np.sqrt(reference.uniform(max(0.5, 1 / scale**2), min(2.0, scale**2)))
        canvas_w, canvas_h = int(scale * ratio * width), int(scale / ratio * height)
        left, top = reference.integers(canvas_w - width + 1), reference.integers(canvas_h - height + 1)
        canvas, moved = T.expand(coordinate_image(height, width), np.zeros((1, 4), np.float32),
                                 np.random.default_rng(seed))
        assert canvas.shape[:2] == (canvas_h, canvas_w) and moved[0].tolist() == [left, top, left, top], seed


def test_box_window_iou_by_hand():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], dtype=np.float32)
    windows = np.array([[0, 0, 10, 10], [0, 0, 20, 20]], dtype=np.float32)
    np.testing.assert_allclose(T.box_window_iou(boxes, windows), [[1.0, 25 / 175], [0.25, 0.25]])


def test_random_crop_crops_often():
    """The no-crop mode is 1 of the 7 modes; with these boxes the constrained modes find a window about half the time,
    so well over a third of the draws must crop (the test below checks the boxes of those that do)."""
    image = coordinate_image(120, 200)
    boxes = np.array([[20, 10, 90, 70], [120, 50, 190, 115], [60, 80, 70, 90]], dtype=np.float32)
    shapes = [T.random_crop(image, boxes, np.array([0, 1, 2]), np.random.default_rng(seed))[0].shape[:2]
              for seed in range(200)]
    assert sum(shape != image.shape[:2] for shape in shapes) >= 200 // 3


@pytest.mark.parametrize("seed", range(30))
def test_random_crop_boxes_follow_pixels(seed):
    image = coordinate_image(120, 200)
    boxes = np.array([[20, 10, 90, 70], [120, 50, 190, 115], [60, 80, 70, 90]], dtype=np.float32)
    labels = np.array([0, 1, 2])
    cropped, kept, kept_labels = T.random_crop(image, boxes, labels, np.random.default_rng(seed))
    left, top = int(cropped[0, 0, 0]), int(cropped[0, 0, 1])
    h, w = cropped.shape[:2]
    np.testing.assert_array_equal(cropped, image[top : top + h, left : left + w])
    if (h, w) == image.shape[:2]:
        np.testing.assert_array_equal(kept, boxes)
        return
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = (centres > [left, top]).all(1) & (centres < [left + w, top + h]).all(1)
    expected = np.clip(boxes[inside] - [left, top, left, top], 0, [w, h, w, h])
    np.testing.assert_array_equal(kept, expected)
    np.testing.assert_array_equal(kept_labels, labels[inside])
    assert len(kept) >= 1


def test_crop_windows_follow_the_authors_sampling():
    height, width = 60, 90
    windows = T.sample_crop_windows(height, width, 20_000, np.random.default_rng(0))
    w, h = windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1]
    # w = int(s r W), h = int(s / r H): s^2 in [0.09, 1] and r^2 in [0.5, 2], up to the truncation of each side
    assert np.all(w * h <= width * height) and np.all((w + 1) * (h + 1) > 0.09 * width * height)
    assert np.all((w / width) / ((h + 1) / height) < 2.0) and np.all(((w + 1) / width) / (h / height) > 0.5)
    # and r^2 reaches both ends of [0.5, 2] (for s <= 1/sqrt(2)): the relative aspect (w / W) / (h / H) is r^2
    aspect = (w / width) / (h / height)
    assert aspect.min() < 0.53 and aspect.max() > 1.95
    # corners uniform in [0, W - w): randrange(W - w), so a window ends flush with the edge only when it spans it
    assert windows[:, 0].min() == 0 and windows[:, 1].min() == 0
    assert np.all((windows[:, 2] < width) | (w == width)) and np.all((windows[:, 3] < height) | (h == height))
    assert windows[:, 2].max() == width - 1 and windows[:, 3].max() == height - 1
    # s ~ U(0.3, 1): w * h <= s^2 W H, so the smallest of 20,000 windows is near 0.09 of the image (P(s < 0.31) = 1.4 %)
    # and the largest near all of it
    area = w * h / (width * height)
    assert area.min() < 0.1 and area.max() > 0.93


def test_crop_modes_are_the_authors_seven():
    # facts §5: no crop, min IoU 0.1, 0.3, 0.5, 0.7, 0.9, no constraint; drawn uniformly
    assert T.CROP_MODES[:6] == (None, 0.1, 0.3, 0.5, 0.7, 0.9) and T.CROP_MODES[6] == -np.inf and len(T.CROP_MODES) == 7
    assert T.CROP_TRIES_PER_MODE == 50  # windows per mode before a new mode is drawn


@pytest.mark.parametrize("min_iou", [0.5, 0.7])
def test_random_crop_window_has_the_minimum_iou_with_every_box(monkeypatch, min_iou):
    """With the constrained mode alone, every crop window has IoU >= min_iou with every ground-truth box."""
    monkeypatch.setattr(T, "CROP_MODES", (min_iou,))
    image = coordinate_image(120, 200)
    boxes = np.array([[10, 10, 190, 110], [40, 20, 170, 100]], dtype=np.float32)  # 75 % and 43 % of the image
    cropped_seeds = 0
    for seed in range(30):
        cropped, _, _ = T.random_crop(image, boxes, np.array([0, 1]), np.random.default_rng(seed))
        h, w = cropped.shape[:2]
        if (h, w) == image.shape[:2]:
            continue
        cropped_seeds += 1
        left, top = int(cropped[0, 0, 0]), int(cropped[0, 0, 1])
        for x1, y1, x2, y2 in boxes.tolist():
            inter = max(min(x2, left + w) - max(x1, left), 0) * max(min(y2, top + h) - max(y1, top), 0)
            iou = inter / ((x2 - x1) * (y2 - y1) + w * h - inter)
            assert iou >= min_iou, (seed, (left, top, w, h), iou)
    assert cropped_seeds >= 20  # the constraint is met often enough that the check is not vacuous


def fixed_windows(*windows):
    """A stand-in for ``sample_crop_windows`` that proposes these x1y1x2y2 windows, in this order, at every draw."""
    def sample(height, width, count, rng):
        return np.array(windows, dtype=np.int64)
    return sample


def test_a_crop_window_at_exactly_the_minimum_iou_is_taken_and_the_first_acceptable_one_wins(monkeypatch):
    """Facts §5: a window is acceptable when min IoU(GT, window) >= the mode's minimum. Box [0, 0, 40, 50] (2000 px)
    in a 100 x 100 image; windows in order: [0, 0, 41, 100] (IoU 2000 / 4100 = 0.488, rejected), [0, 0, 40, 100]
    (IoU 2000 / 4000 = 0.5 exactly, the first acceptable), [0, 0, 40, 50] (IoU 1, acceptable but later)."""
    monkeypatch.setattr(T, "CROP_MODES", (0.5,))
    monkeypatch.setattr(T, "sample_crop_windows", fixed_windows([0, 0, 41, 100], [0, 0, 40, 100], [0, 0, 40, 50]))
    image = coordinate_image(100, 100)
    cropped, kept, labels = T.random_crop(image, np.array([[0, 0, 40, 50]], np.float32), np.array([4]),
                                          np.random.default_rng(0))
    np.testing.assert_array_equal(cropped, image[0:100, 0:40])
    np.testing.assert_array_equal(kept, [[0, 0, 40, 50]])
    assert labels.tolist() == [4]


def test_a_crop_keeps_the_boxes_whose_centre_is_strictly_inside_the_window(monkeypatch):
    """Facts §5: boxes whose centre lies strictly inside the crop are kept and clipped. Window [10, 20, 50, 80] of a
    100 x 120 image, no IoU constraint: the boxes centred on its left, right, top and bottom edges are dropped, the two
    centred half a pixel inside are kept, clipped to the window and shifted by its corner."""
    monkeypatch.setattr(T, "CROP_MODES", (-np.inf,))
    monkeypatch.setattr(T, "sample_crop_windows", fixed_windows([10, 20, 50, 80]))
    image = coordinate_image(100, 120)
    boxes = np.array([
        [0, 30, 20, 40],   # centre (10, 35): on the left edge
        [10, 30, 29, 40],  # centre (19.5, 35): inside
        [30, 30, 70, 40],  # centre (50, 35): on the right edge
        [20, 10, 30, 30],  # centre (25, 20): on the top edge
        [20, 70, 30, 90],  # centre (25, 80): on the bottom edge
        [0, 50, 21, 90],   # centre (10.5, 70): inside, reaching past the left and bottom edges
    ], np.float32)
    cropped, kept, labels = T.random_crop(image, boxes, np.arange(6), np.random.default_rng(0))
    np.testing.assert_array_equal(cropped, image[20:80, 10:50])
    np.testing.assert_array_equal(kept, [[0, 10, 19, 20], [0, 30, 11, 60]])
    assert labels.tolist() == [1, 5]


def test_crop_modes_are_drawn_uniformly(monkeypatch):
    """Facts §5: the mode is drawn uniformly from the seven. Every window proposed is acceptable here, so each call
    draws one mode: 700 calls give each about 100 (65..135 is about +-3.7 std)."""
    drawn = []

    class RecordingModes(tuple):
        def __getitem__(self, index):
            drawn.append(int(index))
            return super().__getitem__(index)

    monkeypatch.setattr(T, "CROP_MODES", RecordingModes(T.CROP_MODES))
    monkeypatch.setattr(T, "sample_crop_windows", fixed_windows([0, 0, 99, 60]))
    image, boxes = coordinate_image(60, 100), np.array([[1, 1, 99, 59]], np.float32)  # IoU 0.96 with the window
    for seed in range(700):
        T.random_crop(image, boxes, np.array([0]), np.random.default_rng(seed))
    counts = np.bincount(drawn, minlength=7)
    assert len(drawn) == 700 and len(counts) == 7 and counts.min() >= 65 and counts.max() <= 135, counts


def test_random_crop_of_empty_target_keeps_it_empty():
    for seed in range(10):
        cropped, kept, labels = T.random_crop(
            coordinate_image(50, 50), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.random.default_rng(seed)
        )
        assert kept.shape == (0, 4) and labels.shape == (0,) and cropped.size > 0


def test_a_crop_of_a_tiny_image_without_boxes_is_never_empty():
    """A 3 x 3 image draws windows of side int(0.21..1 x 3), 0 included: a window of side 0 is never taken (the crop
    would be an empty image, which no resize takes)."""
    for seed in range(40):
        cropped = T.random_crop(coordinate_image(3, 3), np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                np.random.default_rng(seed))[0]
        assert min(cropped.shape[:2]) >= 1, seed


def test_random_crop_is_bounded_when_no_window_fits():
    """A 1x1 image has no crop window of side >= 1: the authors loop forever, this returns the image."""
    image = np.full((1, 1, 3), 7, np.uint8)
    boxes = np.array([[0, 0, 1, 1]], np.float32)
    for seed in range(5):
        out, kept, _ = T.random_crop(image, boxes, np.array([0]), np.random.default_rng(seed))
        assert out is image and kept is boxes


def reference_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The authors' float arithmetic, written plainly, with the same draw order as photometric_distort."""
    image = image.copy()

    def convert(channels, alpha=1.0, beta=0.0):
        values = channels.astype(float) * alpha + beta
        values[values < 0] = 0
        values[values > 255] = 255
        channels[:] = values

    if rng.random() < 0.5:
        convert(image, beta=rng.uniform(-32, 32))
    if rng.random() < 0.5:
        convert(image, alpha=rng.uniform(0.5, 1.5))
    image = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    if rng.random() < 0.5:
        image[:, :, 0] = (image[:, :, 0].astype(int) + rng.integers(-18, 19)) % 180
    if rng.random() < 0.5:
        convert(image[:, :, 1], alpha=rng.uniform(0.5, 1.5))
    return cv2.cvtColor(image, cv2.COLOR_HSV2BGR)


@pytest.mark.parametrize("seed", range(12))
def test_photometric_distort_matches_float_reference(seed):
    image = np.random.default_rng(100 + seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = T.photometric_distort(image, np.random.default_rng(seed))
    np.testing.assert_array_equal(out, reference_distort(image, np.random.default_rng(seed)))
    assert out.shape == image.shape and out.dtype == np.uint8


def test_resize_is_square():
    assert T.resize(np.zeros((30, 50, 3), np.uint8), 64, cv2.INTER_AREA).shape == (64, 64, 3)


@pytest.mark.parametrize("seed", range(40))
def test_train_transform_boxes_cover_the_object(seed):
    """A white box on black: after the whole pipeline the object's pixels are inside its target box and bright gray;
    the pixels beyond it are dark background or the (non-gray) mean fill."""
    size = 128
    image = gray_object_image(150, 200, (20, 40, 100, 110))
    boxes = np.array([[20, 40, 100, 110]], np.float32)
    out, target = T.TrainTransform(size)(image, boxes, np.array([3]), np.random.default_rng(seed))
    assert_target_box_covers_the_object(out, target, size)


def assert_target_box_covers_the_object(out: np.ndarray, target: np.ndarray, size: int) -> None:
    """``out [3, S, S]`` shows one white object on black, ``target [1, 5]`` its box of label 3: the pixels inside
    the box are bright gray, those beyond it dark background or the (non-gray) mean fill."""
    assert out.shape == (3, size, size) and out.dtype == np.float32 and target.shape == (1, 5)
    assert target[0, 4] == 3
    pixels = out.transpose(1, 2, 0) + np.array(T.PIXEL_MEAN_BGR, np.float32)
    bright_gray = (pixels.min(axis=2) >= 90) & (pixels.max(axis=2) - pixels.min(axis=2) <= 2)
    x1, y1, x2, y2 = target[0, :4] * size
    margin = 2
    inner = bright_gray[int(np.ceil(y1)) + margin : int(y2) - margin, int(np.ceil(x1)) + margin : int(x2) - margin]
    assert inner.size > 0 and inner.all()
    outer = np.ones((size, size), bool)
    outer[max(int(y1) - margin, 0) : int(np.ceil(y2)) + margin,
          max(int(x1) - margin, 0) : int(np.ceil(x2)) + margin] = False
    assert not bright_gray[outer].any()


def test_a_training_image_far_larger_than_the_input_is_shrunk_first_with_its_boxes(monkeypatch):
    """The zoom-out canvas of a large photo is up to 16x its area (7.9 GB for 10000 x 10000): an image longer than
    max(TRAIN_MAX_SIDE, 4 x size) is first scaled down to that side; its boxes still cover the object."""
    monkeypatch.setattr(T, "TRAIN_MAX_SIDE", 64)
    size = 64  # images are shrunk to a longer side of 256
    image = gray_object_image(900, 1200, (150, 300, 750, 825))
    boxes = np.array([[150, 300, 750, 825]], np.float32)
    assert [a.shape for a in T.shrink(image, boxes, 256)] == [(192, 256, 3), (1, 4)]
    np.testing.assert_allclose(T.shrink(image, boxes, 256)[1], [[32, 64, 160, 176]])
    assert T.shrink(image, boxes, 1200)[0] is image
    tracemalloc.start()
    try:
        peak = 0
        for seed in range(12):
            tracemalloc.reset_peak()
            out, target = T.TrainTransform(size)(image, boxes, np.array([3]), np.random.default_rng(seed))
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            assert_target_box_covers_the_object(out, target, size)
    finally:
        tracemalloc.stop()
    assert peak < 5e6  # the 3.2 MB image zoomed out at full size: up to 52 MB


@pytest.mark.parametrize("size, max_side", [(64, 2048), (512, 2048), (640, 2560), (1024, 4096)])
def test_the_training_images_longest_side_is_2048_or_4_times_the_input_size(monkeypatch, size, max_side):
    """The shrink bound is max(TRAIN_MAX_SIDE, 4 x size): 2048 px up to a 512 input, 4 x size above it."""
    sides = []
    monkeypatch.setattr(T, "shrink", lambda image, boxes, side: sides.append(side) or (image, boxes))
    T.TrainTransform(size)(coordinate_image(20, 30), np.array([[2, 2, 20, 15]], np.float32), np.array([0]),
                           np.random.default_rng(0))
    assert sides == [max_side]


def test_a_shrunk_box_on_the_image_edge_stays_inside_the_image():
    """A 3000 x 43 image shrinks to 2048 x 29: its float32 factor 29/43 times 43 is 29.000002, one ulp past the
    bottom edge, which gave a target y2 of 1.0000001 (and -1e-7 after a flip) in 18 of 300 training samples."""
    image = np.zeros((43, 3000, 3), np.uint8)
    boxes = np.array([[0, 0, 3000, 43], [1000, 10, 2000, 43]], np.float32)
    shrunk, scaled = T.shrink(image, boxes, 2048)
    assert shrunk.shape == (29, 2048, 3)
    assert scaled[:, 3].max() <= 29 and scaled[:, 2].max() <= 2048
    np.testing.assert_allclose(scaled, [[0, 0, 2048, 29], [1000 * 2048 / 3000, 10 * 29 / 43, 4096 / 3, 29]], rtol=1e-6)
    transform = T.TrainTransform(64)
    for seed in range(40):
        target = transform(image, boxes, np.array([0, 1]), np.random.default_rng(seed))[1]
        assert 0 <= target[:, :4].min() and target[:, :4].max() <= 1, seed


def test_train_transform_falls_back_to_original_when_no_box_survives():
    """A 2-pixel box in a 400-pixel image is below the 0.01 minimum side after any augmentation."""
    image = coordinate_image(200, 250)
    boxes = np.array([[10, 10, 12, 12], [100, 100, 102, 101]], np.float32)
    out, target = T.TrainTransform(64)(image, boxes, np.array([0, 1]), np.random.default_rng(0))
    expected = [[10 / 250, 10 / 200, 12 / 250, 12 / 200, 0], [100 / 250, 100 / 200, 102 / 250, 101 / 200, 1]]
    np.testing.assert_allclose(target, expected, rtol=1e-6)
    undistorted = [T.normalize_image(T.resize(image, 64, method)) for method in T.RESIZE_INTERPOLATIONS]
    assert any(np.array_equal(out, candidate) for candidate in undistorted)


def test_an_image_with_one_box_too_small_to_survive_falls_back_to_it_too():
    """The fallback applies to any image that had boxes, a single one included: never an empty (background) target."""
    image = coordinate_image(200, 250)
    for seed in range(5):
        target = T.TrainTransform(64)(image, np.array([[10, 10, 12, 12]], np.float32), np.array([3]),
                                      np.random.default_rng(seed))[1]
        np.testing.assert_allclose(target, [[10 / 250, 10 / 200, 12 / 250, 12 / 200, 3]], rtol=1e-6)


def test_train_transform_passes_empty_targets():
    for seed in range(20):
        out, target = T.TrainTransform(64)(
            coordinate_image(60, 80), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.random.default_rng(seed)
        )
        assert out.shape == (3, 64, 64) and target.shape == (0, 5) and target.dtype == np.float32


def test_train_transform_is_deterministic_per_generator():
    image = coordinate_image(100, 120)
    boxes = np.array([[10, 10, 60, 80]], np.float32)
    a = T.TrainTransform(64)(image, boxes, np.array([0]), np.random.default_rng(5))
    b = T.TrainTransform(64)(image, boxes, np.array([0]), np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    other = T.TrainTransform(64)(image, boxes, np.array([0]), np.random.default_rng(6))
    assert not np.array_equal(a[0], other[0])  # the generator, not a fixed draw, decides


@pytest.mark.parametrize("probability, low, high", [(0.0, 0, 0), (T.EXPAND_PROBABILITY, 95, 145), (1.0, 200, 200)])
def test_expand_probability_sets_how_often_the_image_zooms_out(monkeypatch, probability, low, high):
    calls = []

    def counting_expand(image, boxes, rng):
        calls.append(1)
        return image, boxes

    monkeypatch.setattr(T, "expand", counting_expand)
    transform = T.TrainTransform(64, expand_probability=probability)
    image, boxes = coordinate_image(100, 120), np.array([[10, 10, 60, 80]], np.float32)
    for seed in range(200):
        transform(image, boxes, np.array([0]), np.random.default_rng(seed))
    assert low <= len(calls) <= high  # the paper's 0.6: 120 expected of 200, 95..145 is about +-3.6 std


def test_boxes_with_a_normalised_side_of_at_most_0_01_are_dropped(monkeypatch):
    """Facts §5 step 6, with crop, expand and mirror switched off: on a 1000 x 200 image, a box 10 px wide (0.01)
    is dropped, 15 px (0.015) kept; 2 px high (0.01) dropped, 3 px (0.015) kept."""
    monkeypatch.setattr(T, "random_crop", lambda image, boxes, labels, rng: (image, boxes, labels))
    monkeypatch.setattr(T, "mirror", lambda image, boxes: (image, boxes))
    image = np.zeros((200, 1000, 3), np.uint8)
    boxes = np.array([[0, 0, 10, 100], [0, 0, 15, 100], [0, 0, 500, 2], [0, 0, 500, 3]], np.float32)
    _, target = T.TrainTransform(32, expand_probability=0.0)(image, boxes, np.arange(4), np.random.default_rng(0))
    np.testing.assert_array_equal(target[:, 4], [1, 3])
    np.testing.assert_allclose(target[:, :4], [[0, 0, 0.015, 0.5], [0, 0, 0.5, 0.015]], rtol=1e-6)


def test_mirror_happens_half_of_the_time(monkeypatch):
    calls = []

    def counting_mirror(image, boxes):
        calls.append(1)
        return image, boxes

    monkeypatch.setattr(T, "mirror", counting_mirror)
    image, boxes = coordinate_image(100, 120), np.array([[10, 10, 60, 80]], np.float32)
    for seed in range(200):
        T.TrainTransform(64)(image, boxes, np.array([0]), np.random.default_rng(seed))
    assert 70 <= len(calls) <= 130  # p = 0.5: 100 expected of 200, 70..130 is about +-4.2 std


def test_expand_probability_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="expand_probability=1.5 must be in"):
        T.TrainTransform(64, expand_probability=1.5)


def test_test_transform_is_linear_resize_and_normalised_boxes():
    image = coordinate_image(50, 100)
    out, target = T.TestTransform(32)(image, np.array([[10, 5, 60, 45]], np.float32), np.array([2]))
    expected = cv2.resize(image, (32, 32), interpolation=cv2.INTER_LINEAR).astype(np.float32) - [104, 117, 123]
    np.testing.assert_array_equal(out, expected.transpose(2, 0, 1))
    np.testing.assert_allclose(target, [[0.1, 0.1, 0.6, 0.9, 2]])


def test_train_transform_runs_the_authors_steps_in_their_order(monkeypatch):
    """Facts §5 (and §11.14, kept on purpose): crop -> distort -> expand -> mirror -> resize, crop before expand (the
    reverse of SSD's order); the resize draws its interpolation uniformly among the authors' five, in their order."""
    assert T.RESIZE_INTERPOLATIONS == (
        cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)
    calls: list[str] = []
    interpolations: list[int] = []

    def recording(name, step):
        def wrapped(*args, **kwargs):
            calls.append(name)
            if name == "resize":
                interpolations.append(args[2])
            return step(*args, **kwargs)
        return wrapped

    for name in ("random_crop", "photometric_distort", "expand", "mirror", "resize"):
        monkeypatch.setattr(T, name, recording(name, getattr(T, name)))
    transform = T.TrainTransform(64, expand_probability=1.0)
    image, boxes = coordinate_image(100, 120), np.array([[10, 10, 90, 80]], np.float32)
    sequences = set()
    for seed in range(60):
        calls.clear()
        transform(image, boxes, np.array([0]), np.random.default_rng(seed))
        sequences.add(tuple(calls))
    steps = ("random_crop", "photometric_distort", "expand")
    assert sequences == {(*steps, "mirror", "resize"), (*steps, "resize")}
    counts = np.bincount([T.RESIZE_INTERPOLATIONS.index(i) for i in interpolations], minlength=5)
    assert len(interpolations) == 60 and counts.min() >= 4  # 12 expected per method


def test_the_minimum_side_rule_uses_the_authors_float64_arithmetic(monkeypatch):
    """Facts §5 step 6: the authors divide float64 pixel boxes by W and H, then keep ``x2/W - x1/W > 0.01``. A box
    exactly 1 % of the image wide is kept or dropped by that rounding: on a 500 px image the 5 px boxes at x1 = 3 and
    21 give 0.009999999999999995..0.01 (dropped), at x1 = 9 and 15 0.010000000000000002 (kept); float32 arithmetic
    decided 3 and 21 kept, 15 dropped."""
    monkeypatch.setattr(T, "random_crop", lambda image, boxes, labels, rng: (image, boxes, labels))
    monkeypatch.setattr(T, "mirror", lambda image, boxes: (image, boxes))
    image = np.zeros((500, 500, 3), np.uint8)
    boxes = np.array([[x1, 100, x1 + 5, 300] for x1 in (3, 9, 15, 21)], np.float32)
    _, target = T.TrainTransform(32, expand_probability=0.0)(image, boxes, np.arange(4), np.random.default_rng(0))
    np.testing.assert_array_equal(target[:, 4], [1, 2])
    assert target.dtype == np.float32
    np.testing.assert_array_equal(target[:, :4], np.float32([[9 / 500, 0.2, 14 / 500, 0.6], [0.03, 0.2, 0.04, 0.6]]))


class ScriptedDraws:
    """Stands in for ``numpy.random.Generator`` in :class:`T.TrainTransform` once crop and distortion are switched off:
    ``random()`` returns the scripted uniforms in turn, ``integers(n)`` 0 (the first resize interpolation)."""

    def __init__(self, uniforms: list[float]) -> None:
        self.uniforms = list(uniforms)

    def random(self) -> float:
        return self.uniforms.pop(0)

    def integers(self, high: int) -> int:
        return 0


@pytest.mark.parametrize("expand_draw, mirror_draw, expected", [
    (0.599, 0.499, ["expand", "mirror"]), (0.601, 0.499, ["mirror"]), (0.599, 0.501, ["expand"]), (0.601, 0.501, []),
])
def test_zoom_out_has_probability_0_6_and_the_mirror_0_5(monkeypatch, expand_draw, mirror_draw, expected):
    """Facts §5 steps 3 and 4, exactly: the zoom-out runs when its uniform draw is below 0.6 (the default
    ``expand_probability``), the mirror when its draw is below 0.5; crop and distortion take no draw here."""
    assert T.EXPAND_PROBABILITY == 0.6
    steps: list[str] = []
    monkeypatch.setattr(T, "random_crop", lambda image, boxes, labels, rng: (image, boxes, labels))
    monkeypatch.setattr(T, "photometric_distort", lambda image, rng: image)
    monkeypatch.setattr(T, "expand", lambda image, boxes, rng: (steps.append("expand"), (image, boxes))[1])
    monkeypatch.setattr(T, "mirror", lambda image, boxes: (steps.append("mirror"), (image, boxes))[1])
    draws = ScriptedDraws([expand_draw, mirror_draw])
    T.TrainTransform(32)(coordinate_image(40, 50), np.array([[5, 5, 30, 30]], np.float32), np.array([0]), draws)
    assert steps == expected and draws.uniforms == []


@pytest.mark.parametrize("shape, dtype, fix", [
    ((20, 30), np.uint8, "cv2.COLOR_GRAY2BGR"), ((20, 30, 1), np.uint8, "cv2.COLOR_GRAY2BGR"),
    ((20, 30, 4), np.uint8, "cv2.COLOR_BGRA2BGR"), ((20, 30, 3), np.uint16, "(image >> 8).astype(np.uint8)"),
    ((20, 30, 3), np.float32, "uint8 0..255"),
])
def test_an_image_that_is_not_uint8_bgr_is_refused_with_the_conversion(shape, dtype, fix):
    """A grayscale, BGRA or 16-bit array (``cv2.imread(path, cv2.IMREAD_UNCHANGED)``; the loaders' ``read_image``
    always gives uint8 BGR) failed with numpy's "axes don't match array", a broadcast error or an OpenCV assertion, or
    was trained on as BGRA through the distortion's colour conversion."""
    image = np.zeros(shape, dtype)
    boxes, labels = np.array([[2, 2, 12, 12]], np.float32), np.array([0])
    calls = {
        "normalize_image": lambda: T.normalize_image(image),
        "TestTransform": lambda: T.TestTransform(16)(image, boxes, labels),
        "TrainTransform": lambda: T.TrainTransform(16)(image, boxes, labels, np.random.default_rng(0)),
    }
    for where, call in calls.items():
        with pytest.raises(ValueError, match=rf"^{where}: .*{re.escape(str(shape))}.*{re.escape(fix)}"):
            call()


def test_both_transforms_clip_boxes_to_the_image_and_drop_those_left_without_extent():
    """Called directly (the loaders pass boxes already clipped), the transforms read boxes partly outside the image
    as the loaders do (data.dataset.clip_to_image): clipped to [0, W] x [0, H], those wholly outside dropped; a
    TestTransform target read 1.05 and -0.05 and a TrainTransform target kept label 1, out of the image."""
    image = coordinate_image(100, 200)
    boxes = np.array([[-10, 20, 50, 120], [250, 10, 300, 50], [10, 10, 60, 60], [180, 30, 210, 80]], np.float32)
    labels = np.array([0, 1, 2, 3])
    _, target = T.TestTransform(32)(image, boxes, labels)
    np.testing.assert_allclose(target, [[0, 0.2, 0.25, 1, 0], [0.05, 0.1, 0.3, 0.6, 2], [0.9, 0.3, 1, 0.8, 3]])
    transform = T.TrainTransform(32)
    for seed in range(30):
        target = transform(image, boxes, labels, np.random.default_rng(seed))[1]
        assert 0 <= target[:, :4].min() and target[:, :4].max() <= 1 and 1 not in target[:, 4], seed


def test_a_box_under_the_minimum_side_is_trained_on_only_when_a_crop_enlarges_it():
    """The README's figures behind the loaders' rarely-trained warning: beside a large box in a 100 x 100 image, a
    0.8 px box (0.8 %) is in about 8 % of the samples (15 of 200 here), a 0.5 px one in under 2 % (3), a 1.5 px one
    (above the rule) in half of them (101)."""
    image, transform = np.zeros((100, 100, 3), np.uint8), T.TrainTransform(32)
    kept = {}
    for side in (0.5, 0.8, 1.5):
        boxes = np.array([[10, 10, 90, 90], [50, 50, 50 + side, 50 + side]], np.float32)
        kept[side] = sum(1 in transform(image, boxes, np.array([0, 1]), np.random.default_rng(seed))[1][:, 4]
                         for seed in range(200))
    assert kept == {0.5: 3, 0.8: 15, 1.5: 101}
