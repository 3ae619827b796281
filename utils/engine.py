"""The training loop of ``main.py`` and how it stops: the NaN/inf guard, Ctrl-C and SIGTERM.

The run is counted in iterations (facts §6); its batches come from ``data.loader.build_loader(train=True)``, a pure
function of ``(seed, iteration)``, so a run resumed at iteration ``k`` sees exactly the batches the uninterrupted run
saw. Each iteration of :func:`train` sets the learning rate (``_schedule``), takes a step (``_train_step``), feeds the
NaN/inf guard (:class:`NonFiniteGuard`), counts toward its log interval (``_LogIntervals``, which writes the ``train``
rows and progress lines) and runs the saves, evaluations and signal stop due after it (``_IterationHooks``).
"""
from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Callable, Iterable, Iterator, NoReturn

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.errors import DataError, data_error_elsewhere
from utils.distributed import (
    DistributedContext,
    all_reduce_max,
    all_reduce_mean,
    all_reduce_sum,
    any_process,
    raise_if_any_process_failed,
    unwrap_model,
)
from utils.checkpoint import non_finite_entries
from utils.logging import RunLog
from utils.messages import counted, exact_number, iteration_span, preview_names
from utils.loss.stats import mean_over_rows, stats_from_sums, summable_stats
from utils.optim import set_lr, warmup_cosine_lr
from utils.progress import clock, progress_bar


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; ``iteration`` is the first (0-based) iteration where it did. The message
    counts from 1, as the logs and the checkpoints do (iteration k is the k-th, after which k are done)."""

    def __init__(self, iteration: int, message: str | None = None) -> None:
        super().__init__(message or f"the loss became NaN/inf at iteration {iteration + 1}")
        self.iteration = iteration


class NonFiniteWeightsError(NonFiniteLossError):
    """The weights hold NaN or inf after ``done`` completed iterations although every loss was finite: a gradient,
    the update or a BatchNorm running variance (a buffer, updated by the forward pass, that the training loss does
    not read) overflowed float32; under fp16 the GradScaler skips a step of overflowing gradients. ``names`` are the
    tensors."""

    def __init__(self, done: int, names: list[str]) -> None:
        super().__init__(done - 1, f"the weights hold NaN/inf after iteration {done} although every loss was finite "
                                   f"({preview_names(names, 3)}): a gradient, the update or a BatchNorm running "
                                   "statistic overflowed float32")
        self.names = names


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM stopped training after ``iteration`` completed iterations (a checkpoint was saved)."""

    def __init__(self, iteration: int, signal_name: str) -> None:
        super().__init__(f"{signal_name} received: stopped after iteration {iteration}")
        self.iteration = iteration
        self.signal_name = signal_name


