"""Datasets (VOC, COCO, VOC-/COCO-layout custom folders, the synthetic ``shapes`` set), augmentation and loading.

``build_dataset(name, split, size, ...)`` is the one entry point; see docs/architecture.md for the item format.
"""
from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from data.checks import DataReport, check_dataset
from data.class_list import class_list_file, parse_class_list
from data.coco import (
    COCODetection,
    check_disjoint_coco_splits,
    coco_class_names,
    find_coco_annotation,
    image_folder_for,
)
from data.dataset import IMAGE_EXTENSIONS, DetectionDataset, broken_link_message
from data.errors import DataError, DatasetNotFoundError, DataWarning, LazyText
from data.loader import build_loader, detection_collate
from data.transforms import EXPAND_PROBABILITY, PIXEL_MEAN_BGR, TestTransform, TrainTransform, normalize_image
from data.voc import VOC_CLASSES, VOCDetection, check_disjoint_splits, unusable_list_problem
from utils.integers import as_int
from utils.messages import listed_names, preview_names
from utils.names import folded_name, reordering, same_classes

__all__ = [
    "PIXEL_MEAN_BGR", "VOC_CLASSES", "COCODetection", "DataError", "DataReport", "DataWarning", "DatasetNotFoundError",
    "DetectionDataset", "VOCDetection", "build_dataset", "build_loader", "check_dataset", "detection_collate",
    "normalize_image", "parse_class_list", "reads_class_list",
]  # fmt: skip

DATASET_NAMES = ("voc", "coco", "shapes", "custom")
SPLITS = ("train", "test")
# the repository's datasets/ (where data/scripts/*.sh download), whatever the current folder
DATASETS_DIR = Path(__file__).resolve().parents[1] / "datasets"
DEFAULT_ROOTS = {
    "voc": DATASETS_DIR / "VOCdevkit", "coco": DATASETS_DIR / "coco2017", "shapes": DATASETS_DIR / "shapes"
}
VOC_YEAR_FOLDER = re.compile(r"VOC\d{4}")
# list files of a single VOC-layout folder, by preference (train.txt replaces trainval.txt when val.txt is the
# test list)
VOC_LISTS = {"train": ("trainval", "train"), "test": ("test", "val")}


def reads_class_list(name: str, data_root: str | None) -> bool:
    """Whether dataset ``name`` at ``data_root`` takes its class names from ``classes`` (``--classes``): VOC and
    VOC-layout custom folders, whose XML names each object's class. COCO layouts and ``shapes`` list their own."""
    name = name.lower()
    return name == "voc" or (name == "custom" and data_root is not None and _is_voc_folder(Path(data_root)))


def _voc_devkit_sets(root: Path, split: str) -> list[tuple[Path, str]]:
    if split == "train":
        return [(root / "VOC2007", "trainval"), (root / "VOC2012", "trainval")]
    return [(root / "VOC2007", "test")]


def voc_folder_list(folder: Path, split: str) -> tuple[str, str | None]:
    """The list (``ImageSets/Main/<name>.txt``) that ``split`` reads in one VOC-layout folder, and a note for the run
    log when the choice needs explaining.

    test: ``test.txt``, else ``val.txt``. train: ``trainval.txt``, else ``train.txt``; but ``train.txt`` whenever the
    test split reads ``val.txt``, since in the VOC layout ``trainval = train + val`` would train on the test images.
    :class:`DatasetNotFoundError` for a split without a list, and for any of those four lists that is there but cannot
    be read (a broken symbolic link, a folder: :func:`data.voc.unusable_list_problem`), as it could change the choice.
    """
    lists = folder / "ImageSets" / "Main"
    for name in (*VOC_LISTS["train"], *VOC_LISTS["test"]):  # which lists are there decides which one a split reads
        if problem := unusable_list_problem(lists / f"{name}.txt"):
            raise DatasetNotFoundError(problem)
    present = [name for name in (*VOC_LISTS["train"], *VOC_LISTS["test"]) if (lists / f"{name}.txt").is_file()]
    test = next((name for name in VOC_LISTS["test"] if name in present), None)
    if split == "train" and test == "val" and "train" in present:
        note = None
        if "trainval" in present:
            note = (f"{lists}: there is no test.txt, so val.txt is the test split and training reads train.txt "
                    "instead of trainval.txt (which also holds the val images)")
        return "train", note
    chosen = test if split == "test" else next((name for name in VOC_LISTS["train"] if name in present), None)
    if chosen is None:
        expected = " or ".join(f"{lists}/{name}.txt" for name in VOC_LISTS[split])
        raise DatasetNotFoundError(f"{expected} not found: list the {split} image ids there, one per line"
                                   f"{_list_in_other_case(lists, VOC_LISTS[split])}")
    return chosen, None


