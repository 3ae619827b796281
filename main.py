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
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from types import FrameType
from collections.abc import Sequence
from typing import Any, Callable, NoReturn

from utils.environment import environment_problem  # the standard library alone: imported before torch

# how main.py's messages name the signals that stop it
STOP_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


def stop_before_the_run(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGINT/SIGTERM while main.py, run as a script, loads its modules (seconds: torch, torchvision, the project's)
    or reads its flags: one line (from the first process alone under torchrun) and exit code 130, where Ctrl-C
    printed a KeyboardInterrupt traceback from inside an import and SIGTERM ended the process without a word.
    The process ends at once: an exception raised inside an import can be swallowed by a library's broad ``except``
    there, and the run would go on with a half-imported module (numpy's, say). :func:`main` handles both itself."""
    if os.environ.get("RANK", "0") == "0":
        print(f"interrupted ({STOP_SIGNAL_NAMES[signum]}) before the run started (main.py was loading "
              "its modules); run the same command again", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)  # utils.run_exit.EXIT_INTERRUPTED, which cannot be imported before torch


def stop_signals_before_the_run() -> dict[int, Any]:
    """Run as a script, before the imports, which take seconds: SIGINT/SIGTERM end main.py with one line
    (:func:`stop_before_the_run`) until :func:`main` takes them over, but for a signal the process was started
    ignoring (Ctrl-C in a shell script's background job), which stays ignored. Returns the handlers to give back."""
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNAL_NAMES}
    for signum, handler in handlers.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, stop_before_the_run)
    return handlers


def refuse_unfit_environment() -> None:
    """Run as a script, before torch is imported: exit code 2 with one line (from the first process alone under
    torchrun) naming what the environment lacks and the pip command (:func:`utils.environment.environment_problem`),
    where an old torch failed with a traceback at the first forward pass."""
    problem = environment_problem()
    if problem is None:
        return
    if os.environ.get("RANK", "0") == "0":
        print(problem, file=sys.stderr)
    sys.exit(2)  # utils.run_exit.EXIT_BAD_INPUT, which cannot be imported before torch


if __name__ == "__main__":
    startup_handlers = stop_signals_before_the_run()
    refuse_unfit_environment()

import torch  # noqa: E402

from data import DataError, check_dataset, reads_class_list  # noqa: E402
from data.errors import (  # noqa: E402
    DatasetNotFoundError,
    one_line_data_warnings,
    original_message,
    say_unnamed_image_warnings,
)
from data.loader import single_thread_opencv  # noqa: E402
from data.transforms import MIN_BOX_SIDE  # noqa: E402
from models import BACKBONES, NECKS, PretrainedWeightsError  # noqa: E402
from utils.checkpoint import (  # noqa: E402
    CheckpointError,
    check_architecture,
    check_compatible,
    check_init_architecture,
    check_trained_architecture,
    check_writable_folder,
    load_checkpoint,
    other_size_note,
    size_suffix_of,
)
from utils.demo import DEFAULT_SCORE_THRESH, add_use_arguments, default_demo_output, run_demo  # noqa: E402
from utils.distributed import (  # noqa: E402
    LOST_PROCESS,
    DistributedContext,
    StoppedByAnotherProcess,
    cleanup_distributed,
    init_distributed,
    joined_group,
    launch_context,
    local_rank_from_env,
    local_world_size_from_env,
    lost_another_process,
    refused_on_main,
    resolve_device,
    say_start_refusal,
)
from utils.engine import Terminated, termination_as_interrupt  # noqa: E402
from utils.export import export_onnx  # noqa: E402
from utils.inference import (  # noqa: E402
    EvaluationSummary,
    evaluate_results_file,
    format_metrics,
    results_to_score,
    summary_beside,
)
from utils.logging import RunLog  # noqa: E402
from utils.messages import counted, escape_unencodable_output, first_line  # noqa: E402
from utils.run_data import (  # noqa: E402
    check_recorded_shapes_set,
    check_splits,
    check_test_split,
    make_dataset,
    other_classes_advice,
)
from utils.run_evaluation import eval_folder, evaluate, evaluated_run_name  # noqa: E402
from utils.run_exit import (  # noqa: E402
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_REFUSED_BY_SYSTEM,
    is_out_of_memory,
    log_error,
    refused_file_advice,
    refused_file_operation,
    worker_failure,
)
from utils.run_flags import (  # noqa: E402
    AMP_CHOICES,
    DATASETS,
    DATASET_DEFAULTS,
    DEFAULT_NMS_THRESH,
    HOME_PATH_FLAGS,
    amp_dtype_for,
    check_flag_combinations,
    check_flag_values,
    check_no_empty_values,
    check_recorded_class_file,
    evaluated_class_order,
    expand_home,
    fill_dataset_defaults,
    requested_architecture,
    take_architecture_from_checkpoint,
    take_dataset_from_checkpoint,
    take_dataset_from_summary,
    take_evaluation_settings_from_checkpoint,
    take_nms_thresh_from_checkpoint,
    take_run_from_checkpoint,
)
from utils.trained_model import detector_from_state  # noqa: E402
from utils.training_run import run_training  # noqa: E402

# a negative number as float() writes it: argparse's own pattern knows -1 and -.5 alone, and reads -1e-3 or -inf as
# a flag
NEGATIVE_NUMBER = re.compile(r"-((\d+\.?\d*|\.\d+)(e[-+]?\d+)?|inf|infinity|nan)\Z", re.IGNORECASE)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the flag (exit code 2), without the long usage block, and
    that reads any negative number (-1e-3, -inf) as a flag's value, where argparse saw an unknown flag in it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER  # argparse's test of "a negative number, not a flag"

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)  # for error()'s hint
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        hint = self._dash_value_hint(message)
        say_start_refusal(f"{self.prog}: error: {message}{hint} (see --help)")  # under torchrun: rank 0 alone
        self.exit(EXIT_BAD_INPUT)

    def _dash_value_hint(self, message: str) -> str:
        """For "argument --flag: expected ... argument" of a path flag where the word after it starts with ``-`` (a
        path such as ``-data``, which argparse reads as a flag): how to give it; "" otherwise."""
        match = re.fullmatch(r"argument (--\w+)(?:/\S+)?: expected (?:one|at least one) argument", message)
        given = getattr(self, "_given", [])
        if match is None or match[1][2:] not in HOME_PATH_FLAGS or match[1] not in given:
            return ""
        position = given.index(match[1]) + 1
        value = given[position] if position < len(given) else ""
        if not value.startswith("-") or value.startswith("--"):
            return ""
        return f"; {value} starts with '-', so it is read as a flag: write {match[1]}={value} (or ./{value} for a path)"


