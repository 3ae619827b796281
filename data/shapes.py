"""The built-in synthetic ``shapes`` detection dataset, written in the PASCAL VOC layout.

Six classes of filled shapes (``SHAPES_CLASSES``) are drawn on textured, cluttered, noisy backgrounds.
Each class comes in two of six colours and each colour is shared by two classes, so colour narrows a
class down to two candidates and the shape decides. Objects range from 8 px to 90 % of the image side,
overlap one another, may be cut by the image border, and distractors (elongated ellipses, polylines,
outlines, rectangles, text) that are not objects clutter the background. Each split holds about 1 %
images with no object and about 1 % "crowded" images with at least 50 objects, and at least one of each.

Everything is drawn from ``numpy.random.Generator(PCG64(SeedSequence([seed, split, index])))``, one
generator per image, so an image depends only on the seed, its split and its index, never on the
order or the number of processes that render it. ``docs/shapes.md`` gives the rules and statistics.

Layout written under ``root`` (the same as one year of VOCdevkit, so the VOC loader and the VOC evaluator
read it unchanged)::

    JPEGImages/<id>.jpg         BGR JPEG, 256..384 px per side
    Annotations/<id>.xml        VOC XML: <size>, <object><name>/<truncated>/<difficult>/<bndbox>
    ImageSets/Main/trainval.txt one image id per line
    ImageSets/Main/test.txt
    shapes_manifest.json        generator version, seed, counts (written last)

Boxes in the XML are VOC boxes: 1-based inclusive integer pixel indices, i.e. a box whose leftmost visible
pixel is column 0 and rightmost column 9 is written ``xmin=1, xmax=10``.
"""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data.dataset import dead_link
from data.errors import DataError, DatasetNotFoundError
from utils.files import naming_file, write_text
from utils.progress import progress_bar

__all__ = [
    "SHAPES_CLASSES",
    "DEFAULT_NUM_TRAINVAL",
    "DEFAULT_NUM_TEST",
    "MANIFEST_NAME",
    "ShapeObject",
    "ShapesSample",
    "shape_mask",
    "render_sample",
    "voc_annotation_xml",
    "split_layouts",
    "generate_shapes_dataset",
    "ensure_shapes_dataset",
    "generated_set_arguments",
    "set_arguments_for",
]

GENERATOR_VERSION = 1
SHAPES_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
DEFAULT_NUM_TRAINVAL = 2000
DEFAULT_NUM_TEST = 500
MANIFEST_NAME = "shapes_manifest.json"
SPLITS = ("trainval", "test")

# Object colours in BGR. Each class uses two of them and each colour serves two classes (a cycle).
COLOURS_BGR: dict[str, tuple[int, int, int]] = {
    "red": (40, 40, 215),
    "blue": (215, 90, 35),
    "yellow": (40, 210, 230),
    "green": (60, 185, 40),
    "magenta": (200, 50, 200),
    "cyan": (215, 200, 40),
}
CLASS_COLOURS: dict[str, tuple[str, str]] = {
    "circle": ("red", "blue"),
    "square": ("blue", "yellow"),
    "triangle": ("yellow", "green"),
    "star": ("green", "magenta"),
    "cross": ("magenta", "cyan"),
    "ring": ("cyan", "red"),
}

# Object geometry and placement.
MIN_OBJECT_SIZE = 8.0  # px, side of the unrotated shape box (geometric mean of width and height)
MAX_OBJECT_FRACTION = 0.9  # largest object side as a fraction of the shorter image side
MAX_ASPECT = 1.67  # width / height of the unrotated shape lies in [1 / MAX_ASPECT, MAX_ASPECT]
MIN_IN_IMAGE_FRACTION = 0.5  # truncation limit: at least this share of a new shape lies inside the image
MIN_VISIBLE_FRACTION = 0.35  # occlusion limit: no object keeps less than this share of its pixels
PLACEMENT_TRIES = 20

# `difficult` rule (VOC evaluation ignores these objects).
DIFFICULT_MIN_SIDE = 10  # px: a visible box with a shorter side below this is difficult
DIFFICULT_VISIBLE_FRACTION = 0.5  # an object with less than half of its pixels visible is difficult


