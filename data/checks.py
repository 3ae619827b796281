"""``--check_data``: decode every image of a dataset and verify it against its annotation before training."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from data.dataset import DetectionDataset
from data.errors import DataError, format_problems


@dataclass
class DataReport:
    """What a clean dataset holds (returned by :func:`check_dataset`)."""

    num_images: int
    num_objects: int
    num_difficult: int
    empty_images: int
    objects_per_class: dict[str, int]
    fixups: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        per_class = ", ".join(f"{name} {count}" for name, count in self.objects_per_class.items())
        fixed = "; fixed up: " + ", ".join(f"{n} {kind}" for kind, n in self.fixups.items()) if self.fixups else ""
        return (
            f"{self.num_images} images, {self.num_objects} objects ({self.num_difficult} difficult), "
            f"{self.empty_images} images without objects{fixed}\nobjects per class: {per_class}"
        )


def _image_problem(dataset: DetectionDataset, index: int) -> str | None:
    try:
        dataset.load_image(index)
    except DataError as error:
        return str(error)
    return None


def _annotation_problems(dataset: DetectionDataset) -> list[str]:
    annotations = dataset.annotations
    owner = np.repeat(np.arange(len(dataset)), np.diff(annotations.offsets))
    boxes, labels = annotations.boxes, annotations.labels
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    bad |= (labels < 0) | (labels >= dataset.num_classes)
    return [
        f"{dataset.image_path(owner[row])}: object box {boxes[row].tolist()} label {labels[row]} is invalid "
        f"(needs x2 > x1, y2 > y1 and a label in 0..{dataset.num_classes - 1})"
        for row in np.flatnonzero(bad)
    ]


def check_dataset(dataset: DetectionDataset, workers: int = 4, progress: bool = True) -> DataReport:
    """Decode every image (threads; OpenCV releases the GIL) and check boxes and labels.

    Raises one :class:`DataError` listing the first problems with their file names and the total count
    (missing, unreadable or truncated images, images whose size differs from the annotation, invalid boxes/labels);
    otherwise returns a :class:`DataReport`. Annotation-file problems were already raised when the dataset was built.
    """
    problems = _annotation_problems(dataset)
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        results = pool.map(lambda index: _image_problem(dataset, index), range(len(dataset)))
        problems += [p for p in tqdm(results, total=len(dataset), desc="checking images", disable=not progress) if p]
    if problems:
        raise DataError(format_problems(f"--check_data on {len(dataset)} images", problems))
    annotations = dataset.annotations
    counts = np.bincount(annotations.labels, minlength=dataset.num_classes)
    return DataReport(
        num_images=len(dataset),
        num_objects=len(annotations.labels),
        num_difficult=int(annotations.difficult.sum()),
        empty_images=int((np.diff(annotations.offsets) == 0).sum()),
        objects_per_class=dict(zip(dataset.class_names, counts.tolist())),
        fixups=dict(getattr(dataset, "fixups", {})),
    )