class NonFiniteGuard:
    """Records on the device the first iteration whose loss is not finite, and the first after which the model's
    floating-point buffers (BatchNorm running statistics) are not; :meth:`check` syncs and raises.

    A running variance that overflows leaves the training loss finite (training normalises by the batch's own
    statistics), so only this check stops the run then, at that iteration, instead of at the next save or
    evaluation, up to ``--checkpoint_interval`` iterations of training a model that can no longer be evaluated later.
    ``update`` costs a few tiny kernels and no host sync, so CUDA runs check at log intervals and before every save,
    and still name the exact iteration. On CPU there is nothing to overlap, so the loop checks every iteration.
    """

    NONE = torch.iinfo(torch.int64).max

    def __init__(self, device: torch.device, model: nn.Module | None = None) -> None:
        self.first_bad = torch.full((), self.NONE, dtype=torch.int64, device=device)
        self.first_bad_buffers = torch.full((), self.NONE, dtype=torch.int64, device=device)
        # updated in place by the forward pass (and by DDP's broadcast), so these references follow them
        self.buffers = {name: buffer for name, buffer in unwrap_model(model).named_buffers()
                        if buffer.is_floating_point()} if model is not None else {}

    def update(self, loss: torch.Tensor, iteration: int) -> None:
        """Record ``iteration`` (0-based) if the 0-d ``loss`` is NaN/inf, or the buffers are after it, and no earlier
        iteration was; no host sync."""
        bad_now = _any_not_finite(loss.detach())
        self.first_bad = torch.where(bad_now & (self.first_bad == self.NONE), iteration, self.first_bad)
        if self.buffers:
            # BatchNorm's buffers are 1-D: concatenated as they are, without a reshape call for each
            buffers_bad = _any_not_finite(torch.cat([buffer if buffer.dim() == 1 else buffer.reshape(-1)
                                                     for buffer in self.buffers.values()]))
            self.first_bad_buffers = torch.where(buffers_bad & (self.first_bad_buffers == self.NONE), iteration,
                                                 self.first_bad_buffers)

    def check(self, ctx: DistributedContext) -> None:
        """Raise :class:`NonFiniteLossError` naming the earliest iteration any process recorded a non-finite loss at,
        or :class:`NonFiniteWeightsError` after the earliest one that left non-finite buffers (the loss first when
        both came in the same iteration), if one did (a sync)."""
        # the earliest bad iterations over all processes
        first_bad = -all_reduce_max(-torch.stack([self.first_bad, self.first_bad_buffers]), ctx)
        loss_at, buffers_at = first_bad.tolist()
        if loss_at != self.NONE and loss_at <= buffers_at:
            raise NonFiniteLossError(loss_at)
        if buffers_at != self.NONE:
            bad = [name for name, buffer in self.buffers.items() if not bool(torch.isfinite(buffer).all())]
            raise NonFiniteWeightsError(buffers_at + 1, bad or ["on another process"])


def _any_not_finite(values: torch.Tensor) -> torch.Tensor:
    """0-d bool: whether ``values`` (floating point, any shape) hold a NaN or an infinity, on their device without a
    sync. ``x * 0`` is 0 for a finite x and NaN for an infinite or NaN one, so the sum, of zeros (it cannot overflow),
    is NaN exactly then: three kernels, where ``~isfinite(values).all()`` takes six (isfinite is four)."""
    return values.mul(0).sum().isnan()


class SkippedSteps:
    """Counts on the device the optimizer steps that an fp16 run's GradScaler skipped since the last :meth:`take`.

    The scaler skips a step whose scaled gradients hold an inf or a NaN (no weight changes) and halves its loss scale;
    the loss stays finite, so nothing else shows it. :meth:`record` adds the scaler's own verdict on the step (its
    ``found_inf`` device tensors) without a host sync; :meth:`take` syncs, at log intervals. Under DDP the check
    reads the all-reduced gradients, so every process skips the same steps. A disabled scaler (bf16, float32) counts
    nothing.
    """

    def __init__(self, scaler: torch.amp.GradScaler, device: torch.device) -> None:
        self.scaler = scaler
        self.count = torch.zeros((), dtype=torch.int64, device=device)

    def record(self, optimizer: torch.optim.Optimizer) -> None:
        """Count the step if the scaler skipped it: call after ``scaler.step(optimizer)`` and before
        ``scaler.update()``, which forgets the verdict (GradScaler keeps it in no public attribute)."""
        if not self.scaler.is_enabled():
            return
        # private: GradScaler exposes the step's verdict nowhere public (the engine tests fail if torch renames it)
        found_inf = self.scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values()
        self.count += torch.stack([flag.to(self.count.device) for flag in found_inf]).sum() > 0

    def take(self) -> tuple[int, float] | None:
        """``(steps skipped since the last call, current loss scale)`` and a count from 0 again (a host sync), or
        ``None`` when the scaler is disabled."""
        if not self.scaler.is_enabled():
            return None
        skipped = int(self.count.item())
        self.count.zero_()
        return skipped, self.scaler.get_scale()