def get_args_parser() -> argparse.ArgumentParser:
    """The CLI's flags; a default of None means "the dataset's default" (:data:`DATASET_DEFAULTS`) or "the
    checkpoint's", settled in :func:`main` (:func:`fill_dataset_defaults` and the checkpoint readers)."""
    parser = OneLineErrorParser(
        "main.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--version", type=str.lower, choices=tuple(NECKS), default=None,
                       help="detector (default: pafpn; fssd for shapes; read from --trained_model)")
    model.add_argument("--backbone", type=str.lower, choices=tuple(BACKBONES), default=None,
                       help="backbone (default: vgg16; resnet18 for shapes; read from --trained_model)")
    model.add_argument("--size", type=int, default=None,
                       help="square input size, a multiple of 64 >= 128 (default: 320; 192 for shapes; read from "
                            "--trained_model and --init_from, which take another of as many pyramid levels: 128-448, "
                            "or 512 and above)")
    model.add_argument("--base_anchor_size", type=float, default=None,
                       help="anchor side at stride 8 in pixels (default: 24, or the checkpoint's with --trained_model, "
                            "which refuses another, and --init_from)")
    starting_weights = model.add_mutually_exclusive_group()
    starting_weights.add_argument("--pretrained", type=str, default=None, metavar="PATH",
                                  help="ImageNet backbone state dict to start from (default: torchvision's ImageNet "
                                       "weights for voc/coco/custom, none for shapes)")
    starting_weights.add_argument("--no_pretrained", "--no-pretrained", dest="pretrained", action="store_false",
                                  default=None,  # unset (None) as --pretrained
                                  help="start the backbone from random weights")
    model.add_argument("--sync_bn", action="store_true",
                       help="SyncBatchNorm across GPUs under torchrun with several processes (CUDA only)")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", type=str.lower, choices=DATASETS, default=None,
                      help="voc, coco, shapes (synthetic, generated offline) or custom (--data_root: VOC or COCO "
                           "layout); case-insensitive (default: voc; with --trained_model or --init_from, the "
                           "checkpoint's, with its --data_root)")
    data.add_argument("--data_root", type=str, default=None,
                      help="dataset folder (default: the repository's datasets/VOCdevkit, datasets/coco2017, "
                           "datasets/shapes, wherever main.py is run from)")
    data.add_argument("--classes", type=str, default=None,
                      help="VOC and custom data: comma-separated class names or a file with one name per line "
                           "(default: voc's 20; a COCO-layout folder's json; a VOC-layout custom folder needs it); "
                           "COCO layouts (coco too) with --skip_unknown_classes: some of the json's categories")
    data.add_argument("--skip_unknown_classes", action="store_true",
                      help="leave out the objects whose class is not in --classes, or not one of the model's "
                           "(--trained_model, --resume, the training split's for the test split), counted in one "
                           "warning, instead of stopping with an error; e.g. to train on a few of the VOC or COCO "
                           "classes, or to score a person detector on COCO val2017")
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
    schedule.add_argument("--batch_size", type=int, default=None,
                          help="images per iteration per process (default: 32; with --trained_model, the checkpoint's)")
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
                          help="auto, cpu, cuda or cuda:N; case-insensitive (default: auto; under torchrun, cuda or "
                               "auto give each process the GPU of its LOCAL_RANK)")
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
                     help="the run's name: its checkpoint is <save_folder>/NAME.pth, its logs runs/NAME/ and its "
                          "evaluations eval/<DATASET>/NAME/ (default: from dataset and architecture, e.g. "
                          "VOC_pafpn_vgg16_size320_anchor24.0_MG, evaluated in eval/VOC/); give each "
                          "experiment its own, e.g. per seed or learning rate; ASCII letters, digits and . _ - + = @")
    run.add_argument("--run_dir", type=str, default=None,
                     help="folder for log.txt and the metrics CSV/JSONL (default: runs/<run name>/)")
    run.add_argument("--init_from", type=str, default=None, metavar="PATH",
                     help="start from this checkpoint's model weights with a fresh optimizer and schedule (a fork; "
                          "--version/--backbone/--size/--base_anchor_size default to the checkpoint's: another size "
                          "of as many pyramid levels (128-448, or 512 and above) or anchor size fine-tunes it; without "
                          "--dataset its dataset, --data_root and classes; on other classes, each one it scores, by "
                          "name or VOC's name of a COCO one, keeps its classification weights, new ones start afresh)")
    run.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                     help="continue training exactly where a checkpoint stopped (default PATH: this run's checkpoint, "
                          "found from the run's flags); a PATH given also supplies every run flag not given (dataset, "
                          "data, architecture, schedule, precision, --name, --save_folder, --run_dir, the intervals, "
                          "--eval_dir, --nms_thresh)")
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
                     help="evaluate this checkpoint only (no training) and print mAP/AP50/AP75; with --size S, at "
                          "another input size of as many pyramid levels (128-448, or 512 and above), into an "
                          "evaluation folder ending in _size<S>")
    run.add_argument("--eval_results", type=str, default=None, metavar="PATH",
                     help="score saved detections against the test split and exit: the folder an evaluation wrote "
                          "(see --eval_dir) of comp4_det_test_<class>.txt files (VOC layout) or a COCO results JSON; "
                          "without --dataset, the dataset of the summary.json beside them")
    run.add_argument("--eval_dir", type=str, default=None, metavar="PATH",
                     help="folder for the evaluation's detections and summary.json (default: eval/<DATASET>/NAME for "
                          "a run given --name NAME, and for --trained_model of its checkpoint, NAME_best of its best "
                          "checkpoint; else eval/<DATASET>; --trained_model at another --size S than the trained one "
                          "ends NAME in _size<S>, or writes to eval/<DATASET>/size<S> for a run without --name)")
    run.add_argument("--nms_thresh", type=float, default=None,
                     help=f"per-class NMS IoU threshold of evaluation, --demo and --export_nms (default: "
                          f"{DEFAULT_NMS_THRESH:g}; with --resume PATH and --trained_model, its run's)")
    run.add_argument("--cuda_graph", action="store_true",
                     help="evaluation and --demo on CUDA: replay the network and post-processing from one CUDA graph "
                          "per batch (fewer kernel launches, the same detections; CUDA only)")
    add_use_arguments(parser)
    return parser


