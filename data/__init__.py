"""Datasets (VOC, COCO, VOC-/COCO-layout custom folders, the synthetic ``shapes`` set), augmentation and loading.

``build_dataset(name, split, size, ...)`` is the one entry point; see docs/architecture.md for the item format.
"""
from __future__ import annotations

import re
from pathlib import Path

from data.checks import DataReport, check_dataset
from data.coco import COCODetection, find_coco_annotation, image_folder_for
from data.dataset import DetectionDataset
from data.errors import DataError, DatasetNotFoundError, DataWarning
from data.loader import build_loader, detection_collate
from data.transforms import EXPAND_PROBABILITY, PIXEL_MEAN_BGR, TestTransform, TrainTransform, normalize_image
from data.voc import VOC_CLASSES, VOCDetection

__all__ = [
    "PIXEL_MEAN_BGR", "VOC_CLASSES", "COCODetection", "DataError", "DataReport", "DataWarning", "DatasetNotFoundError",
    "DetectionDataset", "VOCDetection", "build_dataset", "build_loader", "check_dataset", "detection_collate",
    "normalize_image", "parse_class_list",
]  # fmt: skip

DATASET_NAMES = ("voc", "coco", "shapes", "custom")
SPLITS = ("train", "test")
DEFAULT_ROOTS = {"voc": "datasets/VOCdevkit", "coco": "datasets/coco2017", "shapes": "datasets/shapes"}
VOC_YEAR_FOLDER = re.compile(r"VOC\d{4}")
# list files of a single VOC-layout folder, by preference
VOC_LISTS = {"train": ("trainval", "train"), "test": ("test", "val")}


def parse_class_list(arg: str) -> list[str]:
    """``--classes``: a comma-separated list (``cat,dog``) or the path of a text file with one name per line."""
    path = Path(arg)
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        source = str(path)
    elif "," not in arg and path.suffix in (".txt", ".names"):
        raise DataError(f"--classes {arg}: class list file not found")
    else:
        names = [name.strip() for name in arg.split(",") if name.strip()]
        source = f"--classes {arg}"
    if not names:
        raise DataError(f"{source}: no class names given")
    duplicates = sorted({name for name in names if [n.lower() for n in names].count(name.lower()) > 1})
    if duplicates:
        raise DataError(f"{source}: duplicate class names {duplicates}")
    return names


def _voc_devkit_sets(root: Path, split: str) -> list[tuple[Path, str]]:
    if split == "train":
        return [(root / "VOC2007", "trainval"), (root / "VOC2012", "trainval")]
    return [(root / "VOC2007", "test")]


def _voc_folder_list(folder: Path, split: str) -> str:
    for name in VOC_LISTS[split]:
        if (folder / "ImageSets" / "Main" / f"{name}.txt").is_file():
            return name
    expected = " or ".join(f"{folder}/ImageSets/Main/{name}.txt" for name in VOC_LISTS[split])
    raise DatasetNotFoundError(f"{expected} not found: list the {split} image ids there, one per line")


def _is_voc_folder(folder: Path) -> bool:
    return (folder / "Annotations").is_dir() and (folder / "JPEGImages").is_dir()


def _build_voc(root: Path, split: str, classes: list[str] | None, **options) -> VOCDetection:
    if (root / "VOC2007").is_dir() or not _is_voc_folder(root):
        for folder, _ in _voc_devkit_sets(root, split):
            if not folder.is_dir():
                raise DatasetNotFoundError(
                    f"{folder} not found: download it with `bash data/scripts/{folder.name}.sh` "
                    "(or pass --data_root a VOCdevkit or VOC-layout folder)"
                )
        hint = "re-run data/scripts/VOC2007.sh and VOC2012.sh"
        return VOCDetection(_voc_devkit_sets(root, split), classes or VOC_CLASSES, download_hint=hint, **options)
    if classes is None:
        if not VOC_YEAR_FOLDER.fullmatch(root.name):
            raise DataError(
                f"--data_root {root} is a custom VOC-layout folder: give its class names with --classes a,b,c or a file"
            )
        classes = list(VOC_CLASSES)
    return VOCDetection([(root, _voc_folder_list(root, split))], classes, **options)