def _scaler_columns(skipped: SkippedSteps, first: int, last: int, log: RunLog) -> dict:
    """The ``skipped_steps`` and ``loss_scale`` columns of the train row of iterations ``first``-``last`` (counted from
    1) for an fp16 run (none otherwise), and a warning line when the GradScaler skipped more than half its steps."""
    taken = skipped.take()
    if taken is None:
        return {}
    count, scale = taken
    steps = last - first + 1
    if 2 * count > steps:
        log.info(f"warning: --amp fp16: the GradScaler skipped {count} of {counted(steps, 'optimizer step')} in "
                 f"{iteration_span(first, last)} (their loss-scaled gradients overflowed; a skipped step changes no "
                 f"weight and halves the loss scale, now {exact_number(scale)}): the model is barely training. A few "
                 "skips at the start, while the scale settles, are normal; many mean the gradients are too large: "
                 "lower --lr, or use --amp bf16 where the GPU supports it (no loss scale to overflow)")
    return {"skipped_steps": count, "loss_scale": scale}


def non_finite_weights(model: nn.Module) -> list[str]:
    """Names of ``model``'s floating-point parameters and buffers that hold a NaN or an infinity (one host sync), as
    its checkpoint's state dict names them."""
    return non_finite_entries(unwrap_model(model).state_dict())


def check_finite(guard: NonFiniteGuard, model: nn.Module, done: int, ctx: DistributedContext) -> None:
    """Before a save, an evaluation or the end of training, after ``done`` completed iterations: raise
    :class:`NonFiniteLossError` for the first non-finite loss, else :class:`NonFiniteWeightsError` when the weights
    are not finite (every process raises when one does)."""
    guard.check(ctx)
    bad = non_finite_weights(model)
    if any_process(bool(bad), ctx):
        raise NonFiniteWeightsError(done, bad or ["on another process"])


class StopSignal:
    """Context manager: SIGINT/SIGTERM set ``received`` instead of killing the process; a second one kills.

    ``notice``: what the run does after a first signal, written on stderr as it arrives (``"SIGINT received:
    <notice>; a second ..."``), since an evaluation or a save may run on for minutes before the run stops; ``None`` on
    the processes that say nothing (those of a torchrun job other than rank 0).
    """

    def __init__(self, notice: str | None = None) -> None:
        self.received: str | None = None
        self.notice = notice
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignal":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            signal.signal(signum, self._previous[signum])
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        if self.notice:
            _write_at_once(f"\n{self.received} received: {self.notice}; a second Ctrl-C or SIGTERM stops it at once, "
                           "without saving\n")


def _write_at_once(text: str) -> None:
    """``text`` on stderr from a signal handler: one ``write`` on file descriptor 2, not through ``sys.stderr``, whose
    buffer raises "reentrant call" when the signal came while the main code (a tqdm bar) was writing to it. A closed
    stderr (a vanished terminal) drops the line: the run's own lines say how it stopped."""
    try:
        os.write(2, text.encode())
    except OSError:
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM taken as Ctrl-C by :func:`termination_as_interrupt`: caught where a KeyboardInterrupt is; its type tells
    a message that names the signal which one stopped the work."""


@contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM (a scheduler's stop, ``kill``) raises :class:`Terminated`, a KeyboardInterrupt, as
    Ctrl-C does, so work that has no clean stopping point ends with the caller's interrupt message instead of a
    silent kill."""
    def interrupt(signum: int, frame: FrameType | None) -> NoReturn:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class TrainSettings:
    """The loop's knobs, resolved by ``main.py`` (iterations are 0-based, ``max_iter`` is exclusive)."""

    max_iter: int
    epoch_size: int
    base_lr: float
    warm_iter: int
    log_interval: int
    checkpoint_interval: int
    eval_interval: int = 0  # iterations; 0 = only at the end (by main.py)
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    assign_stats: bool = False
    mutual_guide_from: int | None = None  # IoU assignment before this iteration, Mutual Guidance from it

    def logs_after(self, done: int) -> bool:
        """Whether the loop logs (a train row, the progress line) after ``done`` completed iterations."""
        return done % self.log_interval == 0 or done == self.max_iter

    def evaluates_after(self, done: int) -> bool:
        """Whether the loop evaluates after ``done`` completed iterations (the final evaluation is main.py's)."""
        return bool(self.eval_interval) and 0 < done < self.max_iter and done % self.eval_interval == 0


