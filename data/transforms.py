"""Training augmentation and test transform of the paper (facts §5), one small step per function.

Conventions used by every step:
- ``image``: uint8 BGR ``[H, W, 3]`` (OpenCV order), never modified in place;
- ``boxes``: float32 ``[n, 4]`` x1y1x2y2 in pixels of the image passed alongside; ``n`` may be 0;
- ``labels``: int64 ``[n]`` foreground class indices 0..C-1;
- ``rng``: an explicit ``numpy.random.Generator``, so every step is deterministic under test.

The model input convention (BGR minus ``PIXEL_MEAN_BGR``, no scaling, CHW) lives only in
:func:`normalize_image`.
"""
from __future__ import annotations

import cv2
import numpy as np

from data.dataset import clip_to_image

PIXEL_MEAN_BGR = (104, 117, 123)

# Crop modes of the authors' _crop: None = keep the image, otherwise the minimum IoU every GT box must
# have with the crop window (-inf = no constraint).
CROP_MODES = (None, 0.1, 0.3, 0.5, 0.7, 0.9, -np.inf)
CROP_TRIES_PER_MODE = 50
CROP_MAX_MODES = 20
EXPAND_PROBABILITY = 0.6
EXPAND_MAX_SCALE = 4.0
EXPAND_TRIES = 50
MIN_BOX_SIDE = 0.01
# a training image whose longer side exceeds max(TRAIN_MAX_SIDE, TRAIN_MAX_SIDE_PER_SIZE x size) is first shrunk to it:
# the zoom-out canvas of a 10000 x 10000 photo (up to 16x its area) took 7.9 GB and 13 s per sample; no VOC or COCO
# image (at most 640 px) is touched
TRAIN_MAX_SIDE = 2048
TRAIN_MAX_SIDE_PER_SIZE = 4
RESIZE_INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)

_MEAN_BGR_F32 = np.array(PIXEL_MEAN_BGR, dtype=np.float32)  # [3]


def check_bgr_image(image: np.ndarray, where: str) -> None:
    """ValueError naming ``where`` and the conversion when ``image`` is not uint8 BGR ``[H, W, 3]`` (a grayscale, BGRA
    or 16-bit array, as ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` gives; ``read_image`` always gives uint8 BGR)."""
    shape = tuple(image.shape)
    if len(shape) == 3 and shape[2] == 3 and image.dtype == np.uint8:
        return
    channels = 1 if len(shape) == 2 else shape[2] if len(shape) == 3 else None
    if channels in (1, 4):
        fix = f"convert it with cv2.cvtColor(image, cv2.COLOR_{'GRAY' if channels == 1 else 'BGRA'}2BGR)"
    elif channels == 3:
        fix = "convert it to uint8 0..255 (a 16-bit image: (image >> 8).astype(np.uint8))"
    else:
        fix = "pass one image, [H, W, 3]"
    raise ValueError(f"{where}: image of shape {shape} {image.dtype}, expected uint8 BGR [H, W, 3]: {fix}; "
                     "cv2.imread(path) and data.dataset.read_image(path) read any image file as uint8 BGR")


def normalize_image(image: np.ndarray) -> np.ndarray:
    """uint8 BGR ``[H, W, 3]`` -> float32 ``[3, H, W]`` BGR minus ``PIXEL_MEAN_BGR`` (no /255, no std); other arrays
    are a ValueError naming the conversion (:func:`check_bgr_image`)."""
    check_bgr_image(image, "normalize_image")
    chw = np.empty((3, *image.shape[:2]), dtype=np.float32)
    np.subtract(image.transpose(2, 0, 1), _MEAN_BGR_F32[:, None, None], out=chw)
    return chw


