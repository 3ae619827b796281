"""What a main.py training run is made of before its first iteration: the flags checked against the device and the
folders it writes, the splits, the detector, anchors, criterion, optimizer, AMP scaler and config
(:class:`TrainingSetup`), and the ``--init_from`` or ``--resume`` checkpoint loaded into them."""
from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import torch

from data.dataset import DetectionDataset
from data.loader import iterations_per_epoch
from models import PretrainedWeightsError, build_detector, reorder_classes
from models.builder import BACKBONES
from models.memory_format import prefers_channels_last
from models.pretrained import BackboneWeights, read_backbone_weights
from utils.best_checkpoint import best_checkpoint_path, is_best_checkpoint
from utils.box import PriorBox
from utils.checkpoint import (
    RUN_KEYS,
    CheckpointError,
    changed_anchor_flags,
    check_compatible,
    check_optimizer_state,
    check_same_length,
    check_same_run,
    check_writable_folder,
    init_from_advice,
    restore_rng_state,
)
from utils.distributed import DistributedContext, broadcast_object, raise_if_any_process_failed
from utils.logging import RunLog
from utils.loss import MultiBoxLoss
from utils.messages import counted, joined_lines, preview_names
from utils.names import class_sources, folded_name, reordering, same_classes
from utils.optim import build_optimizer
from utils.run_data import (
    absolute_data_paths,
    categories_kept_note,
    check_splits,
    make_dataset,
    make_training_split,
    other_classes_advice,
)
from utils.run_evaluation import eval_folder
from utils.run_flags import amp_dtype_for, check_run_length, requested_architecture

# what --resume restores besides the weights (``utils/checkpoint.py``'s format)
TRAINING_STATE_ENTRIES = ("optimizer", "scaler", "rng")


def load_initial_weights(model: torch.nn.Module, state: dict, args: argparse.Namespace, class_names: list[str],
                         log: RunLog) -> None:
    """``--init_from``: the checkpoint ``state``'s weights into ``model``, built with its architecture or another
    ``--size`` of as many pyramid levels or ``--base_anchor_size`` (the same layers: main.py refused another before
    reading the data, :func:`utils.checkpoint.check_init_architecture`; the log line names the change). Every weight
    but the classification layers is taken; of those, each of this run's ``class_names`` that the checkpoint scores
    (:func:`utils.names.class_sources`: the same name, letter case and accents aside, or VOC's name of a COCO class
    and back) keeps its weights, moved to its label here (:func:`models.detector.reorder_classes`), and the others
    (new classes) keep ``model``'s initialisation, as the whole classifier does when no class is shared. A COCO
    layout whose training json names the checkpoint's classes in another order is built in the checkpoint's
    (:func:`build_training`), the same class list; a VOC layout's ``--classes`` keeps the order typed, and so do
    those kept from a COCO json by ``--skip_unknown_classes``."""
    changed = changed_anchor_flags(state["config"], args.size, args.base_anchor_size)
    source = (f"model weights from {args.init_from} (iteration {state['iteration']}){changed}; fresh optimizer and "
              "schedule")
    trained_on = state["class_names"]
    same = same_classes(trained_on, class_names)
    sources = class_sources(trained_on, class_names)
    kept = [index for index in sources if index is not None]
    try:
        if same:
            model.load_state_dict(state["model"])
        elif kept:
            model.load_state_dict(reorder_classes(state["model"], sources, model.state_dict()))
        else:
            fresh = model.load_all_but_classifier(state["model"])
    except (RuntimeError, KeyError) as error:  # KeyError: a classification layer this architecture does not have
        raise CheckpointError(f"{args.init_from}: {joined_lines(error)}; the file is damaged or was edited") from error
    compared = (f"it was trained on {counted(len(trained_on), 'class')} ({preview_names(trained_on)}), this dataset "
                f"has {len(class_names)} ({preview_names(class_names)})")
    if same:
        log.info(source)
    elif reordering(trained_on, class_names) is not None:
        log.info(f"{source}; it was trained on these {len(class_names)} classes in another order "
                 f"({preview_names(trained_on)}): each class keeps its classification weights, moved to its label "
                 f"here ({preview_names(class_names)})")
    elif kept:
        log.info(f"{source}; {compared}: {kept_classes_note(trained_on, class_names, sources)}; the rest comes from "
                 "the checkpoint")
    else:
        log.info(f"{source}; {compared}: its classification layers ({counted(len(fresh), 'tensor')}) start afresh, "
                 "the rest comes from the checkpoint")


