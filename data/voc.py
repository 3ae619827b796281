"""Pascal VOC and any VOC-layout folder (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<list>.txt``).

Facts §5: class names lowercased with '(group)' stripped; difficult objects are training targets and are flagged in
:meth:`VOCDetection.ground_truth` for the evaluator.

Pixel frame: the XML holds 1-based inclusive pixel indices; a box covering XML pixels ``x1..x2`` spans the 0-based
continuous interval ``[x1 - 1, x2]``. Boxes are stored and trained in that continuous frame (the project-wide
convention, docs/architecture.md), so a predicted box maps back to the devkit as ``(x1 + 1, y1 + 1, x2, y2)``.
The authors trained on the raw XML values and added 1 to every coordinate when writing results: a 1-pixel shift
of x1/y1 that this fixes. :meth:`VOCDetection.ground_truth` returns the XML values for the devkit metric.
"""
from __future__ import annotations

import difflib
import functools
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.dataset import (
    IMAGE_EXTENSIONS, Annotations, DetectionDataset, FixupCounter, Transform, broken_link_message, clip_to_image,
    file_type_problem, image_header_size, opencv_pixel_limit,
)
from data.errors import DataError, DatasetNotFoundError, Hint, format_problems, with_missing_files_hint
from utils.messages import exact_number, preview_names
from utils.names import compose_name, folded_name, unprintable_characters

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
EMPTY_FILE = "the file is empty, not {} (an interrupted copy or export?): write it again"
DIFFICULT_VALUES = {"": False, "0": False, "false": False, "1": True, "true": True}
CLASS_LIST_FLAGS = ("-1", "0", "1")  # second field of a class-specific list: absent, difficult only, present
UTF16_BYTE_ORDER_MARKS = (b"\xff\xfe", b"\xfe\xff")
BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")
CLASSES_LISTED = 20  # an unknown-class error lists the classes up to this many, else the closest names
DECLARED_ENCODING = re.compile(rb"""<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
# a training image whose every box the fix-ups dropped: it would be trained on as showing nothing
EMPTIED_IMAGE = ("image left without a box by these drops, trained on as background (no object): fix its boxes in the "
                 "XML, or leave its id out of the list (an image without <object> is the way to train on a negative)")
SWAPPED_BOX_DROPPED = ("box with swapped coordinates dropped (xmin > xmax + 1 or ymin > ymax + 1 in the XML's 1-based "
                       "pixels: swap them)")


def to_devkit_pixels(boxes: np.ndarray) -> np.ndarray:
    """``[N, 4]`` x1y1x2y2 0-based continuous -> 1-based inclusive pixel indices: ``(x1 + 1, y1 + 1, x2, y2)``."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) + np.array([1.0, 1.0, 0.0, 0.0])


def from_devkit_pixels(boxes: np.ndarray) -> np.ndarray:
    """The inverse of ``to_devkit_pixels``: ``(x1 - 1, y1 - 1, x2, y2)``."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - np.array([1.0, 1.0, 0.0, 0.0])


def normalize_class_name(name: str) -> str:
    """The authors' name cleaning: lowercase, '(group)' removed, surrounding spaces stripped; then Unicode's composed
    form (NFC), so that an accented letter written as a letter and a combining accent (NFD, as in names that went
    through a macOS file system) is the same name."""
    return folded_name(name).replace("(group)", "").strip()


@dataclass
class VocObject:
    """One ``<object>``: ``name`` as compared with the classes (:func:`normalize_class_name`), ``written_name`` as the
    XML writes it (for messages), ``box`` the XML's 1-based inclusive x1, y1, x2, y2."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool
    written_name: str


@dataclass
class VocAnnotation:
    """One parsed XML file: ``<filename>`` (None when absent), ``<size>`` height and width in pixels (0 for a side
    that is absent or 0: the caller reads the image header), and its objects in file order."""

    filename: str | None
    height: int
    width: int
    objects: list[VocObject]


def read_utf8_text(path: Path) -> str:
    """The text of ``path``, decoded as UTF-8 with an optional byte-order mark removed.

    Raises :class:`DataError` naming the file when it is not UTF-8 text: bytes that are not UTF-8, or a NUL byte
    (UTF-16 text without a byte-order mark decodes as UTF-8 with a NUL after each ASCII letter).
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        utf16 = ", a UTF-16 byte-order mark" if data.startswith(UTF16_BYTE_ORDER_MARKS) else ""
        raise DataError(
            f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}{utf16}); "
            "save the file as UTF-8"
        ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (a NUL byte, as in UTF-16 text or binary data); save the file as UTF-8"
        )
    return text


def _number(element: ET.Element, tag: str, xml_path: Path, where: str) -> float:
    """The finite number in ``element``'s child ``tag``; :class:`DataError` naming the file and ``where`` otherwise."""
    text = element.findtext(tag)
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DataError(f"{xml_path}: {where} has no numeric <{tag}> (found {text!r})") from None
    if not math.isfinite(value):
        raise DataError(f"{xml_path}: {where} has a non-finite <{tag}> ({text!r}); give a pixel coordinate")
    return value


def _difficult(obj: ET.Element, xml_path: Path, where: str) -> bool:
    """``<difficult>``: 1/true or 0/false in any letter case; empty or missing is 0. :class:`DataError` otherwise."""
    text = obj.findtext("difficult")
    value = (text or "").strip().lower()
    if value not in DIFFICULT_VALUES:
        raise DataError(f"{xml_path}: {where} has <difficult>{text}</difficult>; use 0 or 1 (or false / true)")
    return DIFFICULT_VALUES[value]


def _not_utf8_hint(xml_path: Path) -> str:
    """A hint for a parse error caused by a file in another encoding that does not declare it ("" otherwise)."""
    try:
        xml_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return '; the file is not UTF-8: save it as UTF-8 or declare its encoding in <?xml ... encoding="..."?>'
    return ""


def _annotation_not_found(xml_path: Path) -> DataError:
    """The error for a missing ``Annotations/<id>.xml``, with a hint when the id holds an invisible character
    (:func:`utils.names.unprintable_characters`: a UTF-8 byte-order mark inside a list, a zero-width space, a
    control character), ends with an image or XML extension (a list of file names, ``000001.jpg`` or ``000001.xml``
    as ``ls`` writes them, where image ids go) or separates folders by ``\\`` (a list written on Windows) where the
    file is there with ``/``."""
    image_id = xml_path.name.removesuffix(".xml")
    stem, extension = os.path.splitext(image_id)
    slashed = image_id.replace("\\", "/")
    invisible = unprintable_characters(image_id)
    hint = ""
    if invisible:
        hint = (f" (the image id {image_id!r} holds the invisible character(s) {', '.join(invisible)}, as a byte-order "
                "mark where lists were joined, or a zero-width space: remove them from the list)")
    elif stem and extension.lower() in (*IMAGE_EXTENSIONS, ".xml"):
        hint = f" (image ids are file names without extension: write {stem})"
    elif slashed != image_id and (xml_path.parent / f"{slashed}.xml").is_file():
        hint = f" (folders in an image id are separated by /, not \\ as in a Windows path: write {slashed})"
    return DataError(f"{xml_path}: annotation file not found{hint}")


def _parsed_root(xml_path: Path) -> ET.Element:
    """The root element of the XML file ``xml_path``, also of one in a multi-byte encoding that its declaration names
    (GBK, Shift_JIS, Big5, ...), which expat cannot decode (it decodes UTF-8, UTF-16 and one-byte encodings): such a
    file is decoded by Python's codec and parsed as UTF-8. Raises ``ET.ParseError``, ``LookupError`` (an unknown
    encoding), ``OSError``, and :class:`DataError` naming the file when its bytes are not in the declared encoding."""
    try:
        return ET.parse(xml_path).getroot()
    except ValueError as error:
        data = xml_path.read_bytes()
        declared = DECLARED_ENCODING.match(data)
        if isinstance(error, UnicodeError) or declared is None:
            raise
    encoding = declared[1].decode("ascii")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise DataError(f"{xml_path}: not {encoding} text as its XML declaration says (byte "
                        f"{error.object[error.start]:#04x} at offset {error.start}); save the file as UTF-8") from None
    parser = ET.XMLParser(encoding="utf-8")  # overrides the declaration
    parser.feed(text.encode("utf-8"))
    return parser.close()


def _xml_root(xml_path: Path) -> ET.Element:
    """The ``<annotation>`` root of ``xml_path``; :class:`DataError` naming the file (and line) when it is missing,
    not a regular file (a named pipe would block the read forever), unreadable, malformed, in an unknown encoding or
    not a VOC annotation."""
    problem = file_type_problem(xml_path)
    if problem == "not found":
        raise _annotation_not_found(xml_path)
    if problem is not None:
        raise DataError(f"{xml_path}: annotation file {problem}")
    try:
        root = _parsed_root(xml_path)
    except FileNotFoundError:
        raise _annotation_not_found(xml_path) from None
    except ET.ParseError as error:
        if not xml_path.read_bytes().strip():  # 0 bytes or blank lines: "no element found" hides it
            raise DataError(f"{xml_path}: {EMPTY_FILE.format('XML')} (an image without objects needs <annotation> "
                            "too, with its <size> and no <object>)") from None
        line, column = error.position
        raise DataError(f"{xml_path}:{line}:{column}: malformed XML ({error}){_not_utf8_hint(xml_path)}") from None
    except LookupError as error:
        raise DataError(f"{xml_path}: {error} in the XML declaration; save the file as UTF-8") from None
    except OSError as error:
        raise DataError(f"{xml_path}: cannot read the annotation file ({error.strerror})") from None
    if root.tag != "annotation":
        raise DataError(f"{xml_path}: the root element is <{root.tag}>, not <annotation>: not a VOC annotation file")
    return root


def _size_side(size: ET.Element | None, tag: str, xml_path: Path) -> int:
    """``<size>``'s ``<width>`` or ``<height>`` in whole pixels (``128`` or ``128.0``), 0 when absent (the caller then
    reads the image header). :class:`DataError` naming the file and the tag for a fraction or a negative size, which
    no image has."""
    if size is None or size.find(tag) is None:
        return 0
    value = _number(size, tag, xml_path, "<size>")
    problem = "a negative size" if value < 0 else None if value.is_integer() else "not a whole number of pixels"
    if problem:
        raise DataError(f"{xml_path}: <size> has <{tag}>{size.findtext(tag)}</{tag}>, {problem}: write the image's "
                        f"{tag} in pixels, or 0 to read it from the image")
    return int(value)


def _image_size(root: ET.Element, xml_path: Path) -> tuple[int, int]:
    """(height, width) of ``<size>`` in whole pixels; 0 for a side that is absent or 0. :class:`DataError` naming the
    file for a side that is a fraction or negative (:func:`_size_side`), or when it gives more pixels than the decoder
    reads (no image that big can be loaded)."""
    size = root.find("size")
    height, width = _size_side(size, "height", xml_path), _size_side(size, "width", xml_path)
    limit = opencv_pixel_limit()
    if height * width > limit:
        raise DataError(
            f"{xml_path}: <size> is {width:g}x{height:g} (WxH), over the decoder's pixel limit ({limit:,} pixels): "
            "fix the <width> and <height> (or resize the image)"
        )
    return height, width


def parse_voc_xml(xml_path: Path) -> VocAnnotation:
    """Parse one VOC XML file. An absent ``<size>`` gives height = width = 0, an absent side or a side of 0 gives that
    side 0 (the caller then reads both from the image header). Raises :class:`DataError` naming the file (and line for
    malformed XML)."""
    root = _xml_root(xml_path)
    height, width = _image_size(root, xml_path)
    objects = []
    for number, obj in enumerate(root.iter("object"), start=1):
        where = f"object {number}"
        name = obj.findtext("name")
        if not name or not name.strip():
            raise DataError(f"{xml_path}: {where} has no <name>")
        box_element = obj.find("bndbox")
        if box_element is None:
            raise DataError(f"{xml_path}: {where} ({name.strip()}) has no <bndbox>")
        box = tuple(_number(box_element, tag, xml_path, f"{where} <bndbox>") for tag in BOX_TAGS)
        objects.append(VocObject(normalize_class_name(name), box, _difficult(obj, xml_path, where), name.strip()))
    return VocAnnotation(root.findtext("filename"), height, width, objects)


def _normalised_coordinates_problem(parsed: VocAnnotation, xml_path: Path) -> str | None:
    """The problem of an annotation whose boxes are normalised to [0, 1] instead of in pixels: every coordinate
    <= 1 and one at least with a fraction (whole coordinates <= 1 are a box of the top-left pixel); ``None`` else."""
    coordinates = [(tag, value) for obj in parsed.objects for tag, value in zip(BOX_TAGS, obj.box)]
    fractional = next(((tag, value) for tag, value in coordinates if not value.is_integer()), None)
    if fractional is None or any(value > 1 for _, value in coordinates):
        return None
    return (f"{xml_path}: every box coordinate is <= 1 (e.g. {fractional[0]} {fractional[1]}): VOC XML takes pixel "
            "coordinates (1-based), not coordinates normalised to [0, 1]; multiply them by the image's width and "
            "height")


class FileFinder:
    """Finds a file in one folder (the image of an annotation in ``JPEGImages``, an annotation ``<id>.xml`` in
    ``Annotations``), whatever the letter case of its extension or name and the Unicode normal form of its name (an
    accent written as a combining character, as a macOS file system keeps names, or composed with its letter: they
    print alike).

    Exact names are tried first (one ``stat`` each); the folder's listing is read once, on the first miss, and indexed
    by stem once, on the first :meth:`same_stem`.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._by_folded_name: dict[str, str] | None = None
        self._by_folded_stem: dict[str, list[str]] | None = None

    @staticmethod
    def candidates(image_id: str, filename: str | None) -> list[str]:
        """File names tried for ``image_id``, by preference: ``<id>.jpg``, the XML's ``<filename>``, other
        extensions."""
        names = [f"{image_id}{IMAGE_EXTENSIONS[0]}"]
        if filename:
            names.append(filename)
        return list(dict.fromkeys(names + [f"{image_id}{ext}" for ext in IMAGE_EXTENSIONS[1:]]))

    def find(self, names: Sequence[str]) -> Path | None:
        """The first of ``names`` present in the folder as a regular file, matched exactly, else ignoring letter case
        and Unicode normal form; ``None`` if absent (or a name the system cannot look up, such as one too long)."""
        exact = next((self.folder / name for name in names if file_type_problem(self.folder / name) is None), None)
        if exact is not None:
            return exact
        folded = self._listing()
        found = next((folded[folded_name(n)] for n in names if folded_name(n) in folded), None)
        return None if found is None else self.folder / found

    def same_stem(self, stem: str) -> list[str]:
        """The names of the folder's files ``<stem>.<any extension>`` (the stem in any letter case and Unicode normal
        form), sorted: for the message of an image not found, one in an extension that is not tried. Looked up in an
        index of the listing by stem, built once: a folder of images all in an extension not tried (VOC's 17k JPEGs
        converted to AVIF) asks for every image's."""
        if self._by_folded_stem is None:
            self._by_folded_stem = {}
            for key, name in self._listing().items():
                key_stem, extension = os.path.splitext(key)
                if extension:
                    self._by_folded_stem.setdefault(key_stem, []).append(name)
        return sorted(self._by_folded_stem.get(folded_name(stem), []))

    def _listing(self) -> dict[str, str]:
        """The folder's regular files, name by :func:`folded_name`; listed once."""
        if self._by_folded_name is None:
            with os.scandir(self.folder) as entries:
                self._by_folded_name = {folded_name(entry.name): entry.name for entry in entries if _is_file(entry)}
        return self._by_folded_name

    def unusable(self, names: Sequence[str]) -> list[str]:
        """``<name> is a folder, not a regular file: ...`` (or another :func:`file_type_problem` but "not found") for
        each of ``names`` present in the folder that cannot be read as an image file."""
        problems = [(name, file_type_problem(self.folder / name)) for name in names]
        return [f"{name} {problem}" for name, problem in problems if problem not in (None, "not found")]


