"""main.py's flags after parsing: the defaults that depend on ``--dataset``, the checks of their values and
combinations, and the flags not given taken from a checkpoint (``--resume PATH``, ``--init_from``,
``--trained_model``) or from the ``summary.json`` of saved detections (``--eval_results``).

A flag left at ``None`` by the parser means "not given": :func:`fill_dataset_defaults` settles it from
:data:`DATASET_DEFAULTS` and :data:`RUN_DEFAULTS` once the checkpoint readers have taken theirs.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from data import DATASET_NAMES, parse_class_list
from data.loader import default_workers, usable_cores
from models.builder import MIN_SIZE
from utils.box import DEFAULT_BASE_ANCHOR_SIZE
from utils.box.prior_box import SIZE_MULTIPLE
from utils.checkpoint import ARCHITECTURE_KEYS, CheckpointError
from utils.environment import compiled_criterion_problem
from utils.inference import (
    RESULTS_FILE_PATTERNS,
    EvaluationSummary,
    check_complete_results,
    read_summary,
    summary_beside,
)
from utils.messages import counted, exact_number, preview_names

DATASETS = DATASET_NAMES  # --dataset's choices: the names build_dataset knows
AMP_CHOICES = ("auto", "bf16", "fp16")  # --amp: bare --amp is "auto"

# Defaults that depend on --dataset; a flag given on the command line always wins.
DATASET_DEFAULTS = {
    "voc": dict(version="pafpn", backbone="vgg16", size=320, epochs=250, lr=1e-2, warm_iter=500,
                pretrained=True, expand_prob=0.6),
    "coco": dict(version="pafpn", backbone="vgg16", size=320, epochs=140, lr=1e-2, warm_iter=500,
                 pretrained=True, expand_prob=0.6),
    "custom": dict(version="pafpn", backbone="vgg16", size=320, epochs=250, lr=1e-2, warm_iter=500,
                   pretrained=True, expand_prob=0.6),
    # A short from-scratch CPU run (10-21 minutes on 2 cores with --amp; docs/benchmarks.md): 12 epochs of
    # 2,000 images, a peak lr of 6e-2, which trained faster than the paper's 1e-2 (and 2e-2, 4e-2) in that budget, and
    # no zoom-out augmentation, which shrinks the many small shapes further (AP50 0.46 with it, 0.51 without, at 4e-2).
    "shapes": dict(version="fssd", backbone="resnet18", size=192, epochs=12, lr=6e-2, warm_iter=50,
                   pretrained=False, expand_prob=0.0),
}
ARCHITECTURE_DEFAULT_KEYS = ("version", "backbone", "size")
DEFAULT_NMS_THRESH = 0.5  # facts §7: per-class NMS at IoU 0.5
# Defaults of the flags that --resume PATH takes from its checkpoint when not given (None until then: "not given").
RUN_DEFAULTS = dict(mutual_guide=False, batch_size=32, seed=0, save_folder="weights/", eval_interval=0,
                    checkpoint_interval=500, log_interval=20, nms_thresh=DEFAULT_NMS_THRESH)
# The run flags --resume PATH takes from its checkpoint's config when not given, with the values main.py writes there
# (a type, or the choices); the data flags only for the checkpoint's dataset. The run's length, --max_iter or --epochs
# as saved, and the architecture (ARCHITECTURE_KEYS) are taken too. --classes: the string given (a comma list or a
# file's absolute path), or the names a resumed run took (a list); the checkpoint's class names are taken in its place.
RESUMED_FLAGS: dict[str, Any] = {
    "dataset": DATASETS, "data_root": str, "classes": list, "skip_unknown_classes": bool, "mutual_guide": bool,
    "mutual_guide_from": int, "batch_size": int, "lr": float, "warm_iter": int, "seed": int, "expand_prob": float,
    "amp": AMP_CHOICES, "name": str, "save_folder": str, "run_dir": str, "eval_interval": int,
    "checkpoint_interval": int, "log_interval": int, "assign_stats": bool, "eval_dir": str, "nms_thresh": float,
    "sync_bn": bool,
}
RESUMED_DATA_FLAGS = ("data_root", "classes", "skip_unknown_classes")
CLASSES_SHOWN = 20  # the class names a log line of the flags taken shows of a recorded list

WORKERS_PER_CORE = 4  # --workers' upper bound per usable core: more only compete for the cores (and memory)
MAX_SEED = 2**32 - 1  # a 32-bit seed: every generator the run seeds accepts it
MAX_LR = float(torch.finfo(torch.float32).max)  # the weights are float32: SGD's step scales by -lr in float32
EVAL_SCORE_THRESH = 0.005  # evaluation keeps the detections scoring above it, as the authors' code
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,199}")  # a file and folder name on every file system

# flags that only training reads
TRAINING_ONLY_FLAGS = (
    "mutual_guide", "mutual_guide_from", "lr", "warm_iter", "epochs", "max_iter", "expand_prob", "compile",
    "compile_loss", "assign_stats", "name", "seed", "save_folder", "run_dir", "checkpoint_interval", "log_interval",
    "eval_interval", "pretrained", "sync_bn",
)
DATA_FLAGS = ("dataset", "data_root", "classes", "skip_unknown_classes")
EVALUATION_FLAGS = ("batch_size", "amp", "eval_dir", "nms_thresh", "cuda_graph")
# the flags each mode that does not train leaves unread: given with it, they are ignored, and the run says so
UNREAD_FLAGS = {
    "trained_model": TRAINING_ONLY_FLAGS,
    "demo": (*TRAINING_ONLY_FLAGS, *DATA_FLAGS, "amp", "eval_dir"),
    "export": (*TRAINING_ONLY_FLAGS, *DATA_FLAGS, "device", "workers", "batch_size", "amp", "eval_dir", "cuda_graph"),
    "check_data": (*TRAINING_ONLY_FLAGS, "version", "backbone", "base_anchor_size", "device", *EVALUATION_FLAGS),
    "eval_results": (*TRAINING_ONLY_FLAGS, "version", "backbone", "base_anchor_size", "device", "workers",
                     *EVALUATION_FLAGS),
}


# the flags of a path or a list, and what each takes: an empty value ('') was taken for the flag not given (the
# default folder, voc's classes, random backbone weights, training in place of --trained_model's evaluation)
NON_EMPTY_FLAGS = {
    "trained_model": "a checkpoint file", "eval_results": "the folder or file of saved detections",
    "init_from": "a checkpoint file", "pretrained": "a backbone state dict file, or --no_pretrained",
    "data_root": "the dataset folder", "classes": "class names (cat,dog) or a file of them", "save_folder": "a folder",
    "run_dir": "a folder", "eval_dir": "a folder", "demo": "image files or folders", "demo_output": "a folder",
    "export_path": "a file name ending in .onnx",
}


# what each mode that does not train does, for the refusal of --resume and --init_from with it
MODE_WORK = {"trained_model": "evaluates a checkpoint", "eval_results": "scores saved detections",
             "check_data": "checks the data"}


class FlagValueError(ValueError):
    """A flag's value out of its range (:func:`check_flag_values`); ``flag`` names it, without the dashes."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