def _list_in_other_case(lists: Path, names: Sequence[str]) -> str:
    """A hint for a list file written in another letter case (``Test.txt`` from Windows, where ``test.txt`` is read):
    `` (<lists> holds Test.txt: ... rename it test.txt)``, or for a list folder of another case that holds one
    (``ImageSets/main``, where ``ImageSets/Main`` is read): `` (<folder> holds test.txt: ... rename it
    ImageSets/Main)``; "" when there is none."""
    if found := _list_file_in_any_case(lists, names):
        return f" ({lists} holds {found[0]}: list names are read in lower case, rename it {found[1]})"
    if lists.is_dir():
        return ""
    for folder in _folders_in_any_case(lists.parent.parent, (lists.parent.name, lists.name)):
        if found := _list_file_in_any_case(folder, names):
            return (f" ({folder} holds {found[0]}: folder names are read in their letter case, rename it "
                    f"{lists.parent.name}/{lists.name})")
    return ""


def _list_file_in_any_case(lists: Path, names: Sequence[str]) -> tuple[str, str] | None:
    """``(file found, name read)`` of the first of ``names`` whose list ``<name>.txt`` is in the folder ``lists`` in
    any letter case; None when none is (or the folder cannot be read)."""
    try:
        files = sorted(path.name for path in lists.iterdir() if path.is_file())
    except OSError:
        return None
    for name in names:
        if found := next((file for file in files if file.lower() == f"{name}.txt"), None):
            return found, f"{name}.txt"
    return None


def _folders_in_any_case(root: Path, parts: Sequence[str]) -> list[Path]:
    """The folders ``root/<parts[0]>/<parts[1]>/...`` whose names equal ``parts`` as :func:`utils.names.folded_name`
    reads them (letter case, and the Unicode form of accents, aside)."""
    folders = [root]
    for part in parts:
        try:
            folders = [child for folder in folders for child in folder.iterdir()
                       if folded_name(child.name) == folded_name(part) and child.is_dir()]
        except OSError:
            return []
    return folders


def _is_voc_folder(folder: Path) -> bool:
    return (folder / "Annotations").is_dir() and (folder / "JPEGImages").is_dir()


def _is_coco_folder(folder: Path) -> bool:
    return any((folder / "annotations").glob("instances_*.json"))


def _voc_image_sets(root: Path, split: str, devkit: bool) -> tuple[list[tuple[Path, str]], str | None]:
    """``(folder, list name)`` pairs of ``split`` for a VOCdevkit ``root`` or a single VOC-layout folder, and a note."""
    if devkit:
        return _voc_devkit_sets(root, split), None
    name, note = voc_folder_list(root, split)
    return [(root, name)], note


def _voc_dataset(root: Path, split: str, devkit: bool, classes: Sequence[str], **options) -> VOCDetection:
    """The VOC-layout dataset of ``split``, after checking that no image of the test split is in the train split."""
    image_sets, note = _voc_image_sets(root, split, devkit)
    try:
        other_sets, _ = _voc_image_sets(root, "test" if split == "train" else "train", devkit)
    except DatasetNotFoundError:  # reported when that split is built
        other_sets = []
    check_disjoint_splits(*((image_sets, other_sets) if split == "train" else (other_sets, image_sets)))
    dataset = VOCDetection(image_sets, classes, test_split=split == "test", **options)
    if note:
        dataset.notes.append(note)
    return dataset


