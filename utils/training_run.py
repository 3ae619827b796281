"""A main.py training run from its setup to its end: the run's lock, the training loop of ``utils/engine.py`` fed by
the run's checkpoints (:class:`RunCheckpoints`) and evaluations (:class:`RunEvaluation`), each way training can stop
turned into one line and an exit code (:func:`train_to_the_end`), and the final evaluation
(:func:`evaluate_at_the_end`)."""
from __future__ import annotations

import argparse
import os
import shlex
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

import torch

from data import DataError, build_loader
from data.errors import ImageSizeError, original_message
from utils.best_checkpoint import SCORE, BestEvaluation, best_checkpoint_path
from utils.checkpoint import (
    FORMAT,
    capture_rng_state,
    checkpoint_name,
    load_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
    set_aside_earlier_checkpoint,
)
from utils.distributed import (
    LOST_PROCESS,
    DistributedContext,
    StoppedByAnotherProcess,
    any_process,
    broadcast_object,
    lost_another_process,
    refused_on_main,
    raise_if_any_process_failed,
    unwrap_model,
    wrap_model,
)
from utils.engine import (
    NonFiniteLossError,
    StopSignal,
    TrainingInterrupted,
    TrainSettings,
    assignment_line,
    non_finite_weights,
    termination_as_interrupt,
    train,
)
from utils.logging import RunLog
from utils.messages import counted, first_line
from utils.optim import warmup_cosine_lr
from utils.provenance import provenance_lines
from utils.run_evaluation import eval_folder, evaluate
from utils.run_exit import (
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_REFUSED_BY_SYSTEM,
    divergence_advice,
    evaluation_command,
    how_to_continue,
    how_to_evaluate,
    is_out_of_memory,
    log_error,
    outer_command,
    refused_file_advice,
    refused_file_operation,
    stopped_run_advice,
    worker_failure,
)
from utils.run_lock import exclusive_run
from utils.training_setup import (
    TrainingSetup,
    build_training,
    check_resumed_flags,
    check_output_folders,
    check_training_flags,
    load_initial_weights,
    resume_run,
    starting_weights,
)


class EvaluationDataError(DataError):
    """A data error met by an evaluation during training, after ``iteration`` completed iterations."""

    def __init__(self, message: str, iteration: int) -> None:
        super().__init__(message)
        self.iteration = iteration


