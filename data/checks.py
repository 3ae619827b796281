"""``--check_data``: decode every image of a dataset and verify it against its annotation before training."""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset

from data.dataset import DetectionDataset, exif_orientation, has_extent
from data.errors import (
    IMAGE_WARNING_KINDS, IMAGE_WARNINGS_NAMED, CorruptImageWarning, DataError, DataWarning, ImageWarning,
    format_problems, image_warning_kind, image_warnings_named,
)
from data.loader import WorkerLoader, single_thread_opencv
from utils.messages import counted
from utils.progress import progress_bar

CHECK_BATCH = 32  # images per task handed to a checking process
EXAMPLES_SHOWN = 3  # images named in a warning


@dataclass
class DataReport:
    """What a clean dataset holds (returned by :func:`check_dataset`): the objects of
    :meth:`DetectionDataset.objects_to_report`. ``num_crowd``: the ``iscrowd`` boxes of COCO-layout data, which has no
    difficult flag (``None`` for VOC-layout data)."""

    num_images: int
    num_objects: int
    num_difficult: int
    empty_images: int
    objects_per_class: dict[str, int]
    fixups: dict[str, int] = field(default_factory=dict)
    num_crowd: int | None = None

    def summary(self) -> str:
        """The report as printed by ``--check_data``: counts, then the fix-ups (if any), then objects per class."""
        per_class = ", ".join(f"{name} {count}" for name, count in self.objects_per_class.items())
        fixups = "; ".join(f"{kind}: {n}" for kind, n in self.fixups.items())
        fixed = f"\nannotations fixed on reading: {fixups}" if fixups else ""
        flagged = f"{self.num_difficult} difficult" if self.num_crowd is None else f"{self.num_crowd} iscrowd"
        return (
            f"{counted(self.num_images, 'image')}, {counted(self.num_objects, 'object')} ({flagged}), "
            f"{counted(self.empty_images, 'image')} without objects{fixed}\nobjects per class: {per_class}"
        )


ShownWarning = tuple[Warning, type[Warning], str, int]  # what ``warnings.warn_explicit`` takes to show it again


