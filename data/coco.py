"""COCO-format detection (COCO 2017 or any ``instances``-style json + image folder), through pycocotools.

Facts §5: labels are positions in the json's ``getCatIds()`` order (contiguous 0..C-1 here; ``category_ids`` maps
back), or in a given ``class_order`` naming the same classes (a custom test split takes its training split's order).
Boxes are cleaned as the authors do, in the project's 0-based continuous frame (COCO's own): ``[x, y, w, h]``
becomes ``(x, y, x + w, y + h)`` clipped to the image, kept when ``area > 0`` and both sides exceed 7 px. The authors
used the inclusive ``x2 = x1 + w - 1`` and wrote results with ``w + 1``; in the continuous frame both are exact
without the +-1, which removes their 1-pixel shrink of every box. Their filter ``x2 - x1 > 6`` on that inclusive
frame is ``side - 1 > 6``, i.e. ``side > 7`` here: the same boxes are dropped (inside the image; for a box reaching
past the left/top edge they kept ``w - 1`` from the clipped ``x1``, here the part inside the image counts). Crowd
boxes are trained on (the authors' choice, kept for reproduction; ``include_crowd=False`` drops them). The evaluator
reads ``coco`` directly (a missing ``area`` / ``iscrowd`` filled in as ``w * h`` / 0).
"""
from __future__ import annotations

import collections
import contextlib
import gc
import io
import json
import math
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools.coco import COCO

from data.coco_columns import (
    ID_RANGE, MAX_PIXELS, annotations_are_well_formed, column, distinct_plain_names, entries_are_well_formed,
    optional_column, plain_images, regular_file_names,
)
from data.dataset import (
    Annotations, DetectionDataset, FixupCounter, Transform, broken_link_message, file_type_problem, image_header_size,
)
from data.errors import DataError, DatasetNotFoundError, DataWarning, Hint, format_problems, with_missing_files_hint
from data.voc import EMPTY_FILE, FileFinder, read_utf8_text
from utils.messages import counted
from utils.names import compose_name, folded_name, unprintable_characters

# a box is trained on when both sides exceed this (continuous frame): the authors' "x2 - x1 > 6" on inclusive indices
MIN_BOX_SIDE_PIXELS = 7
# JSON's whitespace between tokens
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
# the keys every entry of each list needs: pycocotools' index and this module read them
REQUIRED_KEYS = {
    "images": ("id",), "annotations": ("id", "image_id", "category_id", "bbox"), "categories": ("id", "name"),
}
# COCO float boxes often overshoot the image by a fraction of a pixel; only larger overshoots are worth a warning
OUTSIDE_TOLERANCE_PIXELS = 1.0


def no_object_to_score(count: int, images: str) -> str:
    """The refusal of ``count`` ``images`` (a noun: "evaluated image") that hold nothing COCO's metric scores: it
    scores objects with iscrowd 0 (crowd regions only excuse detections), as VOC's non-difficult ones."""
    return (f"{counted(count, images)} {'holds' if count == 1 else 'hold'} no object to score (none, or all marked "
            "iscrowd=1, which COCO's metric ignores), so every AP would be undefined: annotate the test images "
            "(objects with iscrowd 0)")


def read_json_file(path: Path) -> object:
    """The JSON value of a UTF-8 file (a byte-order mark is fine). :class:`DataError` names the file: not UTF-8 (e.g.
    UTF-16 or Latin-1), a syntax error (with its line and column), nesting too deep to parse, an integer too long."""
    text = read_utf8_text(path)
    try:
        with _cycle_collection_paused():
            return json.loads(text)
    except json.JSONDecodeError as error:
        if not text.strip():  # 0 bytes or blank lines: "Expecting value" at 1:1 hides it
            raise DataError(f"{path}: {EMPTY_FILE.format('JSON')}") from None
        raise DataError(f"{path}:{error.lineno}:{error.colno}: invalid JSON ({error.msg})") from None
    except RecursionError:
        raise DataError(
            f"{path}: invalid JSON (arrays or objects nested more than about {sys.getrecursionlimit()} deep); "
            "a COCO instances file nests 4 levels: re-export the file"
        ) from None
    except ValueError:  # Python's limit on the digits of an integer
        raise DataError(
            f"{path}: invalid JSON (a number of more than {sys.get_int_max_str_digits()} digits); re-export the file"
        ) from None


@contextlib.contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector, when it is on, for the block: a decoded JSON value holds no reference
    cycle, and the collector's passes over the tens of millions of objects a large json decodes into (COCO
    train2017's numbers, lists and dicts) took about 40 % of its decoding (11-13 s instead of 7 s)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_json_member(path: Path, key: str) -> object:
    """``read_json_file(path)[key]`` (``None`` when the file's object has no ``key``) without parsing the object's
    members after it: they are read in the file's order up to ``key``, so the ``images`` of an instances json (written
    before its ``annotations``, as COCO and its converters write them) come without its annotations, which are most
    of its time and memory (COCO train2017: 860k annotations, about 15 s and 2.4 GB); the first ``key`` is taken
    where the object repeats it. A file whose members up to ``key`` are not a well-formed object is read whole by
    :func:`read_json_file`, which raises its :class:`DataError`; so does one whose text is not UTF-8."""
    text = read_utf8_text(path)
    decoder = json.JSONDecoder()
    position = _JSON_SPACE.match(text).end()
    if text.startswith("{", position):
        position = _JSON_SPACE.match(text, position + 1).end()
        if text.startswith("}", position):
            return None
        while text.startswith('"', position):
            try:
                name, position = decoder.raw_decode(text, position)
                position = _JSON_SPACE.match(text, position).end()
                if not text.startswith(":", position):
                    break
                value, position = decoder.raw_decode(text, _JSON_SPACE.match(text, position + 1).end())
            except (ValueError, RecursionError):  # reported as read_json_file reports it
                break
            if name == key:
                return value
            position = _JSON_SPACE.match(text, position).end()
            if text.startswith("}", position):
                return None
            if not text.startswith(",", position):
                break
            position = _JSON_SPACE.match(text, position + 1).end()
    value = read_json_file(path)
    return value.get(key) if isinstance(value, dict) else None


