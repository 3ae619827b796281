"""The detection dataset shared by VOC and COCO: image reading, flat annotation storage and ``__getitem__``.

Annotations are parsed once at construction (in ``data/voc.py`` / ``data/coco.py``) into a few flat NumPy arrays
(:class:`Annotations`), so DataLoader workers forked from the main process share them without copy-on-write growth.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from data.errors import (
    CorruptImageWarning, DataError, DataWarning, ImageDecoderWarning, ImageSizeError, LowBitDepthWarning,
)
from utils.integers import as_int
from utils.messages import counted
from utils.names import folded_name

if TYPE_CHECKING:
    import PIL.Image

_JPEG_START = b"\xff\xd8"
# inside entropy-coded scan data a 0xFF byte is followed by 0x00 (stuffing), a restart marker 0xD0-0xD7 or fill 0xFF;
# anything else is the next marker
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_END_OF_IMAGE, _START_OF_SCAN = 0xD9, 0xDA
_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])  # markers without a length field
EXIF_ORIENTATION_TAG = 0x0112
EXIF_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # the orientations that swap width and height
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # little/big-endian TIFF and BigTIFF
_TIFF_IMAGE_WIDTH, _TIFF_IMAGE_LENGTH = 256, 257
_TIFF_INTEGER_TYPES = {3: "H", 4: "I"}  # SHORT (the specification's type for the orientation) and LONG
# the image file types read_image is used for, by preference: the --demo's inputs and the extensions a VOC-layout
# image id is looked up with (data/voc.py FileFinder.candidates); read_image decodes by content, not by extension
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
OPENCV_PIXEL_LIMIT = 1 << 30  # OpenCV's default CV_IO_MAX_IMAGE_PIXELS (environment: OPENCV_IO_MAX_IMAGE_PIXELS)
_PIL_BOMB_PIXELS = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")  # PIL's DecompressionBombError

# OpenCV's log line prefix, e.g. "[ WARN:0@2.989] global grfmt_png.cpp:793 readFromStreamOrBuffer ": level, thread,
# time, source file and function, which mean nothing to a user
_OPENCV_LOG_PREFIX = re.compile(r"^\[\s*[A-Z]+:[^\]]*\]\s+(?:global\s+)?\S+:\d+\s+\S+\s+")
# libjpeg's warnings for damaged entropy-coded data; it prints them on stderr and OpenCV still returns an image
LIBJPEG_CORRUPTION_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG file")
NEARLY_BLACK = 16  # an 8-bit image whose every value is below this reads nearly black (a 16-bit one: below 4096)
_STDERR_CAPTURE_FILES: dict[int, int] = {}  # process id -> descriptor (a forked child must not share its offset)

# the share of a training split's boxes below the augmentation's minimum side (TrainTransform.min_box_side) from
# which loading warns that they are rarely trained on
RARELY_TRAINED_SHARE_WARNED = 0.05
DEGENERATE_BOX_DROPPED = "degenerate box dropped (x2 <= x1 or y2 <= y1, in pixels or once normalised)"

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def is_truncated_jpeg(data: np.ndarray) -> bool:
    """True for a JPEG byte buffer whose data ends before the end-of-image marker ``FFD9`` of its main image.

    Walks the marker segments from the start as a decoder does: length-prefixed segments (an EXIF thumbnail's own
    ``FFD9`` included) are skipped, the entropy-coded data after each start-of-scan runs to the next marker, and
    bytes between segments are skipped up to the next ``FF``. Bytes after the end-of-image marker (padding, a camera's
    trailer) are allowed. OpenCV decodes a truncated file partially and only warns on stderr. A segment whose length
    runs past the end of a file that still holds an end-of-image marker after it has a damaged length, not a cut: the
    file is not called truncated (OpenCV then reports it undecodable).
    """
    buffer = data.tobytes()
    if not buffer.startswith(_JPEG_START):
        return False
    position, size = 2, len(buffer)
    while True:
        position = buffer.find(b"\xff", position)  # a marker, after any stray bytes between segments
        if position < 0:
            return True
        while position < size and buffer[position] == 0xFF:  # fill bytes before the marker code
            position += 1
        if position >= size:
            return True
        code = buffer[position]
        position += 1
        if code == _END_OF_IMAGE:
            return False
        if code in _STANDALONE_MARKERS:
            continue
        if position + 2 > size:
            return True
        segment = position
        position += int.from_bytes(buffer[position:position + 2], "big")  # the length counts its own 2 bytes
        if position >= size:  # cut inside the segment, or a damaged length: whole if the end marker is still there
            return buffer.find(b"\xff\xd9", segment) < 0
        if code == _START_OF_SCAN:
            scan_end = _SCAN_END.search(buffer, position)
            if scan_end is None:
                return True
            position = scan_end.start()


def tiff_in_stored_order(data: np.ndarray) -> np.ndarray:
    """The bytes ``data`` of an image file (uint8 ``[N]``) to decode in stored pixel order: for a TIFF or BigTIFF
    (told by its first bytes, whatever its suffix) whose first image's orientation tag is not 1 (top-left), a copy
    with the tag set to 1, as OpenCV's TIFF decoder applies the tag whatever ``IMREAD_IGNORE_ORIENTATION`` says;
    ``data`` itself otherwise (a TIFF whose directory cannot be walked is left to the decoder's own error)."""
    signature = data[:4].tobytes()
    if signature not in TIFF_SIGNATURES:
        return data
    order = "<" if signature.startswith(b"II") else ">"
    big = signature in (b"II+\x00", b"MM\x00+")
    # classic TIFF: 4-byte directory offset at byte 4, 2-byte entry count, 12-byte entries with a 4-byte count;
    # BigTIFF: 8-byte offset at byte 8, 8-byte count, 20-byte entries with an 8-byte count
    offset_format, entry_size = (order + "Q", 20) if big else (order + "I", 12)
    try:
        directory = struct.unpack_from(offset_format, data, 8 if big else 4)[0]
        entries = struct.unpack_from(order + ("Q" if big else "H"), data, directory)[0]
        first = directory + (8 if big else 2)
        for entry in range(first, min(first + entries * entry_size, data.size - entry_size + 1), entry_size):
            tag, kind = struct.unpack_from(order + "HH", data, entry)
            value_format = _TIFF_INTEGER_TYPES.get(kind)
            if tag != EXIF_ORIENTATION_TAG or value_format is None:
                continue
            value_at = entry + (12 if big else 8)
            if struct.unpack_from(order + value_format, data, value_at)[0] == 1:
                return data
            stored_order = data.copy()
            struct.pack_into(order + value_format, stored_order, value_at, 1)
            return stored_order
    except struct.error:  # a directory offset or count past the end of the file
        pass
    return data


@contextlib.contextmanager
def captured_stderr_fd() -> Iterator[list[str]]:
    """Collect, as lines, what is written to file descriptor 2 inside the block, where C libraries such as libjpeg
    print their warnings. The descriptor belongs to the whole process: use it where no other thread writes to it.
    Each process reuses one unlinked temporary file (a few microseconds per block)."""
    capture = _STDERR_CAPTURE_FILES.get(os.getpid())
    if capture is None:
        with tempfile.TemporaryFile() as file:
            capture = _STDERR_CAPTURE_FILES[os.getpid()] = os.dup(file.fileno())
    lines: list[str] = []
    start = os.lseek(capture, 0, os.SEEK_END)  # > 0 inside an enclosing block, whose lines stay its own
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(capture, 2)
    try:
        yield lines
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        written = os.lseek(capture, 0, os.SEEK_END) - start
        if written:
            lines += os.pread(capture, written, start).decode("utf-8", "replace").splitlines()
            os.ftruncate(capture, start)
            os.lseek(capture, start, os.SEEK_SET)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 BGR ``[H, W, 3]`` (stored pixel order: EXIF orientation is ignored, as annotations are;
    a TIFF's orientation tag too, which OpenCV would apply: :func:`tiff_in_stored_order`).

    Raises :class:`DataError` naming the file when it is missing, empty, a truncated JPEG or undecodable (with what the
    decoder printed about it, e.g. libpng's reason). A JPEG whose data libjpeg reports as corrupt (it then decodes
    with damaged pixels and only prints a line without the file's name on stderr) gives a :class:`CorruptImageWarning`
    naming the file instead of that line, and other lines a decoder prints about a file it decodes (libpng's warning
    about a broken colour profile) an :class:`ImageDecoderWarning` naming it (in a process's main thread: other
    threads leave the decoder's lines as they are, since the capture redirects the whole process's stderr).
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file {_broken_link_problem(path) or 'not found'}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the image file ({error.strerror})") from None
    if data.size == 0:
        raise DataError(f"{path}: image file is empty")
    if is_truncated_jpeg(data):
        raise DataError(f"{path}: truncated JPEG (no end-of-image marker FFD9); re-download or re-encode the file")
    refused = deep_max = None
    # the capture redirects the process's stderr: only the main thread (of a process, or a DataLoader worker) does so
    main_thread = threading.current_thread() is threading.main_thread()
    with captured_stderr_fd() if main_thread else contextlib.nullcontext([]) as messages:
        try:
            stored = tiff_in_stored_order(data)
            image = cv2.imdecode(stored, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            deep_max = _low_bit_depth_maximum(stored, image)
        except cv2.error as error:  # e.g. more pixels than OpenCV's limit (2^30), before decoding anything
            image, refused = None, error
    corrupt = [line for line in messages if line.startswith(LIBJPEG_CORRUPTION_WARNINGS)]
    other = list(dict.fromkeys(_OPENCV_LOG_PREFIX.sub("OpenCV: ", line.strip())
                               for line in messages if line not in corrupt and line.strip()))
    if refused is not None:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(refused):
            raise DataError(pixel_limit_message(path, opencv_pixel_limit()))
        reason = refused.err.strip() if getattr(refused, "err", None) else str(refused).strip().splitlines()[-1]
        raise DataError(f"{path}: OpenCV refuses to decode the file ({reason}); re-encode the image")
    if image is None:
        said = f" ({'; '.join(other)})" if other else ""
        raise DataError(f"{path}: OpenCV cannot decode the file as an image{said}; re-download or re-encode the file")
    if other:
        said = "; ".join(repr(line) for line in other)
        warnings.warn(f"{path}: the image decoder says {said} (the image is read; re-save it to silence this)",
                      ImageDecoderWarning, stacklevel=2)
    if deep_max:
        warnings.warn(f"{path}: a 16-bit image whose values reach only {deep_max} of 65535 (data of 12 bits or fewer): "
                      f"read as 8 bits, the high byte of each value, it is nearly black (0..{deep_max >> 8} of 255); "
                      f"rescale its values to 8 bits (e.g. value * 255 // {deep_max}) or to the 16-bit range and save "
                      "it again", LowBitDepthWarning, stacklevel=2)
    if corrupt:
        warnings.warn(f"{path}: corrupt JPEG data (libjpeg: {corrupt[0]}); it decodes with damaged pixels: "
                      "re-download or re-encode the file", CorruptImageWarning, stacklevel=2)
    return image


def _low_bit_depth_maximum(data: np.ndarray, image: np.ndarray | None) -> int | None:
    """For the bytes ``data`` of an image file decoded as 8 bits into ``image`` (uint8 ``[H, W, 3]``): the largest
    value of a 16-bit image whose values stay below 4096 (12-bit data, which the high byte that 8 bits keep turns
    into 0..15), else ``None``. Decodes the file a second time, at its depth, only when ``image`` is that dark."""
    if image is None or image.max(initial=0) >= NEARLY_BLACK:
        return None
    deep = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if deep is None or deep.dtype != np.uint16:
        return None
    colour = deep[..., :3] if deep.ndim == 3 else deep  # not an alpha channel, which the 8 bits read drop
    largest = int(colour.max(initial=0))
    return largest if 0 < largest < NEARLY_BLACK << 8 else None


def opencv_pixel_limit() -> int:
    """The most pixels OpenCV decodes in one image: ``OPENCV_IO_MAX_IMAGE_PIXELS`` when it is a plain number, else
    OpenCV's default 2^30."""
    value = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else OPENCV_PIXEL_LIMIT


def pixel_limit_message(path: str | Path, limit: int, pixels: int | None = None) -> str:
    """The one-line error for an image (or an annotated image size) of more pixels than the decoder accepts."""
    count = f"{pixels:,} pixels; " if pixels else ""
    return (f"{path}: the image is over the decoder's pixel limit ({count}the limit is {limit:,} pixels); "
            "resize the image (and scale its boxes to match)")


def file_type_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a data file: missing ("not found"), a symbolic link to a missing file (a
    git-annex or DVC dataset whose files were not fetched), or not a regular file (a folder, a named pipe, which
    reading would wait on forever, a device or socket); ``None`` for a regular file (also through a symbolic link)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return _broken_link_problem(path) or "not found"
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = "a folder" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device or socket"
    return f"is {kind}, not a regular file: replace it with the file itself"


def _link_target(path: str | Path) -> str | None:
    """The target of the symbolic link ``path``, a relative one resolved from the link's folder; ``None`` when
    ``path`` is not a link (or not there at all)."""
    try:
        target = os.readlink(path)
    except (OSError, ValueError):
        return None
    return os.path.normpath(os.path.join(os.path.dirname(os.fspath(path)), target))


def _broken_link_problem(path: str | Path) -> str | None:
    """``is a broken symbolic link (to <target>, which does not exist): ...`` when ``path`` is a symbolic link whose
    target is missing; ``None`` otherwise."""
    target = _link_target(path)
    if target is None:
        return None
    return (f"is a broken symbolic link (to {target}, which does not exist): fetch or copy its target, or replace the "
            "link with the file itself")


def link_loops(path: Path) -> bool:
    """Whether following the symbolic link ``path`` comes back to a link already followed (the OS's ``ELOOP``)."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def dead_link(path: Path) -> tuple[Path, str, bool] | None:
    """``(link, target, loops)`` when the missing ``path`` or a folder above it is a symbolic ``link`` to a ``target``
    that does not exist (a dataset folder linked to a drive that is not mounted), ``loops`` when following it comes
    back to it (:func:`link_loops`); ``None`` otherwise."""
    missing = Path(path)
    while not missing.exists() and missing != missing.parent:
        if (target := _link_target(missing)) is not None:
            return missing, target, link_loops(missing)
        missing = missing.parent
    return None


def broken_link_message(path: Path) -> str | None:
    """``<link> is a broken symbolic link (to <target>, which does not exist): ...`` when the missing ``path`` or a
    folder above it is a symbolic link whose target is missing (:func:`dead_link`), where a "not found: download it"
    would mislead, or ``<link> is a symbolic link in a loop ...`` when following it comes back to it; ``None``
    otherwise."""
    if (found := dead_link(path)) is None:
        return None
    link, target, loops = found
    if loops:
        return (f"{link} is a symbolic link in a loop (to {target}, a link that leads back to it, so no folder is ever "
                "reached): point it at the data folder itself")
    return (f"{link} is a broken symbolic link (to {target}, which does not exist): mount or fetch its target, or "
            "replace the link with the data itself")


_PIL_LIMIT_LOCK = threading.Lock()  # held while _pil_header(pixel_limit=False) has lifted PIL's pixel limit


@contextlib.contextmanager
def _pil_header(path: str | Path, pixel_limit: bool = True) -> Iterator[PIL.Image.Image]:
    """``PIL.Image.open(path)`` without PIL's decompression-bomb warning, which only the decoding of pixels that
    this project leaves to OpenCV concerns. Raises PIL's errors, among them ``DecompressionBombError`` (over
    2 x ``PIL.Image.MAX_IMAGE_PIXELS``, 179 MP) unless ``pixel_limit`` is False: then the limit is lifted while the
    header is read (for what it says besides the size, such as the EXIF orientation of a 200 MP phone photo, which
    OpenCV decodes up to its own limit of 2^30 pixels)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if pixel_limit:
            opened = Image.open(path)
        else:
            with _PIL_LIMIT_LOCK:
                limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    opened = Image.open(path)
                finally:
                    Image.MAX_IMAGE_PIXELS = limit
        with opened as image:
            yield image


def image_header_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of the stored pixels from the image header only (for annotations that do not give the size):
    for a TIFF, its width and length tags, as Pillow 11 and later give the size after the orientation tag instead.

    Raises :class:`DataError` naming the file when it is empty, its header is unreadable or gives more pixels than
    PIL's limit.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        if os.stat(path).st_size == 0:  # PIL: "cannot identify image file"
            raise DataError(f"{path}: image file is empty; re-download or re-encode the file")
        with _pil_header(path) as image:
            if image.format == "TIFF":
                return image.tag_v2[_TIFF_IMAGE_LENGTH], image.tag_v2[_TIFF_IMAGE_WIDTH]
            return image.height, image.width
    except Image.DecompressionBombError as error:
        numbers = _PIL_BOMB_PIXELS.search(str(error))
        pixels, limit = (int(numbers[1]), int(numbers[2])) if numbers else (None, 2 * (Image.MAX_IMAGE_PIXELS or 0))
        raise DataError(pixel_limit_message(path, limit, pixels)) from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: cannot read the image header ({error}); re-download or re-encode the file") from None


def exif_orientation(path: str | Path) -> int | None:
    """The EXIF orientation tag (1-8) of an image file, ``None`` when it has none or cannot be read.

    Read from what PIL parses with the header (EXIF segment or chunk, TIFF tags, XMP), not from the pixels, whatever
    the number of pixels the header gives (:func:`_pil_header` with ``pixel_limit=False``): PIL's
    ``PngImageFile.getexif`` would decode the whole image to look for an eXIf chunk after the pixel data (the PNG
    specification puts it before), i.e. every PNG without EXIF, which is then decoded again by OpenCV. So an eXIf
    chunk misplaced after the pixel data is not read (OpenCV, which reads it, would turn such a file).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with _pil_header(path, pixel_limit=False) as image:
            value = Image.Image.getexif(image).get(EXIF_ORIENTATION_TAG)  # the base method: no PNG decoding
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    return value if isinstance(value, int) else None


def size_mismatch_message(
    path: str | Path, stored_hw: tuple[int, int], annotated_hw: tuple[int, int], annotation: str | None = None
) -> str:
    """The error for an image whose stored size differs from its annotation's; names the ``annotation`` that gives
    the size when known (:meth:`DetectionDataset.annotation_source`), and an EXIF rotation when the annotation has the
    size of the rotated view (the annotation was made on what viewers show, not the stored pixels)."""
    (height, width), (expected_h, expected_w) = stored_hw, annotated_hw
    source = f" ({annotation})" if annotation else ""
    message = f"{path}: image is {width}x{height} (WxH) but its annotation says {expected_w}x{expected_h}{source}"
    orientation = exif_orientation(path) if (width, height) == (expected_h, expected_w) else None
    if orientation in EXIF_TRANSPOSING_ORIENTATIONS:
        return (
            f"{message}, the size after its EXIF orientation {orientation} (a 90-degree turn) that viewers apply; "
            "images are read in their stored pixel order, as VOC and COCO annotate them: save the image turned "
            "upright without the EXIF orientation tag, or annotate the stored pixels"
        )
    if _resized(stored_hw, annotated_hw):
        scale = f"{width / expected_w:.3g}"
        return (f"{message}: it looks resized by {scale} after it was annotated, and its boxes are in the annotated "
                "size's pixels: use the image at its annotated size, or scale the annotation's size and every box of "
                f"the image by {scale}")
    return f"{message}; fix the annotation's size"


def _resized(stored_hw: tuple[int, int], annotated_hw: tuple[int, int]) -> bool:
    """Whether an image of (height, width) ``stored_hw`` is one of ``annotated_hw`` resized: both sides differ by more
    than a pixel and by one scale (up to each side's rounding to whole pixels)."""
    (height, width), (expected_h, expected_w) = stored_hw, annotated_hw
    if min(expected_h, expected_w) <= 0 or abs(height - expected_h) <= 1 or abs(width - expected_w) <= 1:
        return False
    scale = width / expected_w  # known to within 0.5 / expected_w: the width was rounded too
    return abs(height - expected_h * scale) <= 0.5 + 0.5 * expected_h / expected_w


@dataclass(frozen=True)
class Annotations:
    """All annotations of a split. Objects of image ``i`` are rows ``offsets[i]:offsets[i + 1]``.

    - ``image_paths``: ``[N]`` str; ``image_ids``: ``N`` ids (str for VOC, int for COCO);
    - ``sizes``: int64 ``[N, 2]`` (height, width) of the stored image;
    - ``boxes``: float32 ``[M, 4]`` x1y1x2y2 in 0-based continuous pixels (VOC: XML ``(x1 - 1, y1 - 1, x2, y2)``;
      COCO: ``(x, y, x + w, y + h)``), ``labels``: int64 ``[M]`` 0..C-1, ``difficult``: bool ``[M]``.
    """

    image_paths: np.ndarray
    image_ids: list[str | int]
    sizes: np.ndarray
    offsets: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray

    @classmethod
    def from_images(
        cls,
        image_paths: Sequence[str],
        image_ids: Sequence[str | int],
        sizes: Sequence[tuple[int, int]],
        boxes: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        difficult: Sequence[np.ndarray],
    ) -> Annotations:
        """Concatenate per-image arrays (``[n_i, 4]``, ``[n_i]``, ``[n_i]``) into the flat layout."""
        counts = np.array([len(b) for b in boxes], dtype=np.int64)
        return cls(
            image_paths=np.array(image_paths, dtype=str),
            image_ids=list(image_ids),
            sizes=np.array(sizes, dtype=np.int64).reshape(-1, 2),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            boxes=np.concatenate([np.zeros((0, 4), np.float32), *boxes]).astype(np.float32),
            labels=np.concatenate([np.zeros(0, np.int64), *labels]).astype(np.int64),
            difficult=np.concatenate([np.zeros(0, bool), *difficult]).astype(bool),
        )


def has_extent(boxes: np.ndarray, height: int | np.ndarray, width: int | np.ndarray) -> np.ndarray:
    """bool ``[n]``: pixel boxes ``[n, 4]`` with ``x2 > x1`` and ``y2 > y1`` both in pixels and once stored as
    float32 and normalised by the image size (a number, or ``[n]`` per box) as training targets are
    (``data/transforms.py``): a box narrower than float32 resolution there would be a target of zero width or height.
    """
    scale = np.stack(np.broadcast_arrays(width, height, width, height), axis=-1).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        normalised = boxes.astype(np.float32) / scale
    return ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            & (normalised[:, 2] > normalised[:, 0]) & (normalised[:, 3] > normalised[:, 1]))


def clip_to_image(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The loaders' rule for boxes outside the image: pixel boxes ``[n, 4]`` x1y1x2y2 clipped to ``[0, W] x [0, H]``
    (a new array of their dtype) and the keep mask bool ``[n]`` of those left with extent (:func:`has_extent`; a box
    wholly outside the image has none once clipped)."""
    clipped = np.clip(boxes, 0, np.array([width, height, width, height], dtype=boxes.dtype))
    return clipped, has_extent(clipped, height, width)


class FixupCounter:
    """Counts recoverable box problems while annotations are parsed, and warns once with the total and examples."""

    EXAMPLES_SHOWN = 3  # per kind

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        self.box_kinds: set[str] = set()  # the counted kinds that clip or drop boxes (not those that fill in a field)

    def add(self, kind: str, count: int, examples: Sequence[str] = (), changes_boxes: bool = False) -> None:
        """Count ``count`` fix-ups of ``kind``; ``examples`` name where they happened (the first few are kept);
        ``changes_boxes``: the fix-up clips or drops boxes, which a test split's evaluation does not see."""
        if count <= 0:
            return
        self.counts[kind] = self.counts.get(kind, 0) + count
        if changes_boxes:
            self.box_kinds.add(kind)
        shown = self.examples.setdefault(kind, [])
        shown += [where for where in examples if where not in shown][: self.EXAMPLES_SHOWN - len(shown)]

    def clip_and_drop(
        self, boxes: np.ndarray, height: int, width: int, where: str, counted: np.ndarray | None = None
    ) -> np.ndarray:
        """Clip pixel boxes ``[n, 4]`` to ``[0, W] x [0, H]`` and return a keep mask ``[n]`` that drops degenerate
        boxes (:func:`clip_to_image`). ``boxes`` (float64 holds any finite coordinate) is clipped in place; both fix-ups
        are counted, but for the boxes without extent that ``counted`` (bool ``[n]``) marks: the caller counted
        their drop under a kind of its own."""
        clipped, keep = clip_to_image(boxes, height, width)
        self.add("box clipped to the image", int((clipped != boxes).any(axis=1).sum()), [where], changes_boxes=True)
        boxes[:] = clipped
        uncounted = ~keep if counted is None else ~keep & ~counted
        self.add(DEGENERATE_BOX_DROPPED, int(uncounted.sum()), [where], changes_boxes=True)
        return keep

    def warn(self, dataset: str, test_split: bool = False) -> None:
        """One :class:`DataWarning` counting the fix-ups of ``dataset`` by kind, with examples. For a ``test_split``,
        whose boxes the evaluation scores as the annotations write them, it says that the box fix-ups change only the
        loader's targets, not the score."""
        if not self.counts:
            return
        kinds = [f"{kind}: {count}" + (f" (e.g. {', '.join(self.examples[kind])})" if self.examples[kind] else "")
                 for kind, count in self.counts.items()]
        scored = ""
        if test_split and self.box_kinds:
            scored = (". The evaluation scores the test split's boxes as the annotations write them (these fix-ups "
                      "change only the loader's targets): a box without extent can never be matched and lowers the "
                      "AP; fix the annotations")
        warnings.warn(f"{dataset}: annotations fixed on reading: {'; '.join(kinds)}{scored}", DataWarning, stacklevel=3)


class DetectionDataset(torch.utils.data.Dataset):
    """``dataset[i] -> (image float32 [3, S, S] BGR minus mean, target float32 [n, 5], i)``; ``target`` rows are
    x1y1x2y2 normalised by the (augmented) image width/height, then the class index 0..C-1; ``[0, 5]`` when empty.

    Augmentation randomness is drawn from ``numpy.random.default_rng((seed, epoch, i))`` (:meth:`sample`;
    ``dataset[i]`` is epoch 0): the same sample gets the same augmentation whatever the number of workers, and the
    training loader asks for each epoch's (``data/loader.py``). ``notes``: plain-word lines on how the split was
    chosen, for the run log. A ``transform`` with a ``min_box_side`` (:class:`data.transforms.TrainTransform`) gets a
    :class:`DataWarning` when at least ``RARELY_TRAINED_SHARE_WARNED`` of the boxes are that small
    (:meth:`warn_rarely_trained_boxes`).
    """

    kind: str = ""

    def __init__(
        self, annotations: Annotations, class_names: Sequence[str], transform: Transform, seed: int = 0
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.notes: list[str] = []
        self.annotations = annotations
        self.class_names = list(class_names)
        self.transform = transform
        self.seed = seed
        min_box_side = getattr(transform, "min_box_side", None)
        if min_box_side is not None:
            self.warn_rarely_trained_boxes(min_box_side)

    def warn_rarely_trained_boxes(self, min_side: float) -> None:
        """One :class:`DataWarning` when at least ``RARELY_TRAINED_SHARE_WARNED`` of the boxes have a width or height
        of at most ``min_side`` of their image's (normalised as the augmentation normalises them, in float64), which
        the paper's augmentation drops from every sample that no crop enlarges past it: it says their share, where
        one is, why they are rarely trained on and what trains on them."""
        annotations = self.annotations
        if len(annotations.boxes) == 0:
            return
        owner = np.repeat(np.arange(len(annotations.sizes)), np.diff(annotations.offsets))  # [M]
        heights, widths = annotations.sizes[owner].astype(np.float64).T  # [M] each
        boxes = annotations.boxes.astype(np.float64)  # [M, 4] pixels
        sides = np.minimum((boxes[:, 2] - boxes[:, 0]) / widths, (boxes[:, 3] - boxes[:, 1]) / heights)
        small = sides <= min_side
        if small.mean() < RARELY_TRAINED_SHARE_WARNED:
            return
        index = int(owner[np.argmax(small)])
        where = self.annotation_source(index) or str(self.image_path(index))
        warnings.warn(
            f"{small.sum()} of the {len(small)} training boxes ({100 * small.mean():.1f} %) have a width or height of "
            f"at most {100 * min_side:g} % of their image's (e.g. {where}): the augmentation drops such a box from "
            "every sample in which a random crop does not enlarge it past that (the paper's minimum-side rule, kept "
            "as the authors wrote it), so these objects are rarely trained on and seldom detected; to learn them, "
            "cut the images into tiles in which they are larger", DataWarning, stacklevel=4)

    @property
    def num_classes(self) -> int:
        """C, the number of foreground classes (labels are 0..C-1)."""
        return len(self.class_names)

    @property
    def image_ids(self) -> list[str | int]:
        """One id per image, in order: for VOC layouts the image-set line (the XML stem, str), for COCO the image id."""
        return self.annotations.image_ids

    def __len__(self) -> int:
        return len(self.annotations.image_paths)

    def fingerprint(self) -> str:
        """16 hex digits that change when an image id, an image size, a box, a label or a difficult flag changes (the
        class names too, but not their letter case, which the loaders ignore); the same for the same annotations
        wherever the files live."""
        names = [folded_name(name) for name in self.class_names]
        digest = hashlib.sha1("\n".join(map(str, [*names, *self.image_ids])).encode())
        for array in (self.annotations.sizes, self.annotations.offsets, self.annotations.boxes,
                      self.annotations.labels, self.annotations.difficult):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    def objects_to_score(self) -> int:
        """How many objects the evaluation scores (:meth:`objects_to_score_per_class`)."""
        return int(self.objects_to_score_per_class().sum())

    def objects_to_score_per_class(self) -> np.ndarray:
        """int64 ``[C]``: per class, the objects the evaluation scores: those not marked difficult (VOC)."""
        labels = self.annotations.labels[~self.annotations.difficult]
        return np.bincount(labels, minlength=self.num_classes).astype(np.int64)

    def objects_to_score_per_image(self) -> np.ndarray:
        """int64 ``[N]``: per item, the objects the evaluation scores (:meth:`objects_to_score_per_class`)."""
        owner = np.repeat(np.arange(len(self)), np.diff(self.annotations.offsets))
        return np.bincount(owner[~self.annotations.difficult], minlength=len(self)).astype(np.int64)

    def objects_to_report(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The objects ``--check_data`` counts: their labels int64 ``[M]`` 0..C-1, the item of each int64 ``[M]`` and
        how many of them the evaluation does not score (here the difficult ones): the loader's boxes."""
        owner = np.repeat(np.arange(len(self)), np.diff(self.annotations.offsets))
        return self.annotations.labels, owner, int(self.annotations.difficult.sum())

    def image_path(self, index: int) -> Path:
        """The image file of item ``index``."""
        return Path(self.annotations.image_paths[index])

    def annotation_source(self, index: int) -> str | None:
        """Where the annotation of item ``index`` is written, for messages (the XML file, or an image id in a json);
        ``None`` when not known."""
        return None

    def image_size(self, index: int) -> tuple[int, int]:
        """(height, width) of the original image."""
        height, width = self.annotations.sizes[index]
        return int(height), int(width)

    def annotation(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel boxes float32 ``[n, 4]``, labels int64 ``[n]`` and difficult flags bool ``[n]`` of image ``index``."""
        start, stop = self.annotations.offsets[index], self.annotations.offsets[index + 1]
        return (
            self.annotations.boxes[start:stop], self.annotations.labels[start:stop],
            self.annotations.difficult[start:stop],
        )

    def load_image(self, index: int) -> np.ndarray:
        """uint8 BGR ``[H, W, 3]``; :class:`DataError` naming the file when it is unreadable, and
        :class:`ImageSizeError` naming the file and its annotation (:meth:`annotation_source`) when it is not the
        annotated size."""
        path = self.image_path(index)
        image = read_image(path)
        if image.shape[:2] != self.image_size(index):
            raise ImageSizeError(size_mismatch_message(path, image.shape[:2], self.image_size(index),
                                                       self.annotation_source(index)))
        return image

    def sample(self, index: int, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Item ``index`` transformed with ``numpy.random.default_rng((seed, epoch, index))``:
        ``(image float32 [3, S, S], target float32 [n, 5], index)``. As for a list, a negative ``index`` counts from
        the end (the item and the returned index are those of ``len + index``); out of range is an IndexError."""
        index = self._position(index)
        image = self.load_image(index)
        boxes, labels, _ = self.annotation(index)
        image, target = self.transform(image, boxes, labels, np.random.default_rng((self.seed, epoch, index)))
        return torch.from_numpy(image), torch.from_numpy(target), index

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.sample(index)

    def _position(self, index: object) -> int:
        """``index`` (an int, NumPy integer or integer 0-d tensor; negative from the end) as an int in 0..len-1."""
        position = as_int(index)
        if position is None:
            raise TypeError(f"dataset indices are ints, got {index!r}")
        position += len(self) if position < 0 else 0
        if not 0 <= position < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {counted(len(self), 'image')}")
        return position
