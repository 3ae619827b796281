"""Train and evaluate Mutual Guidance detectors (Zhang et al., ACCV 2020).

Examples::

    # the paper's PAFPN-VGG16 at 320 on VOC07+12 with Mutual Guidance (250 epochs, batch 32, SGD lr 1e-2)
    python main.py --dataset voc --version pafpn --backbone vgg16 --size 320 --mutual_guide
    # continue a stopped run from its checkpoint alone (the flags not given are read from it)
    python main.py --resume weights/VOC_pafpn_vgg16_size320_anchor24.0_MG.pth
    # evaluate a checkpoint (architecture, classes, dataset and --amp are read from it) and print mAP/AP50/AP75
    python main.py --trained_model weights/VOC_pafpn_vgg16_size320_anchor24.0_MG.pth
    # the offline synthetic set (generated on first use), CPU-friendly defaults
    python main.py --dataset shapes --mutual_guide
    # several GPUs: --batch_size images per GPU
    torchrun --nproc_per_node=4 main.py --dataset coco --batch_size 8 --mutual_guide --amp

The paper's schedule (the authors' code): SGD momentum 0.9, weight decay 5e-4 (none on biases and norm weights), linear
warm-up from 1e-6 over 500 iterations then cosine to 1e-6, set every iteration; an epoch is
len(dataset) // global batch iterations. Training ends with an evaluation, as in the authors' code.
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NoReturn

import torch

from data import DataError, build_loader, check_dataset, reads_class_list
from data.errors import DatasetNotFoundError, one_line_data_warnings, original_message
from data.loader import single_thread_opencv
from models import PretrainedWeightsError
from utils.best_checkpoint import SCORE, BestEvaluation, best_checkpoint_path
from utils.checkpoint import (
    FORMAT,
    CheckpointError,
    capture_rng_state,
    check_architecture,
    check_compatible,
    check_writable_folder,
    checkpoint_name,
    load_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
    set_aside_earlier_checkpoint,
)
from utils.distributed import (
    DistributedContext,
    StoppedByAnotherProcess,
    any_process,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    joined_group,
    launch_context,
    local_rank_from_env,
    raise_if_any_process_failed,
    resolve_device,
    say_start_refusal,
    unwrap_model,
    wrap_model,
)
from utils.engine import (
    NonFiniteLossError,
    StopSignal,
    TrainingInterrupted,
    TrainSettings,
    format_metrics,
    non_finite_weights,
    termination_as_interrupt,
    train,
)
from utils.inference import evaluate_results_file
from utils.demo import add_use_arguments, default_demo_output, run_demo
from utils.export import export_onnx
from utils.logging import RunLog
from utils.run_data import check_splits, make_dataset
from utils.run_evaluation import eval_folder, evaluate
from utils.run_exit import (
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_REFUSED_BY_SYSTEM,
    divergence_advice,
    evaluation_command,
    how_to_continue,
    is_out_of_memory,
    log_error,
    refused_file_operation,
    stopped_run_advice,
)
from utils.run_flags import (
    AMP_CHOICES,
    DATASETS,
    DATASET_DEFAULTS,
    DEFAULT_NMS_THRESH,
    amp_dtype_for,
    check_flag_combinations,
    check_flag_values,
    fill_dataset_defaults,
    requested_architecture,
    take_architecture_from_checkpoint,
    take_dataset_from_summary,
    take_evaluation_settings_from_checkpoint,
    take_run_from_checkpoint,
)
from utils.run_lock import exclusive_run
from utils.messages import first_line
from utils.optim import warmup_cosine_lr
from utils.trained_model import detector_from_state
from utils.training_setup import TrainingSetup, build_training, check_training_flags, load_initial_weights, resume_run

# a negative number as float() writes it: argparse's own pattern knows -1 and -.5 alone, and reads -1e-3 or -inf as
# a flag
NEGATIVE_NUMBER = re.compile(r"-((\d+\.?\d*|\.\d+)(e[-+]?\d+)?|inf|infinity|nan)\Z", re.IGNORECASE)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the flag (exit code 2), without the long usage block, and
    that reads any negative number (-1e-3, -inf) as a flag's value, where argparse saw an unknown flag in it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER  # argparse's test of "a negative number, not a flag"

    def error(self, message: str) -> NoReturn:
        say_start_refusal(f"{self.prog}: error: {message} (see --help)")  # under torchrun: rank 0 alone
        self.exit(EXIT_BAD_INPUT)


def get_args_parser() -> argparse.ArgumentParser:
    """The CLI's flags; a default of None means "the dataset's default" (:data:`DATASET_DEFAULTS`) or "the
    checkpoint's", settled in :func:`main` (:func:`fill_dataset_defaults` and the checkpoint readers)."""
    parser = OneLineErrorParser(
        "main.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--version", type=str.lower, choices=("fssd", "retinanet", "rfbnet", "pafpn"), default=None,
                       help="detector (default: pafpn; fssd for shapes; read from --trained_model)")
    model.add_argument("--backbone", type=str.lower, choices=("vgg16", "resnet18"), default=None,
                       help="backbone (default: vgg16; resnet18 for shapes; read from --trained_model)")
    model.add_argument("--size", type=int, default=None,
                       help="square input size, a multiple of 64 >= 128 (default: 320; 192 for shapes; read from "
                            "--trained_model)")
    model.add_argument("--base_anchor_size", type=float, default=None,
                       help="anchor side at stride 8 in pixels (default: 24, or the checkpoint's with --trained_model "
                            "and --init_from)")
    starting_weights = model.add_mutually_exclusive_group()
    starting_weights.add_argument("--pretrained", type=str, default=None, metavar="PATH",
                                  help="ImageNet backbone state dict to start from (default: torchvision's ImageNet "
                                       "weights for voc/coco/custom, none for shapes)")
    starting_weights.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=None,
                                  help="start the backbone from random weights")  # unset (None) as --pretrained
    model.add_argument("--sync_bn", action="store_true",
                       help="SyncBatchNorm across GPUs under torchrun with several processes (CUDA only)")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", type=str.lower, choices=DATASETS, default=None,
                      help="voc, coco, shapes (synthetic, generated offline) or custom (--data_root: VOC or COCO "
                           "layout); case-insensitive (default: voc; with --trained_model, the checkpoint's, with its "
                           "--data_root)")
    data.add_argument("--data_root", type=str, default=None,
                      help="dataset folder (default: the repository's datasets/VOCdevkit, datasets/coco2017, "
                           "datasets/shapes, wherever main.py is run from)")
    data.add_argument("--classes", type=str, default=None,
                      help="VOC and custom data: comma-separated class names or a file with one name per line "
                           "(default: voc's 20; a COCO-layout folder's json; a VOC-layout custom folder needs it)")
    data.add_argument("--skip_unknown_classes", action="store_true",
                      help="VOC-layout data: leave out the objects whose class is not in --classes (counted in one "
                           "warning) instead of stopping with an error; e.g. to train on a few of the VOC classes")
    data.add_argument("--workers", type=int, default=None,
                      help="DataLoader worker processes, at most 4 per core (default: the cores per training "
                           "process - 1, from 2 to 12)")
    data.add_argument("--expand_prob", type=float, default=None, metavar="P",
                      help="probability of the paper's zoom-out augmentation (expand) per training image "
                           "(default: 0.6, the paper's; 0 for shapes)")
    data.add_argument("--check_data", action="store_true", help="scan the dataset for problems, report them and exit")

    schedule = parser.add_argument_group("training schedule (paper defaults)")
    schedule.add_argument("--mutual_guide", action="store_true", default=None,  # None: not given (see --resume)
                          help="train with Mutual Guidance assignment (default: IoU)")
    schedule.add_argument("--mutual_guide_from", type=int, default=None, metavar="ITER",
                          help="with --mutual_guide: IoU assignment for the first ITER iterations, Mutual Guidance "
                               "after them (the logs' iterations ITER+1 on)")
    schedule.add_argument("--batch_size", type=int, default=None, help="images per iteration per process (default: 32)")
    schedule.add_argument("--lr", type=float, default=None,
                          help="peak learning rate after warm-up (default: 1e-2, the paper's; 6e-2 for shapes)")
    schedule.add_argument("--warm_iter", type=int, default=None,
                          help="linear warm-up iterations from 1e-6 (default: 500; 50 for shapes)")
    schedule.add_argument("--epochs", type=int, default=None,
                          help="epochs of len(dataset) // global batch iterations (default: voc and custom 250, "
                               "coco 140, shapes 12)")
    schedule.add_argument("--max_iter", type=int, default=None,
                          help="total iterations; overrides --epochs (a run given both says it ignores --epochs)")
    schedule.add_argument("--seed", type=int, default=None,
                          help="seed of model init, data order and augmentation (default: 0)")
    schedule.add_argument("--amp", nargs="?", const="auto", default=None, type=str.lower, choices=AMP_CHOICES,
                          help="mixed precision: bf16, or fp16 with a GradScaler (case-insensitive); bare --amp picks "
                               "bf16 where supported")
    schedule.add_argument("--device", type=str.lower, default="auto",
                          help="auto, cpu, cuda or cuda:N; case-insensitive (default: auto)")
    schedule.add_argument("--compile", action="store_true",
                          help="torch.compile the model for training (on an H200: +29 %% images/s after about 45 s "
                               "of compiling)")
    schedule.add_argument("--compile_loss", action="store_true",
                          help="torch.compile the criterion too (assignment + losses as one graph): +17 %% "
                               "images/s over --compile alone for RetinaNet-VGG16-320 on an H200, after about a "
                               "minute more of compiling; see README")

    run = parser.add_argument_group("checkpoints, logs and evaluation")
    run.add_argument("--save_folder", type=str, default=None, help="checkpoint folder (default: weights/)")
    run.add_argument("--name", type=str, default=None,
                     help="the run's name: its checkpoint is <save_folder>/NAME.pth and its logs runs/NAME/ (default: "
                          "from dataset and architecture, e.g. VOC_pafpn_vgg16_size320_anchor24.0_MG); give each "
                          "experiment its own, e.g. per seed or learning rate; letters, digits and . _ - + = @")
    run.add_argument("--run_dir", type=str, default=None,
                     help="folder for log.txt and the metrics CSV/JSONL (default: runs/<run name>/)")
    run.add_argument("--init_from", type=str, default=None, metavar="PATH",
                     help="start from this checkpoint's model weights with a fresh optimizer and schedule (a fork; "
                          "--version/--backbone/--size/--base_anchor_size default to the checkpoint's)")
    run.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                     help="continue training exactly where a checkpoint stopped (default PATH: this run's checkpoint, "
                          "found from the run's flags); a PATH given also supplies every run flag not given (dataset, "
                          "data, architecture, schedule, precision, --name, --save_folder, --run_dir, the intervals)")
    run.add_argument("--checkpoint_interval", type=int, default=None,
                     help="save a checkpoint every N iterations (default: 500)")
    run.add_argument("--log_interval", type=int, default=None,
                     help="log losses and speed every N iterations (default: 20)")
    run.add_argument("--eval_interval", type=int, default=None,
                     help="evaluate every N epochs during training and keep the best evaluation's weights in "
                          "<save_folder>/<run name>_best.pth (default: 0 = at the end only, no best file)")
    run.add_argument("--assign_stats", action="store_true",
                     help="log assignment statistics (positives, IoUs) at log intervals")
    run.add_argument("--trained_model", type=str, default=None, metavar="PATH",
                     help="evaluate this checkpoint only (no training) and print mAP/AP50/AP75")
    run.add_argument("--eval_results", type=str, default=None, metavar="PATH",
                     help="score saved detections against the test split and exit: the eval/<DATASET> folder of "
                          "comp4_det_test_<class>.txt files (VOC layout) or a COCO results JSON; without --dataset, "
                          "the dataset of the summary.json beside them")
    run.add_argument("--eval_dir", type=str, default=None, metavar="PATH",
                     help="folder for the evaluation's detections and summary.json (default: eval/<DATASET>)")
    run.add_argument("--nms_thresh", type=float, default=DEFAULT_NMS_THRESH,
                     help="per-class NMS IoU threshold of evaluation, --demo and --export_nms (default: 0.5)")
    run.add_argument("--cuda_graph", action="store_true",
                     help="evaluation and --demo on CUDA: replay the network and post-processing from one CUDA graph "
                          "per batch (fewer kernel launches, the same detections; CUDA only)")
    add_use_arguments(parser)
    return parser