def main(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Run what ``args`` asks for; returns the process exit code. ``parser``: the parser that read ``args`` (its
    defaults tell the flags given from those left out), :func:`get_args_parser`'s when not given."""
    escape_unencodable_output()
    ctx = launch_context()  # until the processes join their group: rank 0 alone prints what every process meets
    log = RunLog(None, enabled=ctx.is_main)
    # whether a training or evaluation run has started reading images, and the code it returned (None: raised)
    reads_images, code = False, None
    try:
        with termination_as_interrupt():  # SIGTERM as Ctrl-C until a mode takes it: one line, not a silent kill
            check_flags(args, parser or get_args_parser(), say_ignored=log.info)
            check_one_process_mode(args, ctx)
            device = resolve_device(args.device, local_rank_from_env(), local_world_size_from_env())
            if args.cuda_graph and device.type != "cuda":
                raise ValueError(f"--cuda_graph needs a CUDA device, but this run uses {device}; drop --cuda_graph")
            # the flags taken from --init_from's or --resume's checkpoint (a line); --data_root given, or taken below
            taken_from_checkpoint, data_root_given = "", args.data_root
            classes_typed = args.classes is not None  # not those of a checkpoint or summary.json, taken below
            init_state = load_checkpoint(args.init_from, source="--init_from") if args.init_from else None
            if init_state is not None:  # a given architecture flag that differs is refused now, before any data is read
                check_init_architecture(args.init_from, init_state["config"], requested_architecture(args))
                take_architecture_from_checkpoint(args, init_state["config"])
                if taken_data := take_dataset_from_checkpoint(args, init_state["config"], init_state["class_names"]):
                    check_recorded_shapes_set(args, data_root_given, args.init_from)
                    taken_from_checkpoint = (f"starting from {args.init_from}'s weights on the data it was trained on: "
                                             f"{taken_data}")
            resume_state = load_checkpoint(args.resume, source="--resume PATH") if args.resume else None
            sync_bn_from = None  # the checkpoint --sync_bn is taken from, named if this run cannot synchronise
            if resume_state is not None:  # an explicit PATH continues its run: its flags unless flags say otherwise
                sync_bn_given = args.sync_bn
                taken_flags = take_run_from_checkpoint(args, resume_state["config"], resume_state["class_names"])
                sync_bn_from = args.resume if args.sync_bn and not sync_bn_given else None
                check_architecture(args.resume, resume_state["config"], requested_architecture(args))  # before the data
                # not seed 0's set generated, then refused
                check_recorded_shapes_set(args, data_root_given, args.resume)
                if taken_flags:
                    taken_from_checkpoint = f"resuming {args.resume} with its run's flags not given here: {taken_flags}"
            trained_state, taken = None, ""
            if args.trained_model and reads_trained_config(args):
                trained_state = load_checkpoint(args.trained_model, source="--trained_model")
                # a given architecture flag that differs is refused now, not after the test split is read; another
                # --size of as many pyramid levels runs the same weights
                use = "run the demo" if args.demo else "export it" if args.export else "evaluate it"
                check_trained_architecture(args.trained_model, trained_state["config"], requested_architecture(args),
                                           use)
                if args.demo or args.export:  # run_demo / export_onnx build the model from this state
                    if args.demo or args.export_nms:  # their NMS as the run's evaluation, unless --nms_thresh is given
                        taken = take_nms_thresh_from_checkpoint(args, trained_state["config"])
                else:
                    taken = take_evaluation_settings_from_checkpoint(args, trained_state["config"])
                    check_recorded_shapes_set(args, data_root_given, args.trained_model)
            if args.eval_results:
                taken, summary = take_dataset_from_summary(args)  # read once, for the whole of --eval_results
                if not classes_typed:  # a class file it records may have been edited since
                    check_recorded_class_file(args, summary)
                check_recorded_shapes_set(args, data_root_given, str(summary_beside(Path(args.eval_results))))
            fill_dataset_defaults(args)
            if args.workers > 0:
                single_thread_opencv()  # before any DataLoader worker forks (see data/loader.py)
            # one input size: autotuned kernels hold for every step
            torch.backends.cudnn.benchmark = device.type == "cuda"
            ctx = init_distributed(device)
            log = RunLog(None, enabled=ctx.is_main)
            if taken_from_checkpoint:
                log.info(taken_from_checkpoint)  # now, before the data is read; the run's log.txt records it too
            if taken:
                source = "the evaluation that wrote them" if args.eval_results else "the checkpoint was trained"
                doing = "detecting" if args.demo else "exporting" if args.export else "evaluating"
                log.info(f"{doing} as {source}: {taken}")
            if (args.demo or args.export) and trained_state is not None and args.size is not None:
                if other_size := other_size_note(trained_state["config"], args.size):
                    log.info(f"{'detecting with' if args.demo else 'exporting'} {args.trained_model}{other_size}")
            if args.amp == "fp16" and device.type == "cpu":
                log.info("warning: --amp fp16 on the CPU runs many times slower than bf16 (few CPU kernels take fp16); "
                         "use --amp bf16, or bare --amp, which picks bf16 here")
            if args.check_data:
                return run_check_data(args, log)
            if args.eval_results:
                return run_eval_results(args, log, classes_typed, summary)
            if args.demo or args.export:
                return run_use(args, device, trained_state)
            reads_images = True
            code = (run_evaluation_only(args, device, ctx, trained_state) if args.trained_model else
                    run_training(args, device, ctx, init_state, resume_state, taken_from_checkpoint, sync_bn_from))
            return code
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
    except KeyboardInterrupt as stop:  # before a mode's own handling (training's first iteration, the evaluation)
        by = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
        log_error(ctx, f"interrupted ({by}) before it had anything to save; run the same command again")
        return EXIT_INTERRUPTED
    except (OSError, RuntimeError, MemoryError) as error:
        if failure := worker_failure(error, args.workers or 0):  # killed, out of shared memory or file descriptors
            log_error(ctx, f"error: {failure}, then run again", every_process=True)
            return EXIT_REFUSED_BY_SYSTEM
        if isinstance(error, OSError):  # a file operation the system refused: a full disk, a permission, a folder gone
            if error.filename is None:  # not about a file (a network error, say): the traceback tells more
                raise
            log_error(ctx, f"error: {refused_file_operation(error)}; {refused_file_advice(error)}, then run again",
                      every_process=True)
            return EXIT_REFUSED_BY_SYSTEM
        if lost_another_process(error):  # in a collective after training (the final evaluation) or with no training
            log_error(ctx, f"stopped: {LOST_PROCESS}", every_process=True)
            return EXIT_REFUSED_BY_SYSTEM
        if not is_out_of_memory(error):
            raise
        log_error(ctx, f"error: out of memory ({first_line(error)}); lower --batch_size or --size, then run again",
                  every_process=True)
        return EXIT_REFUSED_BY_SYSTEM
    finally:
        if reads_images:  # the images of a kind past those named, once read, also after the line of an error
            try:
                say_unnamed_image_warnings(ctx, together=code == 0)  # every process finished: their counts joined
            except OSError:  # a closed standard error, where log_error prints nothing either
                pass
        cleanup_distributed()


def check_flags(
    args: argparse.Namespace, parser: argparse.ArgumentParser, say_ignored: Callable[[str], None] | None = None
) -> None:
    """main.py's checks of the flags alone, before any file is read: empty values, flags that contradict each other,
    values out of their range (a ``ValueError`` naming the flag). ``parser``: the parser that read ``args``.
    ``say_ignored`` gets the line naming the flags given that the mode asked for does not read, before the values are
    checked (so a refused value does not hide it); not called when there are none. Programs that run :func:`main`
    (``benchmarks/assigners.py``) call it on their runs' flags before making any data."""
    check_no_empty_values(args)
    expand_home(args)
    ignored = check_flag_combinations(args, parser)
    if ignored and say_ignored is not None:
        say_ignored(ignored)
    check_flag_values(args)


def check_one_process_mode(args: argparse.Namespace, ctx: DistributedContext) -> None:
    """Refuse ``--demo``, ``--export`` and ``--eval_results`` under ``torchrun`` (``ctx``: :func:`launch_context`):
    they do not share their work among processes, so each would run it whole and write the same files."""
    mode = next((f"--{flag}" for flag in ("demo", "export", "eval_results") if getattr(args, flag)), None)
    if mode is not None and ctx.is_distributed:
        raise ValueError(f"{mode} runs in one process, not under torchrun (each of the {ctx.world_size} processes "
                         "would run it whole and write the same files): run it with python main.py")


def reads_trained_config(args: argparse.Namespace) -> bool:
    """Whether ``main`` reads ``--trained_model``'s checkpoint before the mode runs: always to evaluate; for
    ``--demo`` / ``--export`` only to check a given architecture flag or to take the NMS threshold of its run
    (``--nms_thresh`` not given, the demo or an export with NMS), and they then take the state read; otherwise they
    read it themselves, after checking their inputs and output."""
    if not (args.demo or args.export):
        return True
    takes_nms_thresh = (args.demo or args.export_nms) and args.nms_thresh is None
    return takes_nms_thresh or any(value is not None for value in requested_architecture(args).values())


def run_use(args: argparse.Namespace, device: torch.device, state: dict | None) -> int:
    """``--demo`` / ``--export`` with ``--trained_model`` (a given architecture flag already checked against the
    checkpoint by ``main``): the checkpoint alone defines the model and the classes. ``state``: the checkpoint when
    ``main`` read it (:func:`reads_trained_config`), else None (read by ``run_demo`` / ``export_onnx``)."""
    score_thresh = DEFAULT_SCORE_THRESH if args.score_thresh is None else args.score_thresh
    if args.export:
        export_onnx(args.trained_model, args.export_path, opset=args.opset, include_nms=args.export_nms,
                    score_thresh=score_thresh, nms_thresh=args.nms_thresh, state=state, size=args.size)
    else:
        try:
            with termination_as_interrupt():  # SIGTERM as Ctrl-C: one line, not a traceback or a silent kill
                run_demo(args.trained_model, args.demo, args.demo_output, device=device, batch_size=args.batch_size,
                         score_thresh=score_thresh, nms_thresh=args.nms_thresh, workers=args.workers,
                         cuda_graph=args.cuda_graph, state=state, size=args.size)
        except KeyboardInterrupt:
            _, suffix = size_suffix_of(args.trained_model, state, args.size)
            out_dir = args.demo_output or default_demo_output(args.trained_model, suffix)
            print(f"--demo interrupted: {out_dir} holds the drawn copies written so far, without this run's "
                  "detections.json; run the same command again (it replaces them)", file=sys.stderr)
            return EXIT_INTERRUPTED
    return 0


def run_check_data(args: argparse.Namespace, log: RunLog) -> int:
    """Decode every image of both splits and check every box, then what training checks of the two splits
    (:func:`check_splits`); the train split warns as training does of boxes below the augmentation's minimum side.
    Problems raise one DataError (exit code 2) listing those of both splits: the test split is checked even when the
    train split has problems, so one run reports everything to fix."""
    splits, problems = {}, []
    for split in ("train", "test"):
        try:
            train_classes = splits["train"].class_names if "train" in splits else None  # the test split's order
            splits[split] = make_dataset(args, split, args.size or DATASET_DEFAULTS[args.dataset]["size"], train=False,
                                         class_order=train_classes)
            for note in splits[split].notes:
                log.info(note)
            if split == "train":  # read unaugmented here: the warning training gives of boxes it rarely trains on
                splits[split].warn_rarely_trained_boxes(MIN_BOX_SIDE)
            report = check_dataset(splits[split], workers=args.workers)
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


def run_eval_results(args: argparse.Namespace, log: RunLog, classes_typed: bool, summary: EvaluationSummary) -> int:
    """``--eval_results PATH``: score saved detections against the test split, print the tables and the metrics;
    a COCO layout's per-class table in the class order of the evaluation that wrote them
    (:func:`evaluated_class_order`), which its numbers do not depend on. ``classes_typed``: whether ``--classes`` was
    given here, rather than taken from the ``summary.json`` beside the results (see :func:`make_dataset`);
    ``summary``: that file as :func:`take_dataset_from_summary` read it."""
    layout = {"voc": "voc", "shapes": "voc", "coco": "coco"}.get(args.dataset)  # custom: known once its split is read
    if layout is not None:  # results of the wrong kind refused before the test split is read
        results_to_score(args.eval_results, layout)
    # a COCO layout's labels in the evaluation's class order: its per-class table, whatever the test json's order
    dataset = make_dataset(args, "test", args.size or DATASET_DEFAULTS[args.dataset]["size"], train=False,
                           class_order=evaluated_class_order(summary), classes_typed=classes_typed)
    check_test_split(dataset, log, detecting=False)
    metrics = evaluate_results_file(args.eval_results, dataset, summary)
    log.info(f"{args.eval_results}: {format_metrics(metrics)}")
    return 0


def run_evaluation_only(args: argparse.Namespace, device: torch.device, ctx: DistributedContext,
                        state: dict) -> int:
    """``--trained_model``: evaluate the checkpoint ``state`` (read from that file) on the test split."""
    config = state["config"]
    requested = requested_architecture(args) | {"size": None}  # another size of as many levels: checked by main
    args.size = args.size or config["size"]  # the input side, in summary.json
    # a named run's: eval/<DATASET>/<name>; at another size than the trained one, <name or checkpoint file>_size<S>
    out_dir = eval_folder(args, evaluated_run_name(state, args.trained_model, args.size))
    refused_on_main(lambda: check_writable_folder(out_dir, "--eval_dir"), ctx)  # rank 0 writes the results
    classes_given = bool(args.classes)
    if not args.classes and reads_class_list(args.dataset, args.data_root):  # VOC XML names classes: as trained
        args.classes = tuple(state["class_names"])  # names, not a --classes string: "person, sitting" is one
    dataset = make_dataset(args, "test", args.size, train=False, class_order=state["class_names"])  # as trained
    check_compatible(args.trained_model, config, state["class_names"], requested, dataset.class_names,
                     other_classes_advice(dataset, state["class_names"], "--trained_model", classes_given,
                                          args.trained_model))
    log = RunLog(None, enabled=ctx.is_main)
    check_test_split(dataset, log)
    trained = detector_from_state(state, args.trained_model, device, args.size)
    log.info(f"evaluating {args.trained_model} (iteration {state['iteration']}/{state['max_iter']})"
             f"{other_size_note(config, args.size)} on {counted(len(dataset), 'image')}, results to {out_dir}")
    run_info = {"checkpoint": str(args.trained_model), "config": config}
    try:
        with termination_as_interrupt():  # SIGTERM as Ctrl-C: one line, not a traceback or a silent kill
            evaluate(trained.model, dataset, args, trained.priors, device, ctx, amp_dtype_for(args.amp, device), log,
                     run_info, out_dir)
    except DataError as error:  # an image of this process's shard (each process says which), or another's
        log_error(ctx, f"error: {original_message(error)}", every_process=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        log.info(f"evaluation of {args.trained_model} interrupted before its results were written; run the same "
                 "command again")
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    warnings.showwarning = one_line_data_warnings(warnings.showwarning)
    cli_parser = get_args_parser()
    cli_args = cli_parser.parse_args()
    for stop_signal, handler in startup_handlers.items():  # main() handles them from here on
        signal.signal(stop_signal, handler)
    sys.exit(main(cli_args, cli_parser))