def image_problem(dataset: DetectionDataset, index: int) -> tuple[str | None, list[ShownWarning]]:
    """Decode image ``index`` as training does and return its problem (or ``None``): missing, empty, truncated or
    undecodable file, a size other than its annotation's, or JPEG data that libjpeg reports as corrupt (OpenCV then
    returns damaged pixels; training only warns, :class:`CorruptImageWarning`); and the other warnings met while
    decoding, for the caller to show (:func:`_show`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CorruptImageWarning)
        try:
            dataset.load_image(index)
        except DataError as error:
            return str(error), []
    corrupt = [warning for warning in caught if issubclass(warning.category, CorruptImageWarning)]
    others = [(warning.message, warning.category, warning.filename, warning.lineno)
              for warning in caught if warning not in corrupt]
    return (str(corrupt[0].message) if corrupt else None), others


def _show(caught: list[ShownWarning]) -> None:
    """Show again, in this process, the warnings :func:`image_problem` returned."""
    for message, category, filename, lineno in caught:
        warnings.warn_explicit(message, category, filename, lineno)


class _ImageProblems(Dataset):
    """Item ``i``: the problem of image ``i`` or ``""``, and the other warnings met decoding it; decoded in
    DataLoader worker processes, so that each capture of stderr sees one decoder only. The warnings are shown by the
    main process, whose display lifts the progress bar off the line (:func:`data.errors.one_line_data_warnings`)."""

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[str, list[ShownWarning], int | None]:
        """The problem of image ``index`` (or ""), the warnings met decoding it and, for an image without problem,
        its EXIF orientation (:func:`data.dataset.exif_orientation`)."""
        problem, others = image_problem(self.dataset, index)
        orientation = None if problem else exif_orientation(self.dataset.image_path(index))
        return problem or "", others, orientation


def _annotation_problems(dataset: DetectionDataset) -> list[str]:
    annotations = dataset.annotations
    owner = np.repeat(np.arange(len(dataset)), np.diff(annotations.offsets))
    boxes, labels = annotations.boxes, annotations.labels
    height, width = annotations.sizes[owner, 0], annotations.sizes[owner, 1]
    bad = ~np.isfinite(boxes).all(axis=1) | ~has_extent(boxes, height, width)
    bad |= (labels < 0) | (labels >= dataset.num_classes)
    return [
        f"{dataset.image_path(owner[row])}: object box {boxes[row].tolist()} label {labels[row]} is invalid "
        f"(needs x2 > x1 and y2 > y1, also once normalised by the image size, and a label in "
        f"0..{dataset.num_classes - 1})"
        for row in np.flatnonzero(bad)
    ]


def check_dataset(dataset: DetectionDataset, workers: int = 4, progress: bool = True) -> DataReport:
    """Decode every image (in ``workers`` processes; 0 = in this one) and check boxes and labels.

    Raises one :class:`DataError` listing the first problems with their file names and the total count
    (missing, empty, truncated, undecodable or corrupt images, images whose size differs from the annotation, invalid
    boxes/labels); otherwise returns a :class:`DataReport`. The images of a kind of :class:`ImageWarning` (a decoder's
    warning, 12-bit data) met more often than the run's display still names them (the first
    :data:`IMAGE_WARNINGS_NAMED` of each kind in a run) are counted in one :class:`DataWarning` per kind.
    Annotation-file problems were already raised when the dataset was built.
    """
    problems = _annotation_problems(dataset)
    if workers > 0:
        single_thread_opencv()  # before the checking processes fork (see data/loader.py)
    loader = WorkerLoader(_ImageProblems(dataset), batch_size=CHECK_BATCH, num_workers=workers, collate_fn=list)
    turned: list[str] = []  # "<image>: orientation N" for the images a viewer shows turned or mirrored
    checked = 0
    warned: Counter[type[ImageWarning]] = Counter()  # images per kind of image warning
    nameable = {kind: IMAGE_WARNINGS_NAMED - image_warnings_named(kind) for kind in IMAGE_WARNING_KINDS}
    with progress_bar(total=len(dataset), desc="checking images", disable=not progress) as bar:
        for batch in loader:
            for index, (problem, others, orientation) in enumerate(batch, start=checked):
                _show(others)
                warned.update({image_warning_kind(category) for _, category, _, _ in others
                               if issubclass(category, ImageWarning)})
                problems += [problem] if problem else []
                if orientation not in (None, 1):
                    turned.append(f"{dataset.image_path(index)}: orientation {orientation}")
            bar.update(len(batch))
            checked += len(batch)
    for kind, count in warned.items():
        if count > nameable[kind]:  # the run's display named fewer (data.errors.one_line_data_warnings)
            images = f"{count:,} {'image' if count == 1 else 'images'}"
            warnings.warn(f"--check_data: {images} {kind.kind} among the {len(dataset):,} checked (a run names the "
                          f"first {IMAGE_WARNINGS_NAMED} of each kind)", DataWarning, stacklevel=2)
    if problems:
        raise DataError(format_problems(f"--check_data on {counted(len(dataset), 'image')}", problems))
    if turned:
        warnings.warn(f"{counted(len(turned), 'image')} with an EXIF orientation tag, which viewers apply (e.g. "
                      f"{', '.join(turned[:EXAMPLES_SHOWN])}): training and evaluation read the stored pixels, as VOC "
                      "and COCO annotate them, so the boxes of such an image must be drawn on its stored pixels. If "
                      "your annotation tool showed it turned, its boxes miss their objects: save such images turned "
                      "upright without the tag (PIL: ImageOps.exif_transpose) and keep the annotations", DataWarning,
                      stacklevel=2)
    labels, owner, unscored = dataset.objects_to_report()
    counts = np.bincount(labels, minlength=dataset.num_classes)
    coco = dataset.kind == "coco"
    return DataReport(
        num_images=len(dataset),
        num_objects=len(labels),
        num_difficult=0 if coco else unscored,
        empty_images=len(dataset) - len(np.unique(owner)),
        objects_per_class=dict(zip(dataset.class_names, counts.tolist())),
        fixups=dict(getattr(dataset, "fixups", {})),
        num_crowd=unscored if coco else None,
    )