def _download_command(script: str, root: Path, default_root: Path, folder_name: str) -> str:
    """The command ``bash data/scripts/<script>`` (in backticks) that downloads the dataset into ``root``: with the
    datasets folder above it for a ``--data_root`` named ``folder_name`` (where the script writes) elsewhere than the
    default, and with ``DIR`` and what it writes for a ``root`` of another name. The script's path is the absolute
    one where the current folder is not the repository's (``python /path/to/main.py`` run from elsewhere)."""
    path = f"data/scripts/{script}"
    try:
        in_repository = Path.cwd().resolve() == DATASETS_DIR.parent
    except OSError:  # the current folder was deleted
        in_repository = False
    if not in_repository:
        path = shlex.quote(str(DATASETS_DIR.parent / path))
    if root == default_root:
        return f"`bash {path}`"
    if root.name == folder_name:
        return f"`bash {path} {shlex.quote(str(root.parent))}`"
    return f"`bash {path} DIR` (it writes DIR/{folder_name}, the --data_root to pass then)"


def _missing_devkit_year_hint(root: Path, folder: Path) -> str:
    """The clause for a VOCdevkit ``root`` that lacks the year ``folder``: the sub-folder holding that year one level
    deeper (a tar extracted into ``VOCdevkit/`` gives ``VOCdevkit/VOCdevkit/VOC2007``, and ``--data_root`` the folder
    above ``VOCdevkit`` has it too), or else the VOC2007 folder that trains alone when only VOC2012 is missing."""
    try:
        deeper = sorted(sub for sub in root.iterdir() if (sub / folder.name).is_dir())
    except OSError:
        deeper = []
    if deeper:
        return f"; {deeper[0] / folder.name} is there, one level deeper: pass --data_root {deeper[0]}"
    if folder.name != "VOC2007" and _is_voc_folder(root / "VOC2007"):
        return f"; to train on VOC2007 alone: --data_root {root / 'VOC2007'}"
    return ""


def _voc_scripts(root: Path, split: str) -> list[str]:
    """The download commands of a VOCdevkit ``root``'s ``split``: VOC2007's for the test split, and VOC2012's too for
    the train split."""
    years = ("VOC2007",) if split == "test" else ("VOC2007", "VOC2012")
    return [_download_command(f"{year}.sh", root, DEFAULT_ROOTS["voc"], "VOCdevkit") for year in years]


def _voc_download_hint(root: Path, split: str) -> str:
    """What to run for a list or folder missing from a VOCdevkit ``root``'s ``split`` (built only for the error: it
    looks for a test tar extracted a level too deep)."""
    scripts = _voc_scripts(root, split)
    if split != "test":
        return f"re-run {' and '.join(scripts)}"
    # the test tar holds VOCdevkit/VOC2007/...
    hint = f"re-run {scripts[0]} (VOC2007's test set is VOCtest_06-Nov-2007.tar, extracted into {root.parent})"
    deeper = min(root.glob("*/VOC2007/ImageSets/Main/test.txt"), default=None)  # the tar extracted in root
    if deeper:
        hint += (f"; {deeper} is there: the test tar was extracted into {root}, a level too deep: merge "
                 f"{deeper.parents[2]} into {root / 'VOC2007'}")
    return hint


def _voc_missing_files_hint(root: Path, split: str) -> str:
    """The last line of the bad-data error of a VOCdevkit ``root``'s ``split`` missing images or annotations: the
    scripts that extract its tars again."""
    return (f"files are missing from {root}: if the extraction of a VOC tar was interrupted, re-run "
            f"{' and '.join(_voc_scripts(root, split))} to extract it again (after a finished one, delete "
            f"{root / 'VOC2007'}{'' if split == 'test' else ' or VOC2012'} first)")


def _build_voc(root: Path, split: str, classes: list[str] | None, **options) -> VOCDetection:
    if (root / "VOC2007").is_dir() or not _is_voc_folder(root):
        for folder, _ in _voc_devkit_sets(root, split):
            if not folder.is_dir():
                raise DatasetNotFoundError(broken_link_message(folder) or (
                    f"{folder} not found: download it with "
                    f"{_download_command(f'{folder.name}.sh', root, DEFAULT_ROOTS['voc'], 'VOCdevkit')} "
                    "(or pass --data_root a VOCdevkit or VOC-layout folder)"
                    + (f"; {root} is a COCO-layout folder (annotations/instances_*.json): read it with --dataset "
                       "custom" if _is_coco_folder(root) else _missing_devkit_year_hint(root, folder))
                ))
        return _voc_dataset(root, split, True, classes or VOC_CLASSES,
                            download_hint=LazyText(lambda: _voc_download_hint(root, split)),
                            missing_files_hint=LazyText(lambda: _voc_missing_files_hint(root, split)), **options)
    if classes is None:
        if not VOC_YEAR_FOLDER.fullmatch(root.name):
            raise DataError(
                f"--data_root {root} is a custom VOC-layout folder: give its class names with --classes a,b,c or a file"
            )
        classes = list(VOC_CLASSES)
    return _voc_dataset(root, split, False, classes, **options)