def assignment_line(mutual_guide: bool, mutual_guide_from: int | None) -> str:
    """The log's line naming a run's anchor assignment (``mutual_guide_from``: IoU before that iteration)."""
    iou = "IoU (anchor IoU >= 0.5 positive, [0.4, 0.5) ignored, each object's best anchor positive)"
    mg = ("Mutual Guidance (sigma 2): per object, as many positives (and ignored anchors) as IoU assignment would "
          "make, chosen by their predicted box's IoU for classification and by anchor IoU ** ((2 - p) / 2) for "
          "regression, p the predicted probability of the object's class")
    if not mutual_guide:
        return f"assignment: {iou}"
    return f"assignment: {iou} for {iteration_span(1, mutual_guide_from)}, then {mg}" if mutual_guide_from else (
        f"assignment: {mg}")


def train(
    model: nn.Module,
    loss_fn: nn.Module,
    priors: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loader: DataLoader,
    start_iter: int,
    settings: TrainSettings,
    device: torch.device,
    ctx: DistributedContext,
    log: RunLog,
    save: Callable[[int], None],
    evaluate: Callable[[int], None] | None = None,
    evaluate_first: bool = False,
) -> None:
    """Train from ``start_iter`` to ``settings.max_iter``.

    ``loader`` yields ``(images [B, 3, S, S], targets list of [n, 5], indices)`` for each remaining iteration
    (``data.build_loader(train=True, start_iter=..., max_iter=...)``); ``priors`` is ``[A, 4]`` cxcywh normalised on
    ``device``.
    ``save(done)`` writes a checkpoint after ``done`` completed iterations; ``evaluate(done)`` runs every
    ``eval_interval`` iterations, and first, at ``start_iter``, with ``evaluate_first`` (a resumed run whose
    stopped attempt saved that iteration but did not evaluate it). Raises :class:`NonFiniteLossError` (nothing is
    saved or evaluated after a bad iteration; :class:`NonFiniteWeightsError` for weights that a finite loss's step made
    NaN/inf, found before each save, evaluation and the return, and for BatchNorm statistics, found after the iteration
    that overflowed them) or :class:`TrainingInterrupted` after saving on
    SIGINT/SIGTERM.
    """
    model.train()
    guard = NonFiniteGuard(device, model)
    skipped = SkippedSteps(scaler, device)
    check_every_iteration = checks_every_iteration(device)
    # off a terminal the loop prints each log interval's line itself (bar.disable), not progress_bar's timed lines
    bar = progress_bar(total=settings.max_iter, initial=start_iter, disable=not ctx.is_main, dynamic_ncols=True,
                       unit="it", line_every=None)
    intervals = _LogIntervals(settings, device, ctx, log, skipped, bar)
    notice = "the run stops after this iteration or evaluation, once a checkpoint is saved" if ctx.is_main else None
    with StopSignal(notice) as stop, bar:
        hooks = _IterationHooks(settings, model, guard, ctx, stop, save, evaluate)
        if evaluate is not None and evaluate_first:
            hooks.evaluation(start_iter)
        # a loss or BatchNorm statistic gone NaN/inf since the last check (CUDA checks at log intervals), then an
        # unreadable image: the divergence is reported, and no checkpoint saved after it for the data error
        batches = agreed_batches(loader, ctx, on_data_error=lambda: guard.check(ctx))
        for iteration, (images, targets, _) in zip(range(start_iter, settings.max_iter), batches):
            lr = _schedule(iteration, settings, optimizer, loss_fn)
            done = iteration + 1
            at_log = settings.logs_after(done)
            # assignment statistics are logged for an interval's last iteration alone: computed for it alone
            loss_l, loss_c, stats = _train_step(model, loss_fn, priors, optimizer, scaler, images, targets, settings,
                                                device, skipped, settings.assign_stats and at_log)
            guard.update(loss_l + loss_c, iteration)
            intervals.add(loss_l, loss_c)
            if at_log or check_every_iteration:  # the NaN/inf check's sync: at log intervals, on CPU every iteration
                guard.check(ctx)
            stop_requested = _stop_requested(stop, at_log, ctx)
            if at_log:
                intervals.close(done, lr, stats, images.shape[0])
            hooks.after(done, stop_requested)
    check_finite(guard, model, settings.max_iter, ctx)  # before main.py's final save
    if intervals.stats_names:
        _log_stats_summary(intervals.stats_names, settings.max_iter, log, settings.mutual_guide_from)


