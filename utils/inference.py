"""Batched inference over a DataLoader and dataset-level evaluation (VOC devkit metric or COCO).

``run_inference`` -> ``gather_detections`` (a no-op without torch.distributed) -> ``evaluate_detections``,
which writes ``out_dir/comp4_det_test_<class>.txt`` and ``<class>_pr.npz`` (VOC) or
``out_dir/detections_<split>_results.json`` and ``detection_results.npz`` (COCO), prints the tables and writes
``out_dir/summary.json``. ``evaluate_results_file`` re-evaluates those results files without a model
(``--eval_results``) and writes the precision-recall curves beside them again.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from data.coco_eval import (
    PR_CURVES_FILE, detections_to_coco_results, evaluate_coco_with_curves, format_coco_report, write_coco_pr_curves,
    write_coco_results,
)
from data.dataset import DetectionDataset
from data.voc_eval import (
    PR_CURVES_TEMPLATE, evaluate_voc_with_curves, read_voc_results, write_voc_pr_curves, write_voc_results,
)
from models.fold import fold_batchnorm
from models.memory_format import memory_format, prefers_channels_last
from utils.cuda_graph import CUDAGraphDetector
from utils.distributed import joined_group, unwrap_model
from utils.files import file_identity, json_safe, replace_text
from utils.messages import first_line
from utils.postprocess import PostProcessor, detections_to_numpy
from utils.progress import progress_bar
from utils.run_lock import one_writer

Detections = dict[str, np.ndarray]


def run_inference(
    model: nn.Module,
    loader: DataLoader,
    priors: Tensor,
    device: torch.device | str,
    *,
    postprocessor: PostProcessor | None = None,
    amp_dtype: torch.dtype | None = None,
    cuda_graph: bool = False,
    progress: bool = True,
) -> list[Detections | None]:
    """Detections for the images the loader yields, in batches, under ``torch.inference_mode``.

    The network runs with its BatchNorm folded into its convolutions (:func:`models.fold.fold_batchnorm`, on a copy):
    the same outputs up to float rounding, one kernel fewer per convolution. The copy is channels-last where that is
    faster (:func:`models.memory_format.prefers_channels_last`: on the CPU, and under autocast on CUDA). ``model`` is
    left in its own training or evaluation mode, also when the call raises (a refusal, Ctrl-C).

    Args:
        model: returns ``(loc [B, A, 4], conf [B, A, C])`` for images ``[B, 3, S, S]``; the images are cast to its
            weights' dtype (``model.to(torch.bfloat16)`` runs in bf16; not with ``cuda_graph``, a ValueError). A
            ``torch.compile``, DistributedDataParallel or DataParallel wrapper runs as the module it wraps.
        loader: yields ``(images, targets, indices)`` (``detection_collate``); its dataset has ``image_size(i)`` (a
            test loader; a ValueError otherwise). Images of another size than a :class:`models.Detector`'s ``size``
            are a ValueError naming both.
        priors: ``[A, 4]`` anchors, cxcywh normalised; checked against the model's A.
        device: where the model runs (a ``torch.device`` or its name, e.g. ``"cuda"``).
        postprocessor: default ``PostProcessor(priors)`` (score 0.005, NMS 0.5, 300 per image).
        amp_dtype: ``torch.float16`` / ``torch.bfloat16`` to run the model under autocast; None for float32.
        cuda_graph: replay the forward pass and post-processing from a CUDA graph captured at the first batch
            (:class:`utils.cuda_graph.CUDAGraphDetector`; CUDA only). Same detections, fewer kernel launches.
        progress: whether to draw the bar (under ``torchrun``, rank 0 alone draws one).

    Returns:
        A list indexed like ``loader.dataset``: ``{"boxes" float32 [n, 4] x1y1x2y2 0-based continuous pixels of
        the original image, "scores" float32 [n], "labels" int64 [n]}`` for every image this process saw, ``None``
        for the others (another rank's share under ``build_loader(..., distributed=True)``; see ``gather_detections``).
    """
    dataset, device = loader.dataset, torch.device(device)
    if not hasattr(dataset, "image_size"):
        raise ValueError(
            f"run_inference: the loader's dataset ({type(dataset).__name__}) has no image_size(i), the original image "
            "sizes detections are scaled to; pass a test loader of a dataset of data/: build_loader(dataset, "
            "batch_size, train=False, workers=...) (a training loader yields augmented images)"
        )
    model = unwrap_model(model)  # BatchNorm folding traces the plain module; a wrapper's forward does not trace
    weights_dtype = next(model.parameters(), torch.empty(0)).dtype  # the loader's float32 images are cast to it
    if cuda_graph and weights_dtype != torch.float32:
        raise ValueError(
            f"run_inference: cuda_graph captures float32 images but the model's weights are {weights_dtype}; keep "
            f"float32 weights and pass amp_dtype={weights_dtype} (autocast), or run without cuda_graph"
        )
    postprocessor = postprocessor or PostProcessor(priors)
    detections: list[Detections | None] = [None] * len(dataset)
    was_training = model.training
    model.eval()
    try:  # a refusal (images of another size) or Ctrl-C leaves a training model training
        channels_last = prefers_channels_last(device, amp_dtype)
        network = fold_batchnorm(model, channels_last)  # a copy: the caller's model is left as it is
        graphed: CUDAGraphDetector | None = None
        with torch.inference_mode():
            batches = progress_bar(loader, desc="Evaluating", unit="batch", dynamic_ncols=True, disable=not progress)
            for images, _, indices in batches:
                _check_image_size(images, getattr(model, "size", None))
                indices = [int(i) for i in indices]
                image_sizes = torch.tensor([dataset.image_size(i) for i in indices])  # [B, 2] (h, w)
                if cuda_graph:
                    if graphed is None:
                        graphed = CUDAGraphDetector(network, postprocessor, max(loader.batch_size or 0, len(images)),
                                                    images.shape[-1], amp_dtype=amp_dtype)
                    results = graphed(images, image_sizes)
                else:
                    images = images.to(device, weights_dtype, non_blocking=True).contiguous(
                        memory_format=memory_format(channels_last))
                    results = detections_to_numpy(_detect(network, images, priors, postprocessor,
                                                          image_sizes.to(device), amp_dtype))
                for index, result in zip(indices, results):
                    detections[index] = result
    finally:
        model.train(was_training)
    return detections


def _check_image_size(images: Tensor, model_size: int | None) -> None:
    """ValueError when the images ``[B, 3, H, W]`` are not the ``model_size`` squares the model was built for (a
    :class:`models.Detector` records it; None: not known)."""
    if model_size is not None and tuple(images.shape[-2:]) != (model_size, model_size):
        height, width = images.shape[-2:]
        raise ValueError(
            f"run_inference: the loader gives {height} x {width} images but the model was built for {model_size} x "
            f"{model_size}: build the dataset with size={model_size} (the model's --size)"
        )


def _detect(model: nn.Module, images: Tensor, priors: Tensor, postprocessor: PostProcessor, image_sizes: Tensor,
            amp_dtype: torch.dtype | None) -> list[dict[str, Tensor]]:
    """One eager batch: model under autocast, anchor-count check, post-processing."""
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loc, conf = model(images)
    if loc.shape[1] != len(priors):
        raise ValueError(
            f"run_inference: the model outputs {loc.shape[1]} anchors per image but priors has {len(priors)}; "
            "build PriorBox with the same --size as the model"
        )
    return postprocessor(loc, conf, image_sizes)


def gather_detections(detections: list[Detections | None]) -> list[Detections | None]:
    """Merges every rank's share of ``run_inference``'s list (``all_gather_object``); unchanged without DDP."""
    if not joined_group():
        return detections
    shares: list[list[Detections | None] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shares, detections)
    merged = list(detections)
    for share in shares:
        for index, result in enumerate(share):
            if result is not None:
                merged[index] = result
    return merged


def evaluate_detections(dataset: DetectionDataset, detections: list[Detections | None], out_dir: Path, *,
                        run_info: dict) -> dict:
    """Scores detections with the dataset's metric, prints the tables and writes the results files.

    Args:
        dataset: has ``kind`` ("voc" or "coco"), ``class_names``, ``image_ids`` and ``ground_truth()`` (VOC) or
            ``coco`` and ``category_ids`` (COCO).
        detections: one entry per dataset image (``run_inference`` + ``gather_detections``).
        out_dir: e.g. ``eval/VOC``; created if needed.
        run_info: what identifies the run in ``summary.json``: ``dataset``, ``split`` (also names the COCO results
            file, default ``val2017``), ``config`` (dict), ``checkpoint``.

    Returns:
        The metric dict (``mAP``, ``AP50``, ``AP75`` as fractions, and the rest; see ``evaluate_voc`` /
        ``evaluate_coco``).
    """
    missing = [i for i, d in enumerate(detections) if d is None]
    if len(detections) != len(dataset):
        raise ValueError(
            f"evaluate_detections: need one entry per image of the dataset ({len(dataset)}), got {len(detections)}: "
            "pass the list run_inference returned for this dataset"
        )
    if missing:
        shown = ("image " if len(missing) == 1 else "images ") + ", ".join(map(str, missing[:5]))
        shown += ", ..." if len(missing) > 5 else ""
        raise ValueError(
            f"evaluate_detections: need one entry per image of the dataset ({len(dataset)}), got {len(detections)} "
            f"with {len(missing)} missing ({shown}): the loader did not yield them (drop_last=True, or a sampler over "
            "part of the dataset): pass run_inference a loader over every image, build_loader(dataset, batch_size, "
            "train=False, workers=...); under torch.distributed, call gather_detections after run_inference"
        )
    out_dir = Path(out_dir)
    if dataset.kind == "voc":
        metrics, curves = evaluate_voc_with_curves(detections, dataset.ground_truth(), dataset.class_names)

        def write_results() -> list[Path]:
            return (write_voc_results(detections, dataset.image_ids, dataset.class_names, out_dir)
                    + write_voc_pr_curves(curves, out_dir))
        report = format_voc_report(metrics)
    elif dataset.kind == "coco":
        results = detections_to_coco_results(detections, dataset.image_ids, dataset.category_ids)
        metrics, curves = evaluate_coco_with_curves(results, dataset.coco, image_ids=dataset.image_ids,
                                                    category_ids=dataset.category_ids)
        results_file = out_dir / f"detections_{run_info.get('split', 'val2017')}_results.json"

        def write_results() -> list[Path]:
            return [write_coco_results(results, results_file), write_coco_pr_curves(curves, out_dir)]
        report = format_coco_report(metrics)
    else:
        raise ValueError(f"evaluate_detections: dataset.kind={dataset.kind!r}; expected 'voc' or 'coco'")
    with one_writer(out_dir):  # the folder holds one evaluation's files, whatever else evaluates at the time
        # marked incomplete until every file is written: a write that fails partway (a full disk) leaves a folder that
        # --eval_results refuses (check_complete_results), not a mix of files scored as one evaluation
        write_summary(out_dir / "summary.json", metrics, run_info, num_images=len(dataset), complete=False)
        remove_earlier_results(out_dir, keep=write_results())
        write_summary(out_dir / "summary.json", metrics, run_info, num_images=len(dataset), complete=True)
    print(report)
    return metrics


CURVES_FILE_PATTERNS = (PR_CURVES_TEMPLATE.format("*"), PR_CURVES_FILE)  # the precision-recall curves
RESULTS_FILE_PATTERNS = ("comp4_det_test_*.txt", "detections_*_results.json", *CURVES_FILE_PATTERNS)  # all written


def remove_earlier_results(out_dir: Path, keep: list[Path],
                           patterns: tuple[str, ...] = RESULTS_FILE_PATTERNS) -> list[Path]:
    """Deletes the results files (``patterns``: by default all that ``evaluate_detections`` writes) in ``out_dir``
    other than ``keep``: those an earlier evaluation wrote for classes, a layout or a split this one does not have,
    which would otherwise sit beside its own files (and be read by the devkit, ``--eval_results`` or a plotting script
    as if they were its). A file of ``keep`` is kept under any of its names (on a case-insensitive disk, an earlier
    ``..._Cat.txt`` that this evaluation's ``..._cat.txt`` was written into). Returns the paths deleted."""
    kept = {file_identity(Path(path)) for path in keep} - {None}
    removed = [path for pattern in patterns for path in sorted(Path(out_dir).glob(pattern))
               if path.is_file() and file_identity(path) not in kept]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def evaluate_results_file(path: Path, dataset: DetectionDataset, summary: EvaluationSummary | None = None) -> dict:
    """Evaluates saved results without a model: a folder of VOC ``comp4_det_test_<class>.txt`` files or a COCO
    results JSON file. Prints the same tables as ``evaluate_detections`` and returns the metric dict. ``summary``:
    the ``summary.json`` beside them as ``--eval_results`` read it (:func:`read_summary`); None: read here.

    The precision-recall curves of this scoring (``<class>_pr.npz`` / ``detection_results.npz``) are written beside
    the results, replacing the curves files an earlier evaluation left there (the results files themselves are left
    as they are); a folder that cannot be written gets a ``warning:`` line on stderr instead, the scores unchanged."""
    path = results_to_score(path, dataset.kind)
    summary = read_summary(summary_beside(path)) if summary is None else summary
    check_complete_results(path, summary)
    folder = path if dataset.kind == "voc" else path.parent
    if note := changed_split_note(summary, len(dataset)):
        print(f"warning: --eval_results {path}: {note}", file=sys.stderr)
    if dataset.kind == "voc":
        metrics, curves = evaluate_voc_with_curves(read_voc_results(path, dataset.image_ids, dataset.class_names),
                                                   dataset.ground_truth(), dataset.class_names)
        print(format_voc_report(metrics))
    else:
        metrics, curves = evaluate_coco_with_curves(path, dataset.coco, image_ids=dataset.image_ids,
                                                    category_ids=dataset.category_ids)
        print(format_coco_report(metrics))
    try:
        with one_writer(folder):
            written = write_voc_pr_curves(curves, folder) if dataset.kind == "voc" else [
                write_coco_pr_curves(curves, folder)]
            remove_earlier_results(folder, keep=written, patterns=CURVES_FILE_PATTERNS)
    except OSError as error:
        print(f"warning: --eval_results {path}: the precision-recall curves could not be written to {folder} "
              f"({error.filename or folder}: {error.strerror or error}); the scores above are unaffected",
              file=sys.stderr)
    return metrics


def summary_beside(results: Path) -> Path:
    """The ``summary.json`` that the evaluation which wrote the results ``results`` (its folder, or a file in it)
    wrote beside them."""
    return (results if results.is_dir() else results.parent) / "summary.json"


@dataclass(frozen=True)
class EvaluationSummary:
    """An evaluation's ``summary.json`` (``file``), read once: its parsed JSON ``content``, or ``None`` with the
    ``problem`` that kept it from being read ("not found", "unreadable (...)")."""
    file: Path
    content: Any = None
    problem: str | None = None

    def recorded(self, key: str) -> Any:
        """The ``key`` entry; None when the file is missing or unreadable, is not a JSON object, or has no such entry
        (another tool's results, an older summary)."""
        return self.content.get(key) if isinstance(self.content, dict) else None


def read_summary(summary_file: Path) -> EvaluationSummary:
    """The evaluation summary ``summary_file`` read and parsed (a missing or unreadable file is no error: its
    :class:`EvaluationSummary` says why it holds nothing)."""
    try:
        return EvaluationSummary(summary_file, json.loads(summary_file.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        problem = "not found" if isinstance(error, FileNotFoundError) else f"unreadable ({first_line(error)})"
        return EvaluationSummary(summary_file, problem=problem)


def check_complete_results(results: Path, summary: EvaluationSummary | None = None) -> None:
    """``--eval_results``: a ``ValueError`` naming the ``summary.json`` beside ``results`` (an evaluation's folder, or
    a file in it) when it records an evaluation that did not finish writing its files there (``"complete": false``,
    see :func:`evaluate_detections`). A folder without a ``summary.json`` (another tool's results) or one written
    before the entry existed passes. ``summary``: that file as read (:func:`read_summary`); None: read here."""
    summary_file = summary_beside(results)
    summary = read_summary(summary_file) if summary is None else summary
    if summary.recorded("complete") is False:
        raise ValueError(f"--eval_results {results}: {summary_file} records an evaluation that did not finish writing "
                         "its results there (stopped by a full disk, a refused write or a crash, or still running), so "
                         "the folder may hold a mix of its files and an earlier evaluation's; evaluate the checkpoint "
                         "again (--trained_model), which writes the folder whole, or wait for the one still running")


def replaced_evaluation_note(out_dir: Path, run_info: Mapping[str, Any]) -> str | None:
    """The note for an evaluation (``run_info`` as :func:`evaluate_detections`', its ``config`` holding the run id)
    about to replace the files of another run's evaluation in ``out_dir``, as its ``summary.json`` records it: runs
    without ``--name`` share ``eval/<DATASET>/``; or of the same run's at another input size (``input_size``, or for
    a summary written before it was recorded its config's ``size``: ``--trained_model --size S --eval_dir`` a folder
    of the trained size's). None when the folder holds no evaluation, one of the same run at the same size (its
    checkpoint again, its best one, an evaluation during training), one of an earlier run of the same checkpoint path
    (a run trained again, whose start said where the earlier checkpoint was kept) or one whose run is not known
    (saved before run ids)."""
    summary = read_summary(Path(out_dir) / "summary.json")
    earlier_config, checkpoint = summary.recorded("config"), summary.recorded("checkpoint")
    earlier_run = earlier_config.get("run_id") if isinstance(earlier_config, dict) else None
    run = (run_info.get("config") or {}).get("run_id")
    same_path = os.path.normpath(str(checkpoint)) == os.path.normpath(str(run_info.get("checkpoint")))
    if earlier_run is None or run is None:
        return None
    if earlier_run == run or same_path:
        earlier_size = summary.recorded("input_size") or earlier_config.get("size")
        size = run_info.get("input_size")
        if earlier_size is None or size is None or earlier_size == size:
            return None
        return (f"note: {out_dir} holds the evaluation of {checkpoint} at --size {earlier_size}: this one at --size "
                f"{size} replaces its files; give each its own --eval_dir to keep both (without --eval_dir, an "
                "evaluation at another size than the trained one writes to a folder of its own, ending in _size<S>)")
    return (f"note: {out_dir} holds the evaluation of another run's checkpoint, {checkpoint}: this evaluation replaces "
            "its files; give each run its own --name (or --eval_dir) to keep both (runs without --name, an IoU and a "
            "--mutual_guide run say, share eval/<DATASET>/)")


def changed_split_note(summary: EvaluationSummary, num_images: int) -> str | None:
    """What to know when the evaluation whose ``summary.json`` is ``summary`` (:func:`read_summary`) ran on another
    number of test images than the ``num_images`` the split has now (images added since have no detection in its
    results, so they score other numbers); ``None`` when it ran on as many, or the file is missing, unreadable or
    records no count."""
    evaluated = summary.recorded("num_images")
    if not isinstance(evaluated, int) or isinstance(evaluated, bool) or evaluated == num_images:
        return None
    change = ("an image added since has no detection in them" if num_images > evaluated
              else "images were removed from it since")
    return (f"the evaluation that wrote these results ran on {evaluated} test images ({summary.file}), the test split "
            f"has {num_images} now: {change}, so these numbers are not that evaluation's; evaluate the checkpoint "
            "again (--trained_model) on the split as it is")


def results_to_score(path: str | Path, kind: str) -> Path:
    """What ``--eval_results path`` scores on a dataset of ``kind``: for "voc", the folder of
    ``comp4_det_test_<class>.txt`` files; for "coco", a results JSON file, or the one such file in the folder an
    evaluation wrote. A ``ValueError`` naming ``--eval_results`` when ``path`` is not of that kind."""
    path = Path(path)
    if kind == "voc":
        if not path.is_dir():
            raise ValueError(f"--eval_results {path}: a VOC dataset needs the folder holding "
                             "comp4_det_test_<class>.txt")
        return path
    if kind != "coco":
        raise ValueError(f"results_to_score: kind={kind!r}; expected 'voc' or 'coco'")
    found = sorted(path.glob("detections_*_results.json")) if path.is_dir() else []
    if len(found) == 1:  # the folder an evaluation wrote, as for VOC
        path = found[0]
    if not path.is_file():
        hint = f": one of {', '.join(str(p) for p in found)}" if found else ""
        raise ValueError(f"--eval_results {path}: a COCO dataset needs a results JSON file{hint}")
    return path


def format_voc_report(metrics: dict) -> str:
    """The paper's protocol block, the standard VOC07 mAP@0.5 and the per-class AP@0.5 table."""
    width = max((len(name) for name in metrics["per_class_AP50"]), default=0)
    return "\n".join([
        "VOC, paper protocol: mean over IoU .50:.05:.95 of VOC07 11-point AP (difficult ignored, +1 pixel)",
        f"  mAP = {metrics['mAP']:.4f}  AP50 = {metrics['AP50']:.4f}  AP75 = {metrics['AP75']:.4f}",
        f"standard VOC07 mAP@0.5 (11-point) = {metrics['VOC07_mAP50']:.4f}",
        "per-class AP@0.5 (VOC07 11-point):",
        *(f"  {name:<{width}}  {ap:.4f}" for name, ap in metrics["per_class_AP50"].items()),
    ])


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """``mAP=0.4123 AP50=0.7012 AP75=0.4410`` (fractions, as the authors print them); keys that are missing or not a
    number (NaN) are left out."""
    shown = [key for key in ("mAP", "AP50", "AP75") if key in metrics and _is_number(metrics[key])]
    return " ".join(f"{key}={metrics[key]:.4f}" for key in shown)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def write_summary(path: Path, metrics: dict, run_info: dict, num_images: int, complete: bool) -> Path:
    """``summary.json``: dataset, split, the data flags it was evaluated with (``evaluated_with``: dataset, data_root,
    classes, skip_unknown_classes, which ``--eval_results`` reuses), model config, the side S the images were resized
    to (``input_size``: the config's ``size`` but for ``--trained_model --size S``), checkpoint, date, image count,
    every metric (NaN -> null) and ``complete``: whether the folder holds every results file of the evaluation
    (false while they are written)."""
    summary = {
        "complete": complete,
        "dataset": run_info.get("dataset"),
        "split": run_info.get("split"),
        "evaluated_with": run_info.get("evaluated_with"),
        "config": run_info.get("config"),
        "input_size": run_info.get("input_size"),
        "checkpoint": None if run_info.get("checkpoint") is None else str(run_info["checkpoint"]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "num_images": num_images,
        "metrics": json_safe(metrics),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_text(path, json.dumps(summary, indent=2, default=str) + "\n")
    return path
