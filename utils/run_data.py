"""The datasets a main.py run's flags name: a split built as the flags ask, both splits checked to fit training and
evaluation together, and the data paths made absolute for the files that record them (a checkpoint's config, an
evaluation's ``summary.json``)."""
from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence

import numpy as np

from data import COCODetection, DataError, build_dataset
from data.class_list import checked_recorded_names, class_list_file, is_background_entry, parse_class_list
from data.coco_eval import COCO_MAX_DETECTIONS
from data.dataset import DetectionDataset
from data.shapes import DEFAULT_NUM_TEST, DEFAULT_NUM_TRAINVAL, generated_set_arguments
from utils.checkpoint import init_from_advice
from utils.distributed import DistributedContext, raise_if_any_process_failed
from utils.logging import RunLog
from utils.messages import counted, listed_names, preview_names
from utils.names import folded_name, same_classes
from utils.postprocess import MAX_PER_IMAGE

CLASSES_NAMED = 20  # a warning about classes without objects names this many of them


def make_dataset(args: argparse.Namespace, split: str, size: int, train: bool,
                 class_order: Sequence[str] | None = None,
                 checkpoint: str | os.PathLike | None = None, classes_typed: bool = True) -> DetectionDataset:
    """The ``split`` of the dataset the flags name, at ``size`` px, augmented for training when ``train``; a COCO
    layout's labels in ``class_order`` (the training split's or a checkpoint's class names) when its json names the
    same classes in another order (:func:`data.build_dataset`). A trained model's classes (``--trained_model``,
    ``--resume``, ``--eval_results``: its checkpoint's, or the ``--classes`` its class list is checked against) may
    hold a softmax background entry (``__background__``, refused in a new class list): one trained with it has it.
    ``args.classes``: the ``--classes`` string as typed (a comma list or a file), or a tuple of the names taken from a
    checkpoint or a ``summary.json``, used as they are (a name may hold a comma, or be that of a file here).
    ``checkpoint``: the file of the trained model whose classes these are when the flags do not name it (bare
    ``--resume``, which finds the run's): an object of another class is not told to join ``--classes``, which that
    model's classes would refuse; nor is one under ``--eval_results`` with the classes of the evaluation that wrote
    the detections (taken from its ``summary.json``, or ``voc``'s): the detections hold none of another class.
    ``classes_typed``: under ``--eval_results``, whether ``args.classes`` was given on the command line, not taken
    from the ``summary.json`` (which records a ``--classes`` file by its path, a string as typed). A ``--classes``
    file is named by the advice to add an unknown VOC class to it."""
    classes = args.classes or None
    if isinstance(classes, tuple):
        recorded = args.trained_model or args.resume or args.init_from or f"the summary.json of {args.eval_results}"
        classes = checked_recorded_names(classes, f"the class names of {recorded}")
    elif classes and (args.trained_model or args.resume is not None or args.eval_results):
        classes = parse_class_list(classes, allow_background=True)
    fixed_by = args.trained_model or args.resume or checkpoint  # a trained model's classes: it scores no other
    if not fixed_by and args.eval_results and not classes_typed:  # the evaluation's classes, not typed here
        fixed_by = f"the model that made the detections in {args.eval_results}"
    return build_dataset(args.dataset, split, size, data_root=args.data_root, classes=classes,
                         augment=train, seed=args.seed, expand_probability=args.expand_prob,
                         skip_unknown_classes=args.skip_unknown_classes, class_order=class_order,
                         classes_fixed_by=str(fixed_by) if fixed_by else None,
                         class_file=class_list_file(args.classes) if isinstance(args.classes, str) else None)


def make_training_split(args: argparse.Namespace, ctx: DistributedContext, class_order: Sequence[str] | None,
                        checkpoint: str | os.PathLike | None = None) -> DetectionDataset:
    """The training split (:func:`make_dataset`, augmented). Under ``torchrun``, ``--dataset shapes`` makes it in each
    machine's first process (``LOCAL_RANK`` 0) first, which generates the set when its folder holds none, and the
    other processes then read that set: started together, each generated the whole set (N times the work).
    ``checkpoint``: the run's checkpoint that bare ``--resume`` continues (:func:`make_dataset`). Raises
    :class:`DataError` on every process when that process could not make it (it says why)."""
    def make() -> DetectionDataset:
        return make_dataset(args, "train", args.size, train=True, class_order=class_order, checkpoint=checkpoint)

    if not (ctx.is_distributed and args.dataset == "shapes"):
        return make()
    dataset, failure = None, None
    if ctx.local_rank == 0:
        try:
            dataset = make()
        except DataError as error:  # every process must learn it before the others look for the set
            failure = error
    raise_if_any_process_failed(failure, ctx, lambda: DataError(
        "another process of this job could not make the shapes set on its machine (its message says why)"))
    return dataset if dataset is not None else make()