def _coco_2017_hint(root: Path, name: str) -> str:
    """The clause for a ``--dataset coco`` root that lacks ``annotations/instances_<name>.json`` or ``<name>/``: the
    2014 release's jsons there (``--dataset custom`` reads them), the file one level deeper (``--data_root`` the folder
    above ``coco2017``) or higher (``--data_root`` its ``annotations/``), or the zip of the missing part lying
    unextracted in ``root``, its parent or the scripts' ``downloads/`` beside it. Empty when none applies."""
    annotation = root / "annotations" / f"instances_{name}.json"
    missing, archive = (annotation, "annotations_trainval2017.zip") if not annotation.is_file() else (
        root / name, f"{name}.zip")
    if missing == annotation:
        other = sorted(path.name for path in (root / "annotations").glob("instances_*.json") if "2017" not in path.name)
        if other:
            return (f"; {root / 'annotations'} holds {preview_names(other, 5)}: --dataset coco reads COCO 2017's "
                    f"files; read this set with --dataset custom --data_root {root}")
        try:
            deeper = sorted(sub for sub in root.iterdir() if (sub / "annotations" / annotation.name).is_file())
        except OSError:
            deeper = []
        if deeper:
            return (f"; {deeper[0] / 'annotations' / annotation.name} is there, one level deeper: pass --data_root "
                    f"{deeper[0]}")
        if (root / annotation.name).is_file():  # --data_root coco2017/annotations
            return f"; {root} holds {annotation.name}: pass --data_root {root.parent}"
    for folder in (root, root.parent, root.parent / "downloads"):
        if (folder / archive).is_file():
            zip_file = shlex.quote(str(folder / archive))
            return f"; {folder / archive} is not extracted: `unzip -q {zip_file} -d {shlex.quote(str(root))}`"
    return ""


def _coco_download_hint(root: Path, name: str) -> str:
    """What to do about a json or image folder ``name`` (``train2017``, ``val2017``) missing from a ``--dataset coco``
    ``root`` (built only for the error: :func:`_coco_2017_hint` looks through the folders)."""
    script = _download_command("COCO2017.sh", root, DEFAULT_ROOTS["coco"], "coco2017")
    return (f"download it with {script}, or pass --data_root a COCO 2017 folder (annotations/instances_train2017.json,"
            " train2017/, val2017/); for your own COCO-format data use --dataset custom"
            f"{_coco_2017_hint(root, name)}")


def _coco_missing_files_hint(root: Path, name: str) -> str:
    """The last line of the bad-data error of a ``--dataset coco`` split ``name`` missing images: the script that
    extracts its zip again."""
    script = _download_command("COCO2017.sh", root, DEFAULT_ROOTS["coco"], "coco2017")
    return (f"files are missing from {root / name}: if the extraction of {name}.zip was interrupted, re-run "
            f"{script} to extract it again (after a finished one, delete {root / name} first)")


def _build_coco(root: Path, split: str, classes: list[str] | None, class_order: Sequence[str] | None, *,
                skip_unknown_classes: bool, classes_fixed_by: str | None, **options) -> COCODetection:
    name = "train2017" if split == "train" else "val2017"
    kept = _kept_coco_classes(split, classes, class_order, skip_unknown_classes, classes_fixed_by)
    return COCODetection(
        root / "annotations" / f"instances_{name}.json", root / name, drop_empty=split == "train",
        download_hint=LazyText(lambda: _coco_download_hint(root, name)),
        missing_files_hint=LazyText(lambda: _coco_missing_files_hint(root, name)),
        class_order=_label_order(split, classes, class_order, kept, classes_fixed_by),
        index_annotations=split != "train", kept_classes=kept, **options
    )