def _schedule(iteration: int, settings: TrainSettings, optimizer: torch.optim.Optimizer, loss_fn: nn.Module) -> float:
    """Set the learning rate of ``iteration`` (0-based; facts §6's warm-up and cosine) in every parameter group, and
    for a run that switches to Mutual Guidance at ``settings.mutual_guide_from`` the assignment ``loss_fn`` makes in
    it; returns the rate."""
    lr = warmup_cosine_lr(iteration, settings.base_lr, settings.warm_iter, settings.max_iter)
    set_lr(optimizer, lr)
    if settings.mutual_guide_from is not None:
        loss_fn.mutual_guide = iteration >= settings.mutual_guide_from
    return lr


class _LogIntervals:
    """The training loop's log intervals (``log_interval`` iterations, the last one up to ``max_iter``): sums the
    losses of the current interval's iterations on the device and advances the progress bar; at the interval's end
    writes its ``train`` metrics row, the bar's figures and the progress line, and starts the next interval."""

    def __init__(self, settings: TrainSettings, device: torch.device, ctx: DistributedContext, log: RunLog,
                 skipped: SkippedSteps, bar: tqdm) -> None:
        self.settings, self.ctx, self.log, self.skipped, self.bar = settings, ctx, log, skipped, bar
        self.loss_sums = torch.zeros(2, device=device)  # (loss_l, loss_c) summed over the interval
        self.iterations = 0
        self.start = time.perf_counter()
        self.stats_names: list[str] = []  # the assignment statistics the rows hold, for the run's summary

    def add(self, loss_l: torch.Tensor, loss_c: torch.Tensor) -> None:
        """Count one more iteration of the interval, with its 0-d losses (no host sync)."""
        self.loss_sums += torch.stack([loss_l.detach(), loss_c.detach()])
        self.iterations += 1
        self.bar.update(1)

    def close(self, done: int, lr: float, stats: dict | None, batch_size: int) -> None:
        """Log the interval that ends after ``done`` iterations: its row (losses averaged over the interval and the
        processes, ``lr`` and ``stats`` of its last iteration, images/s at ``batch_size`` images per process and
        iteration, an fp16 run's GradScaler columns), the bar's figures and the progress line with the ETA at the
        interval's speed; every process calls it (collectives)."""
        settings, elapsed = self.settings, time.perf_counter() - self.start
        images_per_s = self.iterations * batch_size * self.ctx.world_size / max(elapsed, 1e-9)
        row = _interval_row(done, settings, self.loss_sums / self.iterations, lr, stats, self.ctx, images_per_s)
        row |= _scaler_columns(self.skipped, done - self.iterations + 1, done, self.log)
        self.bar.set_postfix(loss_l=f"{row['loss_l']:.4f}", loss_c=f"{row['loss_c']:.4f}", lr=f"{lr:.2e}",
                             img_s=f"{row['images_per_s']:.1f}")
        self.log.metrics("train", row)
        eta = (settings.max_iter - done) * elapsed / self.iterations
        # printed where no bar shows the figures (output to a file or pipe), in log.txt either way
        (self.log.info if self.bar.disable else self.log.record)(_progress_line(row, settings.max_iter, eta))
        if stats is not None:
            self.stats_names = list(stats)
        self.loss_sums.zero_()
        self.start, self.iterations = time.perf_counter(), 0