def box_window_iou(boxes: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """IoU of boxes ``[n, 4]`` with windows ``[k, 4]`` (all x1y1x2y2, continuous pixels) -> ``[k, n]``."""
    top_left = np.maximum(boxes[None, :, :2], windows[:, None, :2])
    bottom_right = np.minimum(boxes[None, :, 2:], windows[:, None, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_boxes = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    area_windows = np.prod(windows[:, 2:] - windows[:, :2], axis=1)
    return inter / (area_boxes[None, :] + area_windows[:, None] - inter)


def sample_crop_windows(height: int, width: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` candidate crop windows, int64 ``[count, 4]`` x1y1x2y2 pixels: scale ``s ~ U(0.3, 1)``, aspect
    ``r = sqrt(U(max(0.5, s^2), min(2, 1/s^2)))``, size ``int(s r W) x int(s/r H)``, top-left corner uniform in
    ``[0, W - w) x [0, H - h)`` (0 for a window as wide or high as the image). A window of side 0 (tiny images) has
    x2 == x1 or y2 == y1."""
    scale = rng.uniform(0.3, 1.0, count)
    ratio = np.sqrt(rng.uniform(np.maximum(0.5, scale * scale), np.minimum(2.0, 1.0 / (scale * scale))))
    crop_w = (scale * ratio * width).astype(np.int64)
    crop_h = (scale / ratio * height).astype(np.int64)
    # the authors' randrange(W - w): a window never ends flush with the right or bottom edge (unless it spans it)
    left = rng.integers(0, np.maximum(width - crop_w, 1))
    top = rng.integers(0, np.maximum(height - crop_h, 1))
    return np.stack([left, top, left + crop_w, top + crop_h], axis=1)


def random_crop(
    image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The authors' random crop, with a bound on the number of tries.

    A mode is drawn uniformly from ``CROP_MODES``. For a constrained mode, ``CROP_TRIES_PER_MODE`` windows are drawn
    (:func:`sample_crop_windows`) and the first acceptable one is used: every GT box has IoU >= the mode's minimum with
    it and at least one box centre lies strictly inside it. Those boxes are kept and clipped to the window; the others
    are dropped. When no window of a mode is acceptable a new mode is drawn; after ``CROP_MAX_MODES`` modes (the
    authors loop forever) the image is returned uncropped. An image with no boxes is cut to the first non-empty window
    of the constrained mode drawn (the no-crop mode leaves it whole, as any image).
    """
    height, width = image.shape[:2]
    for _ in range(CROP_MAX_MODES):
        min_iou = CROP_MODES[rng.integers(len(CROP_MODES))]
        if min_iou is None:
            return image, boxes, labels
        windows = sample_crop_windows(height, width, CROP_TRIES_PER_MODE, rng)
        acceptable = (windows[:, 2] > windows[:, 0]) & (windows[:, 3] > windows[:, 1])  # [k]
        if len(boxes):
            corners = windows.astype(np.float32)
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # [n, 2]
            inside = ((corners[:, None, :2] < centres) & (centres < corners[:, None, 2:])).all(axis=2)  # [k, n]
            acceptable &= (box_window_iou(boxes, corners).min(axis=1) >= min_iou) & inside.any(axis=1)
        if not acceptable.any():
            continue
        choice = int(np.argmax(acceptable))
        left, top, right, bottom = windows[choice].tolist()
        cropped = image[top:bottom, left:right]
        if len(boxes) == 0:
            return cropped, boxes, labels
        kept = boxes[inside[choice]].copy()
        kept[:, :2] = np.maximum(kept[:, :2], corners[choice, :2]) - corners[choice, :2]
        kept[:, 2:] = np.minimum(kept[:, 2:], corners[choice, 2:]) - corners[choice, :2]
        return cropped, kept, labels[inside[choice]]
    return image, boxes, labels


def _scale_shift_lut(alpha: float, beta: float) -> np.ndarray:
    """uint8 lookup table of ``clip(v * alpha + beta, 0, 255)`` truncated to an integer, as the authors' float path."""
    return np.clip(np.arange(256, dtype=np.float64) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The authors' _distort on uint8 BGR, in this fixed order, each step with probability 0.5:
    brightness ``+ U(-32, 32)``; contrast ``* U(0.5, 1.5)``; (to HSV, OpenCV H in [0, 180)) hue
    ``+ randint(-18, 18) mod 180``; saturation ``* U(0.5, 1.5)``; back to BGR. Values are clipped to [0, 255] after
    each step.
    Implemented with lookup tables (bit-identical to the float arithmetic, several times faster).
    """
    if rng.random() < 0.5:
        image = cv2.LUT(image, _scale_shift_lut(1.0, rng.uniform(-32, 32)))
    if rng.random() < 0.5:
        image = cv2.LUT(image, _scale_shift_lut(rng.uniform(0.5, 1.5), 0.0))
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    identity = np.arange(256, dtype=np.int64)
    hue_lut = identity.astype(np.uint8)
    if rng.random() < 0.5:
        hue_lut = ((identity + rng.integers(-18, 19)) % 180).astype(np.uint8)
    saturation_lut = identity.astype(np.uint8)
    if rng.random() < 0.5:
        saturation_lut = _scale_shift_lut(rng.uniform(0.5, 1.5), 0.0)
    lut = np.stack([hue_lut, saturation_lut, identity.astype(np.uint8)], axis=1).reshape(256, 1, 3)
    return cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2BGR)


def expand(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, fill: tuple[int, int, int] = PIXEL_MEAN_BGR
) -> tuple[np.ndarray, np.ndarray]:
    """Zoom out (always; the caller applies the 0.6 probability): place the image on a mean-filled canvas.

    Scale ``s ~ U(1, 4)``, aspect ``r = sqrt(U(max(0.5, 1/s^2), min(2, s^2)))``, canvas ``int(s r W) x int(s/r H)``;
    a draw with a side factor below 1 is retried, up to ``EXPAND_TRIES`` times, after which the image is unchanged.
    The image goes to a uniform random position; boxes shift with it.
    """
    height, width = image.shape[:2]
    for _ in range(EXPAND_TRIES):
        scale = rng.uniform(1.0, EXPAND_MAX_SCALE)
        ratio = np.sqrt(rng.uniform(max(0.5, 1.0 / (scale * scale)), min(2.0, scale * scale)))
        width_factor, height_factor = scale * ratio, scale / ratio
        if width_factor < 1 or height_factor < 1:
            continue
        canvas_w, canvas_h = int(width_factor * width), int(height_factor * height)
        left = int(rng.integers(canvas_w - width + 1))
        top = int(rng.integers(canvas_h - height + 1))
        canvas = cv2.copyMakeBorder(
            image, top, canvas_h - height - top, left, canvas_w - width - left, cv2.BORDER_CONSTANT, value=fill
        )
        return canvas, boxes + np.array([left, top, left, top], dtype=boxes.dtype)
    return image, boxes


def mirror(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip: ``x1' = W - x2``, ``x2' = W - x1`` (the caller applies the 0.5 probability)."""
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return cv2.flip(image, 1), flipped


def shrink(image: np.ndarray, boxes: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """An image whose longer side exceeds ``max_side`` scaled down to it (``INTER_AREA``, aspect ratio kept, each side
    rounded), its pixel boxes ``[n, 4]`` scaled with it and clipped to it (a float32 factor can put a box on the edge
    one ulp past it); other images are returned unchanged."""
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image, boxes
    scale = max_side / max(height, width)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA)
    factors = np.array([new_width / width, new_height / height] * 2, dtype=boxes.dtype)
    return image, np.minimum(boxes * factors, np.array([new_width, new_height] * 2, dtype=boxes.dtype))


def resize(image: np.ndarray, size: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resize to ``size x size`` ignoring the aspect ratio."""
    return cv2.resize(image, (size, size), interpolation=interpolation)


def normalized_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel boxes ``[n, 4]`` x1y1x2y2 -> float64 ``[n, 4]`` divided by the image W/H, in the authors' float64
    arithmetic (the ``MIN_BOX_SIDE`` rule on a box exactly 1 % of the image wide depends on its rounding)."""
    return boxes.astype(np.float64) / np.array([width, height, width, height], dtype=np.float64)


def normalized_target(boxes: np.ndarray, labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel boxes ``[n, 4]`` + labels ``[n]`` -> float32 ``[n, 5]`` (x1y1x2y2 divided by the image W/H, then label)."""
    target = np.empty((len(boxes), 5), dtype=np.float32)
    target[:, :4] = normalized_boxes(boxes, height, width)
    target[:, 4] = labels
    return target


def boxes_in_image(
    boxes: np.ndarray, labels: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel boxes ``[n, 4]`` and labels ``[n]`` as the loaders read them (:func:`data.dataset.clip_to_image`): boxes
    clipped to the ``height x width`` image, those left without extent (wholly outside it) dropped with their labels;
    the loaders' boxes, already so, come back unchanged, for a transform called directly."""
    clipped, keep = clip_to_image(boxes, height, width)
    return clipped[keep], labels[keep]


class TrainTransform:
    """The authors' ``preproc`` on boxes clipped to the image as the loaders clip them (:func:`boxes_in_image`; a
    box wholly outside it is dropped): crop -> distort -> expand (p 0.6, ``expand_probability``) -> mirror (p 0.5) ->
    resize with a random interpolation -> mean subtraction; boxes are normalised by the augmented image (in float64, as
    the authors) and those with ``min(w, h) <= MIN_BOX_SIDE`` are dropped. When an image had boxes and none survive,
    the sample falls back to the un-augmented image (resize with a random interpolation + mean) with all its original
    normalised boxes.
    An image whose longer side exceeds ``max(TRAIN_MAX_SIDE, TRAIN_MAX_SIDE_PER_SIZE * S)`` (2048 px up to S = 512;
    none of VOC's or COCO's) is first shrunk to that side (:func:`shrink`), which bounds the memory and time of the
    steps above (the authors' code augments it at full size).

    ``__call__(image, boxes, labels, rng) -> (image float32 [3, S, S], target float32 [n, 5])``; an image that is not
    uint8 BGR ``[H, W, 3]`` is a ValueError naming the conversion (:func:`check_bgr_image`).
    """

    # the minimum normalised side of a box kept in a sample (the loaders warn when many boxes are that small)
    min_box_side: float = MIN_BOX_SIDE

    def __init__(self, size: int, expand_probability: float = EXPAND_PROBABILITY) -> None:
        if not 0.0 <= expand_probability <= 1.0:
            raise ValueError(f"TrainTransform: expand_probability={expand_probability} must be in [0, 1]")
        self.size = size
        self.expand_probability = expand_probability

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        check_bgr_image(image, "TrainTransform")
        boxes, labels = boxes_in_image(boxes, labels, *image.shape[:2])
        image, boxes = shrink(image, boxes, max(TRAIN_MAX_SIDE, TRAIN_MAX_SIDE_PER_SIZE * self.size))
        original_image, original_boxes, original_labels = image, boxes, labels
        image, boxes, labels = random_crop(image, boxes, labels, rng)
        image = photometric_distort(image, rng)
        if rng.random() < self.expand_probability:
            image, boxes = expand(image, boxes, rng)
        if rng.random() < 0.5:
            image, boxes = mirror(image, boxes)
        height, width = image.shape[:2]
        normalized = normalized_boxes(boxes, height, width)  # [n, 4] float64
        sides = np.minimum(normalized[:, 2] - normalized[:, 0], normalized[:, 3] - normalized[:, 1])
        keep = sides > self.min_box_side
        target = normalized_target(boxes[keep], labels[keep], height, width)
        if len(target) == 0 and len(original_boxes) > 0:
            image = original_image
            height, width = image.shape[:2]
            target = normalized_target(original_boxes, original_labels, height, width)
        interpolation = RESIZE_INTERPOLATIONS[rng.integers(len(RESIZE_INTERPOLATIONS))]
        return normalize_image(resize(image, self.size, interpolation)), target


class TestTransform:
    """The authors' ``BaseTransform``: resize ``S x S`` (INTER_LINEAR), mean subtraction, boxes clipped to the image
    as the loaders clip them (:func:`boxes_in_image`; a box wholly outside it is dropped) and normalised by it.
    ``__call__(image, boxes, labels, rng=None) -> (image float32 [3, S, S], target float32 [n, 5])``; an image that is
    not uint8 BGR ``[H, W, 3]`` is a ValueError naming the conversion (:func:`check_bgr_image`).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        check_bgr_image(image, "TestTransform")
        height, width = image.shape[:2]
        boxes, labels = boxes_in_image(boxes, labels, height, width)
        return normalize_image(resize(image, self.size)), normalized_target(boxes, labels, height, width)