@dataclass(frozen=True)
class ShapeObject:
    """One annotated object.

    ``box`` is ``(x1, y1, x2, y2)``: 0-based inclusive pixel indices of the object's visible pixels
    (the XML holds these plus 1). ``visible_fraction`` = visible pixels / pixels of the whole shape,
    counting pixels outside the image and pixels covered by later objects or lines as hidden.
    """

    name: str
    box: tuple[int, int, int, int]
    difficult: bool
    truncated: bool
    visible_fraction: float
    colour_bgr: tuple[int, int, int]


@dataclass
class ShapesSample:
    """One rendered image: ``image`` ``[H, W, 3]`` uint8 BGR (before JPEG encoding), its ``objects``,
    ``instance_map`` ``[H, W]`` int16 giving the index into ``objects`` of each pixel's visible object
    (-1 for background and distractors), and the JPEG ``jpeg_quality`` it is saved with."""

    image: np.ndarray
    objects: list[ShapeObject]
    instance_map: np.ndarray
    jpeg_quality: int


# --------------------------------------------------------------------------------------------------
# Shape geometry
# --------------------------------------------------------------------------------------------------

def _regular_polygon(num_vertices: int, start_angle: float) -> np.ndarray:
    """``[N, 2]`` vertices on the unit circle (radius 0.5, i.e. inside the box ``[-0.5, 0.5]^2``)."""
    angles = start_angle + np.arange(num_vertices) * (2.0 * np.pi / num_vertices)
    return 0.5 * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner_ratio: float = 0.45) -> np.ndarray:
    outer = _regular_polygon(points, -np.pi / 2)
    inner = _regular_polygon(points, -np.pi / 2 + np.pi / points) * inner_ratio
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross(arm_width: float = 0.36) -> np.ndarray:
    a, h = 0.5, arm_width / 2
    return np.array(
        [[-h, -a], [h, -a], [h, -h], [a, -h], [a, h], [h, h], [h, a], [-h, a], [-h, h], [-a, h], [-a, -h], [-h, -h]]
    )


_ELLIPSE = _regular_polygon(72, 0.0)
_UNIT_OUTLINES: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
    # class -> (outer outline, hole outline or None), in the unit box [-0.5, 0.5]^2
    "circle": (_ELLIPSE, None),
    "square": (np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]), None),
    "triangle": (np.array([[0.0, -0.5], [0.5, 0.5], [-0.5, 0.5]]), None),
    "star": (_star(), None),
    "cross": (_cross(), None),
    "ring": (_ELLIPSE, _ELLIPSE * 0.55),
}


def shape_mask(kind: str, width: float, height: float, angle_deg: float = 0.0) -> np.ndarray:
    """Binary mask of one shape centred on the mask's centre pixel.

    The shape's unit outline is scaled to span ``width x height`` pixel centres and rotated by ``angle_deg`` about
    its centre, with vertices in pixel-centre coordinates (pixel ``(r, r)`` is the centre). The mask is square,
    ``[2r+1, 2r+1]`` uint8 with values {0, 1}, ``r = ceil(circumradius) + 1``. Example: ``shape_mask("square", 21, 21)``
    is 23 x 23 with the 21 x 21 block ``[1:22, 1:22]`` set.
    """
    if kind not in _UNIT_OUTLINES:
        raise ValueError(f"unknown shape {kind!r}; expected one of {SHAPES_CLASSES}")
    outer, hole = _UNIT_OUTLINES[kind]
    theta = math.radians(angle_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    scale = np.array([max(width - 1.0, 0.0), max(height - 1.0, 0.0)])  # extreme vertices on pixel centres

    def to_pixels(outline: np.ndarray) -> np.ndarray:
        return (outline * scale) @ rotation.T

    outer_px = to_pixels(outer)
    radius = int(math.ceil(np.abs(outer_px).max())) + 1
    mask = np.zeros((2 * radius + 1, 2 * radius + 1), np.uint8)
    fixed_point = 16  # fillPoly `shift=4`: sub-pixel vertices in 1/16 px

    def fill(outline_px: np.ndarray, value: int) -> None:
        vertices = np.round((outline_px + radius) * fixed_point).astype(np.int32)
        cv2.fillPoly(mask, [vertices], value, lineType=cv2.LINE_8, shift=4)

    fill(outer_px, 1)
    if hole is not None:
        fill(to_pixels(hole), 0)
    return mask


# --------------------------------------------------------------------------------------------------
# Rendering one image
# --------------------------------------------------------------------------------------------------

def _split_number(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return SPLITS.index(split)


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _split_number(split), index])))