def _kept_coco_classes(split: str, classes: list[str] | None, class_order: Sequence[str] | None,
                       skip_unknown_classes: bool, classes_fixed_by: str | None) -> Sequence[str] | None:
    """The classes whose categories a COCO-layout split keeps under ``skip_unknown_classes`` (``None``: all of the
    json's): ``classes`` (``--classes``, or a checkpoint's names taken for it), else the classes the model scores or
    continues, ``class_order``: a test split's (the training split's, a checkpoint's or an evaluation's) and a
    training split's of the model ``classes_fixed_by`` (``--resume``). ``--init_from``'s ``class_order`` is only an
    order: a run that fine-tunes it on other classes keeps every category."""
    if not skip_unknown_classes:
        return None
    if classes is not None:
        return classes
    return class_order if split == "test" or classes_fixed_by is not None else None


def _label_order(split: str, classes: list[str] | None, class_order: Sequence[str] | None,
                 kept: Sequence[str] | None, classes_fixed_by: str | None) -> Sequence[str] | None:
    """The ``class_order`` a COCO-layout split's labels follow: ``None`` (``--classes``' order) for a new run's
    training split of the categories ``--classes`` keeps (``--skip_unknown_classes``), whose ``--init_from``
    checkpoint's order does not override the order typed (its classification weights are moved to these labels, as
    on a VOC layout); else ``class_order``."""
    typed = split == "train" and kept is not None and classes is not None and classes_fixed_by is None
    return None if typed else class_order


def _layout_hint(root: Path, split: str) -> str:
    """What a ``--data_root`` of neither layout holds that comes close to one, as a clause for the error: jsons in
    ``annotations/`` under other names (``.json`` in any letter case), or in a folder named so in another letter case
    (``Annotations/``, as a layout made where letter case is ignored has it), half a VOC layout, or a parent or
    sub-folder that is a dataset (``--data_root`` one level off), jsons or VOC XML files beside the images. Empty when
    nothing comes close."""
    if hint := _json_folder_hint(root, split):
        return hint
    if (root / "Annotations").is_dir() != (root / "JPEGImages").is_dir():
        has, lacks = ("Annotations", "JPEGImages") if (root / "Annotations").is_dir() else ("JPEGImages", "Annotations")
        return f"; it has {has}/ but no {lacks}/ (the VOC layout's folder names, letter case included)"

    def is_dataset(folder: Path) -> bool:
        return _is_voc_folder(folder) or _is_coco_folder(folder)

    if is_dataset(root.parent):
        return f"; it is a folder of the dataset {root.parent}: pass --data_root {root.parent}"
    if _is_voc_folder(root / "VOC2007"):  # the official layout, which --dataset voc reads
        return (f"; it is a VOCdevkit (VOC2007/): read it with --dataset voc --data_root {root} (VOC2007+2012 "
                f"trainval, VOC2007 test), or one year with --dataset custom --data_root {root / 'VOC2007'}")
    try:
        subfolders = sorted(path for path in root.iterdir() if path.is_dir())
    except OSError:
        return ""
    for sub in subfolders:
        if is_dataset(sub):
            return f"; its sub-folder {sub.name}/ is one: pass --data_root {sub}"
    return _jsons_in_image_folders_hint(root, subfolders) or _xmls_beside_images_hint(root, subfolders)


def _jsons_in_image_folders_hint(root: Path, subfolders: list[Path]) -> str:
    """:func:`_layout_hint`'s clause for the jsons in ``root``'s ``subfolders`` (``train/_annotations.coco.json``
    beside its images, as some labelling tools export a COCO set), ``""`` when they hold none."""
    jsons = [f"{sub.name}/{name}" for sub in subfolders for name in _json_names(sub)]
    if not jsons:
        return ""
    folder, name = jsons[0].split("/")
    return (f"; {root} has jsons in its image folders ({preview_names(jsons, 5)}): a COCO layout reads "
            "annotations/instances_<folder>.json with its images in <folder>/: move each json there, e.g. "
            f"{folder}/{name} to annotations/instances_{folder}.json")