def kept_classes_note(trained_on: list[str], class_names: list[str], sources: list[int | None]) -> str:
    """What ``--init_from``'s line says of the classification weights of ``class_names`` (``trained_on``'s class
    ``sources[i]``, or None: a new class): how many classes kept theirs, those kept under another name (VOC's name of
    a COCO class), and the new classes."""
    renamed = ", ".join(f"{name} as its {trained_on[index]}" for name, index in zip(class_names, sources)
                        if index is not None and folded_name(name) != folded_name(trained_on[index]))
    new = [name for name, index in zip(class_names, sources) if index is None]
    of_new = f"{preview_names(new)} (from the head's initialisation)" if new else "none"
    return (f"kept the classifier of {len(class_names) - len(new)} of {len(class_names)} classes (from the "
            f"checkpoint's {len(trained_on)}{': ' + renamed if renamed else ''}), each moved to its label here; new: "
            f"{of_new}")


def starting_weights(args: argparse.Namespace, backbone_weights: BackboneWeights | None) -> str:
    """The line naming what a new run's weights start from, but ``--init_from``'s (it names its checkpoint): the
    backbone's ImageNet weights (torchvision's, or ``backbone_weights`` read from ``--pretrained PATH``, and where in
    the file when not at its top level) or its initialisation; the neck and head start from theirs."""
    if args.pretrained is True:
        source = f"torchvision's ImageNet weights ({os.path.basename(BACKBONES[args.backbone].imagenet_weights.url)})"
    elif backbone_weights is not None:
        taken = f", taken from {backbone_weights.where}" if backbone_weights.where else ""
        source = f"--pretrained {args.pretrained} ({counted(len(backbone_weights), 'tensor')}{taken})"
    else:
        return (f"starting weights: {args.backbone} backbone, {args.version} neck and head from their initialisation "
                "(--no_pretrained)")
    return (f"starting weights: {args.backbone} backbone from {source}; {args.version} neck and head from their "
            "initialisation")


def no_entry_to_resume(path: Path, entry: str) -> CheckpointError:
    """The refusal of ``--resume`` of the checkpoint ``path``, which has no ``entry`` (a damaged or edited file, or
    one whose training state was stripped to share its weights)."""
    return CheckpointError(f"{path} cannot be resumed: it has no {entry!r} entry (a damaged or edited file); resume an "
                           f"earlier checkpoint with --resume PATH, or {init_from_advice(path)}")


def restore_training_state(state: dict, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scaler: torch.amp.GradScaler) -> None:
    """``--resume``: the checkpoint ``state``'s model, optimizer, AMP scaler and random states; a
    :class:`CheckpointError` naming ``path`` when an entry is missing or does not fit (a damaged or edited file)."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
    except KeyError as error:  # within an entry (the random states'): check_resumed_flags found the entries
        raise no_entry_to_resume(path, error.args[0]) from error
    except (RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path} cannot be resumed ({joined_lines(error)}; a damaged or edited file); resume an "
                              "earlier checkpoint with --resume PATH") from error
    check_optimizer_state(path, model, optimizer)


def run_config(args: argparse.Namespace, ctx: DistributedContext, dataset: DetectionDataset,
               amp_dtype: torch.dtype | None) -> dict:
    """The flags as plain values (for the checkpoint), plus the mixed precision that ``--amp`` chose on this device
    ("bf16", "fp16" or None: bare ``--amp`` is either), the world size and the training set's image count and
    annotation fingerprint."""
    config = {key: value for key, value in vars(args).items()} | absolute_data_paths(args)
    config["amp_dtype"] = precision_name(amp_dtype)
    config["world_size"] = ctx.world_size
    config["train_images"] = len(dataset)
    config["train_fingerprint"] = dataset.fingerprint()
    return config


def precision_name(amp_dtype: torch.dtype | None) -> str | None:
    """How a run's config records the mixed precision ``amp_dtype``: "bf16", "fp16", or None (float32)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: None}[amp_dtype]