def check_recorded_shapes_set(args: argparse.Namespace, data_root_given: str | None, source: str) -> None:
    """``--dataset shapes`` whose ``--data_root`` was taken from ``source`` (a checkpoint's config, an evaluation's
    ``summary.json``) rather than given (``data_root_given``): refuse a folder that holds no complete shapes set now
    (moved or deleted), where building the dataset would generate seed 0's default set, other images than the run's
    unless it used that one, and score them without a word (``--resume PATH``: generate them for half a minute, then
    refuse them as another training set). Raises :class:`DataError`."""
    root = args.data_root
    if args.dataset != "shapes" or root is None or root == data_root_given or generated_set_arguments(root):
        return
    raise DataError(f"{source} records the shapes set in --data_root {root}, which holds none now (moved or "
                    "deleted): give --data_root the folder that holds it now; --dataset shapes --data_root "
                    f"{shlex.quote(root)} generates seed 0's default set there ({DEFAULT_NUM_TRAINVAL} + "
                    f"{DEFAULT_NUM_TEST} images), another set unless the run used that one")


def absolute_data_paths(args: argparse.Namespace) -> dict[str, str]:
    """``--data_root`` and a ``--classes`` file as absolute paths, for the checkpoint's config and ``summary.json``:
    ``--trained_model`` and ``--eval_results`` take them from there, maybe run from another folder."""
    paths = {"data_root": os.path.abspath(args.data_root)} if args.data_root else {}
    # a tuple of names taken from a checkpoint names no file
    if isinstance(args.classes, str) and (class_file := class_list_file(args.classes)):
        paths["classes"] = os.path.abspath(class_file)
    return paths


def other_classes_advice(dataset: DetectionDataset, trained_on: Sequence[str], flag: str, classes_given: bool,
                         path: str | os.PathLike) -> str:
    """What to do about ``dataset``, whose classes are not ``trained_on``, those of the checkpoint ``path`` that
    ``flag`` (``--trained_model`` or ``--resume``) reads: drop ``--classes`` (``classes_given``) from a VOC layout,
    which is then read with the checkpoint's classes; give a COCO layout a json naming them (the message names the
    json and the classes that differ); ``--resume`` can instead start a new run from the weights (``--init_from``)."""
    restart = f"; or {init_from_advice(path)} to train on these classes" if flag == "--resume" else ""
    if isinstance(dataset, COCODetection):
        known, held = ({folded_name(name) for name in names} for names in (trained_on, dataset.class_names))
        extra = [name for name in dataset.class_names if folded_name(name) not in known]
        lacking = [name for name in trained_on if folded_name(name) not in held]
        differs = ([f"names {preview_names(extra)}, which it was not trained on"] if extra else []) + (
            [f"not {preview_names(lacking)}"] if lacking else [])
        use = "evaluate it on" if flag == "--trained_model" else "continue it on"
        skip = ("; or pass --skip_unknown_classes to leave out the objects of those categories (counted in one "
                "warning) and score its classes alone") if flag == "--trained_model" and extra and not lacking else ""
        return (f"{use} a json whose categories are the classes it was trained on (in any order, under any ids): "
                f"{dataset.annotation_file} {', and '.join(differs)}{restart}{skip}")
    if classes_given:
        skip = " (and --skip_unknown_classes leaves out objects of other classes)" if flag == "--trained_model" else ""
        return f"drop --classes: {flag} reads a VOC-layout folder with the checkpoint's classes{skip}{restart}"
    return f"use it with the classes it was trained on{restart}"