def _xmls_beside_images_hint(root: Path, subfolders: list[Path]) -> str:
    """:func:`_layout_hint`'s clause for the XML files lying beside images in ``root`` or its ``subfolders`` (as
    LabelImg saves them, or a tool exports VOC XML in train/ and valid/ folders), ``""`` when no folder holds both."""
    xmls = []
    for folder in (root, *subfolders):
        names = _names(folder)
        if any(name.lower().endswith(IMAGE_EXTENSIONS) for name in names):
            prefix = "" if folder == root else f"{folder.name}/"
            xmls += [f"{prefix}{name}" for name in names if name.lower().endswith(".xml")]
    if not xmls:
        return ""
    return (f"; {root} holds VOC XML files beside their images ({preview_names(xmls)}): the VOC layout reads "
            "Annotations/<id>.xml and JPEGImages/<id>.jpg of one folder, with each split's ids (file names without "
            "extension) listed in ImageSets/Main/trainval.txt and test.txt: move the files there and write the lists")


def _names(folder: Path) -> list[str]:
    """The sorted names in ``folder``; ``[]`` when it cannot be listed."""
    try:
        return sorted(path.name for path in folder.iterdir())
    except OSError:
        return []


def _json_names(folder: Path) -> list[str]:
    """The sorted names of ``folder``'s files named ``*.json`` in any letter case; ``[]`` when it cannot be listed."""
    return [name for name in _names(folder) if name.lower().endswith(".json")]


def _json_folder_hint(root: Path, split: str) -> str:
    """:func:`_layout_hint`'s clause for the jsons of ``root``'s folder named ``annotations`` in any letter case (the
    exact name first), ``""`` when none holds a file named ``*.json`` in any letter case."""
    try:
        folders = sorted((path for path in root.iterdir() if path.name.lower() == "annotations" and path.is_dir()),
                         key=lambda path: (path.name != "annotations", path.name))
    except OSError:
        return ""
    for folder in folders:
        jsons = _json_names(folder)
        if not jsons:
            continue
        if folder.name != "annotations":
            return (f"; {folder} holds {preview_names(jsons, 5)}: a COCO layout's jsons are read in annotations/, "
                    f"letter case included: rename {folder.name}/ to annotations/")
        wanted = "instances_train*.json" if split == "train" else "instances_test*.json or instances_val*.json"
        return f"; {folder} holds {preview_names(jsons, 5)}: name the {split} json {wanted} (letter case included)"
    return ""


def spelt_otherwise(path: Path) -> Path | None:
    """The folder that the missing ``path`` names in another letter case or Unicode form of its accents, each missing
    part matched by :func:`utils.names.folded_name` (a folder copied from macOS keeps its accents decomposed, where a
    name typed on Linux has them composed); None when there is none, or more than one."""
    existing, missing = path, []
    while not existing.exists() and existing != existing.parent:
        existing, missing = existing.parent, [existing.name, *missing]
    matches = _folders_in_any_case(existing, missing) if missing else []
    return matches[0] if len(matches) == 1 else None


def _build_custom(root: Path, split: str, classes: list[str] | None, class_order: Sequence[str] | None, *,
                  class_file: str | os.PathLike | None, **options) -> DetectionDataset:
    if _is_voc_folder(root):
        if classes is None:
            raise DataError(
                f"--data_root {root} is a VOC-layout folder: give its class names with --classes a,b,c or a file"
            )
        return _voc_dataset(root, split, False, classes, class_file=class_file, **options)
    if not root.is_dir():
        found = spelt_otherwise(root)
        hint = "" if found is None else (
            f"; {found} is there, its name spelt otherwise (another letter case, or accents in another Unicode form, "
            f"as macOS writes them, which print alike): pass --data_root {found} as it is spelt there (the shell's tab "
            "completion writes it so), or rename the folder")
        raise DatasetNotFoundError(broken_link_message(root)
                                   or f"--data_root {root} not found (a VOC-layout or COCO-layout folder){hint}")
    annotation_file = find_coco_annotation(root, split)
    if annotation_file is None:
        jsons = "instances_train*.json" if split == "train" else "instances_test*.json or instances_val*.json"
        raise DatasetNotFoundError(
            f"{root}: neither a VOC-layout folder (Annotations/, JPEGImages/, ImageSets/Main/) nor a COCO-layout "
            f"folder (annotations/{jsons} + an image folder){_layout_hint(root, split)}"
        )
    image_folder = image_folder_for(annotation_file)
    if image_folder is None:
        stem = annotation_file.stem.removeprefix("instances_")
        raise DatasetNotFoundError(f"{root / stem} (or {root / 'images'}) not found: the images of {annotation_file}")
    classes_fixed_by = options.pop("classes_fixed_by")
    kept = _kept_coco_classes(split, classes, class_order, options.pop("skip_unknown_classes"), classes_fixed_by)
    dataset = COCODetection(annotation_file, image_folder, require_boxes=split == "train",
                            class_order=_label_order(split, classes, class_order, kept, classes_fixed_by),
                            index_annotations=split != "train", kept_classes=kept, **options)
    other_file = find_coco_annotation(root, "test" if split == "train" else "train")
    if other_file is not None:
        check_disjoint_coco_splits(split, annotation_file, dataset.coco, other_file)
    json_order = coco_class_names(dataset.coco)  # not class_order's, which the labels may follow
    # the labels follow the json's order, or class_order's when given: then --classes need only name the same classes
    reordered = class_order is not None and reordering(json_order, classes or []) is not None
    if kept is None and classes is not None and not (same_classes(classes, json_order) or reordered):
        some = {folded_name(name) for name in classes} < {folded_name(name) for name in json_order}
        skip = ", or add --skip_unknown_classes to train on these of its categories alone" if some else ""
        raise DataError(f"--classes {listed_names(classes)} differ from the categories of {annotation_file}: "
                        f"{listed_names(json_order)}; {_how_names_differ(classes, json_order)}; a COCO-layout set "
                        f"takes its classes from its json: leave out --classes{skip}")
    return dataset