def check_output_folders(args: argparse.Namespace, checkpoint_path: Path, run_dir: Path) -> None:
    """A ``ValueError`` when a folder the run writes (``checkpoint_path``'s, ``run_dir``, the evaluation's) cannot be
    written, or when a folder stands where the run writes its checkpoint or best checkpoint (not an earlier run's
    checkpoint to set aside): found before any data is read, not at the first save or the evaluation hours later."""
    check_writable_folder(checkpoint_path.parent, "--save_folder")
    for path, kind in ((checkpoint_path, "checkpoint"), (best_checkpoint_path(checkpoint_path), "best checkpoint")):
        if path.is_dir():
            raise ValueError(f"{path} is a folder, where this run writes its {kind}: move it, or give this run another "
                             "--name (or --save_folder)")
    check_writable_folder(run_dir, "--run_dir")
    check_writable_folder(eval_folder(args, args.name), "--eval_dir")


def check_training_flags(args: argparse.Namespace, device: torch.device, ctx: DistributedContext,
                         sync_bn_from: str | None = None) -> BackboneWeights | None:
    """Before any data is read: a ``ValueError`` when the flags do not fit this device or a given ``--max_iter``; a
    ``PretrainedWeightsError`` when ``--pretrained PATH`` is not the backbone's state dict
    (:func:`read_backbone_weights`). ``sync_bn_from``: the checkpoint ``--resume PATH`` took ``--sync_bn`` from (None
    when given, or not set), which a run that cannot synchronise names instead of a flag to drop. Returns the weights
    read from ``--pretrained PATH`` for :func:`build_training` (None without a path)."""
    if sync_bn_from is not None and (device.type != "cuda" or not ctx.is_distributed):
        path = shlex.quote(sync_bn_from)
        raise ValueError(f"{sync_bn_from}'s run used --sync_bn (BatchNorm synchronised across the processes of "
                         f"torchrun on CUDA devices), taken by --resume PATH, and can only be resumed that way: "
                         f"torchrun --nproc_per_node=N main.py --resume {path} on N GPUs, as many as its run; or "
                         f"{init_from_advice(sync_bn_from)}")
    if args.sync_bn and device.type != "cuda":
        raise ValueError("--sync_bn needs CUDA devices (SyncBatchNorm has no CPU kernel); drop --sync_bn")
    if args.sync_bn and not ctx.is_distributed:  # SyncBatchNorm of one process is BatchNorm: the flag would do nothing
        raise ValueError("--sync_bn synchronises BatchNorm across the processes of torchrun, and this run is a single "
                         "process: start it with torchrun --nproc_per_node=N (N > 1) or drop --sync_bn")
    if args.version == "pafpn" and args.batch_size == 1 and not (args.sync_bn and ctx.world_size > 1):
        raise ValueError("--batch_size 1: --version pafpn trains on at least 2 images per process (the BatchNorm of "
                         "its global-context branch normalises one pooled value per image); raise --batch_size, or "
                         "add --sync_bn under torchrun with several GPUs")
    if args.max_iter:  # known without the data: refused before it is read (or the shapes set generated)
        check_run_length(args, args.max_iter)
    if not isinstance(args.pretrained, str):
        return None
    return read_backbone_weights(args.pretrained, BACKBONES[args.backbone])  # not after the data: minutes on VOC