def check_no_empty_values(args: argparse.Namespace) -> None:
    """A ``ValueError`` naming the flag given an empty value (``--data_root ''``, one of ``--demo``'s paths), which
    would otherwise be taken for the flag left out (:data:`NON_EMPTY_FLAGS`); ``--resume ''`` is bare ``--resume``."""
    for flag, takes in NON_EMPTY_FLAGS.items():
        value = getattr(args, flag)
        if value == "" or (isinstance(value, list) and "" in value):
            raise ValueError(f"--{flag} '' is empty: give {takes}, or leave --{flag} out")


HOME_PATH_FLAGS = (*(flag for flag in NON_EMPTY_FLAGS if flag != "classes"), "resume")  # those of a path (or paths)


def expand_home(args: argparse.Namespace) -> None:
    """Take the paths of :data:`HOME_PATH_FLAGS` given as ``~/...`` (or ``~user/...``) in the home folder, as the shell
    does for ``--eval_dir ~/results`` but not for ``--eval_dir=~/results`` nor in quotes, where a folder named ``~``
    in the current folder would be written silently."""
    def expanded(path: str) -> str:
        return os.path.expanduser(path) if path.startswith("~") else path

    for flag in HOME_PATH_FLAGS:
        value = getattr(args, flag)
        if isinstance(value, str):
            setattr(args, flag, expanded(value))
        elif isinstance(value, list):
            setattr(args, flag, [expanded(path) if isinstance(path, str) else path for path in value])