def _how_names_differ(classes: Sequence[str], json_order: Sequence[str]) -> str:
    """What differs between ``--classes`` and a json's category names, compared as :func:`folded_name` reads them:
    the first position of the same names in another order, or the names only one side has."""
    given, held = [folded_name(name) for name in classes], [folded_name(name) for name in json_order]
    if sorted(given) == sorted(held):
        at = next(i for i, (one, other) in enumerate(zip(given, held)) if one != other)
        return (f"they are the same names in another order (the first that differs is the {_ordinal(at + 1)}: "
                f"{classes[at]!r} in --classes, {json_order[at]!r} in the json)")
    only_given = [name for name, key in zip(classes, given) if key not in held]
    only_held = [name for name, key in zip(json_order, held) if key not in given]
    sides = [f"only in {side}: {listed_names(names)}"
             for side, names in (("--classes", only_given), ("the json", only_held)) if names]
    return ", ".join(sides)


def _ordinal(number: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``21st``."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


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
    class_order: Sequence[str] | None = None,
    classes_fixed_by: str | None = None,
    class_file: str | os.PathLike | None = None,
) -> DetectionDataset:
    """Build a dataset whose items are ``(image float32 [3, size, size], target float32 [n, 5], index)``.

    - ``name`` (case-insensitive): ``voc`` (default root: the repository's ``datasets/VOCdevkit``, whatever the
      current folder: train = VOC2007+2012 trainval, test = VOC2007 test; or a single VOC-layout folder with
      ``classes``), ``coco`` (``datasets/coco2017``: train2017 with empty images dropped as the authors / val2017 with
      all images), ``shapes`` (generated on first use; a ``data_root`` holding a set generated with other arguments,
      e.g. a small one, is used as it is), ``custom`` (``data_root`` in VOC layout with ``classes``, or
      COCO layout ``annotations/instances_<split>*.json``). A single VOC-layout folder tests on ``test.txt``, else
      ``val.txt``, and then trains on ``train.txt`` (noted in ``dataset.notes``); a train split that shares an image
      with the test split (VOC-layout lists, or custom COCO-layout jsons over one image folder) raises
      :class:`DataError`. A COCO-layout training split neither builds nor keeps the json's pycocotools index
      (``dataset.coco`` is ``None``; :meth:`COCODetection.release_ground_truth`): only the evaluation reads it.
    - ``classes``: class names, or the ``--classes`` string (parsed by :func:`parse_class_list`).
    - ``split``: ``train`` or ``test``; ``augment`` defaults to ``split == "train"`` (the paper's ``TrainTransform``).
    - ``seed``: the augmentation seed; ``skip_unknown_classes`` (``--skip_unknown_classes``): leave out VOC objects of
      classes not in ``classes`` (counted in one warning) instead of raising, and likewise the objects of a COCO
      json's categories not in ``classes``, or without ``classes`` in ``class_order`` for a test split or a
      ``classes_fixed_by`` model's training split (their labels then follow that list, which the json must name
      whole; the evaluation scores those categories alone); ``expand_probability``: how often the augmentation zooms
      out (the paper's 0.6).
    - ``class_order`` (COCO layouts; VOC layouts take theirs from ``classes``): the class names whose order the labels
      follow when the json names the same classes (compared ignoring letter case) in another order, under any ids:
      main.py gives a test split its training split's ``class_names``, a training split of ``--resume`` or
      ``--init_from`` the checkpoint's, and a ``--trained_model`` evaluation the checkpoint's. ``category_ids`` still
      name the json's own ids (the results are scored against it). A json naming other classes keeps its own order:
      :func:`utils.run_data.check_splits` or the checkpoint's check refuses it (``--init_from`` keeps the
      classification weights of the classes it shares, :func:`utils.training_setup.load_initial_weights`).
    - ``classes_fixed_by``: the trained model whose classes ``classes`` are (``--trained_model``'s or ``--resume``'s
      checkpoint, or a phrase naming it: "the model that made the detections in eval/VOC" for ``--eval_results``): a
      VOC object of another class is not told to join ``--classes``, only to be skipped.
    - ``class_file``: the file the ``classes`` names were read from (``--classes FILE``; found here when ``classes``
      is that file's path), which a VOC object of another class is told to join instead of ``--classes``.

    Raises :class:`DatasetNotFoundError` (one line: the expected path and the script to run) or :class:`DataError`
    (also for a ``data_root`` that is a file); ValueError for an unknown name or split, or a ``size`` that is not a
    positive int.
    """
    name = name.lower()
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose train or test")
    if data_root is not None and Path(data_root).exists() and not Path(data_root).is_dir():
        raise DataError(f"--data_root {data_root} is a file, not a dataset folder: pass the folder that holds the "
                        "dataset (its Annotations/ or annotations/ and its images)")
    side = as_int(size)
    if side is None or side < 1:
        raise ValueError(f"build_dataset: size={size!r} must be a positive int, the square side images are resized to "
                         "(the model's --size)")
    augment = split == "train" if augment is None else augment
    if isinstance(classes, str):
        class_file = class_file or class_list_file(classes)
        classes = parse_class_list(classes)
    transform = TrainTransform(side, expand_probability) if augment else TestTransform(side)
    dataset = _build_named(name, split, data_root, classes, class_order, transform=transform, seed=seed,
                           skip_unknown_classes=skip_unknown_classes, classes_fixed_by=classes_fixed_by,
                           class_file=class_file)
    if split == "train" and isinstance(dataset, COCODetection):  # coco, or custom in COCO layout
        dataset.release_ground_truth()  # trained from flat arrays; the json's index is the evaluation's
    return dataset