def check_resumed_flags(path: Path, state: dict, args: argparse.Namespace, ctx: DistributedContext,
                        device: torch.device) -> None:
    """Before any data is read: a :class:`CheckpointError` for a best checkpoint (weights without a training state),
    a checkpoint without one of :data:`TRAINING_STATE_ENTRIES`, a flag of ``args`` that changes the schedule, the
    data stream, the precision (``--amp`` on ``device``) or the process count of the run the checkpoint ``state``
    (read from ``path``) continues, or a ``--max_iter`` of another length. What only the data tells (its images,
    ``--epochs``' length) is checked by :func:`resume_run`."""
    if is_best_checkpoint(state):
        raise CheckpointError(f"{path} holds the weights of its run's best evaluation (after iteration "
                              f"{state['iteration']}), not a training state to resume: --resume the run's own "
                              f"checkpoint, or {init_from_advice(path, 'these weights')}")
    if missing := [entry for entry in TRAINING_STATE_ENTRIES if entry not in state]:
        raise no_entry_to_resume(path, missing[0])
    saved = state["config"]
    given = {key: getattr(args, key) for key in RUN_KEYS if hasattr(args, key)} | {
        "world_size": ctx.world_size, "amp_dtype": precision_name(amp_dtype_for(args.amp, device))}
    check_same_run(path, saved, dict(saved) | given)
    if args.max_iter:
        check_same_length(path, state["max_iter"], args.max_iter)


@dataclass
class TrainingSetup:
    """What :func:`build_training` makes of the flags for a training run."""

    dataset: DetectionDataset  # the training split
    test_dataset: DetectionDataset
    epoch_size: int  # iterations per epoch
    max_iter: int  # the run's length in iterations
    model: torch.nn.Module  # on the device, not wrapped (DDP, torch.compile) for training
    amp_dtype: torch.dtype | None  # --amp's choice on this device
    channels_last: bool  # the model's memory format
    priors: torch.Tensor  # [A, 4] anchors (cx, cy, w, h) normalised to [0, 1], on the device
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # enabled for float16 AMP alone
    config: dict  # run_config's, plus "run_id" once the run is started or resumed