def check_flag_combinations(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """Refuse flags that contradict each other; returns a line naming the flags given (those off ``parser``'s default,
    ``parser`` having read ``args``) that the mode asked for (``--trained_model``, ``--demo``, ``--export``,
    ``--check_data``, ``--eval_results``) does not read, or, training, ``--epochs`` given beside ``--max_iter``; ""
    when none."""
    modes = [flag for flag in ("trained_model", "eval_results", "check_data") if getattr(args, flag)]
    if len(modes) > 1:
        raise ValueError(f"--{modes[0]} and --{modes[1]} each run alone; give only one of them")
    if args.init_from and args.resume is not None:
        raise ValueError("--init_from starts a new run and --resume continues one; give only one of them")
    if args.pretrained and (args.init_from or args.resume is not None):  # the checkpoint replaces every weight
        source = "--init_from" if args.init_from else "--resume"
        raise ValueError(f"--pretrained is not used with {source}, whose checkpoint holds the backbone weights; "
                         "drop --pretrained")
    if args.demo and args.export:
        raise ValueError("--demo and --export each run alone; give only one of them")
    if (args.demo or args.export) and not args.trained_model:  # before --check_data or --eval_results runs instead
        raise ValueError("--demo and --export need --trained_model PATH (a checkpoint saved by main.py)")
    for flag, needs in (("demo_output", "demo"), ("export_path", "export"), ("export_nms", "export"),
                        ("opset", "export")):
        if getattr(args, flag) is not None and getattr(args, flag) is not False and not getattr(args, needs):
            raise ValueError(f"--{flag} applies to --{needs}, which was not given; add --{needs} or drop --{flag}")
    if args.score_thresh is not None and not (args.demo or args.export_nms):
        raise ValueError("--score_thresh applies to --demo and --export_nms, neither of which was given (evaluation "
                         f"keeps every detection scoring above {EVAL_SCORE_THRESH:g}); add one or drop --score_thresh")
    if args.export and not args.export_nms and args.nms_thresh is not None:
        raise ValueError("--nms_thresh with --export applies to --export_nms, which was not given (the graph without "
                         "it outputs the boxes and scores of every anchor); add --export_nms or drop --nms_thresh")
    for flag in ("resume", "init_from"):
        if modes and getattr(args, flag) is not None:
            raise ValueError(f"--{flag} trains, --{modes[0]} {MODE_WORK[modes[0]]} without training; "
                             "give only one of them")
    mode = "demo" if args.demo else "export" if args.export else modes[0] if modes else None
    if mode is None:  # training reads every flag, but --max_iter sets the run's length in place of --epochs
        return "with --max_iter the flag --epochs is ignored" if None not in (args.max_iter, args.epochs) else ""
    given = [flag for flag in vars(args)
             if flag in UNREAD_FLAGS[mode] and getattr(args, flag) != parser.get_default(flag)]
    names = ["--no_pretrained" if flag == "pretrained" and args.pretrained is False else f"--{flag}" for flag in given]
    if len(names) == 1:
        return f"with --{mode} the flag {names[0]} is ignored"
    return f"with --{mode} the flags {', '.join(names)} are ignored" if names else ""


def requested_architecture(args: argparse.Namespace) -> dict[str, Any]:
    """The architecture flags (:data:`ARCHITECTURE_KEYS`) as given, ``None`` where not, for ``check_compatible``."""
    return {key: getattr(args, key) for key in ARCHITECTURE_KEYS}


def take_architecture_from_checkpoint(args: argparse.Namespace, config: Mapping[str, Any]) -> None:
    """Set the architecture flags not given (``--version``, ``--backbone``, ``--size``, ``--base_anchor_size``) to
    those of a checkpoint's ``config``, as ``--trained_model`` does: ``--init_from W`` alone continues W's
    architecture, not the dataset's default."""
    for key in ARCHITECTURE_KEYS:
        if getattr(args, key) is None:
            setattr(args, key, config.get(key))


def take_dataset_from_checkpoint(args: argparse.Namespace, config: Mapping[str, Any],
                                 class_names: Sequence[str]) -> str:
    """``--init_from`` without ``--dataset``: the checkpoint ``config``'s dataset, ``--data_root`` and
    ``--skip_unknown_classes`` where not given, and as ``--classes`` its ``class_names`` (names, not a string re-read)
    where its run had ``--classes``, so that ``--init_from W`` alone trains on W's data (to train it longer), as
    ``--trained_model W`` evaluates on it; the schedule is the dataset's default. Returns what was taken, for the log
    ("" when ``--dataset`` is given, or the checkpoint names no known dataset: the default dataset then)."""
    taken = take_data_flags(args, config, ("data_root",))
    if taken and args.classes is None and config.get("classes") is not None:
        args.classes = tuple(class_names)
        taken.append(f"--classes {shown_class_names(args.classes)}")
    return ", ".join(taken)


def take_run_from_checkpoint(args: argparse.Namespace, config: Mapping[str, Any],
                             class_names: Sequence[str] | None = None) -> str:
    """``--resume PATH``: set every run flag not given (:data:`RESUMED_FLAGS`, the architecture, the run's length as
    ``--max_iter`` or ``--epochs`` as saved) to the checkpoint ``config``'s, so that ``--resume PATH`` alone continues
    the run, its evaluations written where they were (``--eval_dir``) with the same ``--nms_thresh``; a flag given
    keeps its value (``resume_run`` refuses one that changes the schedule, data stream or precision,
    :data:`utils.checkpoint.RUN_KEYS`; another ``--name``, folder, interval or ``--nms_thresh`` applies from then on).
    The data flags are taken only for the checkpoint's dataset; ``--classes`` as the checkpoint's ``class_names`` (a
    tuple of names, not its ``--classes`` string re-read: a file named like its one class may be here now), where the
    run had ``--classes``. Returns what was taken, for the log ("" when nothing).
    Raises :class:`CheckpointError` for a value to take that main.py never writes (an edited or damaged file: of
    another type, or out of the flag's range, e.g. ``--nms_thresh 2.0``), :class:`FlagValueError` for a flag given
    that is out of range with the values taken (``--base_anchor_size`` of another ``--size``)."""
    taken = [f"--{key} {config[key]}" for key in ARCHITECTURE_KEYS if getattr(args, key) is None]
    take_architecture_from_checkpoint(args, config)
    expected = dict(RESUMED_FLAGS)
    if args.max_iter is None and args.epochs is None:  # the length as the run gave it
        expected["max_iter" if config.get("max_iter") is not None else "epochs"] = int
    if args.dataset is not None and args.dataset != config.get("dataset"):  # another dataset: its own data flags
        expected = {key: kind for key, kind in expected.items() if key not in RESUMED_DATA_FLAGS}
    taken_keys = []  # the run flags taken (not the architecture, which load_checkpoint checked)
    for key, kind in expected.items():
        value, given = config.get(key), getattr(args, key)
        if (given is not None and given is not False) or value is None:  # given (a store_true flag: True), or unset
            continue
        if not _written_by_main(value, kind):
            raise stored_value_error(args.resume, key, value, "which main.py never writes", "resume with")
        if key == "classes" and (class_names is not None or not isinstance(value, str)):
            value = tuple(value if class_names is None else class_names)
        setattr(args, key, value)
        taken_keys.append(key)
        if value is not False:  # --classes as recorded: the list or file given, or the names a resumed run took
            shown = shown_class_names(value) if isinstance(config[key], (list, tuple)) else config[key]
            taken.append(f"--{key}" if value is True else f"--{key} {shown}")
    try:
        check_flag_values(args)  # the values taken, in the ranges of the flags given
    except FlagValueError as error:
        if error.flag not in taken_keys:  # a flag given, out of range with the values taken: the flag's error
            raise
        raise stored_value_error(args.resume, error.flag, config[error.flag], f"which main.py never writes ({error})",
                                 "resume with") from None
    return ", ".join(taken)


def shown_class_names(names: Sequence[str]) -> str:
    """Class names a checkpoint or a ``summary.json`` recorded as a list, for the log line of the flags taken: as the
    comma list ``--classes`` takes (``cat,dog``), or as a Python list when a name holds a comma
    (``['person, sitting', 'car']``); over :data:`CLASSES_SHOWN` names, the first ones and the count."""
    shown = list(names[:CLASSES_SHOWN])
    text = str(shown) if any("," in name for name in shown) else ",".join(shown)
    return text if len(names) <= CLASSES_SHOWN else f"{text} ... ({len(names)} classes)"


def _is_name_list(value: Any) -> bool:
    """Whether ``value`` is class names as a checkpoint or a ``summary.json`` records them: a non-empty list (a tuple
    as saved) of strings."""
    return isinstance(value, (list, tuple)) and bool(value) and all(type(name) is str for name in value)


def _written_by_main(value: Any, kind: Any) -> bool:
    """Whether a checkpoint's flag ``value`` is one main.py writes for a flag of ``kind``: a type, or the choices."""
    if isinstance(kind, tuple):
        return value in kind
    if kind is list:  # --classes: a string, or a list of names (a tuple as saved)
        return type(value) is str or _is_name_list(value)
    if kind is float:
        return type(value) in (int, float)
    return type(value) is kind


def take_evaluation_settings_from_checkpoint(args: argparse.Namespace, config: Mapping[str, Any]) -> str:
    """``--trained_model``: evaluate as the checkpoint was trained where the flags do not say otherwise. Without
    ``--dataset``, its dataset, ``--data_root`` and ``--skip_unknown_classes``; without ``--amp``, its mixed precision;
    without ``--batch_size``, its batch size (the convolutions round an image's outputs differently in batches of
    other sizes); without ``--nms_thresh``, its NMS threshold (the printed metrics then equal those of the training
    run's final evaluation). Returns what was taken, for the log ("" when nothing; the default batch size and NMS
    threshold are not named). Raises
    :class:`CheckpointError` when a value it would take is not one main.py writes."""
    problems = {}  # the values that would be taken, and are not ones main.py writes
    if args.dataset is None and "dataset" in config and config["dataset"] not in DATASETS:
        problems["dataset"] = f"not one of {', '.join(DATASETS)}"
    if args.dataset is None and args.data_root is None and not isinstance(config.get("data_root"), (str, type(None))):
        problems["data_root"] = "not a path"
    if args.amp is None and config.get("amp") not in (None, *AMP_CHOICES):
        problems["amp"] = f"not one of {', '.join(AMP_CHOICES)}"
    if problem := _stored_nms_thresh_problem(args, config):
        problems["nms_thresh"] = problem
    batch_size = config.get("batch_size")
    if args.batch_size is None and batch_size is not None and not (type(batch_size) is int and batch_size >= 1):
        problems["batch_size"] = "not a positive integer"
    if problems:
        _refuse_stored_value(args, config, *next(iter(problems.items())))
    taken = take_data_flags(args, config, ("data_root",))  # the test split the training run evaluated on
    if args.amp is None and config.get("amp") is not None:
        args.amp = config["amp"]
        taken.append(f"--amp {args.amp}")
    if args.batch_size is None and batch_size is not None:  # the CPU's convolutions round by batch size
        args.batch_size = batch_size
        taken += [f"--batch_size {batch_size}"] if batch_size != RUN_DEFAULTS["batch_size"] else []
    return ", ".join(taken + _take_nms_thresh(args, config))


def take_nms_thresh_from_checkpoint(args: argparse.Namespace, config: Mapping[str, Any]) -> str:
    """``--demo`` and ``--export --export_nms`` with ``--trained_model``: without ``--nms_thresh``, the NMS threshold
    of the checkpoint's run, as its evaluation takes it (:func:`take_evaluation_settings_from_checkpoint`), so the
    demo's detections are those its evaluation scored. Returns what was taken, for the log ("" when nothing or the
    default). Raises :class:`CheckpointError` for a stored value main.py never writes."""
    if problem := _stored_nms_thresh_problem(args, config):
        _refuse_stored_value(args, config, "nms_thresh", problem)
    return ", ".join(_take_nms_thresh(args, config))


def _stored_nms_thresh_problem(args: argparse.Namespace, config: Mapping[str, Any]) -> str | None:
    """Why the checkpoint's ``nms_thresh``, which would be taken (``--nms_thresh`` not given), is not one main.py
    writes; None when it is, or is absent."""
    nms_thresh = config.get("nms_thresh")
    if args.nms_thresh is None and nms_thresh is not None and not (
            type(nms_thresh) in (int, float) and 0.0 < nms_thresh <= 1.0):
        return "not an IoU in (0, 1]"
    return None


def stored_value_error(path: str, key: str, value: Any, problem: str, use: str) -> CheckpointError:
    """The error for the checkpoint ``path`` recording ``--key value``, a value main.py never writes (``problem``
    says why), which the flag given would replace to ``use`` it (e.g. "resume with")."""
    return CheckpointError(f"{path} records --{key} {value!r}, {problem}; it was edited or damaged: give --{key} to "
                           f"{use}, or use a checkpoint as main.py saved it")


def _refuse_stored_value(args: argparse.Namespace, config: Mapping[str, Any], key: str, problem: str) -> None:
    use = "detect with" if args.demo else "export with" if args.export else "evaluate with"
    raise stored_value_error(args.trained_model, key, config[key], problem, use)


def _take_nms_thresh(args: argparse.Namespace, config: Mapping[str, Any]) -> list[str]:
    """Sets ``args.nms_thresh`` to the checkpoint's when not given; returns the flag taken, unless the default."""
    if args.nms_thresh is not None or config.get("nms_thresh") is None:
        return []
    args.nms_thresh = float(config["nms_thresh"])
    return [f"--nms_thresh {exact_number(args.nms_thresh)}"] if args.nms_thresh != DEFAULT_NMS_THRESH else []


def take_dataset_from_summary(args: argparse.Namespace) -> tuple[str, EvaluationSummary]:
    """``--eval_results`` without ``--dataset``: the dataset, ``--data_root``, ``--classes`` and
    ``--skip_unknown_classes`` the evaluation that wrote the results ran with, from the ``summary.json`` beside them
    (its ``evaluated_with``). Returns what was taken, for the log ("" when ``--dataset`` is given), and that
    ``summary.json`` as read (:func:`utils.inference.read_summary`), which the rest of ``--eval_results`` reads. Raises
    ``ValueError`` when the results path does not exist or its ``summary.json`` records an evaluation that did not
    finish writing them, or without ``--dataset`` when the ``summary.json`` is missing, unreadable or names no
    dataset."""
    results = Path(args.eval_results)
    if not results.exists():
        raise ValueError(f"--eval_results {results}: no such file or folder; give the eval/<DATASET> folder an "
                         "evaluation wrote (or its results file)")
    summary_file = summary_beside(results)
    check_not_above_evaluations(results)
    summary = read_summary(summary_file)
    check_complete_results(results, summary)  # before the test split is read
    if args.dataset is not None:
        return "", summary
    settings = summary.recorded("evaluated_with")
    taken = take_data_flags(args, settings, ("data_root", "classes")) if isinstance(settings, dict) else []
    if not taken:
        problem = summary.problem or "names no dataset (no 'evaluated_with' entry)"
        raise ValueError(f"--eval_results {results}: {summary_file} {problem}, so the dataset the results are of is "
                         "unknown; give --dataset (and --data_root, --classes as the evaluation had them)")
    return f"{', '.join(taken)} (from {summary_file})", summary


def check_not_above_evaluations(results: Path) -> None:
    """``--eval_results`` of a folder that holds no evaluation (no ``summary.json``, no results file) but whose folders
    do, up to three levels down (``eval/<DATASET>`` above the ``eval/<DATASET>/<name>`` of runs given ``--name``,
    ``eval`` itself, or a regime folder of ``benchmarks/assigners.py``, above its ``seed<N>/<arm>/eval``):
    ``ValueError`` naming them, rather than asking for ``--dataset`` and then finding no results."""
    if not results.is_dir() or summary_beside(results).exists():
        return
    if any(path.is_file() for pattern in RESULTS_FILE_PATTERNS for path in results.glob(pattern)):
        return
    inside = sorted(str(path.parent.relative_to(results))
                    for pattern in ("*/summary.json", "*/*/summary.json", "*/*/*/summary.json")
                    for path in results.glob(pattern) if path.is_file())
    if inside:
        where = f"its folder {inside[0]}" if len(inside) == 1 else f"each of its folders {', '.join(inside)}"
        raise ValueError(f"--eval_results {results}: no evaluation wrote its results there, but one did in {where} "
                         "(an evaluation writes to eval/<DATASET>, or to eval/<DATASET>/<name> for a run given "
                         f"--name): give {'' if len(inside) == 1 else 'one of them, e.g. '}--eval_results "
                         f"{results / inside[0]}")


def evaluated_class_order(summary: EvaluationSummary) -> list[str] | None:
    """``--eval_results``: the class names, in label order, of the evaluation that wrote the results: the order of
    its per-class AP table in the ``summary.json`` beside them (``summary``, as read) (the training split's or the
    checkpoint's order, where a COCO-layout test json may list its categories in another). ``None`` when that file is
    missing or unreadable, or holds no such table (a VOC layout's, whose order is its class list's)."""
    metrics = summary.recorded("metrics")
    per_class = metrics.get("per_class_AP") if isinstance(metrics, dict) else None
    return list(per_class) if isinstance(per_class, dict) and per_class else None


def check_recorded_class_file(args: argparse.Namespace, summary: EvaluationSummary) -> None:
    """``--eval_results`` of a VOC-layout evaluation whose ``--classes`` file was taken from its ``summary.json``
    (``summary``, as read; ``args.classes``: that file's absolute path): ``ValueError`` when the file is gone, or no
    longer names the classes of the evaluation's per-class AP table (edited since: a class added would score AP 0
    for want of a results file, one removed would refuse its objects as ones the model was not trained on, one
    renamed both). Another order of the same classes passes: the results are read and scored class by class, by
    name. Nothing to check for a list of names, or a summary without a VOC per-class table."""
    metrics = summary.recorded("metrics")
    table = metrics.get("per_class_AP50") if isinstance(metrics, dict) else None
    if not isinstance(args.classes, str) or not isinstance(table, dict) or not table:
        return
    evaluated = list(table)
    where = f"--eval_results {args.eval_results}: {args.classes}, the --classes file recorded in"
    classes = f"{counted(len(evaluated), 'class')} ({preview_names(evaluated)})"
    listed = "the keys of its metrics' per_class_AP50, in order"
    if not Path(args.classes).is_file():
        raise ValueError(f"{where} {summary.file}, is not found (moved or deleted): give --classes that evaluation's "
                         f"{classes}, as a comma list or a file of one name per line ({listed})")
    names = parse_class_list(args.classes, allow_background=True)
    added = [name for name in names if name not in table]
    lacking = [name for name in evaluated if name not in names]
    if not (added or lacking):
        return
    differs = ([f"names {_quoted(added)}, which the evaluation did not have"] if added else []) + (
        [f"lacks {_quoted(lacking)}"] if lacking else [])
    raise ValueError(f"{where} {summary.file}, was edited since that evaluation of {classes}: it now "
                     f"{', and '.join(differs)}; give the file those classes again ({listed}), one name per line, or "
                     "give them with --classes")


def _quoted(names: Sequence[str], limit: int = 4) -> str:
    """The first ``limit`` of ``names``, each in quotes, then "..." when there are more."""
    return ", ".join(map(repr, names[:limit])) + (", ..." if len(names) > limit else "")


def take_data_flags(args: argparse.Namespace, settings: Mapping[str, Any], flags: tuple[str, ...]) -> list[str]:
    """Without ``--dataset``: ``settings``' dataset and, where the flags do not give them, its string ``flags`` (e.g.
    ``data_root``) and ``skip_unknown_classes``. ``classes``, a list of names (those a ``--trained_model`` evaluation
    took from its checkpoint) or a comma list as given, is taken as a tuple of names, not re-read as a ``--classes``
    string (which a file of that name here would replace); one recorded as a file's absolute path stays that path.
    Returns what was taken (``--flag value``); nothing when ``--dataset`` was given or ``settings`` names no known
    dataset."""
    if args.dataset is not None or settings.get("dataset") not in DATASETS:
        return []
    args.dataset = settings["dataset"]
    taken = [f"--dataset {args.dataset}"]
    for key in flags:
        recorded = settings.get(key)
        names = _is_name_list(recorded)
        if getattr(args, key) is not None or not (isinstance(recorded, str) or (key == "classes" and names)):
            continue
        value = tuple(recorded) if names else recorded
        if key == "classes" and isinstance(recorded, str) and not os.path.isabs(recorded):  # a comma list, not a file
            value = tuple(parse_class_list(recorded, allow_background=True, names_only=True))
        setattr(args, key, value)
        taken.append(f"--{key} {shown_class_names(value) if names else recorded}")
    if not args.skip_unknown_classes and settings.get("skip_unknown_classes") is True:
        args.skip_unknown_classes = True
        taken.append("--skip_unknown_classes")
    return taken


def fill_dataset_defaults(args: argparse.Namespace) -> None:
    """Fill the flags left at ``None`` from :data:`DATASET_DEFAULTS` (architecture flags wait for --trained_model;
    ``--dataset`` itself defaults to voc), then check every value (:func:`check_flag_values`); a run's ``--name``
    loses a ``.pth`` suffix."""
    if args.dataset is None:
        args.dataset = "voc"
    defaults = DATASET_DEFAULTS[args.dataset]
    if (args.init_from or args.resume is not None) and args.pretrained is None:
        args.pretrained = False  # the checkpoint's weights replace the backbone's: nothing to download
    keys = ("epochs", "lr", "warm_iter", "pretrained", "expand_prob")
    if not args.trained_model:
        keys += ARCHITECTURE_DEFAULT_KEYS
    for key in keys:
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    if args.base_anchor_size is None and not args.trained_model:
        args.base_anchor_size = DEFAULT_BASE_ANCHOR_SIZE
    for key, default in RUN_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    if args.workers is None:
        args.workers = default_workers()
    check_flag_values(args)
    if args.name is not None and names_a_run(args):
        args.name = args.name.removesuffix(".pth")


def names_a_run(args: argparse.Namespace) -> bool:
    """Whether ``--name`` names the run's checkpoint and log folder (training), not a flag the mode ignores."""
    return not (args.trained_model or args.eval_results or args.check_data)


def check_flag_values(args: argparse.Namespace) -> None:
    """A :class:`FlagValueError` naming the flag for a value out of its range; a flag still ``None`` (not given, and
    not yet filled from the dataset's defaults or a checkpoint) is left alone. :func:`main.main` calls it before it
    reads any checkpoint, so a bad value given beside ``--trained_model``, ``--init_from`` or ``--resume PATH`` is
    reported at once (not after minutes of reading, nor hidden by a missing file's error); :func:`fill_dataset_defaults`
    calls it again on the flags filled, and :func:`take_run_from_checkpoint` on the values it took."""
    problem = compiled_criterion_problem(torch.__version__) if getattr(args, "compile_loss", False) else None
    if problem is not None:
        raise FlagValueError("compile_loss", f"--compile_loss: {problem}")
    for flag in ("batch_size", "log_interval", "checkpoint_interval", "epochs", "max_iter"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise FlagValueError(flag, f"--{flag} must be >= 1, got {getattr(args, flag)}")
    for flag in ("workers", "warm_iter", "eval_interval"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            raise FlagValueError(flag, f"--{flag} must be >= 0, got {getattr(args, flag)}")
    cores = usable_cores()
    if args.workers is not None and args.workers > WORKERS_PER_CORE * cores:  # e.g. 10**12: the run would hang forking
        raise FlagValueError("workers", f"--workers {args.workers}: at most {WORKERS_PER_CORE * cores}, "
                                        f"{WORKERS_PER_CORE} per core of the {cores} this process may use (each worker "
                                        f"is a process of its own; the default, {default_workers()} here, suits most "
                                        "runs)")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise FlagValueError("seed", f"--seed must be an integer from 0 to {MAX_SEED}, got {args.seed}")
    # nan too; above float32's largest, SGD's first update of the weights overflows
    if args.lr is not None and not 0 < args.lr <= MAX_LR:
        raise FlagValueError("lr", f"--lr must be a number > 0 and at most {MAX_LR:.2g} (float32's largest), got "
                                   f"{args.lr}")
    if args.nms_thresh is not None and not 0.0 < args.nms_thresh <= 1.0:
        raise FlagValueError("nms_thresh", f"--nms_thresh {args.nms_thresh} must be an IoU in (0, 1]")
    if args.score_thresh is not None and not 0.0 <= args.score_thresh < 1.0:
        raise FlagValueError("score_thresh", f"--score_thresh {args.score_thresh} must be a probability in [0, 1)")
    # --mutual_guide still None: not given, and maybe taken from a --resume PATH checkpoint
    if args.mutual_guide_from is not None and (args.mutual_guide is False or args.mutual_guide_from < 0):
        raise FlagValueError("mutual_guide_from", f"--mutual_guide_from {args.mutual_guide_from} needs --mutual_guide "
                                                  "and a value >= 0")
    if args.expand_prob is not None and not 0.0 <= args.expand_prob <= 1.0:
        raise FlagValueError("expand_prob", f"--expand_prob {args.expand_prob} must be a probability in [0, 1]")
    if args.size is not None and (args.size % SIZE_MULTIPLE or args.size < MIN_SIZE):
        raise FlagValueError("size", f"--size {args.size} is not a multiple of {SIZE_MULTIPLE} from {MIN_SIZE}; "
                                     "use e.g. 320 or 512")
    # --size still None: not given, and maybe read from --trained_model's checkpoint
    if args.base_anchor_size is not None and not 1 <= args.base_anchor_size < (args.size or math.inf):
        size = "the input size" if args.size is None else f"the --size {args.size} input"
        given = exact_number(args.base_anchor_size)
        raise FlagValueError("base_anchor_size", f"--base_anchor_size {given}: the smallest anchors' side in pixels "
                                                 f"must be from 1 to below {size} (at or above it every anchor covers "
                                                 f"the whole image); the default is {DEFAULT_BASE_ANCHOR_SIZE:g}")
    if args.classes and args.dataset == "coco" and not args.skip_unknown_classes:
        raise FlagValueError("classes", "the coco dataset takes its classes from its json: drop --classes, or add "
                                        "--skip_unknown_classes to train on these of its categories alone")
    if args.classes and args.dataset == "shapes":
        raise FlagValueError("classes", "--classes is for VOC, COCO and custom data; the shapes dataset has its own "
                                        "classes: drop --classes")
    if args.skip_unknown_classes and args.dataset == "shapes":  # its reader leaves no object out
        raise FlagValueError("skip_unknown_classes", "--skip_unknown_classes is for VOC, COCO and custom data; the "
                                                     "shapes dataset has no objects of classes it does not know: drop "
                                                     "--skip_unknown_classes")
    name = None if args.name is None else args.name.removesuffix(".pth")
    if name is not None and names_a_run(args) and not RUN_NAME.fullmatch(name):
        raise FlagValueError("name", f"--name {name!r}: use 1-200 ASCII letters (a-z, A-Z), digits and . _ - + = @, "
                                     "starting with a letter or digit (it names a file and a folder), e.g. --name "
                                     "voc_pafpn_mg_seed1")


def amp_dtype_for(choice: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp choice`` on ``device``: None without ``--amp``; bare ``--amp`` ("auto") is bf16
    where the device has it (CPUs, CUDA GPUs from Ampere on), else fp16."""
    if choice is None:
        return None
    if choice == "auto":
        bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16_ok else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[choice]


def check_run_length(args: argparse.Namespace, max_iter: int) -> None:
    """``ValueError`` when ``--warm_iter`` or ``--mutual_guide_from`` does not fit a run of ``max_iter`` iterations, or
    the run is longer than the data loader counts (its batch sampler's length is an index-sized integer)."""
    if max_iter > sys.maxsize:
        raise ValueError(f"the run's {max_iter} iterations are more than the {sys.maxsize} the data loader counts; "
                         f"lower {run_length_flag(args)}")
    if not 0 <= args.warm_iter < max_iter:
        raise ValueError(f"--warm_iter {args.warm_iter} must be shorter than the run "
                         f"({counted(max_iter, 'iteration')}); "
                         f"lower --warm_iter or raise {run_length_flag(args)}")
    if args.mutual_guide_from is not None and args.mutual_guide_from >= max_iter:
        raise ValueError(f"--mutual_guide_from {args.mutual_guide_from} is not before the end of the run "
                         f"({counted(max_iter, 'iteration')}), so Mutual Guidance would never be used; lower it or "
                         f"raise {run_length_flag(args)}")


def run_length_flag(args: argparse.Namespace) -> str:
    """The flag that sets the run's length: ``--max_iter`` when given (it overrides ``--epochs``), else ``--epochs``
    (given, or the dataset's default)."""
    return "--max_iter" if args.max_iter else "--epochs"