def _stop_requested(stop: StopSignal, at_log: bool, ctx: DistributedContext) -> bool:
    """Whether the run stops after this iteration for a SIGINT/SIGTERM: as soon as ``stop`` received one; under
    torchrun only at log intervals (``at_log``), once any process received one (a collective, so that all stop after
    the same iteration)."""
    if at_log:
        return any_process(stop.received is not None, ctx)
    return stop.received is not None and not ctx.is_distributed


@dataclass(frozen=True)
class _IterationHooks:
    """What the training loop does between iterations through ``train``'s callbacks: ``save`` every
    ``checkpoint_interval`` iterations and when the run stops for ``stop``'s signal, ``evaluate`` (if any) every
    ``eval_interval``; the losses and the weights are checked for NaN/inf first."""

    settings: TrainSettings
    model: nn.Module
    guard: NonFiniteGuard
    ctx: DistributedContext
    stop: StopSignal
    save: Callable[[int], None]
    evaluate: Callable[[int], None] | None

    def evaluation(self, done: int) -> None:
        """Evaluate after ``done`` completed iterations, then put the model back in training mode."""
        self.evaluate(done)
        self.model.train()

    def after(self, done: int, stop_requested: bool) -> None:
        """The hooks due after ``done`` completed iterations: the NaN/inf check, the save, then
        :class:`TrainingInterrupted` when ``stop_requested``, else the evaluation."""
        at_checkpoint = done % self.settings.checkpoint_interval == 0 and done < self.settings.max_iter
        evaluates = self.evaluate is not None and self.settings.evaluates_after(done)
        if at_checkpoint or stop_requested or evaluates:  # once for the save and the evaluation of the same iteration
            check_finite(self.guard, self.model, done, self.ctx)
        if at_checkpoint or stop_requested:
            self.save(done)
        if stop_requested:  # named SIGTERM where only another process received a signal
            raise TrainingInterrupted(done, self.stop.received or "SIGTERM")
        if evaluates:
            self.evaluation(done)


def checks_every_iteration(device: torch.device) -> bool:
    """Whether the training loop syncs for the NaN/inf check after every iteration on ``device``: on CPU, where there
    is nothing to overlap; elsewhere at log intervals and before saves and evaluations (:class:`NonFiniteGuard`)."""
    return device.type == "cpu"


def agreed_batches(loader: Iterable, ctx: DistributedContext,
                   on_data_error: Callable[[], None] = lambda: None) -> Iterator:
    """``loader``'s batches, each handed out once every process has loaded its share of it. A :class:`DataError` (an
    unreadable image) in one process's share raises in every process before any of them enters the step, whose
    collectives the others would otherwise wait in for the failed process (until torchrun kills them, or gloo reports
    a lost connection with a traceback); every process calls ``on_data_error()`` first (it may raise instead). When
    another process has already stopped, :func:`any_process` raises :class:`StoppedByAnotherProcess`."""
    batches = iter(loader)
    while True:
        failure = None
        try:
            batch = next(batches)
        except StopIteration:  # every process's loader yields the same number of batches
            return
        except DataError as error:
            failure = error
        try:
            raise_if_any_process_failed(failure, ctx, lambda: data_error_elsewhere("the batch"))
        except DataError:
            on_data_error()
            raise
        yield batch


def _log_stats_summary(names: list[str], max_iter: int, log: RunLog, mutual_guide_from: int | None = None) -> None:
    """The assignment statistics ``names`` averaged over the run's log intervals, from its ``train`` rows (those of
    the attempts before a resume too): one ``assign_summary`` metrics row at ``max_iter`` (so a resume from an earlier
    checkpoint drops it with the rows it repeats) and a line. A run switched to Mutual Guidance after iteration
    ``mutual_guide_from`` (> 0) also gets the mean over the intervals logged after the switch, MG's alone: an
    ``assign_summary_mg`` row and a second line (a row of iteration i, counted from 1, holds that iteration's
    statistics)."""
    logged = [row for row in log.rows("train") if all(name in row for name in names)]
    if not logged:  # another process than the main one, which alone reads and writes the logs
        return
    switched = bool(mutual_guide_from)
    both = f" (IoU assignment for {iteration_span(1, mutual_guide_from)}, then Mutual Guidance)" if switched else ""
    _log_stats_mean(names, max_iter, log, "assign_summary", logged, "assignment statistics", both)
    after = [row for row in logged if row["iteration"] > (mutual_guide_from or 0)]
    if switched and after:  # the run's last row, at max_iter, is one
        _log_stats_mean(names, max_iter, log, "assign_summary_mg", after, "assignment statistics after the switch to "
                        f"Mutual Guidance ({iteration_span(mutual_guide_from + 1, max_iter)})")