def split_layouts(seed: int, split: str, count: int) -> list[str]:
    """Layout of each image of a split: ``"empty"`` (no object), ``"crowded"`` (>= 50 objects) or ``"normal"``.

    ``max(1, count // 100)`` images of each special kind, at positions drawn from ``(seed, split)``.
    """
    if count < 2:
        raise ValueError(f"the {split} split needs at least 2 images (one empty, one crowded), got {count}")
    special = max(1, count // 100)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _split_number(split), 2**31])))
    order = rng.permutation(count)
    layouts = ["normal"] * count
    for position in order[:special]:
        layouts[position] = "empty"
    for position in order[special : 2 * special]:
        layouts[position] = "crowded"
    return layouts


def _desaturate(colour: np.ndarray, keep: float) -> np.ndarray:
    grey = colour.mean()
    return grey + (colour - grey) * keep


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``[H, W, 3]`` uint8: a smooth muted colour field plus a grey mid-frequency texture."""
    grid_h, grid_w = rng.integers(2, 7, size=2)
    base = rng.uniform(50, 200)
    cells = base + rng.uniform(-45, 45, size=(grid_h, grid_w, 1)) + rng.uniform(-30, 30, size=(grid_h, grid_w, 3))
    field = cv2.resize(cells.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    cell = int(rng.integers(4, 16))
    texture = rng.standard_normal((height // cell + 1, width // cell + 1), dtype=np.float32)
    texture = cv2.resize(texture, (width, height), interpolation=cv2.INTER_LINEAR) * rng.uniform(4, 18)
    return np.clip(np.rint(field + texture[:, :, None]), 0, 255).astype(np.uint8)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A distractor colour: mostly muted, sometimes as saturated as the object palette."""
    colour = rng.uniform(20, 235, size=3)
    return colour if rng.random() < 0.3 else _desaturate(colour, rng.uniform(0.1, 0.4))


def _draw_distractor(rng: np.random.Generator, image: np.ndarray) -> None:
    """Draws one non-object shape (elongated ellipse, polyline, outline circle, rectangle or text) in place."""
    height, width = image.shape[:2]
    colour = tuple(float(c) for c in _random_colour(rng))
    centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
    kind = rng.integers(5)
    if kind == 0:  # ellipse far more elongated than any object (aspect 4..10)
        long_axis = rng.uniform(12, 0.6 * min(width, height))
        axes = (int(long_axis / 2), max(1, int(long_axis / 2 / rng.uniform(4, 10))))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    elif kind == 1:
        points = rng.integers(0, [width, height], size=(int(rng.integers(2, 6)), 2)).astype(np.int32)
        cv2.polylines(image, [points], False, colour, int(rng.integers(1, 4)))
    elif kind == 2:
        cv2.circle(image, centre, int(rng.integers(5, 60)), colour, int(rng.integers(1, 3)))
    elif kind == 3:  # grey-ish rotated rectangle of any aspect
        size = (float(rng.uniform(8, 120)), float(rng.uniform(8, 120)))
        corners = cv2.boxPoints((centre, size, float(rng.uniform(0, 90))))
        cv2.fillPoly(
            image, [np.round(corners).astype(np.int32)], tuple(float(c) for c in _desaturate(np.array(colour), 0.2))
        )
    else:
        text = "".join(chr(int(c)) for c in rng.integers(65, 91, size=int(rng.integers(2, 7))))
        cv2.putText(
            image, text, centre, cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.4, 1.4)), colour, int(rng.integers(1, 3))
        )