def _annotation_path(annotations: FileFinder, image_id: str) -> Path:
    """The annotation of ``image_id`` in the ``Annotations`` folder of ``annotations``: ``<image_id>.xml`` in any
    letter case and Unicode normal form, as images are found; the exact path when there is none (whose reading then
    reports it not found)."""
    name = f"{image_id}.xml"
    return annotations.find([name]) or annotations.folder / name


def _is_file(entry: os.DirEntry) -> bool:
    """``entry.is_file()``, False for an entry that cannot be looked at (a symbolic link loop raises ``OSError``)."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _list_file(folder: Path, list_name: str) -> Path:
    """``<folder>/ImageSets/Main/<list_name>.txt``."""
    return Path(folder) / "ImageSets" / "Main" / f"{list_name}.txt"


def check_disjoint_splits(train_sets: Sequence[tuple[Path, str]], test_sets: Sequence[tuple[Path, str]]) -> None:
    """Raise :class:`DataError` naming both list files when a ``(folder, image id)`` is in a train and a test list,
    or when a train and a test annotation use the same image file (an XML whose ``<id>.jpg`` is missing names its
    image in ``<filename>``, which may be another id's image, also in another folder).

    Lists that do not exist are skipped (they are reported when their split is built).
    """
    for test_folder, test_name in test_sets:
        test_list = _list_file(test_folder, test_name)
        if not test_list.is_file():
            continue
        test_ids = set(read_image_list(test_list, ""))
        for train_folder, train_name in train_sets:
            train_list = _list_file(train_folder, train_name)
            if Path(train_folder).resolve() != Path(test_folder).resolve() or not train_list.is_file():
                continue
            shared = [image_id for image_id in read_image_list(train_list, "") if image_id in test_ids]
            if shared:
                examples = ", ".join(shared[:3]) + (", ..." if len(shared) > 3 else "")
                raise DataError(
                    f"{train_list} and {test_list} share {len(shared)} image id(s) ({examples}), so the model would be "
                    f"tested on images it trained on: remove them from {train_list.name} (in the VOC layout "
                    "train.txt + val.txt = trainval.txt; a folder tested on val.txt trains on train.txt) or list "
                    "held-out images in test.txt"
                )
    _check_disjoint_image_files(train_sets, test_sets)


@dataclass(frozen=True)
class ListedImage:
    """The image file an annotation of an image list uses."""

    annotation: Path
    list_file: Path
    image: Path


def _check_disjoint_image_files(train_sets: Sequence[tuple[Path, str]], test_sets: Sequence[tuple[Path, str]]) -> None:
    """Raise :class:`DataError` naming both annotations and lists when a train and a test annotation use the same
    image file (compared by device and inode: links and different spellings of one path are the same file)."""
    test_images = _image_files(test_sets)
    if not test_images:
        return
    for key, train in _image_files(train_sets).items():
        if key in test_images:
            raise DataError(
                f"{_same_image(train, test_images[key])}, so the model would be tested on an image it trained on: "
                "give each annotation its own image (JPEGImages/<id>.jpg, or a <filename> naming it) or remove one "
                "of them from its list"
            )


def _same_image(first: ListedImage, second: ListedImage) -> str:
    """``<xml> (listed in <list>) and <xml> (listed in <list>) use the same image <first's image>``."""
    return (f"{first.annotation} (listed in {first.list_file}) and {second.annotation} (listed in {second.list_file}) "
            f"use the same image {first.image}")


def _image_files(image_sets: Sequence[tuple[Path, str]]) -> dict[tuple[int, int], ListedImage]:
    """``(st_dev, st_ino)`` of each listed image file -> the first annotation using it. Ids whose list, XML or image is
    missing or unreadable are skipped (reported when their split is built)."""
    listed = []
    for folder, list_name in image_sets:
        folder, list_file = Path(folder), _list_file(folder, list_name)
        if not list_file.is_file() or not (folder / "JPEGImages").is_dir() or not (folder / "Annotations").is_dir():
            continue
        finder, annotations = FileFinder(folder / "JPEGImages"), FileFinder(folder / "Annotations")
        for image_id in read_image_list(list_file, ""):
            xml_path = _annotation_path(annotations, image_id)
            image = _listed_image(finder, image_id, xml_path)
            if image is not None:
                listed.append(ListedImage(xml_path, list_file, image))
    files: dict[tuple[int, int], ListedImage] = {}
    for entry in listed:
        try:
            status = os.stat(entry.image)
        except OSError:  # reported where the image is read
            continue
        files.setdefault((status.st_dev, status.st_ino), entry)
    return files


def _shared_image_problems(listed: Sequence[ListedImage], test_split: bool) -> list[str]:
    """One problem per annotation of a split whose image path an earlier annotation of the split already uses: the
    image would be trained with one annotation's boxes at a time, or in a ``test_split`` its detections scored against
    one annotation's boxes at a time (an XML whose ``<id>.jpg`` is missing names its image in ``<filename>``, which
    may be another id's). Paths, not files, are compared: two ids whose images are links to one stored copy
    (git-annex, DVC, a hub cache) are two images of the same pixels, as two copies would be."""
    effect = ("so its detections would be scored against the boxes of one annotation at a time (the objects of each "
              "missed under the other, and their detections false positives there)" if test_split else
              "so it would be trained with the boxes of one annotation at a time")
    first: dict[str, ListedImage] = {}
    problems = []
    for entry in listed:
        key = os.path.normcase(os.path.abspath(entry.image))
        if key in first:
            problems.append(f"{_same_image(first[key], entry)}, {effect}: give each annotation its own image, or fix "
                            "the <filename>")
        else:
            first[key] = entry
    return problems


def _listed_image(finder: FileFinder, image_id: str, xml_path: Path) -> Path | None:
    """The image that :class:`VOCDetection` reads for ``image_id``; the XML is parsed only when ``<id>.jpg`` is
    missing (its ``<filename>`` is then a candidate). ``None`` when not found or the XML is bad."""
    first = finder.folder / FileFinder.candidates(image_id, None)[0]
    if file_type_problem(first) is None:
        return first
    try:
        filename = parse_voc_xml(xml_path).filename
    except DataError:
        return None
    return finder.find(FileFinder.candidates(image_id, filename))


def read_image_list(list_file: Path, download_hint: Hint) -> list[str]:
    """Image ids of an ``ImageSets/Main/*.txt`` file: one ``<id>`` or ``<id> <-1|0|1>`` (a class-specific list) per
    non-empty line, UTF-8 with or without a byte-order mark. A line such as ``photo 1`` whose whole text names an
    annotation (``Annotations/photo 1.xml``) is an id with a space, which the format cannot hold, not a class flag.

    Raises :class:`DatasetNotFoundError` when the file is missing and one :class:`DataError` listing the lines of
    another form and the ids listed more than once (which would count their objects twice in the test split).
    """
    if not list_file.is_file():
        raise DatasetNotFoundError(unusable_list_problem(list_file) or f"{list_file} not found: {download_hint}")
    lines_of: dict[str, list[int]] = {}
    problems = []
    for line_number, line in enumerate(read_utf8_text(list_file).splitlines(), start=1):
        fields = line.split()
        spaced_id = len(fields) == 2 and _annotation_named(list_file, line.strip())  # "photo 1": not a class flag
        if len(fields) > 2 or (len(fields) == 2 and fields[1] not in CLASS_LIST_FLAGS) or spaced_id:
            is_comment = line.lstrip()[:1] == "#"
            fix = ("it looks like a comment, which an image list cannot hold: remove the line" if is_comment
                   else "image ids cannot contain spaces: rename the files")
            problems.append(f"{list_file}:{line_number}: expected '<image id>' or '<image id> <-1|0|1>', got {line!r}; "
                            f"{fix}")
        elif fields:
            lines_of.setdefault(fields[0], []).append(line_number)
    problems += [
        f"{list_file}: image id {image_id!r} is listed on lines {', '.join(map(str, numbers))}; remove the repeats"
        for image_id, numbers in lines_of.items()
        if len(numbers) > 1
    ]
    if problems:
        raise DataError(format_problems(f"image list {list_file}", problems))
    return list(lines_of)


def unusable_list_problem(list_file: Path) -> str | None:
    """``<list_file>: image list file is a broken symbolic link (...)`` (or another :func:`file_type_problem`: a
    folder, a named pipe, a link loop) when ``list_file`` is there but cannot be read as a list, as the lists of a
    git-annex or DVC dataset whose files were not fetched; ``None`` for a regular file or a missing one."""
    problem = file_type_problem(list_file)
    return None if problem in (None, "not found") else f"{list_file}: image list file {problem}"


def _annotation_named(list_file: Path, name: str) -> bool:
    """Whether the VOC-layout folder of ``list_file`` (``<folder>/ImageSets/Main/<list>.txt``) has an annotation
    ``Annotations/<name>.xml``."""
    return (Path(list_file).parent.parent.parent / "Annotations" / f"{name}.xml").is_file()


def check_voc_folder(folder: Path, download_hint: Hint) -> None:
    """Raise :class:`DatasetNotFoundError` when ``folder`` lacks the VOC layout."""
    for part in ("Annotations", "JPEGImages", "ImageSets/Main"):
        if not (folder / part).is_dir():
            raise DatasetNotFoundError(broken_link_message(folder / part)
                                       or f"{folder / part} not found (VOC layout expected): {download_hint}")


@dataclass
class _ReadImage:
    """A listed image whose XML parsed and whose image file was found; ``parsed`` holds the image's size in pixels
    (from ``<size>``, else the image header)."""

    image_id: str
    xml_path: Path
    parsed: VocAnnotation
    image_path: Path


@dataclass
class _TrainingImage:
    """One image as the loader trains on it: ``path`` its image file, ``xml_path`` its annotation; ``boxes`` float32
    ``[n, 4]`` x1y1x2y2 in 0-based continuous pixels, clipped to the image and without degenerate boxes; ``labels``
    int64 ``[n]`` 0..C-1; ``difficult`` bool ``[n]``; ``size`` (height, width)."""

    path: str
    xml_path: str
    image_id: str
    size: tuple[int, int]
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def _class_labels(class_names: Sequence[str]) -> dict[str, int]:
    """Each class name as the XML's names are compared (:func:`normalize_class_name`) -> its label 0..C-1;
    :class:`DataError` when two names are one once compared."""
    label_of = {normalize_class_name(name): label for label, name in enumerate(class_names)}
    if len(label_of) != len(class_names):
        raise DataError(f"the class names {list(class_names)} repeat a name once compared as the XML's names "
                        "are (case ignored, '(group)' removed): give --classes each class once")
    return label_of


def _listed_ids(folder: Path, list_name: str, download_hint: Hint, problems: list[str]) -> tuple[Path, list[str]]:
    """The list file ``ImageSets/Main/<list_name>.txt`` of the VOC-layout ``folder`` and its image ids; a list of no
    id is appended to ``problems``. :class:`DatasetNotFoundError` when the layout or the list is missing."""
    check_voc_folder(folder, download_hint)
    list_file = _list_file(folder, list_name)
    image_ids = read_image_list(list_file, download_hint)
    if not image_ids:
        problems.append(f"{list_file} lists no image id: add the ids of the split's images, one per line")
    return list_file, image_ids


def _image_without_xml_hint(xml_path: Path, finder: FileFinder, image_id: str) -> str:
    """For a missing XML whose image is there (annotation tools such as LabelImg save no XML for an image without
    boxes): a clause saying that such an image needs one too; "" otherwise."""
    if file_type_problem(xml_path) != "not found":
        return ""
    image_path = finder.find(FileFinder.candidates(image_id, None))
    if image_path is None:
        return ""
    return (f"; its image {image_path} is there: an image without objects needs an XML too, with its <size> and no "
            "<object> (or leave the id out of the list)")


def _read_listed_image(
    folder: Path, finders: tuple[FileFinder, FileFinder], list_file: Path, image_id: str, problems: list[str],
    listed: list[ListedImage],
) -> _ReadImage | None:
    """Parse ``Annotations/<image_id>.xml`` of ``folder`` (found as :func:`_annotation_path` finds it), find its image
    and read the image's size when the XML does not give it; ``finders``: those of ``JPEGImages`` and
    ``Annotations``. Each problem found is appended to ``problems`` (boxes normalised to [0, 1] do not
    stop the reading); ``None`` when the XML, the image file or its size cannot be read. The image found is appended
    to ``listed`` (for :func:`_shared_image_problems`), also when its size cannot be read."""
    finder, annotations = finders
    xml_path = _annotation_path(annotations, image_id)
    try:
        parsed = parse_voc_xml(xml_path)
    except DataError as error:
        problems.append(f"{error} (listed in {list_file}){_image_without_xml_hint(xml_path, finder, image_id)}")
        return None
    if problem := _normalised_coordinates_problem(parsed, xml_path):
        problems.append(problem)
    names = FileFinder.candidates(image_id, parsed.filename)
    image_path = finder.find(names)
    if image_path is None:
        unusable = "".join(f"; {problem}" for problem in finder.unusable(names))
        base = re.split(r"[\\/]", parsed.filename or "")[-1]  # of a path that a tool wrote in <filename>
        in_folder = finder.find([base]) if base and base != parsed.filename else None
        if in_folder is not None:
            unusable += (f"; <filename> is read in {finder.folder}, which holds {in_folder.name}: write "
                         f"<filename>{in_folder.name}</filename> in {xml_path}")
        elif other_extensions := finder.same_stem(image_id):  # e.g. a.avif
            unusable += (f"; {finder.folder} holds {', '.join(other_extensions)}: write "
                         f"<filename>{other_extensions[0]}</filename> in {xml_path}")
        problems.append(
            f"{folder / 'JPEGImages' / image_id}.jpg: image file not found (listed in {list_file}); "
            f"tried {', '.join(names)} in {folder / 'JPEGImages'}, in any letter case{unusable}"
        )
        return None
    listed.append(ListedImage(xml_path, list_file, image_path))
    if parsed.height <= 0 or parsed.width <= 0:
        try:
            parsed.height, parsed.width = image_header_size(image_path)
        except DataError as error:
            problems.append(f"{error} (its size is read from the image, as {xml_path} has no <size>)")
            return None
    return _ReadImage(image_id, xml_path, parsed, image_path)


def _unknown_class_problems(
    image: _ReadImage, label_of: dict[str, int], skip_unknown_classes: bool, skipped: dict[str, int],
    classes_fixed_by: str | None = None, class_file: str | os.PathLike | None = None,
) -> list[str]:
    """One problem per class of ``image``'s objects that is not in ``label_of`` (with its count and its name as the
    XML first writes it); with ``skip_unknown_classes`` none, the objects are counted per class in ``skipped``.
    ``classes_fixed_by``: the trained model whose classes these are (a checkpoint's path, or a phrase naming it),
    which cannot score another: the problem says so instead of "add it to --classes". ``class_file``: the file
    ``--classes`` read the classes from, which the problem names instead of the flag."""
    objects = image.parsed.objects
    unknown = [obj.name for obj in objects if obj.name not in label_of]
    written = {obj.name: obj.written_name for obj in reversed(objects)}  # each name's first form
    problems = []
    for name in dict.fromkeys(unknown):  # each unknown class once per file, with its count
        if skip_unknown_classes:
            skipped[name] = skipped.get(name, 0) + unknown.count(name)
            continue
        times = f" ({unknown.count(name)} objects)" if unknown.count(name) > 1 else ""
        compared = f", compared as {name!r}" if compose_name(written[name]) != name else ""
        about = _about_classes(name, tuple(label_of))
        skip = "pass --skip_unknown_classes to leave such objects out (counted in one warning)"
        if classes_fixed_by is not None:
            problems.append(f"{image.xml_path}: unknown class {written[name]!r}{times}{compared}{about}; "
                            f"{classes_fixed_by} was not trained on it: {skip}")
            continue
        add = f"add it to the class file {class_file}, one name per line" if class_file else "add it to --classes"
        fix = _comma_in_class_name(name, tuple(label_of)) if "," in name else add
        problems.append(f"{image.xml_path}: unknown class {written[name]!r}{times}{compared}{about}; {fix}, or {skip}")
    return problems


@functools.lru_cache(maxsize=256)
def _about_classes(name: str, classes: tuple[str, ...]) -> str:
    """`` (classes: cat, dog)`` and any hint for an unknown class ``name`` among ``classes`` (as compared). Cached:
    with 1,000 classes the closest names and the hints take about 8 ms, and every file holding the unknown class
    asks (10,000 files: 80 s)."""
    hint = _class_written_in_quotes(name, classes) or _one_class_of_several_names(name, classes)
    return f" ({_known_classes(name, classes)}){hint}"


def _known_classes(name: str, classes: Sequence[str]) -> str:
    """What an unknown class ``name`` is told about the ``classes``: ``classes: cat, dog`` for up to
    :data:`CLASSES_LISTED` of them; for more, their count and the names closest to ``name`` (a typo), or the first
    few when none is close: a line listing 1,000 classes would be 11,000 characters."""
    if len(classes) <= CLASSES_LISTED:
        return f"classes: {', '.join(classes)}"
    closest = difflib.get_close_matches(name, classes, n=3)
    if closest:
        return f"not among the {len(classes)} classes; the closest: {', '.join(map(repr, closest))}"
    return f"not among the {len(classes)} classes: {preview_names(list(classes))}"


def _comma_in_class_name(name: str, classes: tuple[str, ...]) -> str:
    """What to do about an unknown class ``name`` holding a comma, which no name given with ``--classes`` can hold
    (a COCO-layout category or a checkpoint's class names can): rename it; and, where ``--classes`` holds each of its
    parts, that it read the name as that many names."""
    parts = [part.strip() for part in name.split(",") if part.strip()]
    read = f"--classes read it as {len(parts)} names: " if all(part in classes for part in parts) else ""
    return (f"{read}a name given with --classes cannot hold a comma, so rename the class in the XML files and in "
            f"--classes (e.g. {'_'.join(parts)!r})")


LIST_MARKS = " \t'\"`[]{}-"  # what a Python, JSON or YAML list pasted into --classes leaves around each name


def _class_written_in_quotes(name: str, classes: Iterable[str]) -> str:
    """For an unknown class ``name`` that a class name is once the quotes, brackets or list marks around it are
    removed (``'cat'`` of ``--classes "'cat','dog'"``, ``["cat"`` of a JSON list, ``- cat`` of a YAML one): a clause
    saying how ``--classes`` wrote it and to give the names bare; "" otherwise."""
    classes = list(classes)
    bare = [known.strip(LIST_MARKS) for known in classes]
    if name not in bare or name in classes:
        return ""
    shown = ",".join(bare) if len(bare) <= CLASSES_LISTED else ",".join(bare[:4]) + ",..."
    return (f"; --classes writes it {classes[bare.index(name)]!r}: give the names bare, without quotes, brackets or "
            f"list marks ({shown})")


def _one_class_of_several_names(name: str, classes: Iterable[str]) -> str:
    """For an unknown class ``name`` that is a word of a class name (``cat`` of ``cat dog``, several names written
    on one line of a class file, or separated by ``;``): a clause saying that this is one class name and how to give
    several; "" otherwise."""
    for known in classes:
        words = [word for word in re.split(r"[\s;]+", known) if word]
        if len(words) > 1 and name in words:
            return (f"; {known!r} is one class name: give one name per line of a class file (or {','.join(words)} "
                    "on the command line)")
    return ""


def _known_objects(
    objects: Sequence[VocObject], label_of: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The objects of a class in ``label_of`` as the XML writes them: boxes float64 ``[n, 4]`` x1y1x2y2 1-based
    inclusive (float64 until clipped: any finite coordinate, 1e300 too, is clipped, not cast to float32 inf), labels
    int64 ``[n]`` 0..C-1, difficult bool ``[n]`` and each one's place among the XML's objects, int64 ``[n]`` from 1."""
    places = [place for place, obj in enumerate(objects, start=1) if obj.name in label_of]
    known = [objects[place - 1] for place in places]
    xml_boxes = np.array([obj.box for obj in known], dtype=np.float64).reshape(-1, 4)
    labels = np.array([label_of[obj.name] for obj in known], dtype=np.int64)
    difficult = np.array([obj.difficult for obj in known], dtype=bool)
    return xml_boxes, labels, difficult, np.array(places, dtype=np.int64)


def _swapped_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool ``[n]``: 0-based continuous pixel boxes ``[n, 4]`` that are inside out (``x2 < x1`` or ``y2 < y1``; in
    the XML's 1-based inclusive pixels ``xmin > xmax + 1`` or ``ymin > ymax + 1``, as ``xmax = xmin - 1`` is a box
    of no width) and that, with each axis's two coordinates in order and clipped to the image, have extent
    (:func:`data.dataset.clip_to_image`): boxes whose coordinates look swapped."""
    ordered = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
    inside_out = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    return inside_out & clip_to_image(ordered, height, width)[1]


def _swapped_box_name(image: _ReadImage, place: int) -> str:
    """The XML file and object ``place`` (from 1) of ``image``, with its class and the swapped XML values, e.g.
    ``Annotations/a.xml object 2 'dog' (xmin 40 > xmax 20)``."""
    obj = image.parsed.objects[place - 1]
    xmin, ymin, xmax, ymax = obj.box
    swapped = [f"{low} {exact_number(first)} > {high} {exact_number(second)}"
               for low, first, high, second in (("xmin", xmin, "xmax", xmax), ("ymin", ymin, "ymax", ymax))
               if first - 1 > second]
    return f"{image.xml_path} object {place} {obj.written_name!r} ({', '.join(swapped)})"


def _training_image(
    image: _ReadImage, xml_boxes: np.ndarray, labels: np.ndarray, difficult: np.ndarray, places: np.ndarray,
    fixups: FixupCounter,
) -> _TrainingImage:
    """``image``'s objects (:func:`_known_objects`) as training targets: boxes moved from the XML's 1-based inclusive
    pixels to 0-based continuous ones, clipped to the image and degenerate ones dropped, counted in ``fixups`` (those
    whose coordinates look swapped, :func:`_swapped_boxes`, as such, named by their XML object)."""
    height, width = image.parsed.height, image.parsed.width
    boxes = from_devkit_pixels(xml_boxes)
    swapped = _swapped_boxes(boxes, height, width)
    shown = places[swapped][:FixupCounter.EXAMPLES_SHOWN]
    fixups.add(SWAPPED_BOX_DROPPED, int(swapped.sum()), [_swapped_box_name(image, place) for place in shown],
               changes_boxes=True)
    keep = fixups.clip_and_drop(boxes, height, width, str(image.xml_path), counted=swapped)
    return _TrainingImage(str(image.image_path), str(image.xml_path), image.image_id, (height, width),
                          boxes[keep].astype(np.float32), labels[keep], difficult[keep])


def _annotations(images: Sequence[_TrainingImage]) -> Annotations:
    """The flat :class:`Annotations` of ``images``, in their order."""
    return Annotations.from_images(
        [image.path for image in images], [image.image_id for image in images], [image.size for image in images],
        [image.boxes for image in images], [image.labels for image in images], [image.difficult for image in images],
    )


class VOCDetection(DetectionDataset):
    """VOC-layout images listed by one or more ``(folder, list name)`` pairs, e.g.
    ``[(VOCdevkit/VOC2007, "trainval"), (VOCdevkit/VOC2012, "trainval")]``.

    Problems that make the data wrong (malformed XML, missing image or annotation, unknown class name, a list of no
    image id, boxes normalised to [0, 1], two annotations using one image file) raise one :class:`DataError` listing
    them, before any training. An unknown class is skipped and counted instead with ``skip_unknown_classes=True``
    (its problem advises that alone when ``classes_fixed_by`` names the trained model whose classes these are, and
    names ``class_file``, the file ``--classes`` read them from, as the place to add it).
    Boxes partly outside the image are clipped to it and boxes with ``x2 <= x1`` or ``y2 <= y1`` (in pixels, or once
    normalised by the image size) dropped, with one counted :class:`DataWarning` (boxes whose coordinates look swapped
    counted apart, named by XML file and object; a training image left without a box by these drops is counted and
    named too, as it is trained on as background); ``fixups`` holds the counts. For a ``test_split`` the warning adds
    that the evaluation scores the boxes as the XML writes them.
    """

    kind = "voc"

    def __init__(
        self,
        image_sets: Sequence[tuple[Path, str]],
        class_names: Sequence[str],
        transform: Transform,
        *,
        skip_unknown_classes: bool = False,
        download_hint: Hint = "check --data_root",
        missing_files_hint: Hint | None = None,
        seed: int = 0,
        test_split: bool = False,
        classes_fixed_by: str | None = None,
        class_file: str | os.PathLike | None = None,
    ) -> None:
        label_of = _class_labels(class_names)
        problems: list[str] = []
        fixups = FixupCounter()
        skipped: dict[str, int] = {}
        scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        listed: list[ListedImage] = []
        training: list[_TrainingImage] = []
        emptied: list[str] = []  # the XML files of training images whose every box was dropped
        for folder, list_name in image_sets:
            folder = Path(folder)
            list_file, image_ids = _listed_ids(folder, list_name, download_hint, problems)
            finders = FileFinder(folder / "JPEGImages"), FileFinder(folder / "Annotations")
            for image_id in image_ids:
                image = _read_listed_image(folder, finders, list_file, image_id, problems, listed)
                if image is None:
                    continue
                problems += _unknown_class_problems(image, label_of, skip_unknown_classes, skipped, classes_fixed_by,
                                                    class_file)
                xml_boxes, labels, difficult, places = _known_objects(image.parsed.objects, label_of)
                scored.append((xml_boxes, labels, difficult))  # the devkit scores the XML as written
                training.append(_training_image(image, xml_boxes, labels, difficult, places, fixups))
                if not test_split and len(labels) and not len(training[-1].labels):
                    emptied.append(str(image.xml_path))
        problems += _shared_image_problems(listed, test_split)
        if problems:
            message = format_problems(f"VOC annotations in {', '.join(str(f) for f, _ in image_sets)}", problems)
            raise DataError(with_missing_files_hint(message, problems, missing_files_hint))
        fixups.add(EMPTIED_IMAGE, len(emptied), emptied[:FixupCounter.EXAMPLES_SHOWN])
        if skipped:
            examples = [f"{name!r} x{count}" for name, count in skipped.items()]
            fixups.add("object of an unknown class skipped", sum(skipped.values()), examples)
        fixups.warn("VOC dataset " + ", ".join(str(_list_file(folder, name)) for folder, name in image_sets),
                    test_split)
        self.fixups = dict(fixups.counts)
        self._scored_objects = scored
        self._xml_paths = np.array([image.xml_path for image in training], dtype=str)  # [N], as image_paths
        super().__init__(_annotations(training), class_names, transform, seed)

    def annotation_source(self, index: int) -> str:
        """The XML file of item ``index`` (``<folder>/Annotations/<image id>.xml``)."""
        return str(self._xml_paths[index])

    def ground_truth(self) -> list[dict[str, np.ndarray]]:
        """Per image, the objects the evaluation scores, as the XML writes them (the devkit reads the XML: boxes
        outside the image or degenerate, which training clips or drops, are scored unchanged): ``{"boxes": float64
        [n, 4] x1y1x2y2 devkit pixels (1-based inclusive), "labels": int64 [n] 0..C-1, "difficult": bool [n]}``;
        objects of classes outside ``class_names`` (``skip_unknown_classes``) are not scored."""
        return [{"boxes": boxes.copy(), "labels": labels.copy(), "difficult": difficult.copy()}
                for boxes, labels, difficult in self._scored_objects]

    def objects_to_score_per_class(self) -> np.ndarray:
        """int64 ``[C]``: per class, the objects the evaluation scores: those of :meth:`ground_truth` not marked
        difficult."""
        labels = [labels[~difficult] for _, labels, difficult in self._scored_objects]
        return np.bincount(np.concatenate([np.zeros(0, np.int64), *labels]), minlength=self.num_classes)

    def objects_to_score_per_image(self) -> np.ndarray:
        """int64 ``[N]``: per item, the objects of :meth:`ground_truth` not marked difficult."""
        return np.array([np.count_nonzero(~difficult) for _, _, difficult in self._scored_objects], dtype=np.int64)