def _log_stats_mean(names: list[str], max_iter: int, log: RunLog, kind: str, rows: list[dict], what: str,
                    qualifier: str = "") -> None:
    """The mean of the statistics ``names`` over the ``rows`` (not empty; :func:`mean_over_rows`) as a ``kind``
    metrics row at ``max_iter``, and the line "<what>, mean over N log intervals<qualifier>: name=value ..."."""
    summary = mean_over_rows(rows, names)
    log.metrics(kind, {"iteration": max_iter, "log_intervals": len(rows)} | summary)
    log.info(f"{what}, mean over {counted(len(rows), 'log interval')}{qualifier}: "
             + " ".join(f"{name}={value:.3f}" for name, value in summary.items()))


def _progress_line(row: dict, max_iter: int, eta_s: float) -> str:
    """A log interval's figures as one line: its ``row``'s iteration, mean losses, learning rate and speed, and the
    time left (``eta_s`` seconds, at the interval's speed) as H:MM:SS."""
    return (f"iteration {row['iteration']}/{max_iter}: loss_l {row['loss_l']:.4f} loss_c {row['loss_c']:.4f} "
            f"lr {row['lr']:.2e}, {row['images_per_s']:.1f} images/s, ETA {clock(eta_s)}")


def _interval_row(done: int, settings: TrainSettings, mean_losses: torch.Tensor, lr: float, stats: dict | None,
                  ctx: DistributedContext, images_per_s: float) -> dict:
    """The metrics row of a log interval; losses are averaged over the interval and over the processes, assignment
    statistics (those of the interval's last iteration) are those of the global batch (:mod:`utils.loss.stats`)."""
    loss_l, loss_c = all_reduce_mean(mean_losses, ctx).tolist()
    row = {"iteration": done, "epoch": (done - 1) // settings.epoch_size, "loss_l": loss_l, "loss_c": loss_c,
           "lr": lr, "images_per_s": images_per_s}
    if stats is not None:
        row.update(stats_from_sums(list(stats), all_reduce_sum(summable_stats(stats), ctx)))
    return row


def _train_step(
    model: nn.Module,
    loss_fn: nn.Module,
    priors: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: torch.Tensor,
    targets: list[torch.Tensor],
    settings: TrainSettings,
    device: torch.device,
    skipped: SkippedSteps,
    with_stats: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
    """One forward/backward/step on ``images [B, 3, S, S]`` (host or device) and ``targets`` (host, ``[n_i, 5]`` each)
    with ``priors [A, 4]`` cxcywh normalised; returns ``(loss_l, loss_c, stats)`` (0-d tensors, not synced), ``stats``
    the assignment statistics with ``with_stats``, else None. ``skipped`` counts the step if an fp16 GradScaler skipped
    it."""
    images = images.to(device, non_blocking=True)
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    # Targets stay on the host: the loss pads and checks them there and copies them in one transfer (no GPU sync).
    with torch.autocast(device.type, dtype=settings.amp_dtype or torch.float32, enabled=settings.amp_dtype is not None):
        loc, conf = model(images)
    # Matching and the losses stay float32 under AMP.
    outputs = (loc.float(), conf.float())
    if with_stats:
        loss_l, loss_c, stats = loss_fn(outputs, priors, targets, with_stats=True)
    else:
        (loss_l, loss_c), stats = loss_fn(outputs, priors, targets), None
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss_l + loss_c).backward()
    scaler.step(optimizer)
    skipped.record(optimizer)
    scaler.update()
    return loss_l, loss_c, stats