def categories_kept_note(args: argparse.Namespace, dataset: DetectionDataset, trained_on: Sequence[str]) -> str | None:
    """``--init_from`` with ``--skip_unknown_classes`` and no ``--classes`` on a COCO-layout training json (``dataset``)
    naming categories its checkpoint was not trained on (``trained_on``): the note that the flag leaves none out (the
    checkpoint's classes at most order a json's labels: ``data._kept_coco_classes``), and the ``--classes`` that
    would; None otherwise."""
    if not (args.init_from and args.skip_unknown_classes and not args.classes and isinstance(dataset, COCODetection)):
        return None
    known, held = ({folded_name(name) for name in names} for names in (trained_on, dataset.class_names))
    if held <= known:
        return None
    shared = [name for name in trained_on if folded_name(name) in held]
    if not shared:
        use = "to train on some of them alone, give --classes naming those"
    elif len(shared) > CLASSES_NAMED or any("," in name for name in shared):
        use = ("to train on those of its classes alone, give --classes a file naming them, one per line "
               f"({preview_names(shared)})")
    else:
        use = f"to train on those of its classes alone, give --classes {shlex.quote(','.join(shared))}"
    return (f"note: --skip_unknown_classes leaves out no category of {dataset.annotation_file} without --classes: "
            f"--init_from {args.init_from}'s classes choose none (a fine-tuning run trains on its data's classes), so "
            f"this run trains on its {len(dataset.class_names)} ({preview_names(dataset.class_names)}); {use}")


def check_splits(train_dataset: DetectionDataset, test_dataset: DetectionDataset, log: RunLog) -> None:
    """Before training: both splits have the same classes in the same order, compared ignoring letter case as
    everywhere else (the model's label i is scored as the test split's class i; a COCO-layout test split built with
    the training split's ``class_names`` as ``class_order`` has them in its order when its json names the same
    categories, in any order and under any ids), the training split has objects and
    the test split has objects to score (not difficult, not crowd). Classes without a training object get a warning:
    the model cannot learn them; so do classes without an object to score in the test split: their AP is undefined."""
    if not same_classes(train_dataset.class_names, test_dataset.class_names):
        raise DataError(f"the training split's classes {listed_names(train_dataset.class_names)} differ from the test "
                        f"split's {listed_names(test_dataset.class_names)}: "
                        f"{_how_to_match_classes(train_dataset, test_dataset)}")
    check_test_split(test_dataset, log)
    per_class = np.bincount(train_dataset.annotations.labels, minlength=train_dataset.num_classes)
    if not per_class.any():
        images = len(train_dataset)
        raise DataError(f"the training split's {counted(images, 'image')} {'holds' if images == 1 else 'hold'} no "
                        "object: there is nothing to learn; annotate the training images")
    missing = [name for name, count in zip(train_dataset.class_names, per_class) if count == 0]
    if missing:
        log.info(f"warning: no training image holds an object of {_class_list(missing)}: the model cannot learn them "
                 f"(their AP will be 0 or undefined){_background_hint(missing)}")


def check_test_split(test_dataset: DetectionDataset, log: RunLog, detecting: bool = True) -> None:
    """Before an evaluation (training's, ``--trained_model``'s, ``--eval_results``'): the test split has images and
    objects to score (not difficult, not crowd), else :class:`DataError`, as every AP would be undefined; classes
    without an object to score get a warning: their AP is undefined (nan) and left out of the means. ``detecting``:
    the evaluation runs a model here (not ``--eval_results``, which scores detections made already), so images holding
    more objects to score than the detections it keeps of an image get a warning too."""
    if len(test_dataset) == 0:
        raise DataError("the test split has no images, so training could not be evaluated: list its images "
                        "(VOC layout: ImageSets/Main/test.txt or val.txt; COCO layout: the test json's images)")
    scored = test_dataset.objects_to_score_per_class()
    if not scored.any():
        images = len(test_dataset)
        raise DataError(f"the test split's {counted(images, 'image')} {'holds' if images == 1 else 'hold'} no object "
                        "to score (none, or all marked difficult or iscrowd), so every AP would be undefined: annotate "
                        "the test images")
    unscored = [name for name, count in zip(test_dataset.class_names, scored) if count == 0]
    if unscored:
        log.info(f"warning: the test split holds no object to score of {_class_list(unscored)} (none, or all marked "
                 "difficult or iscrowd): their AP is undefined (nan) and left out of the means; move some of their "
                 f"images to the test split{_background_hint(unscored)}")
    if detecting:
        for warning in _capped_images_warnings(test_dataset):
            log.info(warning)