def _build_coco(root: Path, split: str, **options) -> COCODetection:
    name = "train2017" if split == "train" else "val2017"
    hint = "download it with `bash data/scripts/COCO2017.sh` (or pass --data_root)"
    return COCODetection(
        root / "annotations" / f"instances_{name}.json", root / name, drop_empty=split == "train", download_hint=hint, **options
    )


def _build_custom(root: Path, split: str, classes: list[str] | None, **options) -> DetectionDataset:
    if _is_voc_folder(root):
        if classes is None:
            raise DataError(f"--data_root {root} is a VOC-layout folder: give its class names with --classes a,b,c or a file")
        return VOCDetection([(root, _voc_folder_list(root, split))], classes, **options)
    annotation_file = find_coco_annotation(root, split)
    if annotation_file is None:
        raise DatasetNotFoundError(
            f"{root}: neither a VOC-layout folder (Annotations/, JPEGImages/, ImageSets/Main/) nor a COCO-layout "
            f"folder (annotations/instances_{VOC_LISTS[split][0]}*.json + an image folder)"
        )
    image_folder = image_folder_for(annotation_file)
    if image_folder is None:
        stem = annotation_file.stem.removeprefix("instances_")
        raise DatasetNotFoundError(f"{root / stem} (or {root / 'images'}) not found: the images of {annotation_file}")
    options.pop("skip_unknown_classes")
    dataset = COCODetection(annotation_file, image_folder, **options)
    if classes is not None and [c.lower() for c in classes] != [c.lower() for c in dataset.class_names]:
        raise DataError(f"--classes {classes} differ from the categories of {annotation_file}: {dataset.class_names}")
    return dataset


def build_dataset(
    name: str,
    split: str,
    size: int,
    *,
    data_root: str | None = None,
    classes: list[str] | str | None = None,
    augment: bool | None = None,
    seed: int = 0,
    skip_unknown_classes: bool = False,
    expand_probability: float = EXPAND_PROBABILITY,
) -> DetectionDataset:
    """Build a dataset whose items are ``(image float32 [3, size, size], target float32 [n, 5], index)``.

    - ``name`` (case-insensitive): ``voc`` (default root ``datasets/VOCdevkit``: train = VOC2007+2012 trainval, test =
      VOC2007 test; or a single VOC-layout folder with ``classes``), ``coco`` (``datasets/coco2017``: train2017 with
      empty images dropped as the authors / val2017 with all images), ``shapes`` (generated on first use), ``custom``
      (``data_root`` in VOC layout with ``classes``, or COCO layout ``annotations/instances_<split>*.json``).
    - ``classes``: class names, or the ``--classes`` string (parsed by :func:`parse_class_list`).
    - ``split``: ``train`` or ``test``; ``augment`` defaults to ``split == "train"`` (the paper's ``TrainTransform``).
    - ``seed``: the augmentation seed; ``skip_unknown_classes``: skip VOC objects of other classes (counted) instead of
      raising; ``expand_probability``: how often the augmentation zooms out (the paper's 0.6).

    Raises :class:`DatasetNotFoundError` (one line: the expected path and the script to run) or :class:`DataError`.
    """
    name = name.lower()
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose train or test")
    augment = split == "train" if augment is None else augment
    if isinstance(classes, str):
        classes = parse_class_list(classes)
    transform = TrainTransform(size, expand_probability) if augment else TestTransform(size)
    options = {"transform": transform, "seed": seed}
    if name == "coco":
        return _build_coco(Path(data_root or DEFAULT_ROOTS["coco"]), split, **options)
    options["skip_unknown_classes"] = skip_unknown_classes
    if name == "voc":
        return _build_voc(Path(data_root or DEFAULT_ROOTS["voc"]), split, classes, **options)
    if name == "shapes":
        from data.shapes import SHAPES_CLASSES, ensure_shapes_dataset

        root = ensure_shapes_dataset(data_root or DEFAULT_ROOTS["shapes"], seed=0)
        return VOCDetection([(Path(root), _voc_folder_list(Path(root), split))], SHAPES_CLASSES, **options)
    if data_root is None:
        raise DataError("--dataset custom needs --data_root (a VOC-layout or COCO-layout folder)")
    return _build_custom(Path(data_root), split, classes, **options)