def _build_named(name: str, split: str, data_root: str | None, classes: list[str] | None,
                 class_order: Sequence[str] | None, *, skip_unknown_classes: bool, classes_fixed_by: str | None,
                 class_file: str | os.PathLike | None, **options) -> DetectionDataset:
    """:func:`build_dataset`'s dataset ``name`` (checked) from its root; ``options``: the dataset's ``transform``
    and ``seed``; ``class_file`` only for a VOC layout's :class:`VOCDetection`."""
    options["skip_unknown_classes"] = skip_unknown_classes
    options["classes_fixed_by"] = classes_fixed_by
    if name == "coco":
        return _build_coco(Path(data_root or DEFAULT_ROOTS["coco"]), split, classes, class_order, **options)
    if name == "voc":
        return _build_voc(Path(data_root or DEFAULT_ROOTS["voc"]), split, classes, class_file=class_file, **options)
    if name == "shapes":
        from data.shapes import SHAPES_CLASSES, ensure_shapes_dataset, set_arguments_for

        root = ensure_shapes_dataset(data_root or DEFAULT_ROOTS["shapes"], **set_arguments_for(data_root))
        return _voc_dataset(Path(root), split, False, SHAPES_CLASSES, **options)
    if data_root is None:
        raise DataError("--dataset custom needs --data_root (a VOC-layout or COCO-layout folder)")
    return _build_custom(Path(data_root), split, classes, class_order, class_file=class_file, **options)