def _object_count(rng: np.random.Generator, layout: str) -> int:
    """Objects to attempt: none (empty), 1 + Poisson(3) capped at 15 (normal), 55-79 (crowded)."""
    if layout == "empty":
        return 0
    if layout == "normal":
        return min(1 + int(rng.poisson(3.0)), 15)
    if layout == "crowded":
        return int(rng.integers(55, 80))
    raise ValueError(f"unknown layout {layout!r}; expected 'normal', 'empty' or 'crowded'")


def _object_size(rng: np.random.Generator, layout: str, max_size: float) -> float:
    """Side of the unrotated shape box in px: log-uniform 16-200 px (80 %), 8-16 px (12 %), 200-max (8 %)."""
    if layout == "crowded":
        low, high = 10.0, 36.0
    else:
        draw = rng.random()
        low, high = (16.0, 200.0) if draw < 0.8 else (MIN_OBJECT_SIZE, 16.0) if draw < 0.92 else (200.0, max_size)
    high = min(high, max_size)
    low = min(low, high)
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _object_colour(rng: np.random.Generator, name: str) -> np.ndarray:
    colour = np.array(COLOURS_BGR[CLASS_COLOURS[name][int(rng.integers(2))]], np.float32)
    return np.clip(colour + rng.uniform(-25, 25, size=3), 0, 255).astype(np.float32)


def _shaded_patch(rng: np.random.Generator, colour: np.ndarray, size: int) -> np.ndarray:
    """``[size, size, 3]`` uint8: the colour with a linear shading ramp of up to +-30 in a random direction."""
    direction = rng.standard_normal(2)
    direction /= np.linalg.norm(direction) + 1e-9
    ramp = (np.arange(size, dtype=np.float32) / max(size - 1, 1) - 0.5) * 2 * rng.uniform(0, 30)
    shading = ramp[None, :] * direction[0] + ramp[:, None] * direction[1]
    return np.clip(np.rint(colour[None, None, :] + shading[:, :, None]), 0, 255).astype(np.uint8)


def _clip_window(centre: tuple[int, int], radius: int, height: int, width: int) -> tuple[slice, slice, slice, slice]:
    """Image and mask slices (rows, cols each) where a ``[2r+1, 2r+1]`` mask centred at ``centre`` meets the image."""
    cx, cy = centre
    x0, y0, x1, y1 = cx - radius, cy - radius, cx + radius + 1, cy + radius + 1
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return slice(iy0, iy1), slice(ix0, ix1), slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0)


def render_sample(seed: int, split: str, index: int, layout: str = "normal") -> ShapesSample:
    """Renders image ``index`` of ``split`` for ``seed``; a pure function of its arguments.

    ``layout`` is one of ``split_layouts``'s kinds. Objects are drawn largest first; a placement is retried
    (up to 20 times, then the object is skipped) when it would leave under ``MIN_IN_IMAGE_FRACTION`` of the
    new shape inside the image or under ``MIN_VISIBLE_FRACTION`` of an earlier object visible.
    """
    rng = _image_rng(seed, split, index)
    target = _object_count(rng, layout)
    side_low = 352 if layout == "crowded" else 256
    width, height = (int(v) for v in rng.integers(side_low, 385, size=2))
    canvas = _background(rng, height, width)
    for _ in range(int(rng.integers(4, 15))):
        _draw_distractor(rng, canvas)

    instance_map = np.full((height, width), -1, np.int16)
    full_pixels: list[int] = []
    visible_pixels = np.zeros(0, np.int64)
    names: list[str] = []
    colours: list[np.ndarray] = []
    truncated: list[bool] = []
    max_size = MAX_OBJECT_FRACTION * min(width, height)
    sizes = sorted((_object_size(rng, layout, max_size) for _ in range(target)), reverse=True)
    for size in sizes:
        name = SHAPES_CLASSES[int(rng.integers(len(SHAPES_CLASSES)))]
        aspect = math.exp(rng.uniform(-math.log(MAX_ASPECT), math.log(MAX_ASPECT)))
        mask = shape_mask(name, size * math.sqrt(aspect), size / math.sqrt(aspect), float(rng.uniform(0, 360)))
        radius = mask.shape[0] // 2
        area = int(mask.sum())
        for _ in range(PLACEMENT_TRIES):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            rows, cols, mask_rows, mask_cols = _clip_window(centre, radius, height, width)
            inside = mask[mask_rows, mask_cols].astype(bool)
            in_image = int(inside.sum())
            if in_image < MIN_IN_IMAGE_FRACTION * area:
                continue
            covered = instance_map[rows, cols][inside]
            lost = np.bincount(covered[covered >= 0], minlength=len(names))
            if np.any(visible_pixels - lost < MIN_VISIBLE_FRACTION * np.asarray(full_pixels)):
                continue
            colour = _object_colour(rng, name)
            patch = _shaded_patch(rng, colour, mask.shape[0])[mask_rows, mask_cols]
            canvas[rows, cols][inside] = patch[inside]
            instance_map[rows, cols][inside] = len(names)
            visible_pixels = np.append(visible_pixels - lost, in_image)
            full_pixels.append(area)
            names.append(name)
            colours.append(colour)
            truncated.append(in_image < area)
            break

    for _ in range(int(rng.integers(0, 3))):  # thin lines over everything, objects included
        line_mask = np.zeros((height, width), np.uint8)
        start, end = rng.integers(0, [width, height], size=(2, 2))
        cv2.line(line_mask, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), 1, 1)
        canvas[line_mask.astype(bool)] = np.rint(_random_colour(rng)).astype(np.uint8)
        instance_map[line_mask.astype(bool)] = -1

    objects, instance_map = _annotate(instance_map, names, colours, truncated, full_pixels)
    noise = rng.standard_normal((height, width, 3), dtype=np.float32) * rng.uniform(2, 9)
    image = np.clip(np.rint(canvas + noise), 0, 255).astype(np.uint8)
    return ShapesSample(image=image, objects=objects, instance_map=instance_map, jpeg_quality=int(rng.integers(75, 96)))