class BatchCounter:
    """Iterates a training loader and counts the batches handed out. The loop asks for a batch only after finishing
    the previous iteration, so when loading one fails, ``delivered`` iterations of this run are complete."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self.delivered = 0

    def __iter__(self) -> Iterator:
        for batch in self.loader:
            yield batch
            self.delivered += 1


def run_training(args: argparse.Namespace, device: torch.device, ctx: DistributedContext,
                 init_state: dict | None = None, resume_state: dict | None = None, resumed_with: str = "",
                 sync_bn_from: str | None = None) -> int:
    """Train as ``args`` asks (``init_state``, ``resume_state``: the ``--init_from`` and ``--resume PATH``
    checkpoints, loaded; ``resumed_with``: the line, already printed, naming the flags ``--resume PATH`` (or the data
    flags ``--init_from``) took from its checkpoint; ``sync_bn_from``: that checkpoint when ``--sync_bn`` is one of
    them), while no other run on this machine writes the same checkpoint, best checkpoint or log folder; returns the
    exit code."""
    name = f"{args.name}.pth" if args.name else checkpoint_name(
        args.dataset, args.version, args.backbone, args.size, args.base_anchor_size, args.mutual_guide)
    checkpoint_path = Path(args.save_folder) / name
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / checkpoint_path.stem
    with ExitStack() as held:
        def check_folders_and_lock() -> None:  # rank 0 writes the files and holds the locks; every process stops
            check_output_folders(args, checkpoint_path, run_dir)  # found now, not at a save hours later
            held.enter_context(exclusive_run(checkpoint_path))
            # the best checkpoint's name is that of a run named <name>_best, whose checkpoint it would replace
            held.enter_context(exclusive_run(best_checkpoint_path(checkpoint_path), "a checkpoint",
                                             "this run would keep its best evaluation there; give this run "
                                             "another --name (or --save_folder)"))
            held.enter_context(exclusive_run(run_dir, "the log folder", "give this run another --run_dir (or --name)"))

        refused_on_main(check_folders_and_lock, ctx)
        return train_and_evaluate(args, device, ctx, checkpoint_path, run_dir, init_state, resume_state, resumed_with,
                                  sync_bn_from)


def folder_saved_in(resume_path: Path, save_folder: str, checkpoint_path: Path) -> Path | None:
    """The folder, other than the current one, that the run's relative ``save_folder`` was taken in when
    ``resume_path`` is that run's checkpoint there (``<folder>/<save_folder>/<checkpoint name>``); ``None`` otherwise
    (an absolute ``save_folder``, a copy of another name, the run's own file)."""
    folder = Path(os.path.normpath(save_folder))
    found = resume_path.resolve()
    if folder.is_absolute() or ".." in folder.parts or found.name != checkpoint_path.name:
        return None
    depth = 0 if folder == Path(".") else len(folder.parts)
    parent = found.parent
    if depth and parent.parts[-depth:] != folder.parts:
        return None
    base = Path(*parent.parts[:len(parent.parts) - depth])
    return None if base == Path.cwd().resolve() else base


def train_and_evaluate(args: argparse.Namespace, device: torch.device, ctx: DistributedContext, checkpoint_path: Path,
                       run_dir: Path, init_state: dict | None, resume_state: dict | None,
                       resumed_with: str = "", sync_bn_from: str | None = None) -> int:
    """:func:`run_training`'s work: the run whose checkpoint is ``checkpoint_path`` and log folder ``run_dir``."""
    backbone_weights = check_training_flags(args, device, ctx, sync_bn_from)
    resume_path = None if args.resume is None else Path(args.resume) if args.resume else checkpoint_path
    # another file than the run's own checkpoint (a fresh start, or --resume of a copy or an .earlier- one) never
    # overwrites the checkpoint at the run's path: it is set aside, as are logs of another run (continues_logs)
    continues_checkpoint = resume_path is not None and resume_path.resolve() == checkpoint_path.resolve()
    if resume_path is not None and resume_state is None:  # bare --resume: its checkpoint read before the data is
        resume_state = load_checkpoint(resume_path, source=(
            "--resume without PATH, which reads this run's checkpoint (named by --name, or by --dataset and the "
            "architecture flags): give the same flags as the run, or --resume PATH"))
    if resume_state is not None:
        check_resumed_flags(resume_path, resume_state, args, ctx, device)
    log = RunLog(run_dir, enabled=ctx.is_main, hold_lines=True)  # written once we know whose folder it is
    if resumed_with:
        log.record(resumed_with)
    saved_in = None if resume_path is None else folder_saved_in(resume_path, args.save_folder, checkpoint_path)
    if saved_in is not None:
        relative = [f"--save_folder {args.save_folder}"] + [f"--run_dir {run_dir}"] * (not run_dir.is_absolute())
        log.info(f"note: {resume_path} was saved by this run in {saved_in}, but its relative folders "
                 f"({', '.join(relative)}) are taken in the current folder, {Path.cwd()}: it continues there, apart "
                 f"from its files; run the command from {saved_in} to continue them")
    checkpoint_state = resume_state if resume_state is not None else init_state
    class_order = None if checkpoint_state is None else checkpoint_state["class_names"]  # the same classes as trained
    setup = build_training(args, device, ctx, log, class_order, backbone_weights, resume_path)
    if checkpoint_state is None:  # --init_from and --resume name their checkpoint
        log.info(starting_weights(args, backbone_weights))
    del backbone_weights  # copied into the model: its 45-58 MB are not held for the whole run
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
        f"training {checkpoint_path.name} on {counted(len(setup.dataset), 'image')} "
        f"({counted(setup.dataset.num_classes, 'class')}) on {device} x{ctx.world_size}: "
        f"{counted(setup.max_iter, 'iteration')} ({setup.epoch_size} per epoch), batch "
        f"{args.batch_size} per process, run folder {run_dir}, evaluations in {eval_folder(args, args.name)}"
    )
    log.info(assignment_line(args.mutual_guide, args.mutual_guide_from))
    if ctx.is_main:  # what reproduces the attempt: in log.txt alone, the lines are long
        for line in provenance_lines(setup.config, device):
            log.record(line)
    if ctx.is_distributed:
        log.info(f"global batch {args.batch_size * ctx.world_size}: the losses are normalised by its positive anchors "
                 f"(summed over the {ctx.world_size} processes), as one process holding the whole batch")
    last_saved = start_iter if continues_checkpoint else None  # the iteration the file at checkpoint_path holds
    checkpoints = RunCheckpoints(checkpoint_path, setup, train_model, ctx, log, last_saved)
    evaluation = RunEvaluation(args, device, ctx, log, setup, train_model, checkpoints)
    # after every process has read --resume / --init_from (wrap_model synchronises them)
    if not continues_logs and (earlier_logs := log.begin_new_run(setup.config["run_id"])):
        log.info(f"an earlier run's logs were in {run_dir}: moved to {earlier_logs}")
    recorded_best = None if resume_state is None else resume_state.get("best_checkpoint")
    checkpoints.prepare(continues_checkpoint, args.eval_interval,
                        Path(recorded_best) if isinstance(recorded_best, str) else None)
    # Ctrl-C or SIGTERM during the final save: the evaluation after it is skipped
    final_save = StopSignal("the run stops once its final checkpoint is saved, before the evaluation" if ctx.is_main
                            else None)
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
                 log: RunLog, last_saved: int | None) -> None:
        self.path = path
        self.setup = setup
        self.train_model = train_model
        self.ctx = ctx
        self.log = log
        self.last_saved = last_saved
        self.best = BestEvaluation(best_checkpoint_path(path))  # read on rank 0 by prepare, before training starts
        self.keeps_best = False

    def prepare(self, continues_checkpoint: bool, eval_interval: int, recorded_best: Path | None = None) -> None:
        """Before training: set aside another run's checkpoint (unless the run continues the file at ``path``,
        ``continues_checkpoint``) and best checkpoint, read this run's best evaluation (beside ``path``, or at
        ``recorded_best``, where the resumed checkpoint says it is: saved under another ``--name`` or
        ``--save_folder``), decide whether the run keeps a best checkpoint (it evaluates every ``eval_interval``
        epochs, or has one) and remove partial files."""
        log = self.log
        if self.ctx.is_main:  # the files are rank 0's to read, move and remove
            if not continues_checkpoint and (earlier := set_aside_earlier_checkpoint(self.path)):
                log.info(f"an earlier run's checkpoint was at {self.path}: kept as {earlier}")
            # a resumed run goes on comparing with its best evaluation; another run's best is set aside
            run_id = self.setup.config["run_id"]
            self.best = BestEvaluation.of_run(self.best.path, run_id)
            if self.best.score is None and (earlier_best := set_aside_earlier_checkpoint(self.best.path)):
                log.info(f"an earlier run's best checkpoint was at {self.best.path}: kept as {earlier_best}")
            if recorded_best is not None and recorded_best != self.best.path:
                self.best.take_if_better(BestEvaluation.of_run(recorded_best, run_id))
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
        """At the end of the run: its best evaluation and where it is saved, when the run keeps one; of a run switched
        to Mutual Guidance after iteration N (``--mutual_guide_from``), whether it precedes the switch (its weights
        then trained with IoU assignment alone, in a checkpoint named ``..._MG_best.pth``)."""
        if self.keeps_best and self.best.iteration is not None:
            switch = self.setup.config.get("mutual_guide_from") if self.setup.config.get("mutual_guide") else None
            before = (f"; it precedes the switch to Mutual Guidance (after iteration {switch}): its weights were "
                      "trained with IoU assignment alone") if switch and self.best.iteration <= switch else ""
            self.log.info(f"best evaluation: {SCORE} {self.best.score:.4f} after iteration {self.best.iteration}, "
                          f"saved in {self.best.saved_in}{before}")

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
        """The training state after ``done`` iterations into the file at ``path``, with where the run's best
        checkpoint is, when it has one (a resume under another ``--name`` goes on comparing with it)."""
        setup = self.setup
        best = {} if self.best.saved_in is None else {"best_checkpoint": str(self.best.saved_in)}
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
            } | best,
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
    """Evaluations on the test split of the weights being trained, ``train_model``, written to the run's evaluation
    folder ``out_dir`` (``--eval_dir``, else named after the run's ``--name`` when it has one: :func:`eval_folder`);
    their results name the run's checkpoint and config."""

    def __init__(self, args: argparse.Namespace, device: torch.device, ctx: DistributedContext, log: RunLog,
                 setup: TrainingSetup, train_model: torch.nn.Module, checkpoints: RunCheckpoints) -> None:
        self.args = args
        self.device = device
        self.ctx = ctx
        self.log = log
        self.setup = setup
        self.train_model = train_model
        self.checkpoints = checkpoints
        self.run_info = {"checkpoint": str(checkpoints.path), "config": setup.config}
        self.out_dir = eval_folder(args, args.name)

    def metrics(self, after: int | None = None) -> dict | None:
        """Evaluate the weights as they are now (``after`` that many iterations, during training): rank 0's metrics,
        ``None`` on the other processes."""
        return evaluate(self.train_model, self.setup.test_dataset, self.args, self.setup.priors, self.device, self.ctx,
                        self.setup.amp_dtype, self.log, self.run_info, self.out_dir, after)

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
    stopped training (a NaN/inf loss, Ctrl-C or SIGTERM, a second one, which stops at once, a data error, a refused
    file operation, no memory) and how to go on are printed (after a data error, the iterations done are saved first
    when the weights are finite)."""
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
        log_error(ctx, f"error: {error} (lr {lr:.3g}); {kept}. {divergence_advice(args, amp_dtype)}", log=log)
        return EXIT_DIVERGED
    except TrainingInterrupted as stop:
        log.info(f"{stop}; checkpoint {checkpoint_path} saved, {how_to_continue(args, checkpoint_path)}")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM (StopSignal): during a step, an evaluation or a save
        log.info(f"interrupted again: stopped at once, without saving; {checkpoints.kept()}; "
                 f"{checkpoints.how_to_go_on(args)}")
        return EXIT_INTERRUPTED
    except DataError as error:  # an image that fails to load (found by --check_data before training)
        log_error(ctx, f"error: {original_message(error)}", every_process=True, log=log)
        done = error.iteration if isinstance(error, EvaluationDataError) else start_iter + loader.delivered
        finite = not any_process(bool(non_finite_weights(setup.model)), ctx)  # as every process sees it
        fix_the_file = "fix or replace the file (--check_data scans every image)"
        # a training image of another size than its annotation's: correcting the annotation changes the training set
        annotated_size = any_process(isinstance(error, ImageSizeError), ctx)
        if done > start_iter and finite:
            try:
                checkpoints.save(done)
            except OSError as refused:  # the image and a full disk: both to mend before going on
                if refused.filename is None:
                    raise
                log_error(ctx, f"error: {refused_file_operation(refused)}; {refused_file_advice(refused)}, "
                               f"{fix_the_file}, then {checkpoints.how_to_go_on(args)}", every_process=True, log=log)
                return EXIT_REFUSED_BY_SYSTEM
            outcome = f"saved {checkpoint_path} after iteration {done}"
        else:
            outcome = checkpoints.kept() if finite else f"the weights are not finite, so {checkpoints.kept()}"
        go_on = checkpoints.how_to_go_on(args)
        if annotated_size and checkpoints.last_saved is not None:  # only the image's fix keeps --resume possible
            fix_the_file = "give the image the size its annotation says (--check_data scans every image)"
            go_on += ("; correcting the annotation instead changes the training set, which --resume refuses: then run "
                      "the same command again")
        log.info(f"training stopped by a data error: {outcome}; {fix_the_file}, then {go_on}")
        return EXIT_BAD_INPUT
    except (OSError, RuntimeError, MemoryError) as error:
        if failure := worker_failure(error, args.workers):  # killed, out of shared memory: the last checkpoint is whole
            go_on = "run again" if checkpoints.last_saved is None else checkpoints.how_to_go_on(args)  # other flags
            log_error(ctx, f"error: {failure}, then {go_on}", every_process=True, log=log)
            return EXIT_REFUSED_BY_SYSTEM
        if isinstance(error, OSError):  # a full disk at a checkpoint or a log write: the last checkpoint is whole
            if error.filename is None:
                raise
            log_error(ctx, f"error: {refused_file_operation(error)}; {refused_file_advice(error)}, then "
                           f"{checkpoints.how_to_go_on(args)}", every_process=True, log=log)
            return EXIT_REFUSED_BY_SYSTEM
        if lost_another_process(error):  # its own line, if any, or torchrun's summary says why
            log_error(ctx, f"stopped: {LOST_PROCESS}; {checkpoints.kept()}; {checkpoints.how_to_go_on(args)}",
                      every_process=True)
            return EXIT_REFUSED_BY_SYSTEM
        if not is_out_of_memory(error):
            raise
        advice = ("lower --batch_size or --size, then run again" if checkpoints.last_saved is None else
                  f"free the memory, then {checkpoints.how_to_go_on(args)}; or "
                  "start again with a lower --batch_size or --size")
        log_error(ctx, f"error: out of memory ({first_line(error)}); {advice}", every_process=True, log=log)
        return EXIT_REFUSED_BY_SYSTEM
    return None


def evaluate_at_the_end(args: argparse.Namespace, ctx: DistributedContext, log: RunLog, start_iter: int,
                        max_iter: int, checkpoints: RunCheckpoints, evaluation: RunEvaluation,
                        final_save: StopSignal) -> int:
    """The finished run's evaluation (taken as interrupted when ``final_save`` received a signal), its best
    checkpoint kept if it scores highest, the run's best evaluation and the evaluation's row logged; returns the exit
    code, once what stopped the evaluation or the save of its best checkpoint (a data error, Ctrl-C or SIGTERM, a
    refused file operation, no memory) and how to evaluate the saved checkpoint are printed."""
    checkpoint_path = checkpoints.path
    evaluate_later = how_to_evaluate(args, checkpoint_path)
    try:
        with termination_as_interrupt():
            if final_save.received:
                raise KeyboardInterrupt
            metrics = evaluation.metrics()
    except DataError as error:
        log_error(ctx, f"error: {original_message(error)}", every_process=True, log=log)
        log.info(f"training is complete and saved in {checkpoint_path}, but its evaluation stopped: fix or replace the "
                 f"file, then {evaluate_later}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        log.info(f"evaluation interrupted; training is complete and saved in {checkpoint_path}: {evaluate_later}")
        return EXIT_INTERRUPTED
    except (OSError, RuntimeError, MemoryError) as error:  # in log.txt too where it can be written
        if failure := worker_failure(error, args.workers):
            log_error(ctx, f"error: {failure}; training is complete and saved in {checkpoint_path}, but its evaluation "
                           f"stopped: {evaluate_later}", every_process=True, log=log)
            return EXIT_REFUSED_BY_SYSTEM
        if isinstance(error, OSError):  # a full disk refuses log.txt's line
            if error.filename is None:
                raise
            log_error(ctx, f"error: {refused_file_operation(error)}; training is complete and saved in "
                           f"{checkpoint_path}, but its evaluation stopped: {refused_file_advice(error)}, then "
                           f"{evaluate_later}", every_process=True, log=log)
            return EXIT_REFUSED_BY_SYSTEM
        if not is_out_of_memory(error):
            raise
        # one image per batch already, or inside a program whose command continues the run: no fewer to give
        fewer = evaluation_command(args, checkpoint_path) + ["--batch_size", str(args.batch_size // 2)]
        then = (f"evaluate it with fewer images per batch: {shlex.join(fewer)}"
                if args.batch_size > 1 and outer_command() is None else f"free the memory, then {evaluate_later}")
        log_error(ctx, f"error: out of memory ({first_line(error)}); training is complete and saved in "
                       f"{checkpoint_path}, but its evaluation stopped: {then}", every_process=True, log=log)
        return EXIT_REFUSED_BY_SYSTEM
    try:
        with termination_as_interrupt():  # a scheduler's SIGTERM while the best checkpoint is written: as Ctrl-C
            checkpoints.keep_if_best(max_iter, metrics)
    except KeyboardInterrupt:
        log.info(f"interrupted after the final evaluation, before its row and best checkpoint were saved; training is "
                 f"complete and saved in {checkpoint_path}: {how_to_continue(args, checkpoint_path)} to evaluate it "
                 "again")
        return EXIT_INTERRUPTED
    except OSError as error:
        if error.filename is None:
            raise
        log_error(ctx, f"error: {refused_file_operation(error)}; training is complete and saved in {checkpoint_path}, "
                       f"and its final evaluation, which scored higher than the earlier ones, is in its log: "
                       f"{refused_file_advice(error)}, then {how_to_continue(args, checkpoint_path)} to evaluate it "
                       f"again and save the best checkpoint", every_process=True, log=log)
        return EXIT_REFUSED_BY_SYSTEM
    checkpoints.log_best()
    if metrics is not None:
        if start_iter == max_iter:  # a finished run resumed: this evaluation replaces its earlier final one
            log.rewind(max_iter, redo_evaluation=True)
        log.metrics("eval", {"iteration": max_iter} | {k: metrics[k] for k in ("mAP", "AP50", "AP75") if k in metrics})
    return 0