def main(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Run what ``args`` asks for; returns the process exit code. ``parser``: the parser that read ``args`` (its
    defaults tell the flags given from those left out), :func:`get_args_parser`'s when not given."""
    ctx = launch_context()  # until the processes join their group: rank 0 alone prints what every process meets
    log = RunLog(None, enabled=ctx.is_main)
    try:
        ignored = check_flag_combinations(args, parser or get_args_parser())
        if ignored:
            log.info(ignored)
        check_flag_values(args)  # the values given, and the device, before any checkpoint is read
        device = resolve_device(args.device, local_rank_from_env())
        if args.cuda_graph and device.type != "cuda":
            raise ValueError(f"--cuda_graph needs a CUDA device, but this run uses {device}; drop --cuda_graph")
        init_state = load_checkpoint(args.init_from, source="--init_from") if args.init_from else None
        if init_state is not None:
            take_architecture_from_checkpoint(args, init_state["config"])
        resume_state = load_checkpoint(args.resume, source="--resume PATH") if args.resume else None
        resumed_with = ""
        if resume_state is not None:  # an explicit PATH continues its run: its flags unless flags say otherwise
            taken_flags = take_run_from_checkpoint(args, resume_state["config"])
            if taken_flags:
                resumed_with = f"resuming {args.resume} with its run's flags not given here: {taken_flags}"
        evaluated_state, taken = None, ""
        if args.trained_model and not (args.demo or args.export):
            evaluated_state = load_checkpoint(args.trained_model, source="--trained_model")
            taken = take_evaluation_settings_from_checkpoint(args, evaluated_state["config"])
        if args.eval_results:
            taken = take_dataset_from_summary(args)
        fill_dataset_defaults(args)
        if args.workers > 0:
            single_thread_opencv()  # before any DataLoader worker forks (see data/loader.py)
        torch.backends.cudnn.benchmark = device.type == "cuda"  # one input size: autotuned kernels hold for every step
        ctx = init_distributed(device)
        log = RunLog(None, enabled=ctx.is_main)
        if resumed_with:
            log.info(resumed_with)  # now, before the data is read; the run's log.txt records it too
        if taken:
            source = "the evaluation that wrote them" if args.eval_results else "the checkpoint was trained"
            log.info(f"evaluating as {source}: {taken}")
        if args.amp == "fp16" and device.type == "cpu":
            log.info("warning: --amp fp16 on the CPU runs many times slower than bf16 (few CPU kernels take fp16); "
                     "use --amp bf16, or bare --amp, which picks bf16 here")
        if args.check_data:
            return run_check_data(args, log)
        if args.eval_results:
            return run_eval_results(args, log)
        if args.demo or args.export:
            return run_use(args, device)
        if args.trained_model:
            return run_evaluation_only(args, device, ctx, evaluated_state)
        return run_training(args, device, ctx, init_state, resume_state, resumed_with)
    except (DataError, CheckpointError, PretrainedWeightsError, ValueError) as error:
        message = f"error: {original_message(error)}"  # a DataLoader worker's error without its traceback
        if joined_group():
            log_error(ctx, message)
        else:  # before the processes join: each refuses alike, and none may exit before rank 0 has said why
            say_start_refusal(message)
        return EXIT_BAD_INPUT
    except StoppedByAnotherProcess as error:
        log_error(ctx, f"stopped: {error}", every_process=True)
        return EXIT_REFUSED_BY_SYSTEM
    except OSError as error:  # a file operation the system refused: a full disk, a permission, a vanished folder
        if error.filename is None:  # not about a file (a network error, say): the traceback tells more
            raise
        log_error(ctx, f"error: {refused_file_operation(error)}; free space or fix the folder, then run again",
                  every_process=True)
        return EXIT_REFUSED_BY_SYSTEM
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        log_error(ctx, f"error: out of memory ({first_line(error)}); lower --batch_size or --size, then run again",
                  every_process=True)
        return EXIT_REFUSED_BY_SYSTEM
    finally:
        cleanup_distributed()


def run_use(args: argparse.Namespace, device: torch.device) -> int:
    """``--demo`` / ``--export`` with ``--trained_model``: the checkpoint alone defines the model and the classes."""
    requested = requested_architecture(args)
    if any(value is not None for value in requested.values()):  # the checkpoint defines them: refuse a mismatch
        state = load_checkpoint(args.trained_model, source="--trained_model")
        check_architecture(args.trained_model, state["config"], requested)
    if args.export:
        export_onnx(args.trained_model, args.export_path, opset=args.opset, include_nms=args.export_nms,
                    score_thresh=args.score_thresh, nms_thresh=args.nms_thresh)
    else:
        try:
            with termination_as_interrupt():  # SIGTERM as Ctrl-C: one line, not a traceback or a silent kill
                run_demo(args.trained_model, args.demo, args.demo_output, device=device, batch_size=args.batch_size,
                         score_thresh=args.score_thresh, nms_thresh=args.nms_thresh, workers=args.workers,
                         cuda_graph=args.cuda_graph)
        except KeyboardInterrupt:
            out_dir = args.demo_output or default_demo_output(args.trained_model)
            print(f"--demo interrupted: {out_dir} holds the drawn copies written so far, without this run's "
                  "detections.json; run the same command again (it replaces them)", file=sys.stderr)
            return EXIT_INTERRUPTED
    return 0


def run_check_data(args: argparse.Namespace, log: RunLog) -> int:
    """Decode every image of both splits and check every box, then what training checks of the two splits
    (:func:`check_splits`). Problems raise one DataError (exit code 2) listing those of both splits: the test split is
    checked even when the train split has problems, so one run reports everything to fix."""
    splits, problems = {}, []
    for split in ("train", "test"):
        try:
            splits[split] = make_dataset(args, split, args.size or DATASET_DEFAULTS[args.dataset]["size"], train=False)
            for note in splits[split].notes:
                log.info(note)
            report = check_dataset(splits[split], workers=max(args.workers, 1))
        except DataError as error:
            if isinstance(error, DatasetNotFoundError) and not problems:  # one line: missing for both splits
                raise
            if original_message(error) not in problems:  # a problem of both splits (no --classes, say) once
                problems.append(original_message(error))
            continue
        log.info(f"{args.dataset} {split}: {report.summary()}")
    if problems:
        raise DataError("\n".join(problems))
    check_splits(splits["train"], splits["test"], log)
    log.info(f"--check_data found no problem: {args.dataset} can be trained and evaluated on")
    return 0


def run_eval_results(args: argparse.Namespace, log: RunLog) -> int:
    """``--eval_results PATH``: score saved detections against the test split, print the tables and the metrics."""
    dataset = make_dataset(args, "test", args.size or DATASET_DEFAULTS[args.dataset]["size"], train=False)
    metrics = evaluate_results_file(args.eval_results, dataset)
    log.info(f"{args.eval_results}: {format_metrics(metrics)}")
    return 0


def run_evaluation_only(args: argparse.Namespace, device: torch.device, ctx: DistributedContext,
                        state: dict) -> int:
    """``--trained_model``: evaluate the checkpoint ``state`` (read from that file) on the test split."""
    config = state["config"]
    requested = requested_architecture(args)
    size = args.size or config["size"]
    if ctx.is_main:
        check_writable_folder(eval_folder(args), "--eval_dir")
    if not args.classes and reads_class_list(args.dataset, args.data_root):  # VOC XML names classes: as trained
        args.classes = ",".join(state["class_names"])
    dataset = make_dataset(args, "test", size, train=False)
    check_compatible(args.trained_model, config, state["class_names"], requested, dataset.class_names)
    trained = detector_from_state(state, args.trained_model, device)
    log = RunLog(None, enabled=ctx.is_main)
    log.info(f"evaluating {args.trained_model} (iteration {state['iteration']}/{state['max_iter']}) "
             f"on {len(dataset)} images")
    run_info = {"checkpoint": str(args.trained_model), "config": config}
    try:
        with termination_as_interrupt():  # SIGTERM as Ctrl-C: one line, not a traceback or a silent kill
            evaluate(trained.model, dataset, args, trained.priors, device, ctx, amp_dtype_for(args.amp, device), log,
                     run_info)
    except KeyboardInterrupt:
        log.info(f"evaluation of {args.trained_model} interrupted before its results were written; run the same "
                 "command again")
        return EXIT_INTERRUPTED
    return 0


class EvaluationDataError(DataError):
    """A data error met by an evaluation during training, after ``iteration`` completed iterations."""

    def __init__(self, message: str, iteration: int):
        super().__init__(message)
        self.iteration = iteration


class BatchCounter:
    """Iterates a training loader and counts the batches handed out. The loop asks for a batch only after finishing
    the previous iteration, so when loading one fails, ``delivered`` iterations of this run are complete."""

    def __init__(self, loader: Iterable):
        self.loader = loader
        self.delivered = 0

    def __iter__(self) -> Iterator:
        for batch in self.loader:
            yield batch
            self.delivered += 1


def run_training(args: argparse.Namespace, device: torch.device, ctx: DistributedContext,
                 init_state: dict | None = None, resume_state: dict | None = None, resumed_with: str = "") -> int:
    """Train as ``args`` asks (``init_state``, ``resume_state``: the ``--init_from`` and ``--resume PATH``
    checkpoints, loaded; ``resumed_with``: the line, already printed, naming the flags ``--resume PATH`` took from its
    checkpoint), while no other run on this machine writes the same checkpoint; returns the exit code."""
    name = f"{args.name}.pth" if args.name else checkpoint_name(
        args.dataset, args.version, args.backbone, args.size, args.base_anchor_size, args.mutual_guide)
    checkpoint_path = Path(args.save_folder) / name
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / checkpoint_path.stem
    with ExitStack() as held:
        refusal = None
        if ctx.is_main:  # the main process holds the locks; every process stops when it cannot
            try:
                held.enter_context(exclusive_run(checkpoint_path))
                held.enter_context(exclusive_run(run_dir, "the log folder",
                                                 "give this run another --run_dir (or --name)"))
            except ValueError as error:
                refusal = str(error)
        refusal = broadcast_object(refusal, ctx)
        if refusal:
            raise ValueError(refusal)
        return train_and_evaluate(args, device, ctx, checkpoint_path, run_dir, init_state, resume_state, resumed_with)


def train_and_evaluate(args: argparse.Namespace, device: torch.device, ctx: DistributedContext, checkpoint_path: Path,
                       run_dir: Path, init_state: dict | None, resume_state: dict | None,
                       resumed_with: str = "") -> int:
    """:func:`run_training`'s work: the run whose checkpoint is ``checkpoint_path`` and log folder ``run_dir``."""
    check_training_flags(args, device, ctx, checkpoint_path, run_dir)
    resume_path = None if args.resume is None else Path(args.resume) if args.resume else checkpoint_path
    # another file than the run's own checkpoint (a fresh start, or --resume of a copy or an .earlier- one) never
    # overwrites the checkpoint at the run's path: it is set aside, as are logs of another run (continues_logs)
    continues_checkpoint = resume_path is not None and resume_path.resolve() == checkpoint_path.resolve()
    if resume_path is not None and resume_state is None:  # bare --resume: its checkpoint read before the data is
        resume_state = load_checkpoint(resume_path, source=(
            "--resume without PATH, which reads this run's checkpoint (named by --name, or by --dataset and the "
            "architecture flags): give the same flags as the run, or --resume PATH"))
    log = RunLog(run_dir, enabled=ctx.is_main, hold_lines=True)  # written once we know whose folder it is
    if resumed_with:
        log.record(resumed_with)
    setup = build_training(args, device, ctx, log)
    if resume_path is not None:
        start_iter, continues_logs = resume_run(args, ctx, log, setup, resume_path, resume_state, continues_checkpoint)
    else:  # a new run: its id marks its checkpoints and its run folder
        start_iter, continues_logs = 0, False
        setup.config["run_id"] = broadcast_object(uuid.uuid4().hex[:12], ctx)
    if init_state is not None:
        load_initial_weights(setup.model, init_state, args, setup.dataset.class_names, log)

    train_model = wrap_model(setup.model, device, ctx, args.sync_bn)
    if args.compile:
        log.info("compiling the model with torch.compile; the first iterations are slow while it compiles")
        train_model = torch.compile(train_model)
    if args.compile_loss:
        log.info("compiling the criterion (assignment + losses) with torch.compile; its first calls are slow while it "
                 "compiles")
    loader = BatchCounter(build_loader(setup.dataset, args.batch_size, train=True, workers=args.workers,
                                       distributed=ctx.is_distributed, seed=args.seed, start_iter=start_iter,
                                       max_iter=setup.max_iter, pin_memory=device.type == "cuda"))
    settings = TrainSettings(
        max_iter=setup.max_iter, epoch_size=setup.epoch_size, base_lr=args.lr, warm_iter=args.warm_iter,
        log_interval=args.log_interval, checkpoint_interval=args.checkpoint_interval,
        eval_interval=args.eval_interval * setup.epoch_size, amp_dtype=setup.amp_dtype,
        channels_last=setup.channels_last, assign_stats=args.assign_stats, mutual_guide_from=args.mutual_guide_from,
    )
    log.info(
        f"training {checkpoint_path.name} on {len(setup.dataset)} images ({setup.dataset.num_classes} classes) on "
        f"{device} x{ctx.world_size}: {setup.max_iter} iterations ({setup.epoch_size} per epoch), batch "
        f"{args.batch_size} per process, run folder {run_dir}"
    )
    if ctx.is_distributed:
        log.info(f"global batch {args.batch_size * ctx.world_size}: the losses are normalised by its positive anchors "
                 f"(summed over the {ctx.world_size} processes), as one process holding the whole batch")
    last_saved = start_iter if continues_checkpoint else None  # the iteration the file at checkpoint_path holds
    checkpoints = RunCheckpoints(checkpoint_path, setup, train_model, ctx, log, last_saved)
    evaluation = RunEvaluation(args, device, ctx, log, setup, train_model, checkpoints)
    # after every process has read --resume / --init_from (wrap_model synchronises them)
    if not continues_logs and (earlier_logs := log.begin_new_run(setup.config["run_id"])):
        log.info(f"an earlier run's logs were in {run_dir}: moved to {earlier_logs}")
    checkpoints.prepare(continues_checkpoint, args.eval_interval)
    final_save = StopSignal()  # Ctrl-C or SIGTERM during the final save: the evaluation after it is skipped
    stopped = train_to_the_end(args, device, ctx, log, setup, train_model, loader, settings, start_iter, checkpoints,
                               evaluation, final_save)
    if stopped is not None:
        return stopped
    log.info(f"saved {checkpoint_path}")
    return evaluate_at_the_end(args, ctx, log, start_iter, setup.max_iter, checkpoints, evaluation, final_save)


class RunCheckpoints:
    """The checkpoints of a training run: its own at ``path`` (the training state, which ``--resume`` continues;
    ``last_saved``: the iteration that file holds, ``None`` while it holds none of this run) and, when the run keeps
    one, its best evaluation's at ``best.path``. Rank 0 writes them; every process learns whether it could."""

    def __init__(self, path: Path, setup: TrainingSetup, train_model: torch.nn.Module, ctx: DistributedContext,
                 log: RunLog, last_saved: int | None):
        self.path = path
        self.setup = setup
        self.train_model = train_model
        self.ctx = ctx
        self.log = log
        self.last_saved = last_saved
        self.best = BestEvaluation(best_checkpoint_path(path))  # read on rank 0 by prepare, before training starts
        self.keeps_best = False

    def prepare(self, continues_checkpoint: bool, eval_interval: int) -> None:
        """Before training: set aside another run's checkpoint (unless the run continues the file at ``path``,
        ``continues_checkpoint``) and best checkpoint, read this run's best evaluation, decide whether the run keeps
        a best checkpoint (it evaluates every ``eval_interval`` epochs, or has one) and remove partial files."""
        log = self.log
        if self.ctx.is_main:  # the files are rank 0's to read, move and remove
            if not continues_checkpoint and (earlier := set_aside_earlier_checkpoint(self.path)):
                log.info(f"an earlier run's checkpoint was at {self.path}: kept as {earlier}")
            # a resumed run goes on comparing with its best evaluation; another run's best is set aside
            self.best = BestEvaluation.of_run(self.best.path, self.setup.config["run_id"])
            if self.best.score is None and (earlier_best := set_aside_earlier_checkpoint(self.best.path)):
                log.info(f"an earlier run's best checkpoint was at {self.best.path}: kept as {earlier_best}")
            if partial := remove_partial_checkpoints(self.path) + remove_partial_checkpoints(self.best.path):
                log.info(f"removed {len(partial)} partial checkpoint file(s) of a save that was cut short: "
                         f"{', '.join(map(str, partial))}")
        self.keeps_best = broadcast_object(eval_interval > 0 or self.best.score is not None, self.ctx)

    def save(self, done: int) -> None:
        """The checkpoint of ``done`` iterations, written by rank 0 (see :meth:`_agreed_write`)."""
        self._agreed_write(lambda: self._write_checkpoint(done), "the checkpoint")
        self.last_saved = done

    def keep_if_best(self, done: int, metrics: dict | None) -> None:
        """After the evaluation ``metrics`` (rank 0's; ``None`` elsewhere) of ``done`` iterations: write the best
        checkpoint when it scores higher than every earlier evaluation of the run. Called before the evaluation's
        row is logged, so that a run stopped by a failed write evaluates that iteration again when resumed."""
        if self.keeps_best:
            self._agreed_write(lambda: self._write_if_best(done, metrics), "the best checkpoint")

    def log_best(self) -> None:
        """At the end of the run: its best evaluation and where it is saved, when the run keeps one."""
        if self.keeps_best and self.best.iteration is not None:
            self.log.info(f"best evaluation: {SCORE} {self.best.score:.4f} after iteration {self.best.iteration}, "
                          f"saved in {self.best.path}")

    def kept(self, note: str = "") -> str:
        """What a stopped run leaves to go on from: its checkpoint of iteration ``last_saved`` (with ``note``), when
        the run has saved one and it is still there."""
        if self.last_saved is None or not self.path.exists():
            return "no checkpoint was saved"
        return f"the checkpoint of iteration {self.last_saved}, {self.path}, is kept{note}"

    def how_to_go_on(self, args: argparse.Namespace) -> str:
        """How the run, stopped by the system (a full disk, no memory), goes on: from its last checkpoint, if any."""
        return stopped_run_advice(args, self.path, self.last_saved)

    def _agreed_write(self, write: Callable[[], None], what: str) -> None:
        """Rank 0 runs ``write``; every process learns whether it could, so none trains on alone after a failed save,
        nor exits (and has torchrun stop the others) while the file is written."""
        failure = None
        if self.ctx.is_main:
            try:
                write()
            except Exception as error:  # noqa: BLE001 - re-raised below, once every process knows
                failure = error
        raise_if_any_process_failed(failure, self.ctx, lambda: StoppedByAnotherProcess(
            f"the main process could not save {what} (its message says why)"))

    def _write_checkpoint(self, done: int) -> None:
        """The training state after ``done`` iterations into the file at ``path``."""
        setup = self.setup
        save_checkpoint(
            {
                "format": FORMAT,
                "model": unwrap_model(self.train_model).state_dict(),
                "optimizer": setup.optimizer.state_dict(),
                "scaler": setup.scaler.state_dict() if setup.scaler.is_enabled() else {},
                "iteration": done,
                "max_iter": setup.max_iter,
                "rng": capture_rng_state(),
                "config": setup.config,
                "class_names": setup.dataset.class_names,
            },
            self.path,
        )

    def _write_if_best(self, done: int, metrics: dict | None) -> None:
        """The best checkpoint of ``done`` iterations, when ``metrics`` score higher than the best so far."""
        best = self.best
        if metrics is None or not best.improves(metrics):
            return
        state = best.checkpoint(unwrap_model(self.train_model).state_dict(), done, self.setup.max_iter,
                                self.setup.config, self.setup.dataset.class_names, metrics)
        save_checkpoint(state, best.path)
        best.record(metrics, done)
        self.log.info(f"best evaluation so far ({SCORE} {best.score:.4f} after iteration {done}): saved {best.path}")


class RunEvaluation:
    """Evaluations on the test split of the weights being trained, ``train_model``; their results name the run's
    checkpoint and config."""

    def __init__(self, args: argparse.Namespace, device: torch.device, ctx: DistributedContext, log: RunLog,
                 setup: TrainingSetup, train_model: torch.nn.Module, checkpoints: RunCheckpoints):
        self.args = args
        self.device = device
        self.ctx = ctx
        self.log = log
        self.setup = setup
        self.train_model = train_model
        self.checkpoints = checkpoints
        self.run_info = {"checkpoint": str(checkpoints.path), "config": setup.config}

    def metrics(self, after: int | None = None) -> dict | None:
        """Evaluate the weights as they are now (``after`` that many iterations, during training): rank 0's metrics,
        ``None`` on the other processes."""
        return evaluate(self.train_model, self.setup.test_dataset, self.args, self.setup.priors, self.device, self.ctx,
                        self.setup.amp_dtype, self.log, self.run_info, after)

    def during_training(self, done: int) -> None:
        """The ``--eval_interval`` evaluation after ``done`` iterations: the best checkpoint kept if it scores highest,
        then its row logged; a data error is raised as an :class:`EvaluationDataError` of that iteration."""
        try:
            metrics = self.metrics(after=done)
        except DataError as error:
            raise EvaluationDataError(original_message(error), done) from error
        self.checkpoints.keep_if_best(done, metrics)
        if metrics is not None:
            self.log.metrics("eval", {"iteration": done} | {k: metrics[k] for k in ("mAP", "AP50", "AP75")
                                                            if k in metrics})


def train_to_the_end(args: argparse.Namespace, device: torch.device, ctx: DistributedContext, log: RunLog,
                     setup: TrainingSetup, train_model: torch.nn.Module, loader: BatchCounter, settings: TrainSettings,
                     start_iter: int, checkpoints: RunCheckpoints, evaluation: RunEvaluation,
                     final_save: StopSignal) -> int | None:
    """Train from ``start_iter`` to the end of the run, then save its checkpoint (a signal during that save, which
    ``final_save`` receives, takes effect once the file is whole). ``None`` when done; else the exit code, once what
    stopped training (a NaN/inf loss, Ctrl-C or SIGTERM, a data error, a refused file operation, no memory) and how
    to go on are printed (after a data error, the iterations done are saved first when the weights are finite)."""
    checkpoint_path, max_iter, amp_dtype = checkpoints.path, setup.max_iter, setup.amp_dtype
    # a resumed attempt stopped at an evaluation's iteration before evaluating it (Ctrl-C, a crash): evaluate it first
    evaluate_first = settings.evaluates_after(start_iter) and not broadcast_object(log.has_row("eval", start_iter), ctx)
    try:
        train(train_model, setup.loss_fn, setup.priors, setup.optimizer, setup.scaler, loader, start_iter, settings,
              device, ctx, log, checkpoints.save, evaluation.during_training, evaluate_first)
        with final_save:  # Ctrl-C or SIGTERM during the final save takes effect once the checkpoint is whole
            checkpoints.save(max_iter)
    except NonFiniteLossError as error:
        lr = warmup_cosine_lr(error.iteration, args.lr, args.warm_iter, max_iter)
        kept = checkpoints.kept(" (finite weights)")
        log_error(ctx, f"error: {error} (lr {lr:.3g}); {kept}. {divergence_advice(args, amp_dtype)}")
        return EXIT_DIVERGED
    except TrainingInterrupted as stop:
        log.info(f"{stop}; checkpoint {checkpoint_path} saved, {how_to_continue(args, checkpoint_path)}")
        return EXIT_INTERRUPTED
    except DataError as error:  # an image that fails to load (found by --check_data before training)
        log_error(ctx, f"error: {original_message(error)}", every_process=True)
        done = error.iteration if isinstance(error, EvaluationDataError) else start_iter + loader.delivered
        finite = not any_process(bool(non_finite_weights(setup.model)), ctx)  # as every process sees it
        fix_the_file = "fix or replace the file (--check_data scans every image)"
        if done > start_iter and finite:
            try:
                checkpoints.save(done)
            except OSError as refused:  # the image and a full disk: both to mend before going on
                if refused.filename is None:
                    raise
                log_error(ctx, f"error: {refused_file_operation(refused)}; free space or fix the folder, "
                               f"{fix_the_file}, then {checkpoints.how_to_go_on(args)}", every_process=True)
                return EXIT_REFUSED_BY_SYSTEM
            outcome = f"saved {checkpoint_path} after iteration {done}"
        else:
            outcome = checkpoints.kept() if finite else f"the weights are not finite, so {checkpoints.kept()}"
        log.info(f"training stopped by a data error: {outcome}; {fix_the_file}, then {checkpoints.how_to_go_on(args)}")
        return EXIT_BAD_INPUT
    except OSError as error:  # a full disk at a checkpoint or a log write: the last checkpoint is whole
        if error.filename is None:
            raise
        log_error(ctx, f"error: {refused_file_operation(error)}; free space or fix the folder, then "
                       f"{checkpoints.how_to_go_on(args)}", every_process=True)
        return EXIT_REFUSED_BY_SYSTEM
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        advice = ("lower --batch_size or --size, then run again" if checkpoints.last_saved is None else
                  f"free the memory, then {checkpoints.how_to_go_on(args)}; or "
                  "start again with a lower --batch_size or --size")
        log_error(ctx, f"error: out of memory ({first_line(error)}); {advice}", every_process=True)
        return EXIT_REFUSED_BY_SYSTEM
    return None


def evaluate_at_the_end(args: argparse.Namespace, ctx: DistributedContext, log: RunLog, start_iter: int,
                        max_iter: int, checkpoints: RunCheckpoints, evaluation: RunEvaluation,
                        final_save: StopSignal) -> int:
    """The finished run's evaluation (taken as interrupted when ``final_save`` received a signal), its best
    checkpoint kept if it scores highest, the run's best evaluation and the evaluation's row logged; returns the exit
    code, once what stopped the evaluation (a data error, Ctrl-C or SIGTERM, a refused file operation, no memory) and
    how to evaluate the saved checkpoint are printed."""
    checkpoint_path = checkpoints.path
    command = evaluation_command(args, checkpoint_path)
    evaluate_later = f"evaluate it with: {shlex.join(command)}"
    try:
        with termination_as_interrupt():
            if final_save.received:
                raise KeyboardInterrupt
            metrics = evaluation.metrics()
    except DataError as error:
        log_error(ctx, f"error: {original_message(error)}", every_process=True)
        log.info(f"training is complete and saved in {checkpoint_path}, but its evaluation stopped: fix or replace the "
                 f"file, then {evaluate_later}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        log.info(f"evaluation interrupted; training is complete and saved in {checkpoint_path}: {evaluate_later}")
        return EXIT_INTERRUPTED
    except OSError as error:  # reported on stderr alone: a full disk would refuse log.txt too
        if error.filename is None:
            raise
        log_error(ctx, f"error: {refused_file_operation(error)}; training is complete and saved in {checkpoint_path}, "
                       f"but its evaluation stopped: free space or fix the folder, then {evaluate_later}",
                  every_process=True)
        return EXIT_REFUSED_BY_SYSTEM
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        then = (f"evaluate it with fewer images per batch: "
                f"{shlex.join(command + ['--batch_size', str(args.batch_size // 2)])}" if args.batch_size > 1
                else f"free the memory, then {evaluate_later}")  # one image per batch already: no fewer to give
        log_error(ctx, f"error: out of memory ({first_line(error)}); training is complete and saved in "
                       f"{checkpoint_path}, but its evaluation stopped: {then}", every_process=True)
        return EXIT_REFUSED_BY_SYSTEM
    try:
        checkpoints.keep_if_best(max_iter, metrics)
    except OSError as error:
        if error.filename is None:
            raise
        log_error(ctx, f"error: {refused_file_operation(error)}; training is complete and saved in {checkpoint_path}, "
                       f"and its final evaluation, which scored higher than the earlier ones, is in its log: free "
                       f"space or fix the folder, then {how_to_continue(args, checkpoint_path)} to evaluate it again "
                       f"and save the best checkpoint", every_process=True)
        return EXIT_REFUSED_BY_SYSTEM
    checkpoints.log_best()
    if metrics is not None:
        if start_iter == max_iter:  # a finished run resumed: this evaluation replaces its earlier final one
            log.rewind(max_iter, redo_evaluation=True)
        log.metrics("eval", {"iteration": max_iter} | {k: metrics[k] for k in ("mAP", "AP50", "AP75") if k in metrics})
    return 0


if __name__ == "__main__":
    warnings.showwarning = one_line_data_warnings(warnings.showwarning)
    cli_parser = get_args_parser()
    sys.exit(main(cli_parser.parse_args(), cli_parser))