def _annotate(
    instance_map: np.ndarray, names: list[str], colours: list[np.ndarray], truncated: list[bool], full_pixels: list[int]
) -> tuple[list[ShapeObject], np.ndarray]:
    """Tight boxes of each object's visible pixels; objects left with no visible pixel are dropped and
    ``instance_map`` is renumbered to the kept objects."""
    flat = instance_map.ravel().astype(np.int64)
    labelled = flat >= 0
    ids = flat[labelled]
    ys, xs = np.divmod(np.flatnonzero(labelled), instance_map.shape[1])
    count = len(names)
    visible = np.bincount(ids, minlength=count)
    x1 = np.full(count, np.iinfo(np.int64).max)
    y1 = np.full(count, np.iinfo(np.int64).max)
    x2 = np.full(count, -1)
    y2 = np.full(count, -1)
    np.minimum.at(x1, ids, xs)
    np.minimum.at(y1, ids, ys)
    np.maximum.at(x2, ids, xs)
    np.maximum.at(y2, ids, ys)

    objects: list[ShapeObject] = []
    new_id = np.full(count + 1, -1, np.int16)  # index count (i.e. -1) maps background to -1
    for k in range(count):
        if visible[k] == 0:
            continue
        visible_fraction = float(visible[k] / full_pixels[k])
        box = (int(x1[k]), int(y1[k]), int(x2[k]), int(y2[k]))
        shorter_side = min(box[2] - box[0], box[3] - box[1]) + 1
        new_id[k] = len(objects)
        objects.append(
            ShapeObject(
                name=names[k],
                box=box,
                difficult=shorter_side < DIFFICULT_MIN_SIDE or visible_fraction < DIFFICULT_VISIBLE_FRACTION,
                truncated=truncated[k],
                visible_fraction=visible_fraction,
                colour_bgr=tuple(int(round(c)) for c in colours[k]),
            )
        )
    return objects, new_id[instance_map.astype(np.int64)]


# --------------------------------------------------------------------------------------------------
# Writing the VOC layout
# --------------------------------------------------------------------------------------------------