def _capped_images_warnings(test_dataset: DetectionDataset) -> list[str]:
    """Warnings for test images holding more objects to score than the detections scored of an image: the
    :data:`MAX_PER_IMAGE` an evaluation keeps, and for a COCO-layout split the :data:`COCO_MAX_DETECTIONS` of an image
    and category that COCO's metric scores. The objects past a cap count as missed whatever the model detects."""
    per_image = test_dataset.objects_to_score_per_image()
    total = int(per_image.sum())
    warnings = [_capped_images_warning(test_dataset, np.arange(len(per_image)), per_image, None, total,
                                       f"more objects to score than the {MAX_PER_IMAGE} detections an evaluation "
                                       "keeps per image", "the authors' setting", MAX_PER_IMAGE)]
    if isinstance(test_dataset, COCODetection):
        items, labels, per_pair = test_dataset.objects_to_score_per_image_and_class()
        warnings.append(_capped_images_warning(test_dataset, items, per_pair, labels, total,
                                               "more objects of one category to score than the "
                                               f"{COCO_MAX_DETECTIONS} detections of an image and category COCO's "
                                               "metric scores", "pycocotools' maxDets", COCO_MAX_DETECTIONS))
    return [warning for warning in warnings if warning is not None]


def _capped_images_warning(test_dataset: DetectionDataset, items: np.ndarray, counts: np.ndarray,
                           labels: np.ndarray | None, total: int, what: str, whose: str, cap: int) -> str | None:
    """The warning for test images whose objects to score, counted per item (``items`` and ``counts``, int64 ``[P]``)
    or per item and class (``labels`` int64 ``[P]`` too), exceed a ``cap`` on the detections scored (``what`` it is,
    ``whose`` rule); ``total``: the split's objects to score. None if none does."""
    capped = np.flatnonzero(counts > cap)
    if not len(capped):
        return None
    images = len(np.unique(items[capped]))
    fullest = int(capped[np.argmax(counts[capped])])
    item = int(items[fullest])
    where = test_dataset.annotation_source(item) or str(test_dataset.image_path(item))
    of_class = "" if labels is None else f" {test_dataset.class_names[int(labels[fullest])]!r}"
    missed = int((counts[capped] - cap).sum())
    return (f"warning: {counted(images, 'test image')} {'holds' if images == 1 else 'hold'} {what} ({whose}; the most: "
            f"{counts[fullest]}{of_class} in {where}): {missed} of the test split's {total} objects to score count as "
            "missed whatever the model detects, which lowers recall and AP; cut such images into tiles holding fewer "
            "objects")


def _background_hint(names: list[str]) -> str:
    """``; '_background_' is a softmax classifier's background entry ...: remove it`` for the first of the classes
    ``names`` without objects that is one (:func:`data.class_list.is_background_entry`: a json of labelme's
    labelme2coco has ``_background_``, a class list given through the API the authors' ``__background__``), else
    ""."""
    found = [name for name in names if is_background_entry(name)]
    if not found:
        return ""
    return (f"; {found[0]!r} is a softmax classifier's background entry, which this sigmoid classifier, with no "
            "background column, does not use: remove it from the classes (a COCO-layout json: from its categories)")


def _class_list(names: list[str]) -> str:
    """``the classes ['cat', 'dog']`` for a warning, or for over :data:`CLASSES_NAMED` names the first ones and the
    count of the others (1,000 classes made a line of 12,000 characters)."""
    if len(names) <= CLASSES_NAMED:
        return f"the classes {names}"
    first = ", ".join(repr(name) for name in names[:CLASSES_NAMED])
    return (f"{len(names)} classes ({first} and {len(names) - CLASSES_NAMED} more; --check_data prints every class's "
            "count)")


def _how_to_match_classes(train_dataset: DetectionDataset, test_dataset: DetectionDataset) -> str:
    """What to do about splits whose classes differ (:func:`check_splits`): for two COCO-layout splits, the jsons
    whose category names must be the same and the names that only one of them has."""
    if not (isinstance(train_dataset, COCODetection) and isinstance(test_dataset, COCODetection)):
        return "give both splits the same classes in the same order"
    train_file, test_file = train_dataset.annotation_file, test_dataset.annotation_file
    train_names, test_names = ({folded_name(name) for name in names}
                               for names in (train_dataset.class_names, test_dataset.class_names))
    if train_names == test_names:  # built without the training split's order
        return (f"{train_file} and {test_file} list the same categories in another order: build the test split with "
                "class_order=<the training split's class_names> (data.build_dataset)")
    only_train = [name for name in train_dataset.class_names if folded_name(name) not in test_names]
    only_test = [name for name in test_dataset.class_names if folded_name(name) not in train_names]
    skip = (f"; or pass --skip_unknown_classes to score the categories of {train_file} alone in {test_file}"
            if not only_train else "")
    return (f"the categories of {train_file} and {test_file} must have the same names (in any order, under any ids); "
            f"only in the training json: {listed_names(only_train)}, only in the test json: {listed_names(only_test)}"
            f"{skip}")