def load_coco_json(annotation_file: Path, download_hint: Hint, index_annotations: bool = True) -> COCO:
    """Load an instances json into a pycocotools ``COCO`` (quietly); :class:`DataError` names the file and the line
    of a JSON syntax error, a text that is not UTF-8, a folder in place of the file, a value that is not an object
    (a results file's array says so) or the missing top-level key.
    The file's path is kept as ``coco.source_file`` (the evaluator's messages name it). ``index_annotations=False``
    fills ``coco.imgs`` and ``coco.cats`` only: pycocotools' index of the annotations (``anns``, ``imgToAnns``,
    ``catToImgs``; 1-2 s for COCO train2017), which the evaluation reads, is left empty."""
    if annotation_file.is_dir():
        raise DataError(f"{annotation_file} is a folder, not a COCO instances json file: put the json file there")
    if not annotation_file.is_file():
        raise DatasetNotFoundError(broken_link_message(annotation_file)
                                   or f"{annotation_file} not found: {download_hint}")
    dataset = read_json_file(annotation_file)
    if not isinstance(dataset, dict):
        raise DataError(f"{annotation_file}: not a COCO instances file: it holds {_json_kind(dataset)}, not an object "
                        '{"images": [...], "annotations": [...], "categories": [...]}')
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"{annotation_file}: not a COCO instances file (no '{key}' list)")
    problems = [] if entries_are_well_formed(dataset, REQUIRED_KEYS) else entry_problems(dataset)
    problems = problems or category_problems(dataset["categories"])
    problems = [f"{annotation_file}: {problem}" for problem in problems]
    if problems:
        raise DataError(format_problems(f"COCO annotations {annotation_file}", problems))
    coco = COCO()
    coco.dataset = dataset
    if index_annotations:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    else:
        coco.imgs = {image["id"]: image for image in dataset["images"]}
        coco.cats = {category["id"]: category for category in dataset["categories"]}
    coco.source_file = str(annotation_file)
    return coco


