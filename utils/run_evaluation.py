"""A main.py run's evaluation on the test split: every process's shard of it through the detector, the detections
gathered and scored on rank 0, written under the run's evaluation folder and logged (``--trained_model``, and the
evaluations of a training run)."""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from data import DataError, build_loader
from data.dataset import DetectionDataset
from data.errors import data_error_elsewhere
from utils.best_checkpoint import is_best_checkpoint
from utils.checkpoint import CheckpointError, other_size_suffix
from utils.distributed import (
    DistributedContext,
    all_reduce_sum,
    broadcast_buffers,
    raise_if_any_process_failed,
    unwrap_model,
)
from utils.inference import (
    evaluate_detections,
    format_metrics,
    gather_detections,
    replaced_evaluation_note,
    run_inference,
)
from utils.logging import RunLog
from utils.postprocess import MAX_PER_IMAGE, PostProcessor
from utils.run_data import absolute_data_paths
from utils.run_flags import EVAL_SCORE_THRESH, RUN_NAME


def dataset_tag(args: argparse.Namespace) -> str:
    """The upper-case dataset name (VOC, COCO, SHAPES, CUSTOM) that names the default ``eval/`` folders and starts the
    evaluation's log line (checkpoint names spell it alike, :func:`utils.checkpoint.checkpoint_name`)."""
    return args.dataset.upper()


def evaluate(model: torch.nn.Module, dataset: DetectionDataset, args: argparse.Namespace, priors: torch.Tensor,
             device: torch.device, ctx: DistributedContext, amp_dtype: torch.dtype | None, log: RunLog,
             run_info: dict, out_dir: Path, after: int | None = None) -> dict | None:
    """Inference on every process's shard of ``dataset``, gathered on rank 0, scored there and written under
    ``out_dir`` (:func:`eval_folder`) (``None`` elsewhere); ``after``: the iterations a training run has done, for its
    log line (evaluations during training)."""
    loader = build_loader(dataset, args.batch_size, train=False, workers=args.workers, distributed=ctx.is_distributed,
                          seed=args.seed, pin_memory=device.type == "cuda")
    postprocessor = PostProcessor(priors, score_thresh=EVAL_SCORE_THRESH, nms_thresh=args.nms_thresh,
                                  max_per_image=MAX_PER_IMAGE)
    model = unwrap_model(model)  # plain forward: DDP would broadcast buffers on shards of unequal length
    broadcast_buffers(model, ctx)  # rank 0's BatchNorm statistics, those of the checkpoint, on every shard
    model.eval()
    failure = None
    try:
        detections = run_inference(model, loader, priors, device, postprocessor=postprocessor, amp_dtype=amp_dtype,
                                   cuda_graph=args.cuda_graph, progress=ctx.is_main)
    except DataError as error:  # in this process's shard: the others must learn it before they wait in the gather
        failure = error
    raise_if_any_process_failed(failure, ctx, lambda: data_error_elsewhere("the evaluation"))
    inexact = int(all_reduce_sum(torch.tensor(postprocessor.inexact_images, device=device), ctx).item())
    detections = gather_detections(detections)
    if not ctx.is_main:
        return None
    if inexact:
        log.info(inexact_images_note(inexact, len(dataset), postprocessor))
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluated_with = {key: getattr(args, key) for key in ("dataset", "data_root", "classes", "skip_unknown_classes")}
    evaluated_with |= absolute_data_paths(args)
    run_info = {"dataset": args.dataset, "split": "val2017" if args.dataset == "coco" else "test",
                "evaluated_with": evaluated_with, "input_size": args.size} | run_info
    if note := replaced_evaluation_note(out_dir, run_info):
        log.info(note)
    metrics = evaluate_detections(dataset, detections, out_dir, run_info=run_info)
    when = "" if after is None else f" after iteration {after}"
    log.info(f"{dataset_tag(args)} test{when}: {format_metrics(metrics)}")
    return metrics


def inexact_images_note(inexact: int, total: int, postprocessor: PostProcessor) -> str:
    """The line that says how many of ``total`` evaluated images ``postprocessor`` left inexact (its
    ``inexact_images``: more candidates than its largest pre-NMS top-k, see :mod:`utils.postprocess`)."""
    largest = postprocessor.max_pre_nms_topk
    return (f"note: {inexact} of {total} test images had more than {largest:,} (anchor, class) pairs scoring above "
            f"{postprocessor.score_thresh:g} and fewer than {postprocessor.max_per_image} detections from the best "
            f"{largest:,}: their detections are those, the best of the exact ones, and may lack lower-scoring ones, so "
            "the metrics may be slightly low (usual for an untrained or diverging model; MAX_PRE_NMS_TOPK in "
            "utils/postprocess.py sets the limit)")


def eval_folder(args: argparse.Namespace, run_name: str | None = None) -> Path:
    """Where an evaluation writes its detections and ``summary.json``: ``--eval_dir`` when given, else
    ``eval/<DATASET>/<run_name>`` for a named run (a training run's ``--name``; for ``--trained_model``,
    :func:`evaluated_run_name`), else ``eval/<DATASET>`` (the runs named after their dataset and architecture)."""
    if args.eval_dir:
        return Path(args.eval_dir)
    folder = Path("eval") / dataset_tag(args)
    return folder / run_name if run_name else folder


def evaluated_run_name(state: Mapping[str, Any], path: str | os.PathLike, size: int | None = None) -> str | None:
    """The run name under which ``--trained_model`` evaluates the checkpoint ``state`` read from ``path`` (see
    :func:`eval_folder`): as the run named its files, ``NAME`` for the checkpoint of a run trained with ``--name NAME``
    and ``NAME_best`` for its best checkpoint; ``None`` for a run without ``--name``. At an input side ``size`` other
    than the one it was trained at, ``_size<S>`` ends the name, so that evaluation keeps the one at the trained size;
    a run without ``--name`` is then named after the checkpoint file (``<file name without .pth>_size<S>``, as
    ``--demo`` names its folder), so that two such checkpoints evaluated at one size keep their evaluations apart.
    Raises :class:`CheckpointError` for a name main.py never writes (not a file name: the folder would be
    elsewhere)."""
    name = state["config"].get("name")
    suffix = other_size_suffix(state["config"], size)
    if name is None:
        return f"{Path(path).stem}{suffix}" if suffix else None
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise CheckpointError(f"{path} records --name {name!r}, which main.py never writes; it was edited or damaged: "
                              "give --eval_dir to write the evaluation to, or use a checkpoint as main.py saved it")
    return f"{name}_best{suffix}" if is_best_checkpoint(state) else f"{name}{suffix}"
