"""Draw detections on an image: a box, the class name and the score, in one distinct colour per class."""
from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

GOLDEN_RATIO_CONJUGATE = 0.6180339887498949
FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colours(num_classes: int) -> list[tuple[int, int, int]]:
    """``num_classes`` BGR colours: hues spaced by the golden ratio (neighbouring labels far apart on the colour
    wheel), saturation 0.85 and value 0.95 so that every colour stands out on both dark and light images."""
    colours = []
    for label in range(num_classes):
        red, green, blue = colorsys.hsv_to_rgb((label * GOLDEN_RATIO_CONJUGATE) % 1.0, 0.85, 0.95)
        colours.append((round(blue * 255), round(green * 255), round(red * 255)))
    return colours


def text_colour(background_bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (ITU-R BT.601 luma threshold 150 of 255)."""
    blue, green, red = background_bgr
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)


def undrawable_names(class_names: Sequence[str]) -> list[str]:
    """The class names holding a character OpenCV's Hershey font cannot draw (anything but printable ASCII, e.g.
    "café", "狗"): :func:`draw_detections` captions show "?" in its place."""
    return [name for name in class_names if not all(" " <= char <= "~" for char in name)]


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    colours: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """A copy of ``image`` with every detection drawn; the highest scores are drawn last (on top).

    Args:
        image: uint8 BGR ``[H, W, 3]``; not modified.
        boxes: ``[n, 4]`` x1y1x2y2 in 0-based continuous pixels of ``image``.
        scores: ``[n]`` in [0, 1]; labels: ``[n]`` int 0..C-1 indexing ``class_names``.
        colours: BGR colour per class; default :func:`class_colours`.

    Line width ``round((H + W) / 500)`` px (at least 1) and font scale ``max(0.4, (H + W) / 2000)`` follow the
    image size.
    """
    canvas = image.copy()
    height, width = canvas.shape[:2]
    colours = colours or class_colours(len(class_names))
    thickness = max(1, round((height + width) / 500))
    font_scale = max(0.4, (height + width) / 2000)
    for index in np.argsort(scores, kind="stable"):
        label = int(labels[index])
        colour = colours[label]
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[index])
        x2, y2 = max(x2 - 1, x1), max(y2 - 1, y1)  # continuous [x1, x2) ends on pixel x2 - 1; cv2 draws pt2 inclusive
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)  # axis-aligned: crisp without anti-aliasing
        caption = f"{class_names[label]} {float(scores[index]):.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(caption, FONT, font_scale, max(1, thickness - 1))
        # caption above the box when it fits, else inside its top edge; kept inside the image horizontally
        top = y1 - text_h - baseline - thickness if y1 - text_h - baseline - thickness >= 0 else y1
        left = min(max(x1, 0), max(width - text_w - 2 * thickness, 0))
        cv2.rectangle(canvas, (left, top), (left + text_w + 2 * thickness, top + text_h + baseline + thickness), colour,
                      cv2.FILLED)
        cv2.putText(canvas, caption, (left + thickness, top + text_h + thickness // 2), FONT, font_scale,
                    text_colour(colour), max(1, thickness - 1), cv2.LINE_AA)
    return canvas