def _json_kind(value: object) -> str:
    """What a JSON value that is not an object is, for messages: ``a JSON array of 3 entries, as a detections results
    file holds (entries with a 'score')``, ``a JSON string``."""
    if not isinstance(value, list):
        kinds = {str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
        return f"a JSON {kinds.get(type(value), type(value).__name__)}"
    entries = f"a JSON array of {len(value)} {'entry' if len(value) == 1 else 'entries'}"
    if value and all(isinstance(entry, dict) and "score" in entry for entry in value):
        entries += ", as a detections results file holds (entries with a 'score')"
    return entries


def _id_problem(value: object) -> str | None:
    """Why ``value`` is not a COCO id (an integer that fits in 64 bits), ``None`` when it is one."""
    if not isinstance(value, int) or isinstance(value, bool):
        return "not an integer id"
    return None if value in ID_RANGE else "an integer id beyond the 64-bit range"


def entry_problems(dataset: dict) -> list[str]:
    """Structure problems of a COCO json's ``images`` / ``annotations`` / ``categories`` lists, checked before
    pycocotools indexes them (it fails on these with a bare ``KeyError`` / ``TypeError``): an entry that is not an
    object, a missing key of :data:`REQUIRED_KEYS` (a missing ``bbox`` beside a ``segmentation`` says how to add
    it), an id that is not an integer, a category name that is not a
    non-empty string, an id used twice in ``images``, ``categories`` or ``annotations``. Each names the list and
    the position."""
    problems = []
    for list_name, keys in REQUIRED_KEYS.items():
        first_position: dict[object, int] = {}
        for position, entry in enumerate(dataset[list_name]):
            where = f"{list_name}[{position}]"
            if not isinstance(entry, dict):
                problems.append(f"{where} is {type(entry).__name__} {entry!r:.40}, not an object {{...}}")
                continue
            missing = [key for key in keys if key not in entry]
            if missing:
                hint = ""
                if "bbox" in missing and entry.get("segmentation"):  # a segmentation-only export
                    hint = ("; it has a 'segmentation': add the box around it as \"bbox\": [x, y, w, h] in pixels "
                            "(pycocotools.mask.toBbox computes it from a segmentation)")
                problems.append(f"{where} has no {', '.join(repr(k) for k in missing)} (needs {', '.join(keys)})"
                                f"{hint}")
                continue
            bad_ids = {key: _id_problem(entry[key]) for key in ("id", "image_id", "category_id") if key in keys}
            bad_ids = {key: problem for key, problem in bad_ids.items() if problem}
            if bad_ids:
                problems += [f"{where} {key!r} is {entry[key]!r:.40}, {problem}" for key, problem in bad_ids.items()]
                continue
            if list_name == "categories" and not (isinstance(entry["name"], str) and entry["name"].strip()):
                problems.append(f"{where} 'name' is {entry['name']!r:.40}, not a class name")
            if entry["id"] in first_position:
                problems.append(
                    f"{where} repeats id {entry['id']!r} of {list_name}[{first_position[entry['id']]}]; "
                    f"give every entry of '{list_name}' its own id"
                )
            else:
                first_position[entry["id"]] = position
    return problems


def category_problems(categories: list[dict]) -> list[str]:
    """Problems of a well-formed ``categories`` list: it is empty, a name holds a control character (a newline breaks
    every per-class table) or an invisible one (a byte-order mark, a zero-width space: ``--classes`` typed as the name
    prints would not match it), or two categories have one name (compared case-insensitively, as reports and
    ``--classes`` compare them), which reports would merge into one class."""
    if not categories:
        return ['has no categories; list the classes as "categories": [{"id": 1, "name": "..."}, ...]']
    problems = []
    by_name: dict[str, list[dict]] = {}
    for category in categories:
        if found := unprintable_characters(category["name"]):
            problems.append(f"category {_id_and_name(category)} contains the control or invisible character(s) "
                            f"{', '.join(found)}; give plain names")
        by_name.setdefault(folded_name(category["name"].strip()), []).append(category)
    return problems + [
        f"categories {' and '.join(map(_id_and_name, same))} have the same name (compared "
        f"case-insensitively); give each category its own name, or merge them into one id"
        for same in by_name.values() if len(same) > 1
    ]


def coco_class_names(coco: COCO, category_ids: Sequence[int] | None = None) -> list[str]:
    """The class names of a COCO ground truth, in label order (0..C-1: ``category_ids``, by default the json's
    ``getCatIds()`` order): its categories' names without surrounding spaces and in Unicode's composed form, as VOC
    object names are read."""
    ids = coco.getCatIds() if category_ids is None else category_ids
    return [compose_name(coco.cats[category_id]["name"].strip()) for category_id in ids]


def ordered_category_ids(coco: COCO, class_order: Sequence[str] | None = None) -> list[int]:
    """The category ids of a COCO ground truth in label order (label i is category ``ids[i]``): the json's
    ``getCatIds()`` order, or the order of ``class_order`` (the training split's or a checkpoint's class names) when
    it names the json's classes in another order, compared as :func:`utils.names.folded_name` reads names; each name
    takes this json's own id for it, whatever id the json that gave the order has. A ``class_order`` naming other
    classes leaves the json's order: the caller compares the classes and says what differs."""
    ids = list(coco.getCatIds())
    if class_order is None:
        return ids
    id_of = {folded_name(name): category_id for name, category_id in zip(coco_class_names(coco, ids), ids)}
    wanted = [folded_name(name) for name in class_order]
    if sorted(wanted) != sorted(id_of):  # other names, or a name given twice
        return ids
    return [id_of[name] for name in wanted]


def kept_category_ids(coco: COCO, annotation_file: Path, kept: Sequence[str],
                      class_order: Sequence[str] | None = None) -> list[int]:
    """``--skip_unknown_classes``: the category ids of a COCO ground truth named ``kept`` (class names, compared as
    :func:`utils.names.folded_name` reads them), in label order: ``class_order``'s when it names the same classes in
    another order (a checkpoint's), else ``kept``'s. :class:`DataError` naming ``annotation_file`` when a name of
    ``kept`` is no category of the json: its label would have no category id to be scored under."""
    ids = list(coco.getCatIds())
    id_of = {folded_name(name): category_id for name, category_id in zip(coco_class_names(coco, ids), ids)}
    lacking = [name for name in kept if folded_name(name) not in id_of]
    if lacking:
        raise DataError(f"{annotation_file} has no category {', '.join(lacking)}: --skip_unknown_classes keeps the "
                        f"categories named {', '.join(kept)} and leaves out the others, so each needs one: name it "
                        "as the json does, or add it to 'categories' (a class without objects)")
    same = class_order is not None and sorted(map(folded_name, class_order)) == sorted(map(folded_name, kept))
    return [id_of[folded_name(name)] for name in (class_order if same else kept)]


def _skipped_objects(coco: COCO, annotations: Sequence[dict], fixups: FixupCounter) -> None:
    """Count in ``fixups`` the ``annotations`` of categories that ``--skip_unknown_classes`` leaves out, per
    category name (``'person' x2``)."""
    per_name: dict[str, int] = {}
    for category_id, count in Counter(annotation["category_id"] for annotation in annotations).items():
        name = coco_class_names(coco, [category_id])[0]  # once per category, not per object
        per_name[name] = per_name.get(name, 0) + count
    fixups.add("object of an unknown class skipped", len(annotations),
               [f"{name!r} x{count}" for name, count in per_name.items()])


def _id_and_name(category: dict) -> str:
    return f"id {category['id']} {category['name']!r}"


def clean_coco_boxes(
    xywh: np.ndarray, area: np.ndarray, heights: np.ndarray, widths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The authors' cleaning of COCO ``[x, y, w, h]`` boxes ``[M, 4]`` in images of ``heights``/``widths`` ``[M]``.

    Returns 0-based continuous x1y1x2y2 float32 ``[M, 4]`` clipped to ``[0, W] x [0, H]`` and the keep mask ``[M]``
    (area > 0, sides > :data:`MIN_BOX_SIDE_PIXELS` = 7 px after clipping: the authors' ``x2 - x1 > 6`` on inclusive
    pixel indices, whose side is one less).
    """
    x1 = np.clip(xywh[:, 0], 0, widths)
    y1 = np.clip(xywh[:, 1], 0, heights)
    x2 = np.clip(xywh[:, 0] + np.maximum(0, xywh[:, 2]), 0, widths)
    y2 = np.clip(xywh[:, 1] + np.maximum(0, xywh[:, 3]), 0, heights)
    keep = (area > 0) & (x2 - x1 > MIN_BOX_SIDE_PIXELS) & (y2 - y1 > MIN_BOX_SIDE_PIXELS)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32), keep


def is_number(value: object) -> bool:
    """A finite JSON number (``true`` / ``false`` are not numbers; nor is an integer beyond the float range)."""
    if not _is_int_or_float(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _is_int_or_float(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_integer(value: object) -> bool:
    """An int > 0 (however large) or a float > 0 with no fraction, e.g. ``640.0``."""
    if not (_is_int_or_float(value) and value > 0):
        return False
    return isinstance(value, int) or (math.isfinite(value) and value.is_integer())


def box_problem(value: object) -> str | None:
    """What is wrong with a COCO ``[x, y, w, h]`` (``bbox ... is not ...``), ``None`` when it is 4 finite numbers
    within :data:`MAX_PIXELS`."""
    numbers = isinstance(value, (list, tuple)) and len(value) == 4 and all(_is_int_or_float(v) for v in value)
    if not numbers or not all(math.isfinite(v) for v in value if isinstance(v, float)):
        return f"bbox {value!r:.80} is not 4 finite numbers [x, y, w, h]"
    if any(abs(v) > MAX_PIXELS for v in value):
        return f"bbox {value!r:.80} has a number beyond {MAX_PIXELS} px; give the box in the image's pixels"
    return None


def annotation_problems(annotation: dict, label_of: dict[int, int], images: dict) -> list[str]:
    """What is wrong with one well-formed annotation: an unknown ``category_id`` / ``image_id``, a ``bbox`` that is
    not 4 finite numbers, an ``area`` that is not a number or is negative (pycocotools' ``COCOeval`` ignores an object
    whose area is outside its area ranges, all of which start at 0, as a crowd region) or an ``iscrowd`` that is not
    0 / 1 (both may be absent or null: they are filled in by :func:`fill_area_and_crowd`)."""
    problems = []
    if annotation["category_id"] not in label_of:
        category = annotation["category_id"]
        problems.append(
            f"category_id {category!r} is not in the categories {list(label_of)}; add category {category!r} to "
            "'categories' or remove the annotation (--skip_unknown_classes leaves out the objects of listed "
            "categories, not of an id the json does not list)"
        )
    if annotation["image_id"] not in images:
        problems.append("image_id is not in the images list")
    if problem := box_problem(annotation["bbox"]):
        problems.append(problem)
    area, crowd = annotation.get("area"), annotation.get("iscrowd")
    if area is not None and not is_number(area):
        problems.append(f"area {area!r:.40} is not a finite number; give the object's area in pixels or leave it out")
    elif area is not None and area < 0 and not box_problem(annotation["bbox"]):
        width, height = annotation["bbox"][2:]
        problems.append(
            f"area {area!r} is negative: COCO's metric would ignore the object (as a crowd region) and training "
            f"would drop its box; write the object's area in pixels (its box's w * h is "
            f"{float(max(width, 0) * max(height, 0))}) or leave it out (it is then set to w * h)"
        )
    if crowd is not None and not (isinstance(crowd, (int, float)) and crowd in (0, 1)):
        problems.append(f"iscrowd {crowd!r:.40} is not 0 or 1")
    return problems


def fill_area_and_crowd(annotations: list[dict], fixups: FixupCounter) -> None:
    """Give every annotation the ``area`` and ``iscrowd`` that pycocotools' ``COCOeval`` reads (it fails with a
    ``KeyError`` at the end of training otherwise), in place, so the evaluator's ground truth has them too: a missing
    or null ``area`` becomes the box's ``w * h``, a missing or null ``iscrowd`` 0. Each is a counted fix-up."""
    missing_area = [a for a in annotations if a.get("area") is None]
    for annotation in missing_area:
        width, height = annotation["bbox"][2:]
        annotation["area"] = max(width, 0) * max(height, 0)
    missing_crowd = [a for a in annotations if a.get("iscrowd") is None]
    for annotation in missing_crowd:
        annotation["iscrowd"] = 0
    fixups.add("missing area set to the box's w * h", len(missing_area), _annotation_names(missing_area))
    fixups.add("missing iscrowd set to 0", len(missing_crowd), _annotation_names(missing_crowd))


def _annotation_names(annotations: Sequence[dict]) -> list[str]:
    return [f"annotation id {a['id']}" for a in annotations[:FixupCounter.EXAMPLES_SHOWN]]


class ImageFiles:
    """The image files that ``file_name``s name in ``folder``: ``folder / file_name``, else a file of that folder
    whose name differs in letter case only (a json written on Windows or macOS, whose file systems ignore it) or in
    the Unicode normal form of its accents, as VOC-layout images are found (:class:`data.voc.FileFinder`: a
    folder's listing is read once, on its first miss). Each name is looked up once (the checks and the dataset ask
    for every name)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._finders: dict[Path, FileFinder] = {}
        self._paths: dict[str, Path] = {}
        self._regular_files: set[str] | None = None
        self._folder_prefix = str(folder / "x")[:-1]  # what str(folder / name) puts before a name: "" for folder "."

    def regular_files(self, file_names: Iterable[object] = ()) -> set[str]:
        """The names of the regular files (not links) in ``folder`` and in the sub-folders that the first call's
        ``file_names`` name ("train/0001.jpg": ``train``), read from one listing of each on the first call
        (:func:`data.coco_columns.regular_file_names`): each is its own :meth:`path`, found without a ``stat``."""
        if self._regular_files is None:
            self._regular_files = regular_file_names(self.folder, file_names)
        return self._regular_files

    def path(self, file_name: str) -> Path:
        """The file read for ``file_name``; ``folder / file_name`` when no file matches (the caller reports it)."""
        if file_name not in self._paths:
            listed = self._regular_files is not None and file_name in self._regular_files
            self._paths[file_name] = self.folder / file_name if listed else self._find(file_name)
        return self._paths[file_name]

    def path_text(self, file_name: str) -> str:
        """``str(self.path(file_name))``, joined as text for a name of :meth:`regular_files` (a ``Path`` per name
        takes about 6 µs: 0.7 s for COCO train2017's images)."""
        if self._regular_files is not None and file_name in self._regular_files:
            return self._folder_prefix + file_name.replace("/", os.sep)
        return str(self.path(file_name))

    def same_stem(self, file_name: str) -> list[str]:
        """The names of the files beside ``folder / file_name`` with its stem and any extension (as
        :meth:`data.voc.FileFinder.same_stem`): for the message of a ``file_name`` whose image has another extension
        (images converted after the json was written); ``[]`` when its folder cannot be listed."""
        exact = self.folder / file_name
        if not exact.parent.is_dir():
            return []
        try:
            return self._finders.setdefault(exact.parent, FileFinder(exact.parent)).same_stem(exact.stem)
        except OSError:  # a folder that cannot be listed
            return []

    def _find(self, file_name: str) -> Path:
        exact = self.folder / file_name
        if file_type_problem(exact) != "not found" or not exact.parent.is_dir():
            return exact
        finder = self._finders.setdefault(exact.parent, FileFinder(exact.parent))
        try:
            return finder.find([exact.name]) or exact
        except OSError:  # a folder that cannot be listed
            return exact


def _unusable_name(name: str) -> str | None:
    """Why no file can have the name ``name`` that a json may hold (``os.stat`` raises ``ValueError`` for it), ``None``
    when a file can: a NUL character (``\\u0000``) or a lone surrogate (``\\ud800``, half of a UTF-16 pair)."""
    if "\x00" in name:
        return "which holds a NUL character"
    try:
        os.fsencode(name)
    except UnicodeEncodeError as error:
        return f"which holds {error.object[error.start]!r}, half of a UTF-16 surrogate pair and not a character"
    return None


def image_entry_problem(info: dict, files: ImageFiles, annotation_file: Path) -> str | None:
    """What is wrong with one well-formed ``images`` entry, ``None`` when nothing: a height / width that is not a
    positive whole number of pixels up to :data:`MAX_PIXELS`, no string ``file_name`` (or one no file can have, a NUL
    in it), no such image file in ``files.folder`` (in any letter case)."""
    image_id, image_folder = info["id"], files.folder
    if size_problem := _image_size_problem(info, files):
        name = f" ({info['file_name']!r:.80})" if isinstance(info.get("file_name"), str) else ""
        return f"{annotation_file}: image id {image_id}{name} {size_problem}"
    too_large = [f"{key} {info[key]!r:.40}" for key in ("height", "width") if info[key] > MAX_PIXELS]
    if too_large:
        return (f"{annotation_file}: image id {image_id} has {' and '.join(too_large)}, beyond {MAX_PIXELS} px; "
                "give the image's size in pixels")
    if not isinstance(info.get("file_name"), str) or not info["file_name"].strip():
        return f"{annotation_file}: image id {image_id} has no file_name"
    name = info["file_name"]
    if unusable := _unusable_name(name):
        return (f"{annotation_file}: image id {image_id} has file_name {name!r:.80}, {unusable}: write the image "
                "file's name")
    kind = file_type_problem(files.path(name))
    if kind is None:
        return None
    if kind != "not found":  # a folder (file_name "." or a sub-folder's name), a named pipe, a link loop
        return f"{image_folder / name}: image file {kind} (image id {image_id} in {annotation_file})"
    problem = f"{image_folder / name}: image file not found (image id {image_id} in {annotation_file})"
    base = os.path.basename(name)
    slashed = name.replace("\\", "/")
    images = annotation_file.parent.parent / "images"  # a custom layout's image folder without <root>/<json name>
    if image_folder == image_folder_for(annotation_file) != images and os.path.isfile(images / name):
        problem += (f"; {images} holds it, but the json's images are read in {image_folder}, which is used when it "
                    f"exists: move the images there, or rename or remove {image_folder}")
    elif base and base != name and os.path.isfile(image_folder / base):
        problem += f"; file_name is read in {image_folder}, which holds {base}: write \"file_name\": \"{base}\""
    elif slashed != name and os.path.isfile(image_folder / slashed):
        problem += f"; folders in file_name are separated by /, not \\ (a Windows path): write \"{slashed}\""
    elif other_extensions := files.same_stem(name):  # the images converted to another format
        written = str(PurePosixPath(slashed).with_name(other_extensions[0]))
        problem += (f"; {(image_folder / name).parent} holds {', '.join(other_extensions)}: write "
                    f"\"file_name\": \"{written}\"")
    return problem


def _image_size_problem(info: dict, files: ImageFiles) -> str | None:
    """What is wrong with an ``images`` entry's ``height`` / ``width`` (absent, or not a whole number of pixels > 0)
    and what to write: the size in the image file's header when it can be read. ``None`` when both are right."""
    bad = [
        f"{key} {info[key]!r:.40}, not a whole number of pixels > 0" if key in info else f"no {key}"
        for key in ("height", "width") if not _is_positive_integer(info.get(key))
    ]
    if not bad:
        return None
    example = 'e.g. "height": 480, "width": 640'
    name = info.get("file_name")
    if isinstance(name, str) and name.strip() and not _unusable_name(name):
        path = files.path(name)
        try:  # a regular file only: reading a named pipe would block
            height, width = image_header_size(path) if file_type_problem(path) is None else (0, 0)
        except DataError:  # unreadable: the file's problem is reported once the size is written
            height = width = 0
        if height and width:
            example = f'its file is {width}x{height} (WxH): "height": {height}, "width": {width}'
    return f"has {' and '.join(bad)}: write the image's size in pixels, {example}"


def resolved_image_paths(files: ImageFiles, images: Iterable[object]) -> list[tuple[str, dict]]:
    """``(real path, entry)`` of each ``images`` entry with a string ``file_name``: its file (:meth:`ImageFiles.path`)
    with ``..``, symlinked folders and a symlinked file resolved (an entry whose name the OS refuses, e.g. with a NUL
    byte, is left out). Each folder is resolved once: ``os.path.realpath`` of every file of a 100k-image split would
    take seconds."""
    real_folders: dict[str, str] = {}
    paths = []
    for info in images:
        name = info.get("file_name") if isinstance(info, dict) else None
        if not isinstance(name, str):
            continue
        try:
            folder, base = os.path.split(files.path(name))
            if folder not in real_folders:
                real_folders[folder] = os.path.realpath(folder)
            path = os.path.normpath(os.path.join(real_folders[folder], base))
            paths.append((os.path.realpath(path) if os.path.islink(path) else path, info))
        except (OSError, ValueError):
            continue
    return paths


def shared_file_problems(images: list[dict], files: ImageFiles, annotation_file: Path, training: bool) -> list[str]:
    """One problem per image entry whose file (resolved, see :func:`resolved_image_paths`) an earlier entry of the
    same json already uses: in a ``training`` split that file would be trained with both images' boxes, each time
    with one image's only; in a split built for evaluation its detections would be scored against each image id's
    boxes, the other's objects missed."""
    effect = ("so it would be trained with the boxes of one image at a time" if training else
              "so its detections would be scored against the boxes of one image id at a time (the objects of each id "
              "missed under the other, and their detections false positives there)")
    first: dict[str, dict] = {}
    problems = []
    for path, info in resolved_image_paths(files, images):
        if path not in first:
            first[path] = info
            continue
        names = {first[path]["file_name"], info["file_name"]}
        problems.append(
            f"{annotation_file}: image ids {first[path]['id']} and {info['id']} both use the image file {path} "
            f"(file_name {' / '.join(repr(n) for n in sorted(names))}), {effect}: list each image once, with all its "
            "annotations under one image id"
        )
    return problems


def annotations_to_score(coco: COCO, image_ids: Iterable[int] | None = None,
                         category_ids: Iterable[int] | None = None) -> Iterator[dict]:
    """The annotations that COCO's metric scores (``iscrowd`` 0 or absent) on ``image_ids`` (default: all images) of
    ``category_ids`` (default: all categories; those kept by ``--skip_unknown_classes``)."""
    wanted = None if image_ids is None else set(image_ids)
    categories = None if category_ids is None else set(category_ids)
    return (annotation for annotation in coco.dataset["annotations"]
            if not annotation.get("iscrowd") and (wanted is None or annotation["image_id"] in wanted)
            and (categories is None or annotation["category_id"] in categories))


def count_objects_to_score(coco: COCO, image_ids: Iterable[int] | None = None,
                           category_ids: Iterable[int] | None = None) -> int:
    """How many annotations COCO's metric scores on ``image_ids`` of ``category_ids`` (:func:`annotations_to_score`)."""
    return sum(1 for _ in annotations_to_score(coco, image_ids, category_ids))


def _coco_problems(coco: COCO, label_of: dict[int, int], files: ImageFiles, annotation_file: Path,
                   training: bool) -> list[str]:
    """Every problem of a loaded json (of a ``training`` split, or one built for evaluation), each naming
    ``annotation_file``, in this order: its image entries (:func:`image_entry_problem`), image files used by two
    entries, then its annotations (:func:`annotation_problems`). The whole-list checks of :mod:`data.coco_columns`
    clear the entries without a problem first; the per-entry code words the problems of the others."""
    images = [coco.imgs[i] for i in coco.getImgIds()]
    plain = plain_images(images, files.regular_files(optional_column(images, "file_name")))
    problems = [image_entry_problem(info, files, annotation_file) for info, ok in zip(images, plain) if not ok]
    problems = [problem for problem in problems if problem]
    if not distinct_plain_names(images, plain):
        problems += shared_file_problems(coco.dataset["images"], files, annotation_file, training)
    if annotations_are_well_formed(coco.dataset["annotations"], label_of, coco.imgs):
        return problems
    for annotation in coco.dataset["annotations"]:
        where = f"{annotation_file}: annotation id {annotation['id']} (image id {annotation['image_id']})"
        problems += [f"{where}: {problem}" for problem in annotation_problems(annotation, label_of, coco.imgs)]
    return problems


def _image_sizes(coco: COCO) -> tuple[np.ndarray, np.ndarray]:
    """Heights and widths float64 ``[I]`` of the images, in ``coco.getImgIds()`` order."""
    heights = np.array([coco.imgs[i]["height"] for i in coco.getImgIds()], dtype=np.float64)
    widths = np.array([coco.imgs[i]["width"] for i in coco.getImgIds()], dtype=np.float64)
    return heights, widths


def _annotation_arrays(
    coco: COCO, annotations: Sequence[dict], label_of: dict[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``annotations`` (``M``) as arrays: the position of each one's image in ``coco.getImgIds()`` int64 ``[M]``,
    its raw ``bbox`` float64 ``[M, 4]`` x, y, w, h in 0-based continuous pixels, ``area`` float64 ``[M]`` and label
    int64 ``[M]`` 0..C-1."""
    owner = _positions(coco.getImgIds(), column(annotations, "image_id"))
    boxes = chain.from_iterable(column(annotations, "bbox"))
    xywh = np.fromiter(boxes, dtype=np.float64, count=4 * len(annotations)).reshape(-1, 4)
    area = np.array(column(annotations, "area"), dtype=np.float64)
    labels = _positions(list(label_of), column(annotations, "category_id"))  # label_of's keys are in label order
    return owner, xywh, area, labels


def _positions(ids: Sequence[int], wanted: Sequence[int]) -> np.ndarray:
    """int64 ``[len(wanted)]``: the position in ``ids`` (distinct integers within 64 bits) of each of ``wanted``
    (each one of ``ids``), found by a binary search over the sorted ids rather than a dict lookup each."""
    ids_array = np.array(ids, dtype=np.int64).reshape(-1)
    sorter = np.argsort(ids_array, kind="stable")
    return sorter[np.searchsorted(ids_array, np.array(wanted, dtype=np.int64).reshape(-1), sorter=sorter)]


def _nothing_to_train_on(annotation_file: Path, annotations: int, small: int, include_crowd: bool) -> str:
    """The error of a training json left without a box out of ``annotations`` (those not crowd unless
    ``include_crowd``), ``small`` of them dropped by the small-box rule alone: when that rule dropped them, it says
    so and which layout keeps such boxes, rather than to annotate images that are annotated."""
    counted_ones = f"{annotations} annotation(s){'' if include_crowd else ' not crowd'}"
    keeps_small = ("which COCO-layout training leaves out (the authors' rule for COCO); a VOC-layout copy of the set "
                   "(Annotations/<id>.xml, README 'Datasets') trains on boxes of any size")
    if annotations and small == annotations:
        return (f"{annotation_file}: no image has a box to train on: all {counted_ones} have a side <= "
                f"{MIN_BOX_SIDE_PIXELS} px, {keeps_small}")
    message = (f"{annotation_file}: no image has a box to train on ({counted_ones}, none left after dropping boxes "
               f"with w, h or area <= 0 or a side <= {MIN_BOX_SIDE_PIXELS} px)")
    if small:
        return f"{message}; {small} of them only for a side <= {MIN_BOX_SIDE_PIXELS} px, {keeps_small}"
    return f"{message}; annotate the training images"


def _clean_and_count_boxes(
    annotations: Sequence[dict],
    xywh: np.ndarray,
    area: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    training: bool,
    fixups: FixupCounter,
) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`clean_coco_boxes` of ``annotations``' boxes ``xywh`` ``[M, 4]`` (``area`` ``[M]``) in images of
    ``heights`` / ``widths`` ``[M]``, counting in ``fixups`` the boxes dropped for w, h or area <= 0, those lying
    wholly outside their image (dropped: nothing is left once clipped), those clipped by more than
    :data:`OUTSIDE_TOLERANCE_PIXELS` and, in a ``training`` split, those dropped for a side <= 7 px.
    Returns the boxes float32 ``[M, 4]`` x1y1x2y2 0-based continuous, the keep mask ``[M]`` and the number of boxes
    dropped for a side <= 7 px alone."""
    degenerate = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
    no_area = ~degenerate & (area <= 0)
    x, y, w, h = xywh.T
    beyond = ~degenerate & ~no_area & ((x >= widths) | (y >= heights) | (x + w <= 0) | (y + h <= 0))
    tolerance = OUTSIDE_TOLERANCE_PIXELS
    outside = ~degenerate & ~beyond & (
        (x < -tolerance) | (y < -tolerance) | (x + w > widths + tolerance) | (y + h > heights + tolerance)
    )
    boxes, keep = clean_coco_boxes(xywh, area, heights, widths)
    small = ~keep & ~degenerate & ~no_area & ~beyond
    counted = [
        ("degenerate box dropped (w <= 0 or h <= 0)", degenerate),
        ("box dropped for its area <= 0", no_area),
        ("box outside its image dropped", beyond),
        ("box clipped to the image", outside),
    ]
    if training:  # a test split's small objects are still scored (pycocotools)
        counted.append((f"box with a side <= {MIN_BOX_SIDE_PIXELS} px left out of training (the authors' rule)",
                        small))
    for kind, mask in counted:
        shown = np.flatnonzero(mask)[:FixupCounter.EXAMPLES_SHOWN]
        fixups.add(kind, int(mask.sum()), _annotation_names([annotations[i] for i in shown]), changes_boxes=True)
    return boxes, keep, int(small.sum())


def corner_boxes_hint(xywh: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> str | None:
    """For boxes ``xywh`` float64 ``[M, 4]`` (x, y, w, h pixels) in images of ``heights`` / ``widths`` ``[M]`` that
    look written as corners [x1, y1, x2, y2] (a converter's mistake): what to check, when at least 3 boxes, and a
    tenth of those with extent, overflow their image's right or bottom edge by more than
    :data:`OUTSIDE_TOLERANCE_PIXELS` and every one of them fits the image read as corners; ``None`` otherwise."""
    x, y, w, h = xywh.T
    tolerance = OUTSIDE_TOLERANCE_PIXELS
    sized = (w > 0) & (h > 0)
    outside = sized & ((x + w > widths + tolerance) | (y + h > heights + tolerance))
    as_corners = (x >= -tolerance) & (y >= -tolerance) & (w > x) & (h > y) & (w <= widths + tolerance) & (
        h <= heights + tolerance)
    count, total = int(outside.sum()), int(sized.sum())
    if count < 3 or count * 10 < total or not as_corners[outside].all():
        return None
    return (f"{count} of the {total} boxes extend past their image, and each fits it read as [x1, y1, x2, y2]: "
            "COCO's bbox is [x, y, width, height]; if the json holds corners, write width = x2 - x1 and height = "
            "y2 - y1")


def _per_image_annotations(
    coco: COCO,
    files: ImageFiles,
    heights: np.ndarray,
    widths: np.ndarray,
    owner: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    dropped: np.ndarray | None,
) -> Annotations:
    """The flat :class:`Annotations` of the images of ``coco.getImgIds()`` (``heights`` / ``widths`` ``[I]``), read
    from their ``file_name``'s files (:meth:`ImageFiles.path`), given the kept boxes float32 ``[K, 4]`` x1y1x2y2
    0-based continuous, their labels ``[K]`` and their image's position ``owner`` ``[K]``; ``dropped`` (bool ``[I]``,
    or ``None``: none) marks images to leave out, which hold no kept box. No box is difficult (COCO has no such
    flag)."""
    order = np.argsort(owner, kind="stable")  # by image; the images dropped hold no box
    image_ids = coco.getImgIds()
    counts = np.bincount(owner, minlength=len(image_ids))
    kept = (np.arange(len(image_ids)) if dropped is None else np.flatnonzero(~dropped)).tolist()
    return Annotations(
        image_paths=np.array([files.path_text(coco.imgs[image_ids[i]]["file_name"]) for i in kept], dtype=str),
        image_ids=[image_ids[i] for i in kept],
        sizes=np.stack([heights[kept], widths[kept]], axis=1).astype(np.int64).reshape(-1, 2),
        offsets=np.concatenate([[0], np.cumsum(counts[kept])]).astype(np.int64),
        boxes=boxes[order].astype(np.float32),
        labels=labels[order].astype(np.int64),
        difficult=np.zeros(len(order), dtype=bool),
    )


class COCODetection(DetectionDataset):
    """Images of a COCO instances json, read from ``image_folder / file_name`` (in any letter case of the file's
    name, :class:`ImageFiles`). ``class_names`` are the categories' names without surrounding spaces (as VOC object
    names are read), in ``category_ids`` order: the json's ``getCatIds()`` order, or ``class_order``'s (the training
    split's or a checkpoint's class names) when it names the same classes in another order
    (:func:`ordered_category_ids`): labels are then positions in ``class_order``, and the results written for
    scoring still name this json's ids.

    Raises one :class:`DataError` listing problems (unknown ``category_id`` or ``image_id``, malformed ``bbox``,
    non-numeric or negative ``area``, ``iscrowd`` other than 0 / 1, missing or out-of-range image size, missing image
    file, one file used by two image ids) before any training.
    Raw boxes with ``w <= 0`` / ``h <= 0`` or ``area`` 0 (dropped), reaching more than 1 px outside the image
    (clipped), or without ``area`` / ``iscrowd`` (filled in, also in ``coco``) give one counted :class:`DataWarning`;
    ``fixups`` holds the counts and ``small_boxes_dropped`` the number removed by the authors' small-box rule (a side
    <= 7 px; counted in the warning of a training split, whose images they leave out of training; a test split's are
    still scored by COCO's metric). ``drop_empty=True`` removes images left without boxes (the authors' COCO train
    set, ~117k images; counted). A :class:`DataError` names the file when no box is left and ``drop_empty`` or
    ``require_boxes`` is set (a train split with nothing to train on), and when ``require_objects_to_score`` is set
    (default: neither of those, i.e. a split built for evaluation) and its images hold no annotation, or only
    ``iscrowd`` 1 ones, which COCO's metric ignores (a split without any image is left to the caller, as for VOC).
    ``index_annotations=False`` leaves pycocotools' index of the annotations in ``coco`` empty
    (:func:`load_coco_json`): for a training split whose ``coco`` is dropped once built (:meth:`release_ground_truth`,
    as :func:`data.build_dataset` does); its ``coco`` cannot be evaluated against. ``kept_classes``
    (``--skip_unknown_classes``): the class names whose categories are kept, in label order (``class_order``'s when it
    names the same classes), each one a category of the json (:func:`kept_category_ids`); the annotations of the other
    categories are left out and counted in the warning, and are not counted as objects to score.
    """

    kind = "coco"

    def __init__(
        self,
        annotation_file: Path,
        image_folder: Path,
        transform: Transform,
        *,
        drop_empty: bool = False,
        require_boxes: bool = False,
        include_crowd: bool = True,
        download_hint: Hint = "check --data_root",
        missing_files_hint: Hint | None = None,
        seed: int = 0,
        require_objects_to_score: bool | None = None,
        class_order: Sequence[str] | None = None,
        index_annotations: bool = True,
        kept_classes: Sequence[str] | None = None,
    ) -> None:
        annotation_file, image_folder = Path(annotation_file), Path(image_folder)
        coco = load_coco_json(annotation_file, download_hint, index_annotations)
        if not image_folder.is_dir():
            raise DatasetNotFoundError(broken_link_message(image_folder)
                                       or f"{image_folder} not found: {download_hint}")
        self.coco: COCO | None = coco
        self.annotation_file = annotation_file
        self.category_ids: list[int] = (ordered_category_ids(coco, class_order) if kept_classes is None
                                        else kept_category_ids(coco, annotation_file, kept_classes, class_order))
        label_of = {category_id: label for label, category_id in enumerate(self.category_ids)}
        files = ImageFiles(image_folder)
        training = drop_empty or require_boxes  # a split to train on (else: to evaluate on)
        listed = {category_id: None for category_id in coco.getCatIds()}  # an annotation's id must be one of them
        problems = _coco_problems(coco, listed, files, annotation_file, training)
        if problems:
            message = format_problems(f"COCO annotations {annotation_file}", problems)
            raise DataError(with_missing_files_hint(message, problems, missing_files_hint))

        fixups = FixupCounter()
        fill_area_and_crowd(coco.dataset["annotations"], fixups)
        if require_objects_to_score is None:
            require_objects_to_score = not training
        if require_objects_to_score and coco.imgs and not count_objects_to_score(coco, None, label_of):
            if kept_classes is None:
                raise DataError(f"{annotation_file}: the test split's {no_object_to_score(len(coco.imgs), 'image')}")
            hold = "holds" if len(coco.imgs) == 1 else "hold"
            raise DataError(f"{annotation_file}: the test split's {counted(len(coco.imgs), 'image')} {hold} no object "
                            f"of {', '.join(kept_classes)} to score (none, or all marked iscrowd=1; the objects of the "
                            "other categories are left out by --skip_unknown_classes), so every AP would be undefined: "
                            "annotate the test images, or evaluate on a json holding objects of these classes")
        annotations = [a for a in coco.dataset["annotations"] if include_crowd or not a["iscrowd"]]
        if kept_classes is not None:  # the objects of the other categories, counted in the warning
            _skipped_objects(coco, [a for a in annotations if a["category_id"] not in label_of], fixups)
            annotations = [a for a in annotations if a["category_id"] in label_of]
        heights, widths = _image_sizes(coco)
        owner, xywh, area, labels = _annotation_arrays(coco, annotations, label_of)
        boxes, keep, self.small_boxes_dropped = _clean_and_count_boxes(
            annotations, xywh, area, heights[owner], widths[owner], training, fixups
        )
        # the kept iscrowd boxes: trained on, ignored by COCO's metric (counted by --check_data)
        self.crowd_objects = int((np.array(column(annotations, "iscrowd"), dtype=bool) & keep).sum())
        image_ids = coco.getImgIds()
        boxes_left = np.bincount(owner[keep], minlength=len(image_ids))
        # an image whose every box was dropped: kept without objects, they would be trained on as background
        annotated = np.bincount(owner, minlength=len(image_ids)) > 0
        emptied = annotated & (boxes_left == 0) if training else None
        if emptied is not None:
            fixups.add("image whose every box was dropped, left out of training", int(emptied.sum()),
                       [f"image id {image_ids[i]}" for i in np.flatnonzero(emptied)[:FixupCounter.EXAMPLES_SHOWN]],
                       changes_boxes=True)
        if drop_empty:  # counted, or the run's image count would differ from the json's without a word
            of_kept = "" if kept_classes is None else " of the classes kept"
            fixups.add(f"image without annotations{of_kept} left out of training (the authors' COCO train set)",
                       int((~annotated).sum()),
                       [f"image id {image_ids[i]}" for i in np.flatnonzero(~annotated)[:FixupCounter.EXAMPLES_SHOWN]])
        fixups.warn(f"COCO dataset {annotation_file}", test_split=not training)
        if hint := corner_boxes_hint(xywh, heights[owner], widths[owner]):
            warnings.warn(f"{annotation_file}: {hint}", DataWarning, stacklevel=2)
        self.fixups = dict(fixups.counts)
        self._training = training
        if training and not keep.any():
            raise DataError(_nothing_to_train_on(annotation_file, len(annotations), self.small_boxes_dropped,
                                                 include_crowd))
        super().__init__(
            _per_image_annotations(
                coco, files, heights, widths, owner[keep], boxes[keep], labels[keep],
                boxes_left == 0 if drop_empty else emptied,
            ),
            coco_class_names(coco, self.category_ids),
            transform,
            seed,
        )

    def annotation_source(self, index: int) -> str:
        """``image id <id> in <json>``: the entry that gives item ``index``'s size and boxes."""
        return f"image id {self.image_ids[index]} in {self.annotation_file}"

    def objects_to_report(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The objects ``--check_data`` counts (:meth:`DetectionDataset.objects_to_report`), the crowd ones being
        those the evaluation does not score: a training split's kept boxes; a split built for evaluation, the json's
        annotations on its images, as COCO's metric reads them (boxes too small to train on, or outside the image,
        which the loader leaves out, are scored)."""
        if self._training or self.coco is None:
            labels, owner, _ = super().objects_to_report()
            return labels, owner, self.crowd_objects
        position = {image_id: index for index, image_id in enumerate(self.image_ids)}
        label_of = {category_id: label for label, category_id in enumerate(self.category_ids)}
        annotations = [a for a in self.coco.dataset["annotations"]
                       if a["image_id"] in position and a["category_id"] in label_of]
        labels = np.array([label_of[a["category_id"]] for a in annotations], dtype=np.int64)
        owner = np.array([position[a["image_id"]] for a in annotations], dtype=np.int64)
        return labels, owner, sum(1 for a in annotations if a["iscrowd"])

    def release_ground_truth(self) -> None:
        """Drop ``coco``, the json's pycocotools index, which only the evaluation and the split checks read: kept by
        a training split, its one dict per annotation (about 1.7 GB for COCO train2017's 860k annotations) would stay
        in the main process for the whole run, be copied page by page into each forked DataLoader worker as Python's
        garbage collector walks it, and be pickled into each worker started by spawn / forkserver (350 MB, 12 s to
        load in each). The items, sizes, boxes and counts come from flat arrays and stay; ``coco`` becomes ``None``
        and :meth:`objects_to_score_per_class` raises."""
        self.coco = None

    def objects_to_score_per_class(self) -> np.ndarray:
        """int64 ``[C]``: per class, the objects COCO's metric scores: the json's annotations with ``iscrowd`` 0 on
        this dataset's images, including the boxes too small to train on (pycocotools scores them).
        :class:`ValueError` after :meth:`release_ground_truth`."""
        label_of = {category_id: label for label, category_id in enumerate(self.category_ids)}
        labels = [label_of[a["category_id"]] for a in self._annotations_to_score()]
        return np.bincount(np.array(labels, dtype=np.int64), minlength=self.num_classes)

    def objects_to_score_per_image(self) -> np.ndarray:
        """int64 ``[N]``: per item, the objects COCO's metric scores (:meth:`objects_to_score_per_class`).
        :class:`ValueError` after :meth:`release_ground_truth`."""
        position = {image_id: index for index, image_id in enumerate(self.image_ids)}
        owners = [position[a["image_id"]] for a in self._annotations_to_score()]
        return np.bincount(np.array(owners, dtype=np.int64), minlength=len(self.image_ids))

    def objects_to_score_per_image_and_class(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The objects COCO's metric scores, counted per item and class, for the pairs that hold any: ``(items int64
        [P], labels int64 [P], counts int64 [P])``. :class:`ValueError` after :meth:`release_ground_truth`."""
        position = {image_id: index for index, image_id in enumerate(self.image_ids)}
        label_of = {category_id: label for label, category_id in enumerate(self.category_ids)}
        pairs = collections.Counter((position[a["image_id"]], label_of[a["category_id"]])
                                    for a in self._annotations_to_score())
        table = np.array([(item, label, count) for (item, label), count in pairs.items()], np.int64).reshape(-1, 3)
        return table[:, 0], table[:, 1], table[:, 2]

    def _annotations_to_score(self) -> Iterator[dict]:
        """The json's annotations COCO's metric scores on this split (:func:`annotations_to_score`)."""
        if self.coco is None:
            raise ValueError(f"{self.annotation_file}: this training split of build_dataset drops the json's index "
                             "(release_ground_truth), which the objects to score are counted from: build it with "
                             "COCODetection to evaluate it")
        return annotations_to_score(self.coco, self.image_ids, self.category_ids)


def find_coco_annotation(folder: Path, split: str) -> Path | None:
    """``annotations/instances_<split>.json`` (split ``train``; ``test`` also accepts ``val``) or the single
    ``instances_<split>*.json`` there, e.g. ``instances_train2017.json``. ``None`` when absent; an error when
    ambiguous."""
    prefixes: Sequence[str] = ("train",) if split == "train" else ("test", "val")
    annotations = folder / "annotations"
    for prefix in prefixes:
        exact = annotations / f"instances_{prefix}.json"
        if exact.is_file():
            return exact
        matches = sorted(annotations.glob(f"instances_{prefix}*.json"))
        if len(matches) > 1:
            names = [m.name for m in matches]
            raise DataError(
                f"{annotations}: several {split} annotation files {names}; keep one (move the others out of that "
                f"folder), or name the one to read instances_{prefix}.json and its image folder {folder / prefix} "
                f"(or {folder / 'images'})"
            )
        if matches:
            return matches[0]
    return None


def check_disjoint_coco_splits(split: str, split_file: Path, split_coco: COCO, other_file: Path) -> None:
    """Raise :class:`DataError` naming both files when a custom COCO-layout train and test json list the same image
    file: their ``image folder / file_name`` paths are compared resolved (``..``, symlinks), so a train
    ``file_name`` like ``../test/0005.jpg`` is caught as well as one image folder shared by both jsons.

    ``split_coco`` is ``split_file`` (of ``split``, train or test) as the dataset already loaded it; ``other_file``,
    the other split's json, is only read here, up to its ``images`` (:func:`read_json_member`: a test split's check
    does not parse the training json's annotations): a problem of it is reported when that split is built.
    """
    folders = image_folder_for(split_file), image_folder_for(other_file)
    if None in folders:
        return
    try:
        other_images = read_json_member(other_file, "images")
    except DataError:
        return
    pairs = [(split_file, split_coco.dataset["images"]), (other_file, other_images)]
    (train_file, train_images), (test_file, test_images) = pairs if split == "train" else pairs[::-1]
    train_folder, test_folder = folders if split == "train" else folders[::-1]
    if not isinstance(train_images, list) or not isinstance(test_images, list):
        return
    test_names = {path: info["file_name"] for path, info in resolved_image_paths(ImageFiles(test_folder), test_images)}
    shared = sorted(
        (path, info["file_name"], test_names[path])
        for path, info in resolved_image_paths(ImageFiles(train_folder), train_images) if path in test_names
    )
    if shared:
        raise DataError(_shared_images_message(train_file, test_file, shared))


def _shared_images_message(train_file: Path, test_file: Path, shared: list[tuple[str, str, str]]) -> str:
    """The error for images ``(real path, train file_name, test file_name)`` listed by both splits."""
    folder = os.path.commonpath([os.path.dirname(path) for path, _, _ in shared])
    examples = [
        os.path.relpath(path, folder) + ("" if train == test else f" as train {train!r}, test {test!r}")
        for path, train, test in shared[:3]
    ]
    return (
        f"{train_file} and {test_file} share {len(shared)} image(s) of {folder} "
        f"({', '.join(examples)}{', ...' if len(shared) > 3 else ''}), "
        f"so the model would be tested on images it trained on: list each image in one of the two files only"
    )


def image_folder_for(annotation_file: Path) -> Path | None:
    """The image folder of ``<root>/annotations/instances_<name>.json``: ``<root>/<name>`` or ``<root>/images``."""
    root = annotation_file.parent.parent
    name = annotation_file.stem.removeprefix("instances_")
    return next((folder for folder in (root / name, root / "images") if folder.is_dir()), None)