def voc_annotation_xml(image_id: str, width: int, height: int, objects: list[ShapeObject]) -> str:
    """VOC XML text for one image; boxes are written 1-based (``xmin = x1 + 1``)."""
    lines = [
        "<annotation>",
        "\t<folder>shapes</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>",
        "\t\t<database>MutualGuide synthetic shapes</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in objects:
        x1, y1, x2, y2 = (v + 1 for v in obj.box)
        lines += [
            "\t<object>",
            f"\t\t<name>{obj.name}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(obj.truncated)}</truncated>",
            f"\t\t<difficult>{int(obj.difficult)}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x1}</xmin>",
            f"\t\t\t<ymin>{y1}</ymin>",
            f"\t\t\t<xmax>{x2}</xmax>",
            f"\t\t\t<ymax>{y2}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def _manifest(seed: int, num_trainval: int, num_test: int) -> dict:
    return {
        "generator": "shapes",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "num_trainval": num_trainval,
        "num_test": num_test,
        "classes": list(SHAPES_CLASSES),
    }


def generate_shapes_dataset(
    root: str | Path, *, seed: int = 0, num_trainval: int = DEFAULT_NUM_TRAINVAL, num_test: int = DEFAULT_NUM_TEST
) -> Path:
    """Writes the dataset into ``root`` (which must be absent or empty) and returns ``root``.

    Image ids are 6-digit numbers: trainval ``000001..num_trainval``, then test. Not atomic: use
    ``ensure_shapes_dataset`` to generate on first use. The manifest is written last.
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root} is not empty; the shapes generator writes only into a new or empty folder")
    jobs = [  # before any folder is made: split_layouts refuses a split count too small
        (split, index, layout)
        for split, count in zip(SPLITS, (num_trainval, num_test))
        for index, layout in enumerate(split_layouts(seed, split, count))
    ]
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {split: [] for split in SPLITS}
    num_objects = 0
    for number, (split, index, layout) in enumerate(progress_bar(jobs, desc="shapes", unit="img"), start=1):
        image_id = f"{number:06d}"
        sample = render_sample(seed, split, index, layout)
        height, width = sample.image.shape[:2]
        # encoded here and written by Python: a full disk is named as such (cv2.imwrite only returns False), and a
        # folder named in another encoding's bytes is written (cv2.imwrite crashed the process on its path)
        encoded, jpeg = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, sample.jpeg_quality])
        if not encoded:
            raise ValueError(f"image {image_id}: OpenCV could not encode it as JPEG")
        with naming_file(path := root / "JPEGImages" / f"{image_id}.jpg"):
            path.write_bytes(jpeg.tobytes())
        annotation = voc_annotation_xml(image_id, width, height, sample.objects)
        write_text(root / "Annotations" / f"{image_id}.xml", annotation)
        ids[split].append(image_id)
        num_objects += len(sample.objects)
    for split in SPLITS:
        write_text(root / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{i}\n" for i in ids[split]))
    manifest = _manifest(seed, num_trainval, num_test) | {"num_objects": num_objects}
    write_text(root / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return root


def _is_complete(root: Path, expected: dict) -> bool:
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return all(manifest.get(key) == value for key, value in expected.items())


def _remove_stale_temp_dirs(folder: Path, prefix: str) -> None:
    """Removes the temp folders ``folder/<prefix>.tmp-<pid>`` left by generations that were killed (their process no
    longer exists)."""
    for temp in folder.glob(f"{glob.escape(prefix)}.tmp-*"):  # escaped: a folder named shapes[v2] is no pattern
        pid = temp.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(temp, ignore_errors=True)
        except PermissionError:
            pass


def generated_set_arguments(root: str | Path) -> dict | None:
    """``{"seed", "num_trainval", "num_test"}`` of the complete set in ``root`` made by this generator version with
    these classes (read from its manifest, which generation writes last), e.g. a small one from
    :func:`generate_shapes_dataset`; None when ``root`` holds no such set."""
    try:
        manifest = json.loads((Path(root) / MANIFEST_NAME).read_text())
        arguments = {key: manifest[key] for key in ("seed", "num_trainval", "num_test")}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return arguments if _is_complete(Path(root), _manifest(**arguments)) else None


def set_arguments_for(data_root: str | Path | None) -> dict:
    """The :func:`ensure_shapes_dataset` arguments for a ``--data_root`` (None: the default folder): those of the
    complete set it holds (a small one, say), so that set is used as it is, not replaced; else seed 0's default set."""
    return (generated_set_arguments(data_root) if data_root else None) or {"seed": 0}


def ensure_shapes_dataset(
    root: str | Path,
    seed: int = 0,
    num_trainval: int = DEFAULT_NUM_TRAINVAL,
    num_test: int = DEFAULT_NUM_TEST,
) -> Path:
    """Returns ``root`` holding a complete shapes dataset for these arguments, generating it if needed.

    Reuses ``root`` when its manifest matches (seed, counts, generator version, classes). Otherwise it
    generates into a temp folder and moves the set into place, its manifest last, so an interrupted run never
    leaves a folder that looks complete: a missing ``root`` is the temp folder beside it, renamed; an existing
    folder (empty, or a set of this generator made with other arguments, which is replaced) stays the same folder,
    as a mount point or a symbolic link's target must: the set is generated in a temp folder inside it and moved up.
    A non-empty ``root`` without a manifest is not touched (:class:`DataError`). A ``root`` whose folder cannot be
    created or written, or a symbolic link to a missing folder, raises :class:`DatasetNotFoundError`, one line naming
    it.
    """
    root = Path(root)
    expected = _manifest(seed, num_trainval, num_test)
    if _is_complete(root, expected):
        return root
    if root.exists() and not root.is_dir():
        raise DatasetNotFoundError(f"{root}: the shapes dataset cannot be generated there ({root} is not a folder); "
                                   "pass --data_root a folder that can be created and written")
    # root or a folder above it linked to a drive not mounted: named now, not after generating
    if (found := dead_link(root)) is not None:
        link, target, loops = found
        if loops:
            raise DatasetNotFoundError(f"{link} is a symbolic link in a loop (to {target}, a link that leads back to "
                                       "it, so no folder is ever reached): point it at a folder, or remove it")
        raise DatasetNotFoundError(f"{link} is a broken symbolic link (to {target}, which does not exist): mount its "
                                   f"drive or create that folder (the shapes set is then generated in {root}), or "
                                   "remove the link")
    in_place = root.is_dir()  # a mount point or a link's target cannot be replaced: it is filled
    if in_place:
        _remove_stale_temp_dirs(root, ".shapes")
        # the temp folder of another run generating here now is no content: the first to finish moves its set up
        contents = [path for path in root.iterdir() if not path.name.startswith(".shapes.tmp-")]
        if contents and not (root / MANIFEST_NAME).exists():
            raise DataError(
                f"{root} exists but has no {MANIFEST_NAME}, so it was not made by the shapes generator; "
                "move it away or pass another --data_root"
            )
    temp = root / f".shapes.tmp-{os.getpid()}" if in_place else root.parent / f".{root.name}.tmp-{os.getpid()}"
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_dirs(root.parent, f".{root.name}")
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
    except OSError as error:  # a file in the way, no permission: missing and not to be made there (bad input)
        existing = next(folder for folder in (root, *root.parents) if folder.exists())
        reason = f"{existing} is not a folder" if not existing.is_dir() else error.strerror or str(error)
        raise DatasetNotFoundError(f"{root}: the shapes dataset cannot be generated there ({reason}); pass "
                                   "--data_root a folder that can be created and written") from None
    print(
        f"Generating the synthetic 'shapes' dataset (seed {seed}, {num_trainval} trainval + {num_test} test images) "
        f"into {root}",
        flush=True,
    )
    try:
        generate_shapes_dataset(temp, seed=seed, num_trainval=num_trainval, num_test=num_test)
        if _is_complete(root, expected):  # another process finished first
            return root
        if in_place:
            _move_into(temp, root)
        else:
            temp.rename(root)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return root


def _move_into(temp: Path, root: Path) -> None:
    """Replaces the set in ``root`` (none, or one of other arguments) by the complete set generated in ``temp``, a
    folder inside it: the old manifest goes first and the new one comes last, so ``root`` never looks complete with
    another set's files."""
    (root / MANIFEST_NAME).unlink(missing_ok=True)
    for entry in sorted(temp.iterdir(), key=lambda path: path.name == MANIFEST_NAME):
        if (root / entry.name).is_dir() and not (root / entry.name).is_symlink():
            shutil.rmtree(root / entry.name)
        entry.replace(root / entry.name)
