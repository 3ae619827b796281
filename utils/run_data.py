"""The datasets a main.py run's flags name: a split built as the flags ask, both splits checked to fit training and
evaluation together, and the data paths made absolute for the files that record them (a checkpoint's config, an
evaluation's ``summary.json``)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from data import DataError, build_dataset
from data.dataset import DetectionDataset
from utils.logging import RunLog
from utils.names import same_classes


def make_dataset(args: argparse.Namespace, split: str, size: int, train: bool) -> DetectionDataset:
    """The ``split`` of the dataset the flags name, at ``size`` px, augmented for training when ``train``."""
    return build_dataset(args.dataset, split, size, data_root=args.data_root, classes=args.classes or None,
                         augment=train, seed=args.seed, expand_probability=args.expand_prob,
                         skip_unknown_classes=args.skip_unknown_classes)


def absolute_data_paths(args: argparse.Namespace) -> dict[str, str]:
    """``--data_root`` and a ``--classes`` file as absolute paths, for the checkpoint's config and ``summary.json``:
    ``--trained_model`` and ``--eval_results`` take them from there, maybe run from another folder."""
    paths = {"data_root": os.path.abspath(args.data_root)} if args.data_root else {}
    try:
        if args.classes and Path(args.classes).is_file():
            paths["classes"] = os.path.abspath(args.classes)
    except OSError:  # a comma list too long to be a file name
        pass
    return paths


def check_splits(train_dataset: DetectionDataset, test_dataset: DetectionDataset, log: RunLog) -> None:
    """Before training: both splits have the same classes in the same order, compared ignoring letter case as
    everywhere else (the model's label i is scored as the test split's class i), the training split has objects and
    the test split has objects to score (not difficult, not crowd). Classes without a training object get a warning:
    the model cannot learn them; so do classes without an object to score in the test split: their AP is undefined."""
    if not same_classes(train_dataset.class_names, test_dataset.class_names):
        raise DataError(
            f"the training split's classes {train_dataset.class_names} differ from the test split's "
            f"{test_dataset.class_names}: give both splits the same classes in the same order (for COCO-layout "
            "data, the same categories in both jsons)"
        )
    if len(test_dataset) == 0:
        raise DataError("the test split has no images, so training could not be evaluated: list its images "
                        "(VOC layout: ImageSets/Main/test.txt or val.txt; COCO layout: the test json's images)")
    scored = test_dataset.objects_to_score_per_class()
    if not scored.any():
        raise DataError(f"the test split's {len(test_dataset)} images hold no object to score (none, or all marked "
                        "difficult or iscrowd), so every AP would be undefined: annotate the test images")
    unscored = [name for name, count in zip(test_dataset.class_names, scored) if count == 0]
    if unscored:
        log.info(f"warning: the test split holds no object to score of the classes {unscored} (none, or all marked "
                 "difficult or iscrowd): their AP is undefined (nan) and left out of the means; move some of their "
                 "images to the test split")
    per_class = np.bincount(train_dataset.annotations.labels, minlength=train_dataset.num_classes)
    if not per_class.any():
        raise DataError(f"the training split's {len(train_dataset)} images hold no object: there is nothing to learn; "
                        "annotate the training images")
    missing = [name for name, count in zip(train_dataset.class_names, per_class) if count == 0]
    if missing:
        log.info(f"warning: no training image holds an object of the classes {missing}: the model cannot learn them "
                 "(their AP will be 0 or undefined)")