def build_training(args: argparse.Namespace, device: torch.device, ctx: DistributedContext, log: RunLog,
                   class_order: list[str] | None = None,
                   backbone_weights: dict[str, torch.Tensor] | None = None,
                   resume_path: Path | None = None) -> TrainingSetup:
    """The splits (checked to fit training, :func:`check_splits`, before the model is built), the run's length, then
    the detector, anchors, criterion, optimizer and AMP scaler that ``args`` ask for on ``device``; seeded by
    ``--seed``. ``class_order``: the ``--resume`` or ``--init_from`` checkpoint's class names, the order of a COCO
    layout's labels when its training json names the same classes in another order or under other ids (the test
    split takes the training split's). ``backbone_weights``: those :func:`check_training_flags` read from
    ``--pretrained PATH``. ``resume_path``: the checkpoint ``--resume`` continues, whose classes an object of another
    class is told of (bare ``--resume`` names none)."""
    torch.manual_seed(args.seed)
    # under torchrun, a shapes set generated once per machine
    dataset = make_training_split(args, ctx, class_order, resume_path)
    for note in dataset.notes:
        log.info(note)
    if note := categories_kept_note(args, dataset, class_order or []):
        log.info(note)
    test_dataset = make_dataset(args, "test", args.size, train=False, class_order=dataset.class_names,
                                checkpoint=resume_path)
    check_splits(dataset, test_dataset, log)  # before the model is built (and its ImageNet weights fetched)
    epoch_size = iterations_per_epoch(len(dataset), args.batch_size, ctx.world_size)
    max_iter = args.max_iter or args.epochs * epoch_size
    if not args.max_iter:  # a given --max_iter was checked before the data was read
        check_run_length(args, max_iter)
    if args.eval_interval and args.eval_interval * epoch_size >= max_iter:
        log.info(f"warning: --eval_interval {counted(args.eval_interval, 'epoch')} "
                 f"({counted(args.eval_interval * epoch_size, 'iteration')}) is not shorter than the run "
                 f"({counted(max_iter, 'iteration')}): only the final evaluation runs, and the best "
                 "checkpoint is the final model; lower --eval_interval to evaluate during training")

    model = build_detector_fetching_once(args, dataset.num_classes, ctx, backbone_weights).to(device)
    amp_dtype = amp_dtype_for(args.amp, device)
    channels_last = prefers_channels_last(device, amp_dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    priors = PriorBox(base_anchor_size=args.base_anchor_size, size=args.size).forward().to(device)
    loss_fn = MultiBoxLoss(dataset.num_classes, mutual_guide=args.mutual_guide, compile=args.compile_loss,
                           sync_positives=ctx.is_distributed)
    optimizer = build_optimizer(model, args.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    config = run_config(args, ctx, dataset, amp_dtype)
    return TrainingSetup(dataset, test_dataset, epoch_size, max_iter, model, amp_dtype, channels_last, priors, loss_fn,
                         optimizer, scaler, config)


def build_detector_fetching_once(args: argparse.Namespace, num_classes: int, ctx: DistributedContext,
                                 backbone_weights: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """``build_detector`` as ``args`` ask. With torchvision's ImageNet weights (``--pretrained`` by default) under
    ``torchrun``, each machine's first process (``LOCAL_RANK`` 0) builds it first, downloading the weights into
    torch.hub's cache, and the other processes then read that file: started together, every process found no file
    and downloaded it (N times the traffic, N progress bars). Raises :class:`PretrainedWeightsError` on every process
    when one could not get the weights. ``backbone_weights``: those read from ``--pretrained PATH``
    (:func:`check_training_flags`), which the backbone starts from instead of reading the file again."""
    def build() -> torch.nn.Module:
        pretrained = args.pretrained if backbone_weights is None else backbone_weights
        return build_detector(args.version, args.backbone, args.size, num_classes, pretrained=pretrained)

    if not (ctx.is_distributed and args.pretrained is True):
        return build()
    model, failure = None, None
    if ctx.local_rank == 0:
        try:
            model = build()
        except PretrainedWeightsError as error:  # every process must learn it before the others read the cache
            failure = error
    raise_if_any_process_failed(failure, ctx, lambda: PretrainedWeightsError(
        "another process of this job could not get the ImageNet weights on its machine; place them in its torch.hub "
        "cache, or pass --pretrained PATH to a local state dict, or --no_pretrained to start from random weights"))
    return model if model is not None else build()


def resume_run(args: argparse.Namespace, ctx: DistributedContext, log: RunLog, setup: TrainingSetup,
               resume_path: Path, state: dict, continues_checkpoint: bool) -> tuple[int, bool]:
    """``--resume``: the checkpoint ``state`` read from ``resume_path``, checked to belong to this run, into
    ``setup``'s model, optimizer and AMP scaler, and its run id into ``setup.config``. The run folder's logs continue
    when they are that run's (for a checkpoint saved before run ids: when it is the run's own file,
    ``continues_checkpoint``, and the folder records no run). Returns the iteration the run goes on from and whether
    its logs continue."""
    requested = requested_architecture(args)
    check_compatible(resume_path, state["config"], state["class_names"], requested, setup.dataset.class_names,
                     other_classes_advice(setup.dataset, state["class_names"], "--resume",
                                          isinstance(args.classes, str), resume_path))
    check_same_run(resume_path, state["config"], setup.config)
    check_same_length(resume_path, state["max_iter"], setup.max_iter)
    restore_training_state(state, resume_path, setup.model, setup.optimizer, setup.scaler)
    start_iter = state["iteration"]
    setup.config["run_id"] = state["config"].get("run_id")  # None: saved before run ids, judged by its path
    folder_run = broadcast_object(log.run_id(), ctx)  # rank 0's logs decide, on every process
    continues_logs = folder_run == setup.config["run_id"] if setup.config["run_id"] else (
        continues_checkpoint and folder_run is None)
    dropped = log.continue_run(start_iter) if continues_logs else 0
    repeated = f"; {dropped} log row(s) of iterations that this run repeats removed" if dropped else ""
    log.info(f"resumed from {resume_path} at iteration {start_iter}/{setup.max_iter}{repeated}")
    if start_iter == setup.max_iter:
        log.info("the run was already complete: it is evaluated again, and this evaluation replaces its final one in "
                 "the logs")
    return start_iter, continues_logs
