"""Drawing detections: per-class colours, readable captions, the input left untouched."""
import numpy as np

from utils.draw import class_colours, draw_detections, text_colour, undrawable_names


def test_class_colours_are_distinct_and_fixed():
    colours = class_colours(20)
    assert len(set(colours)) == 20
    assert colours[0] == (36, 36, 242)  # hue 0 (red), saturation 0.85, value 0.95, in BGR
    assert class_colours(3) == colours[:3]  # a class keeps its colour whatever the number of classes
    neighbours = np.abs(np.diff(np.array(colours, dtype=int), axis=0)).sum(axis=1)
    assert neighbours.min() > 100  # consecutive labels never get near-identical colours


def test_text_colour_contrasts_with_background():
    assert text_colour((255, 255, 255)) == (0, 0, 0)
    assert text_colour((0, 0, 0)) == (255, 255, 255)
    assert text_colour((0, 255, 255)) == (0, 0, 0)  # yellow: luma 226
    assert text_colour((255, 0, 0)) == (255, 255, 255)  # blue: luma 29


def test_draw_detections_draws_box_and_caption_in_class_colour():
    image = np.zeros((200, 300, 3), np.uint8)
    boxes = np.array([[50.0, 80.0, 150.0, 180.0], [10.0, 0.0, 40.0, 30.0]], np.float32)
    drawn = draw_detections(image, boxes, np.array([0.9, 0.6]), np.array([1, 0]), ["cat", "dog"])
    assert not image.any()  # input untouched
    dog = class_colours(2)[1]
    # the box covers pixels 50..149 x 80..179: its 1 px lines (at 500 px) are on its first and last pixels
    assert tuple(drawn[130, 50]) == dog and tuple(drawn[130, 149]) == dog and tuple(drawn[179, 100]) == dog
    assert tuple(drawn[130, 150]) == tuple(drawn[180, 100]) == (0, 0, 0)  # nothing outside the box
    assert tuple(drawn[130, 100]) == (0, 0, 0)  # the inside stays clear
    # the caption "cat 0.90" sits on a filled band just above the box, starting at its left edge; the band ends at
    # column 99 with OpenCV 5 and 110 with OpenCV 4 (4.8, 4.10, 4.14; requirements.txt admits both), whose font is wider
    rows, cols = np.nonzero((drawn[:80] == dog).all(axis=2))
    assert (rows.max(), cols.min()) == (79, 50) and 60 < rows.min() < 75 and 80 < cols.max() < 120
    band = drawn[rows.min():80, 50:cols.max()]
    assert (band.min(axis=2) > 150).sum() > 20  # white (anti-aliased) text: the band (blue, luma 95) is dark
    # the second box touches the top border: its caption goes inside the box, from row 0, not off the image
    rows, cols = np.nonzero((drawn == class_colours(2)[0]).all(axis=2))
    assert (rows.min(), rows.max(), cols.min()) == (0, 29, 10) and cols.max() > 40  # caption wider than the box


def test_draw_detections_without_detections_returns_a_copy():
    image = np.full((20, 30, 3), 7, np.uint8)
    drawn = draw_detections(image, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), ["a"])
    assert drawn is not image and (drawn == image).all()


def test_undrawable_names_are_those_beyond_printable_ascii():
    names = ["cat", "traffic light", "a-b_c (1)~", "café", "狗", "tab\there", "Straße"]
    assert undrawable_names(names) == ["café", "狗", "tab\there", "Straße"]
